"""The limits ``foundation.documents`` enforces on every file it decodes, at and past each edge.

Size, nesting depth, YAML aliases (count, expansion, recursion), strict UTF-8, and messages that
name the file and the place. The parsers' fuzz tests feed these paths at random; here each edge
is pinned.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest

from foundation.documents import (
    DEFAULT_LIMITS,
    DocumentLimits,
    Format,
    decode_document,
    load_document,
    parse_document,
    read_document,
)
from foundation.errors import ConfigError, RegistryError
from schemas.registry import parse_registry


def _parse(data: bytes, fmt: Format, limits: DocumentLimits = DEFAULT_LIMITS) -> Any:
    return parse_document(data, fmt=fmt, error=ConfigError, label="invalid test.doc",
                          limits=limits)


def _nested(fmt: Format, depth: int) -> bytes:
    """A document nested ``depth`` levels deep (``a = [...]`` counts its table: TOML's root)."""
    if fmt == "toml":
        return b"a = " + b"[" * (depth - 1) + b"]" * (depth - 1)
    return b"[" * depth + b"]" * depth


@pytest.mark.parametrize("fmt", ["yaml", "json", "toml"])
def test_nesting_up_to_the_limit_is_accepted_and_beyond_refused(fmt: Format) -> None:
    limit = DEFAULT_LIMITS.max_depth
    _parse(_nested(fmt, limit), fmt)
    with pytest.raises(ConfigError, match=f"invalid test.doc: nested deeper than {limit} levels"):
        _parse(_nested(fmt, limit + 1), fmt)


@pytest.mark.parametrize("fmt", ["yaml", "json", "toml"])
def test_size_limit_and_a_leading_bom(fmt: Format) -> None:
    doc = {"yaml": b"a: 1", "json": b'{"a": 1}', "toml": b"a = 1"}[fmt]
    assert _parse(b"\xef\xbb\xbf" + doc, fmt) == {"a": 1}  # Windows Notepad writes one
    tight = DocumentLimits(max_bytes=len(doc))
    assert _parse(doc, fmt, tight) == {"a": 1}
    with pytest.raises(ConfigError, match="larger than the limit of 4 bytes"):
        _parse(doc + b" ", fmt, DocumentLimits(max_bytes=4))


def test_read_document_stops_at_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    path.write_bytes(b"#" * 10_000)
    limits = DocumentLimits(max_bytes=100)
    with pytest.raises(RegistryError, match="cannot read registry x: larger than the limit"):
        read_document(path, error=RegistryError, label="cannot read registry x", limits=limits)
    with pytest.raises(RegistryError, match="cannot read registry d: Is a directory"):
        read_document(tmp_path, error=RegistryError, label="cannot read registry d")


def _cpu_seconds(call: Callable[[], object], repeat: int = 1) -> float:
    """The least CPU time of ``repeat`` runs of ``call`` (errors are part of the run)."""
    best = math.inf
    for _ in range(repeat):
        start = time.process_time()
        try:
            call()
        except RegistryError:
            pass
        best = min(best, time.process_time() - start)
    return best


def test_yaml_alias_expansion_is_bounded() -> None:
    """A 1.3 KB registry whose aliases expand to 101 wearers x 101 zones x 102 points (10^6
    points, once refused only afterwards for its duplicate ids) must cost about what any 1.3 KB
    file costs, not 10^2 times more: 12 KB of the same would take minutes and tens of GB. Timed
    as a ratio to a plain file of the same size, so the machine's speed does not matter."""
    n = 100
    aliases = ("wearers: [&w {id: w1, name: a, region: r1, zones: [&z {id: z1, kind: polygon, "
               "points: [&p [1.0, 2.0], " + ", ".join(["*p"] * n) + "]}, "
               + ", ".join(["*z"] * n) + "]}, " + ", ".join(["*w"] * n) + "]").encode()
    plain = ("wearers: [{id: w1, name: a, region: r1, zones: [{id: z1, kind: polygon, "
             "points: [" + ", ".join(["[1.0, 2.0]"] * n) + "]}]}]").encode()
    baseline = max(_cpu_seconds(lambda: parse_registry(plain, fmt="yaml"), repeat=3), 1e-3)
    assert _cpu_seconds(lambda: parse_registry(aliases, fmt="yaml")) < 20 * baseline
    with pytest.raises(RegistryError, match="aliases expand to more than 1,000,000 nodes"):
        parse_registry(aliases, fmt="yaml")


def test_yaml_aliases_within_the_limits_mean_their_anchor() -> None:
    zone = b"{id: z1, kind: circle, center: {lat: 1, lon: 2}, radius_m: 50}"
    shared = (b"wearers:\n- {id: W1, name: a, region: r1, zones: [&home " + zone + b"]}\n"
              b"- {id: W2, name: b, region: r1, zones: [*home]}\n")
    copied = shared.replace(b"&home ", b"").replace(b"*home", zone)
    assert parse_registry(shared, fmt="yaml") == parse_registry(copied, fmt="yaml")


@pytest.mark.parametrize(("doc", "needle"), [
    (b"a: &r [*r]", "alias *r refers to a node that contains it - at line 1, column 8"),
    (b"a: &r {b: {c: *r}}", "alias *r refers to a node that contains it"),
    (b"a: &x 1\nb: [" + b", ".join([b"*x"] * 1001) + b"]", "more than 1,000 aliases - at line 2"),
    (b"a: &x [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]\nb: [[*x]]",
     "nested deeper than 32 levels - at line 2, column 6"),
    (b"a: *nowhere", "malformed YAML: found undefined alias - at line 1, column 4"),
    (b"a: 1\n---\nb: 2", "expected a single document in the stream"),
    (b"a: b\n\x00", "malformed YAML: control characters are not allowed (U+0000) - at line 2"),
    (b"a: [1, 2\nb: 3", "malformed YAML: while parsing a flow sequence"),
    (b"a: !!python/object/apply:os.system ['true']", "could not determine a constructor"),
])
def test_yaml_problems_are_refused_with_their_place(doc: bytes, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        _parse(doc, "yaml")
    assert str(info.value).startswith("invalid test.doc: ") and needle in str(info.value)


@pytest.mark.parametrize(("doc", "fmt", "needle"), [
    (b'{"a": 1,\n "b": x}', "json", "JSON is malformed: invalid character - at line 2, column 7"),
    (b'{"a": 1e400}', "json", "malformed JSON: Number out of range"),
    (b"", "json", "malformed JSON: Input data was truncated"),
    (b"a = 1\nb = [", "toml", "malformed TOML: Invalid value - at end of document"),
    (b"a = 1\nb = x", "toml", "malformed TOML: Invalid value - at line 2, column 5"),
    (b"a = " + b"9" * 5000, "toml", "malformed TOML: Exceeds the limit (4300 digits)"),
    (b"a = '\xc0\x80'", "toml", "not valid UTF-8 (byte 0xc0) - at line 1, column 6"),
    ("a: '\ud800'".encode("utf-8", "surrogatepass"), "yaml", "not valid UTF-8 (byte 0xed)"),
])
def test_json_toml_and_utf8_problems_say_where(doc: bytes, fmt: Format, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        _parse(doc, fmt)
    assert needle in str(info.value)


class _Doc(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    when: Any = None


def test_load_document_names_the_file(tmp_path: Path) -> None:
    good, bad = tmp_path / "a.toml", tmp_path / "b.json"
    good.write_bytes(b'name = "x"')
    bad.write_bytes(b'{"name": 1}')
    assert load_document(good, type=_Doc, error=ConfigError, what="doc") == _Doc("x")
    with pytest.raises(ConfigError, match=f"invalid doc {bad}: Expected `str`, got `int` - at "
                                          r"`\$.name`"):
        load_document(bad, type=_Doc, error=ConfigError, what="doc")
    with pytest.raises(ConfigError, match=f"cannot read doc {tmp_path}/c.yaml: No such file"):
        load_document(tmp_path / "c.yaml", type=_Doc, error=ConfigError, what="doc")
    with pytest.raises(ConfigError, match=r"doc x.txt: expected a .yaml, .yml, .json, .toml"):
        load_document("x.txt", type=_Doc, error=ConfigError, what="doc")


def test_a_quoted_and_an_unquoted_timestamp_mean_the_same() -> None:
    def at(data: bytes, fmt: Format) -> datetime:
        return decode_document(data, fmt=fmt, type=dict[str, datetime], error=ConfigError,
                               label="t")["at"]

    assert (at(b"at: 2026-03-02T07:55:00+08:00", "yaml")
            == at(b'at: "2026-03-02T07:55:00+08:00"', "yaml")
            == at(b'{"at": "2026-03-02T07:55:00+08:00"}', "json")
            == at(b"at = 2026-03-02T07:55:00+08:00", "toml"))
