"""The Mosquitto ACL of an eldercare broker, generated from the device registry (issue #7).

Every device and gateway logs in to Mosquitto as its own user (username = its id, password in
Mosquitto's ``password_file``), and :func:`render_acl` grants each of them exactly one topic,
and the service's two accounts what they need:

==========================  =====  ==============================================
user                        right  topic
==========================  =====  ==============================================
device ``<device_id>``      write  ``eldercare/v1/<region>/dev/<device_id>``
gateway ``<gateway_id>``    write  ``eldercare/v1/<region>/gw/<gateway_id>``
``eldercare-ingest``        read   ``eldercare/v1/#`` except (deny) ``eldercare/v1/+/alerts/#``
                                   and ``eldercare/v1/+/cmd/#``
``eldercare-alerts``        write  ``eldercare/v1/+/alerts/#``, ``eldercare/v1/+/cmd/+``
                            read   ``eldercare/v1/+/cmd/+/result``
``eldercare-gateway``       write  ``eldercare/v1/+/gw/+``, ``eldercare/v1/+/cmd/+/result``
                            read   ``eldercare/v1/+/cmd/+``
alert reader                read   ``eldercare/v1/<region>/alerts/#`` per region and per
                                   known region below it (``+``: all)
==========================  =====  ==============================================

Regions are a hierarchy (national division codes, ``schemas/regions.py``): a reader granted
``3710`` (a city) must read the alerts of its districts, streets and communities, which are
published under their own codes. MQTT wildcards cannot say "every topic level starting with
3710", so each code below a reader's region is granted by name: every code the registry's
wearers and the gateways use, and every code of the region tree when one is given
(``eldercare broker acl --regions``, the ``[enrolment] regions`` file). Alerts of a region
added later reach the reader once the ACL is regenerated (as a new device's topic does).

The ingest account reads all of contract v1, as it subscribes (schemas/topics.py): a message
on a wrong topic, from a client some future grant lets write there, must reach ingest to be
dead-lettered, where a narrower grant would have Mosquitto drop it unseen (2.0.11 grants the
``eldercare/v1/#`` SUBSCRIBE whatever the ACL, then filters each delivery). Mosquitto handles
``deny`` lines before any grant, so the ingest account never receives the alert states (every
open alert's, retained, on each new session) or device commands it would only drop. When one
account is both ingest and alerts, the alerts deny would deny its own publishing: that account
reads the alert states and command results, and ingest drops them on receipt.

The device gateway (``eldercare gateway``, issue #10) speaks for every vendor device behind it
and publishes their readings in batches on its gateway topic (``gw/<its id>``, any region): the
vendor protocols carry no credentials to check per device (SECURITY.md, 18), and ingest admits
each reading of a batch by its own device. It reads the
command topics and answers on their result topics; the alerts account asks (the duty console's
"locate now", "call the watch") and reads the answers.

Nothing else is written: once ``acl_file`` is set Mosquitto denies every topic not granted, so a
device reads nothing (not even its own topic), cannot forge another device's readings, a
gateway's batch or an alert, and the ingest account cannot publish. No line precedes the first
``user`` line, because such lines would apply to every user. The text is deterministic (users
sorted, no timestamp), so a regenerated ACL diffs cleanly against the one deployed.

The registry lists wearers and their devices but not gateways, and not who may read alerts; those
come from a separate *broker clients* file (YAML or JSON, :class:`BrokerClients`)::

    gateways:
      - {id: GW-0001, region: "371002"}
    alert_readers:                          # read-only consumers of alert states
      - {username: centre-371002, regions: ["371002"]}
      - {username: city-dashboard}          # no regions: every region

Ids are checked again here, whatever produced the structs: ``+``, ``#`` and ``/`` would turn a
grant into a wildcard over other devices' topics, whitespace would end the ACL line early, ``:`` is
the ``password_file`` separator (``mosquitto_passwd`` refuses it, although the wire contract
allows it in device ids), and the ``eldercare-`` prefix is reserved for the service's own users
and client ids, so no device can be named like the session it would then take over. Two entries
with one username are refused too: Mosquitto would merge their grants. Errors are
:class:`~foundation.errors.RegistryError` naming the entry by its path (``$.wearers[3].devices[0]``)
and id, never by a wearer's name.

Why in the shell: ``eldercare broker acl`` runs it, offline, to configure the broker for
devices, gateways, ingest and alerts alike; no component uses it at run time.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import msgspec

from foundation.documents import load_document
from foundation.errors import RegistryError
from schemas.regions import covers_any
from schemas.registry import Registry
from schemas.topics import SERVICE_NAMESPACES, TOPIC_ROOT, device_topic, gateway_topic

#: Topic ids the wire contract allows (schemas/readings.py), minus ``:`` (see module docstring).
_ID_RE: Final = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_REGION_RE: Final = re.compile(r"[a-z0-9-]{1,32}")
_RESERVED_PREFIX: Final = "eldercare-"
_WHY_NOT: Final = {
    "+": "'+' is an MQTT wildcard", "#": "'#' is an MQTT wildcard",
    "/": "'/' separates MQTT topic levels", ":": "':' separates user and hash in password_file",
}


class GatewayEntry(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A gateway: it publishes batches of its devices' readings on its own ``gw`` topic."""

    id: str
    region: str


