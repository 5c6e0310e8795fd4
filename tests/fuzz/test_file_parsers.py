"""Fuzzing the file parsers, which all decode through ``foundation.documents``.

Registry, tokens, scenario, policy and configuration files, fed structural and textual mutants
of the shipped examples, random documents and random bytes: only the documented error may
escape (RegistryError for the registry, ConfigError for the others). Then one test per crash
this suite found, each with its smallest input, now refused with a message that says what and
where.
"""

from __future__ import annotations

import functools
import random
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

import msgspec
import pytest

from alerts.auth import TokenTable, parse_tokens
from alerts.policy import Policy, load_policy
from device_sim.scenario import Scenario, parse_scenario
from eldercare.config import Config, load_config
from foundation.errors import ConfigError, RegistryError
from schemas.registry import Registry, parse_registry
from tests.fuzz.budget import fuzz, randoms
from tests.fuzz.documents import builtins, dump, mutate_text, mutate_tree
from tests.fuzz.known_bugs import accept_or_refuse
from tests.fuzz.values import DEEP_ARRAY, r_json, to_json

ROOT: Final = Path(__file__).resolve().parents[2]


def _fmt(fmt: str) -> Literal["yaml", "json"]:
    return "json" if fmt == "json" else "yaml"


def _write(scratch: Path, name: str, data: bytes) -> Path:
    path = scratch / name
    path.write_bytes(data)
    return path


@dataclass(frozen=True, slots=True)
class FileParser:
    """One parser of a file format, what it may raise and return, and its shipped example."""

    name: str
    formats: tuple[str, ...]
    call: Callable[[bytes, str, Path], object]  # (document, format, scratch dir)
    error: type[Exception]
    result: type
    example: bytes
    mutants: int  # seeded mutants per example: fewer for the slow loaders

    def seed(self) -> Any:
        """The example as a JSON tree."""
        if self.formats == ("toml",):
            return builtins(tomllib.loads(self.example.decode()))
        return builtins(msgspec.yaml.decode(self.example))

    def text(self, fmt: str) -> bytes:
        """The example as text in ``fmt`` (JSON one key per line, so lines can be swapped)."""
        return to_json(self.seed(), indent=1) if fmt == "json" else self.example


FILE_PARSERS: Final = (
    FileParser("registry", ("yaml", "json"), lambda d, f, _: parse_registry(d, fmt=_fmt(f)),
               RegistryError, Registry, (ROOT / "deploy/registry.example.yaml").read_bytes(), 16),
    FileParser("tokens", ("yaml", "json"), lambda d, f, _: parse_tokens(d, fmt=_fmt(f)),
               ConfigError, TokenTable, msgspec.yaml.encode([
                   {"name": "dispatch-centre", "token_sha256": "ab" * 32, "role": "dispatch",
                    "regions": ["*"]},
                   {"name": "officer.1", "token_sha256": "CD" * 32, "role": "officer",
                    "regions": ["371002", "371003"]}]), 16),
    FileParser("scenario", ("yaml", "json"), lambda d, f, _: parse_scenario(d, fmt=_fmt(f)),
               ConfigError, Scenario, (ROOT / "deploy/scenarios/small.yaml").read_bytes(), 16),
    FileParser("policy", ("yaml",), lambda d, f, tmp: load_policy(_write(tmp, "p.yaml", d)),
               ConfigError, Policy, (ROOT / "alerts/policy.yaml").read_bytes(), 8),
    FileParser("config", ("toml",),
               lambda d, f, tmp: load_config(path=_write(tmp, "c.toml", d), env={}),
               ConfigError, Config, (ROOT / "deploy/eldercare.example.toml").read_bytes(), 8),
)
SEEDS: Final = {p.name: p.seed() for p in FILE_PARSERS}
TEXTS: Final = {(p.name, f): p.text(f) for p in FILE_PARSERS for f in p.formats}
FILE_EXAMPLES: Final = 110


