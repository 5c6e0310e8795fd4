"""Documents for the file-parser fuzz tests: mutants of the shipped examples, in YAML, JSON and TOML.

:func:`mutate_tree` edits a document's structure (wrong types, deleted and unknown keys,
duplicated entries); :func:`mutate_text` its text (raw tokens only that format can carry:
out-of-range timestamps, huge ints, impossible tags, aliases, cut-short syntax); :func:`dump`
writes a tree in any of the three formats.
"""

from __future__ import annotations

import copy
import json
import math
import random
from typing import Any, Final

import msgspec

from tests.fuzz.values import DEEP_ARRAY, TOKENS, mutate_bytes, r_json, r_text, to_json


def builtins(data: object) -> Any:
    """Plain JSON types only (YAML timestamps become ISO strings)."""
    return msgspec.json.decode(msgspec.json.encode(data))


# Raw scalars only YAML text can carry: timestamps (some out of range), huge ints, explicit
# tags (some impossible), anchors and aliases, flow and block syntax cut short.
YAML_TOKENS: Final = tuple(t.encode() for t in (
    "0000-01-01", "2001-13-01", "2001-02-30 25:61:61", "9999-12-31T23:59:59-23:59",
    "9" * 5000, "-9" * 10, ".nan", ".inf", "-.inf", "~", "0x1F", "0o17", "1_000", "+.5", "-0",
    "1e400", "!!binary aGVsbG8=", "!!python/object/apply:os.system ['true']", "*nope", "&a x",
    "{<<: {a: 1}}", "[", "{", "'", '"\\ud800"', '"\\x00"', "!!set {a, b}", "? [a]", "|\n  x",
    "yes", "on", "null", "Asia", '"Asia"', "[" * 200 + "]" * 200, "!!timestamp 1", "@", "`",
    "!!int x", "!!float x", "!!bool x", "!!timestamp 2020-02-30", "!!str [a]",
    "&r [*r]", "&r {a: *r}", "[&b [1, 2], *b, *b]", "*b", "&b", "{<<: *nope}",
)) + (b"\xff", b"\t")
JSON_TOKENS: Final = TOKENS + (b'"Asia"', b'"9999-12-31T23:59:59Z"', b"[]", b"{}", b"0",
                               b'"x"', DEEP_ARRAY)
TOML_TOKENS: Final = tuple(t.encode() for t in (
    '"x"', "1", "-1", "0", "1.5", "nan", "inf", "-inf", "true", "[]", '[1, "a"]', "{}",
    "{ a = 1 }", "1979-05-27T07:32:00Z", "0000-01-01", "9999-12-31T23:59:59Z", "07:32:00",
    "9" * 30, "0x10", '"Asia"', '"\\u0000"', "[" * 2000 + "]" * 2000, "'''", '"\\xff"', "-0",
    "1e400", '"a"\n[detectors]\ntimezone = "Asia"', "1\n" + "a." * 60 + "a = 1",
    "1\n[" + ".".join(["t"] * 60) + "]",
)) + (b'"\xff"',)
SEPARATORS: Final = {"yaml": b": ", "json": b'": ', "toml": b" = "}
TOKEN_SETS: Final = {"yaml": YAML_TOKENS, "json": JSON_TOKENS, "toml": TOML_TOKENS}


def _paths(tree: Any) -> list[tuple[Any, Any]]:
    """Every (container, key) pair of a JSON tree."""
    out: list[tuple[Any, Any]] = []
    stack = [tree]
    while stack:
        node = stack.pop()
        for k in (list(node) if isinstance(node, dict) else range(len(node))):
            out.append((node, k))
            if isinstance(node[k], dict | list) and node[k]:
                stack.append(node[k])
    return out


def mutate_tree(rng: random.Random, seed: Any) -> Any:
    """The seed document with one to three fields replaced by random or nasty values, deleted,
    given an unknown sibling, or duplicated: over many cases every field gets wrong types."""
    holder = [copy.deepcopy(seed)]
    for _ in range(rng.randint(1, 3)):
        container, key = rng.choice(_paths(holder))
        op = rng.randrange(5)
        if op < 2:
            container[key] = copy.deepcopy(r_json(rng, 2))
        elif op == 2 and container is not holder:
            del container[key]
        elif op == 3 and isinstance(container[key], dict):
            container[key][rng.choice(("", "id", "x", r_text(rng, 8)))] = copy.deepcopy(
                r_json(rng, 1))
        elif op == 4 and isinstance(container[key], list) and container[key]:
            container[key].append(copy.deepcopy(container[key][0]))
    return holder[0]


def mutate_text(rng: random.Random, text: bytes, fmt: str) -> bytes:
    """The seed text with the values of one to three ``key: value`` lines swapped for raw
    tokens (JSON keeps its commas), or edited byte by byte."""
    tokens = TOKEN_SETS[fmt]
    if rng.random() < 0.3:
        return mutate_bytes(rng, text, tokens)
    sep = SEPARATORS[fmt]
    lines = text.split(b"\n")
    for _ in range(rng.randint(1, 3)):
        i = rng.randrange(len(lines))
        head, found, value = lines[i].partition(sep)
        comma = b"," if value.rstrip().endswith(b",") else b""
        lines[i] = head + sep + rng.choice(tokens) + comma if found else rng.choice(tokens)
    return b"\n".join(lines)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and not math.isfinite(v):
        return "nan" if math.isnan(v) else "inf" if v > 0 else "-inf"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v if x is not None) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {_toml_value(x)}" for k, x in v.items()
                               if x is not None) + "}"
    return json.dumps(v)


def to_toml(tree: Any) -> bytes:
    """A small TOML writer (tomli_w is not installed): tables for dicts, inline values else;
    None, which TOML cannot say, drops the key."""
    if not isinstance(tree, dict):
        return ("value = " + _toml_value(tree)).encode()
    lines: list[str] = []

    def table(path: list[str], node: dict[str, Any]) -> None:
        if path:
            lines.append("[" + ".".join(json.dumps(p) for p in path) + "]")
        for k, v in node.items():
            if not isinstance(v, dict) and v is not None:
                lines.append(f"{json.dumps(k)} = {_toml_value(v)}")
        for k, v in node.items():
            if isinstance(v, dict):
                table([*path, k], v)

    table([], tree)
    return "\n".join(lines).encode()


def dump(tree: Any, fmt: str) -> bytes:
    """``tree`` written in ``fmt``."""
    if fmt == "json":
        return to_json(tree)
    if fmt == "toml":
        return to_toml(tree)
    try:
        return msgspec.yaml.encode(tree)
    except UnicodeEncodeError:  # a lone surrogate: PyYAML cannot write it, JSON (also YAML) can
        return to_json(tree)