class AlertReader(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A read-only consumer of alert states (a 12349 dashboard, a community centre display)."""

    username: str
    #: Regions whose alerts it may read; empty means every region.
    regions: tuple[str, ...] = ()


class BrokerClients(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The broker clients file: what the registry does not list (see module docstring)."""

    gateways: list[GatewayEntry] = []
    alert_readers: list[AlertReader] = []


@dataclass(frozen=True, slots=True)
class _User:
    """One ``user`` block: who, where its entry came from (for errors), and its grants."""

    username: str
    where: str
    grants: tuple[tuple[str, str], ...]  # (right, topic)


def render_acl(registry: Registry, *, clients: BrokerClients | None = None,
               regions: Iterable[str] = (),
               ingest_user: str = "eldercare-ingest",
               alerts_user: str = "eldercare-alerts",
               gateway_user: str = "eldercare-gateway") -> str:
    """The Mosquitto ACL text for ``registry`` and ``clients``.

    ``ingest_user`` and ``alerts_user`` are the service's ``[mqtt]`` and ``[alerts.mqtt]``
    logins; they may be equal (a deployment without a separate alert login over plain MQTT),
    and that one username then gets both grants. ``regions``: the codes of the region tree, so
    that a reader's grants reach the regions below its own (module docstring).

    Raises
    ------
    RegistryError
        An id, region or username cannot be used in an ACL or a topic, or two entries share a
        username; the message names the entry.
    """
    clients = clients or BrokerClients()
    service = _service_users(ingest_user, alerts_user, gateway_user)
    known = ({*regions} | {w.region for w in registry.wearers}
             | {g.region for g in clients.gateways})
    readers = [_reader(i, r, known) for i, r in enumerate(clients.alert_readers)]
    gateways = [_gateway(i, g) for i, g in enumerate(clients.gateways)]
    devices = list(_devices(registry))
    _check_unique([*service, *readers, *gateways, *devices])
    n_dev, n_gw = len(devices), len(gateways)
    lines = [
        "# Mosquitto ACL for eldercare, generated by `eldercare broker acl`: do not edit by hand.",
        f"# {n_dev} device(s), {n_gw} gateway(s), {len(readers)} alert reader(s).",
        "# Mosquitto denies every topic not granted here. Regenerate after each registry change",
        "# and reload the broker (SIGHUP); deploy/mosquitto/README.md explains.",
    ]
    sections = (("the eldercare service", service), ("read-only consumers of alerts", readers),
                ("gateways: each publishes its own gw topic only", gateways),
                ("devices: each publishes its own dev topic only", devices))
    for title, users in sections:
        if users:
            lines += ["", f"# {title}"]
        for k, user in enumerate(sorted(users, key=lambda u: u.username)):
            lines += [""] * (k > 0) + [f"user {user.username}"]
            lines += [f"topic {right} {topic}" for right, topic in user.grants]
    return "\n".join(lines) + "\n"


def load_broker_clients(path: str | Path) -> BrokerClients:
    """Read a broker clients file (``.json``, else YAML). Ids are checked by :func:`render_acl`."""
    p = Path(path)
    return load_document(p, type=BrokerClients, error=RegistryError, what="broker clients file",
                         fmt="json" if p.suffix.lower() == ".json" else "yaml")


def _service_users(ingest: str, alerts: str, gateway: str) -> list[_User]:
    for name, option in ((ingest, "--ingest-user"), (alerts, "--alerts-user"),
                         (gateway, "--gateway-user")):
        _check(name, what="service username", where=option, reserved_ok=True)
    # Denials first in the block, where Mosquitto applies them (see the module docstring).
    denials = tuple(("deny", f"{TOPIC_ROOT}/+/{ns}/#") for ns in SERVICE_NAMESPACES)
    reads = (("read", f"{TOPIC_ROOT}/#"),)
    commands, results = f"{TOPIC_ROOT}/+/cmd/+", f"{TOPIC_ROOT}/+/cmd/+/result"
    writes = (("write", f"{TOPIC_ROOT}/+/alerts/#"), ("write", commands), ("read", results))
    gateway_user = _User(gateway, "--gateway-user", (
        ("write", f"{TOPIC_ROOT}/+/gw/+"), ("read", commands), ("write", results)))
    if ingest == alerts:  # one account (see render_acl): one block, or Mosquitto merges anyway
        return [_User(ingest, "--ingest-user", reads + writes), gateway_user]
    return [_User(ingest, "--ingest-user", denials + reads),
            _User(alerts, "--alerts-user", writes), gateway_user]


def _reader(i: int, reader: AlertReader, known: set[str]) -> _User:
    where = f"$.alert_readers[{i}]"
    _check(reader.username, what="alert reader username", where=where)
    for j, region in enumerate(reader.regions):
        _check(region, what="region", where=f"{where}.regions[{j}]", pattern=_REGION_RE)
    below = {code for code in known if _REGION_RE.fullmatch(code)
             and covers_any(reader.regions, code)}
    regions = sorted(set(reader.regions) | below) or ["+"]
    grants = tuple(("read", f"{TOPIC_ROOT}/{region}/alerts/#") for region in regions)
    return _User(reader.username, where, grants)


def _gateway(i: int, gw: GatewayEntry) -> _User:
    where = f"$.gateways[{i}]"
    _check(gw.id, what="gateway id", where=where)
    _check(gw.region, what="region", where=f"{where}.region", pattern=_REGION_RE)
    return _User(gw.id, where, (("write", gateway_topic(gw.region, gw.id)),))


def _devices(registry: Registry) -> Iterable[_User]:
    for i, wearer in enumerate(registry.wearers):
        # The wearer's id, never the name: error messages end up in logs and terminals.
        _check(wearer.region, what=f"region of wearer {wearer.id!r}",
               where=f"$.wearers[{i}].region", pattern=_REGION_RE)
        for j, device in enumerate(wearer.devices):
            where = f"$.wearers[{i}].devices[{j}]"
            _check(device.id, what="device id", where=where)
            yield _User(device.id, where, (("write", device_topic(wearer.region, device.id)),))


def _check(value: str, *, what: str, where: str, pattern: re.Pattern[str] = _ID_RE,
           reserved_ok: bool = False) -> None:
    """Refuse ``value`` unless it is safe in an ACL line, a topic level and password_file."""
    if pattern.fullmatch(value) and (reserved_ok or not value.startswith(_RESERVED_PREFIX)):
        return
    bad = next((c for c in value if c in _WHY_NOT or c.isspace() or not c.isprintable()), None)
    if not value:
        why = "it is empty"
    elif bad is not None:
        why = _WHY_NOT.get(bad, f"{bad!r} would end or corrupt the ACL line")
    elif pattern.fullmatch(value):
        why = f"the prefix {_RESERVED_PREFIX!r} is reserved for the eldercare service's own users"
    else:
        why = f"it must match {pattern.pattern}"
    raise RegistryError(f"cannot write a broker ACL: {what} {value[:80]!r} at `{where}`: {why}")


def _check_unique(users: Sequence[_User]) -> None:
    """Refuse two entries with one username: Mosquitto would merge their grants."""
    seen: dict[str, str] = {}
    for user in users:
        if user.username in seen:
            raise RegistryError(
                f"cannot write a broker ACL: username {user.username!r} is used by both "
                f"`{seen[user.username]}` and `{user.where}`; each broker user needs its own id")
        seen[user.username] = user.where