def file_case(rng: random.Random, parser: FileParser) -> tuple[str, bytes]:
    """One document for ``parser``: a structural or textual mutant of its example, a random
    document, or random bytes."""
    fmt = rng.choice(parser.formats)
    roll = rng.random()
    if roll < 0.45:
        return fmt, dump(mutate_tree(rng, SEEDS[parser.name]), fmt)
    if roll < 0.9:
        return fmt, mutate_text(rng, TEXTS[parser.name, fmt], fmt)
    if roll < 0.95:
        return fmt, dump(r_json(rng), fmt)
    return fmt, rng.randbytes(rng.randint(0, 256))


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory for the loaders that take a path (module-scoped: hypothesis reuses it)."""
    return tmp_path_factory.mktemp("fuzz")


@pytest.mark.parametrize("parser", FILE_PARSERS, ids=[p.name for p in FILE_PARSERS])
@fuzz(FILE_EXAMPLES, cases=FILE_EXAMPLES * sum(p.mutants + 1 for p in FILE_PARSERS), **randoms)
def test_file_parsers(parser: FileParser, scratch: Path, drawn: random.Random,
                      rng: random.Random) -> None:
    """Registry, tokens, scenario, policy and configuration files: only the documented error
    may escape."""
    docs = [file_case(drawn, parser)] + [file_case(rng, parser) for _ in range(parser.mutants)]
    for fmt, doc in docs:
        accept_or_refuse(parser.name, functools.partial(parser.call, doc, fmt, scratch),
                         parser.error, parser.result, doc)


# -- regressions: the crashes this suite found, one minimal input each --------------------------
_WEARER = b'{"wearers":[{"id":"W1","name":"a","region":"r1"%s}]}'
#: (what, call, documented error, what its message must say); ``call`` takes the scratch dir.
REGRESSIONS: Final[tuple[tuple[str, Callable[[Path], object], type[Exception], str], ...]] = (
    # zoneinfo raises IsADirectoryError for "Asia" and OSError(ENAMETOOLONG) for long names.
    ("registry tz Asia", lambda d: parse_registry(_WEARER % b',"timezone":"Asia"', fmt="json"),
     RegistryError, "unknown timezone 'Asia' - at `$.wearers[0]`"),
    ("registry tz of 300 chars",
     lambda d: parse_registry(_WEARER % b',"timezone":"%s"' % (b"a" * 300), fmt="json"),
     RegistryError, "unknown timezone"),
    ("scenario tz Asia", lambda d: parse_scenario(b"name: x\ntimezone: Asia", fmt="yaml"),
     ConfigError, "unknown timezone 'Asia' - at `$.timezone`"),
    ("config detectors.timezone Asia",
     lambda d: load_config(path=_write(d, "tz.toml", b'[detectors]\ntimezone = "Asia"'), env={}),
     ConfigError, "unknown timezone 'Asia' - at `$.detectors`"),
    # PyYAML's SafeConstructor raises ValueError, AttributeError and KeyError for these.
    ("registry YAML year 0",
     lambda d: parse_registry(b"wearers: [{id: W1, name: 0000-01-01, region: r1}]", fmt="yaml"),
     RegistryError, "invalid timestamp: year 0 is out of range - at line 1, column 26"),
    ("tokens YAML int of 5000 digits",
     lambda d: parse_tokens(b"- {name: " + b"9" * 5000 + b"}", fmt="yaml"), ConfigError,
     "invalid int: Exceeds the limit (4300 digits)"),
    ("scenario YAML month 13", lambda d: parse_scenario(b"name: 2001-13-01", fmt="yaml"),
     ConfigError, "invalid timestamp: month must be in 1..12 - at line 1, column 7"),
    ("registry YAML !!bool x", lambda d: parse_registry(b"wearers: !!bool x", fmt="yaml"),
     RegistryError, "invalid bool - at line 1, column 10"),
    ("policy YAML !!timestamp 1",
     lambda d: load_policy(_write(d, "t.yaml", b"ladders: !!timestamp 1")), ConfigError,
     "t.yaml: malformed YAML: invalid timestamp - at line 1, column 10"),
    # Bad UTF-8: a bare UnicodeDecodeError before; now the byte and where it is.
    ("registry JSON non-UTF-8",
     lambda d: parse_registry(b'{"wearers":\n[{"id":"\xff"}]}', fmt="json"), RegistryError,
     "invalid registry: not valid UTF-8 (byte 0xff) - at line 2, column 9"),
    ("tokens JSON non-UTF-8", lambda d: parse_tokens(b'[{"name":"\xff"}]', fmt="json"),
     ConfigError, "not valid UTF-8 (byte 0xff) - at line 1, column 11"),
    ("scenario JSON non-UTF-8", lambda d: parse_scenario(b'{"name":"\xff"}', fmt="json"),
     ConfigError, "not valid UTF-8"),
    ("policy file non-UTF-8", lambda d: load_policy(_write(d, "p.yaml", b"\xff")), ConfigError,
     "p.yaml: not valid UTF-8 (byte 0xff) - at line 1, column 1"),
    ("config file non-UTF-8",
     lambda d: load_config(path=_write(d, "u.toml", b"a = '\xff'"), env={}), ConfigError,
     "u.toml: not valid UTF-8"),
    # tomllib and msgspec.json recurse per level; a RecursionError escaped.
    ("config array nested 10,000 deep",
     lambda d: load_config(path=_write(d, "r.toml", b"a = " + DEEP_ARRAY), env={}),
     ConfigError, "nested deeper than 32 levels"),
    ("config table nested 100 deep by dotted keys",
     lambda d: load_config(path=_write(d, "k.toml", b"a" + b".a" * 100 + b" = 1"), env={}),
     ConfigError, "nested deeper than 32 levels"),
    ("scenario JSON incident nested 10,000 deep",
     lambda d: parse_scenario(b'{"name":"x","incidents":[{"at_s":' + DEEP_ARRAY
                              + b',"type":"sos"}]}', fmt="json"),
     ConfigError, "nested deeper than 32 levels"),
    # check_scenario added duration_s to a start near year 9999: OverflowError.
    ("scenario start 9999-12-31",
     lambda d: parse_scenario(b"name: x\nstart: 9999-12-31T23:00:00Z\nduration_s: 86400",
                              fmt="yaml"), ConfigError, "within 2020-2099"),
)


@pytest.mark.parametrize(("call", "documented", "needle"),
                         [pytest.param(c, e, n, id=w) for w, c, e, n in REGRESSIONS])
def test_parser_refuses_what_crashed_it(scratch: Path, call: Callable[[Path], object],
                                        documented: type[Exception], needle: str) -> None:
    """Each crash the fuzzers found, minimal: now the documented error, saying what and where."""
    with pytest.raises(documented) as info:
        call(scratch)
    assert needle in str(info.value)
