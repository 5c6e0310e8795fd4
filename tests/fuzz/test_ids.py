"""Ids, regions and names refuse a trailing newline, in every contract that takes one.

Python's ``$`` also matches before a final newline, and msgspec's ``Meta(pattern=...)`` searches
with the pattern, so ``"BR-1\\n"`` used to pass as a device distinct from ``"BR-1"`` (and
``"ops\\n"`` as a second audit actor ``ops``). The patterns now end in ``\\Z`` (or are used with
``fullmatch``); each case here pairs the near miss with the valid value it imitates, so a test
that refuses everything cannot pass.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import msgspec
import pytest
from argon2 import PasswordHasher

from alerts.auth import parse_tokens
from alerts.policy import Staff, Step
from console.accounts import USERNAME_PATTERN, AccountError, AccountStore
from device_sim.scenario import parse_scenario
from foundation.errors import ConfigError, RegistryError
from schemas.registry import parse_registry
from tests.fuzz.wire import DECODER, GW, NOW, REGION

NEAR_MISSES: Final = ("\n", "\r\n", "\t")  # not a space: phone numbers may hold spaces


def _registry(**fields: Any) -> bytes:
    wearer = {"id": "W1", "name": "a", "region": "r1",
              "devices": [{"id": "BR-1", "kind": "watch"}],
              "contacts": [{"name": "b", "phone": "+86 138 0000 0000", "email": "b@example.cn",
                            "channels": ["sms", "email"]}],
              "zones": [{"id": "home", "kind": "circle", "center": {"lat": 1, "lon": 2},
                         "radius_m": 50, "active": "22:00-06:00"}]}
    for path, value in fields.items():
        *parents, key = path.split("__")
        node: Any = wearer
        for p in parents:
            node = node[p][0] if isinstance(node[p], list) else node[p]
        node[key] = value
    return json.dumps({"wearers": [wearer]}).encode()


def _token(**fields: str | list[str]) -> bytes:
    entry = {"name": "ops", "token_sha256": "a" * 64, "role": "admin", "regions": ["r1"]}
    return json.dumps([entry | fields]).encode()


def _scenario(**fields: Any) -> bytes:
    doc = {"name": "x", "region": "371002", "fleet": {"bracelets": 1},
           "incidents": [{"type": "sos", "at_s": 1, "device": "BR-00000"}]} | fields
    return json.dumps(doc).encode()


def _incident_device(device: str) -> dict[str, Any]:
    return {"incidents": [{"type": "sos", "at_s": 1, "device": device}]}


#: (what, valid value, load with that value, the error a near miss must raise)
CONTRACTS: Final[tuple[tuple[str, str, Callable[[str], object], type[Exception]], ...]] = (
    ("registry wearer id", "W1", lambda v: parse_registry(_registry(id=v), fmt="json"),
     RegistryError),
    ("registry region", "r1", lambda v: parse_registry(_registry(region=v), fmt="json"),
     RegistryError),
    ("registry device id", "BR-1",
     lambda v: parse_registry(_registry(devices__id=v), fmt="json"), RegistryError),
    ("registry zone id", "home", lambda v: parse_registry(_registry(zones__id=v), fmt="json"),
     RegistryError),
    ("registry zone window", "22:00-06:00",
     lambda v: parse_registry(_registry(zones__active=v), fmt="json"), RegistryError),
    ("registry phone", "+86 138 0000 0000",
     lambda v: parse_registry(_registry(contacts__phone=v), fmt="json"), RegistryError),
    ("registry email", "b@example.cn",
     lambda v: parse_registry(_registry(contacts__email=v), fmt="json"), RegistryError),
    ("token name", "ops", lambda v: parse_tokens(_token(name=v), fmt="json"), ConfigError),
    ("token hash", "a" * 64, lambda v: parse_tokens(_token(token_sha256=v), fmt="json"),
     ConfigError),
    ("token region", "r1", lambda v: parse_tokens(_token(regions=[v]), fmt="json"), ConfigError),
    ("token all regions", "*", lambda v: parse_tokens(_token(regions=[v]), fmt="json"),
     ConfigError),
    ("scenario region", "371002", lambda v: parse_scenario(_scenario(region=v), fmt="json"),
     ConfigError),
    ("scenario device id", "BR-00000",
     lambda v: parse_scenario(_scenario(**_incident_device(v)), fmt="json"), ConfigError),
    ("policy target", "family:1",
     lambda v: msgspec.convert({"notify": [v], "wait_s": 60}, Step), msgspec.ValidationError),
    ("policy staff phone", "+86 138 0000 0000",
     lambda v: msgspec.convert({"name": "a", "phone": v}, Staff), msgspec.ValidationError),
)


@pytest.mark.parametrize("suffix", NEAR_MISSES, ids=["LF", "CRLF", "tab"])
@pytest.mark.parametrize(("valid", "load", "error"), [
    pytest.param(valid, load, error, id=what) for what, valid, load, error in CONTRACTS])
def test_file_ids_refuse_a_trailing_newline(valid: str, load: Callable[[str], object],
                                            error: type[Exception], suffix: str) -> None:
    load(valid)
    with pytest.raises(error):
        load(valid + suffix)


_SOS: Final = b'{"type":"sos","ts":%d}' % NOW
_BATCH: Final = b'[{"type":"sos","ts":%d,"device_id":"D1{}"}]' % NOW


@pytest.mark.parametrize(("topic", "payload", "kept"), [
    (f"eldercare/v1/{REGION}/dev/BR-1{{}}", _SOS, 0),
    (f"eldercare/v1/{REGION}{{}}/dev/BR-1", _SOS, 0),
    (f"eldercare/v1/{REGION}/gw/GW-1{{}}", _BATCH, 0),
    (GW, _BATCH, 0),
    # An SOS on its own device's topic is still that device's (the alarm salvage,
    # docs/wire-contract.md): kept under the topic's id, the near miss dead-lettered beside it.
    (f"eldercare/v1/{REGION}/dev/BR-1", b'{"type":"sos","ts":%d,"device_id":"BR-1{}"}' % NOW, 1),
], ids=["topic-device-id", "topic-region", "topic-gateway-id", "json-device-id",
        "json-own-device-id"])
@pytest.mark.parametrize("suffix", ["\n", "\r\n"], ids=["LF", "CRLF"])
def test_wire_ids_refuse_a_trailing_newline(topic: str, payload: bytes, kept: int,
                                            suffix: str) -> None:
    """Ids and regions are documented as [A-Za-z0-9_.:-]{1,64} / [a-z0-9-]{1,32}. ``{}`` marks
    where the suffix goes: the character itself in a topic, its JSON escape in a payload."""
    def decode(raw: str) -> tuple[int, int]:
        escaped = json.dumps(raw)[1:-1].encode()
        out = DECODER.decode(topic.format(raw), payload.replace(b"{}", escaped), now_ms=NOW)
        assert all(r.device_id in ("BR-1", "D1") for r in out.readings), out
        return len(out.readings), len(out.rejects)

    assert decode("") == (1, 0)
    assert decode(suffix) == (kept, 1)


def test_console_accounts_refuse_a_trailing_newline(tmp_path: Path) -> None:
    """Checked before the database is touched, so no PostgreSQL is needed (the pool is lazy)."""
    assert USERNAME_PATTERN.fullmatch("ops") and not USERNAME_PATTERN.fullmatch("ops\n")
    cheap = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    with AccountStore("postgresql://nobody@127.0.0.1:1/none", hasher=cheap) as store:
        for username, regions in (("ops\n", ["r1"]), ("ops", ["r1\n"]), ("ops", ["*\n"])):
            with pytest.raises(AccountError):
                store.add_user(username, "correct horse battery", role="admin",
                               regions=regions)
