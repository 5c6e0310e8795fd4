"""Reading the documents eldercare is configured with: YAML, JSON or TOML bytes into typed structs.

The device registry, API tokens, alert policy, simulator scenarios and the TOML configuration are
all decoded here (issue #7, "Bad input"), so each gets the same guarantees:

* strict UTF-8 (one leading byte-order mark is skipped: Windows Notepad writes one);
* at most ``max_bytes``, and a file is never read further than that;
* nesting at most ``max_depth`` levels deep, checked before anything walks the tree recursively
  (msgspec, PyYAML's constructor and tomllib recurse once per level and would raise
  ``RecursionError`` a few hundred levels down);
* YAML aliases: at most ``max_aliases`` of them, adding at most ``max_alias_nodes`` nodes once
  expanded. PyYAML shares an aliased node, so a 1 KB "billion laughs" file loads quickly, but
  ``msgspec.convert`` then walks its 10^9 expanded nodes;
* every failure (encoding, size, syntax, limits, PyYAML's constructor raising ``ValueError``,
  ``KeyError`` or ``AttributeError`` for values such as ``0000-01-01`` or ``!!bool x``, and the
  schema) is raised as the caller's :class:`~foundation.errors.EldercareError` subclass, its
  message the caller's ``label`` (which names the file) and the problem, with the line and
  column or the ``$.path`` of the bad value. Nothing of the document's text is quoted: a registry
  holds the names and phone numbers of the people we protect, and these messages reach logs.

YAML is parsed twice with PyYAML's safe loader (libyaml's when installed): first as events, to
check the limits before anything is built, then into Python objects. Both passes are linear in
the size of the file, and libyaml itself stops at 1,000 levels of nesting.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal, TypeVar

import msgspec
import yaml  # type: ignore[import-untyped, unused-ignore]

from foundation.errors import EldercareError

Format = Literal["yaml", "json", "toml"]
#: The format each file suffix names (lower case).
SUFFIXES: Final[dict[str, Format]] = {".yaml": "yaml", ".yml": "yaml", ".json": "json",
                                      ".toml": "toml"}

T = TypeVar("T")

_BOM: Final = b"\xef\xbb\xbf"
_JSON_AT_BYTE: Final = re.compile(r" \(byte (\d+)\)\Z")
_TOML_AT: Final = re.compile(r" \(at (line \d+, column \d+|end of document)\)\Z")


@dataclass(frozen=True, slots=True, kw_only=True)
class DocumentLimits:
    """How large a document may be. The defaults suit hand-written files (configuration,
    policy, tokens, scenarios); the device registry passes its own, larger ones."""

    #: Bytes in the file. The largest shipped example is 6 KB; a policy with staff lists for a
    #: thousand communities is under 1 MB.
    max_bytes: int = 4 * 1024 * 1024
    #: Levels of nesting (an object in an array in an object is 3). The registry, the deepest
    #: document, uses 7 (``$.wearers[0].zones[0].points[0][1]``); 32 leaves room and keeps every
    #: recursive walker far from Python's 1,000-frame limit.
    max_depth: int = 32
    #: ``*alias`` references in a YAML document: sharing a ladder or a zone takes a handful.
    max_aliases: int = 1_000
    #: Nodes the aliases add once expanded (each alias adds its anchor's node count): sharing
    #: takes thousands; a billion-laughs file needs millions.
    max_alias_nodes: int = 100_000


DEFAULT_LIMITS: Final = DocumentLimits()


@dataclass(frozen=True, slots=True)
class _Failure:
    """Builds the caller's error: its class, and the label every message starts with."""

    error: type[EldercareError]
    label: str

    def __call__(self, problem: str) -> EldercareError:
        return self.error(f"{self.label}: {problem}")


def format_of(path: str | Path) -> Format | None:
    """The format a file's suffix names (``.yaml``/``.yml``, ``.json``, ``.toml``), or None."""
    return SUFFIXES.get(Path(path).suffix.lower())


def read_document(path: str | Path, *, error: type[EldercareError], label: str,
                  limits: DocumentLimits = DEFAULT_LIMITS) -> bytes:
    """The bytes of the file at ``path``, at most ``limits.max_bytes`` of them.

    Raises ``error`` with a message starting with ``label`` (e.g. ``cannot read registry
    /etc/eldercare/registry.yaml``) when the file cannot be read or is too large.
    """
    fail = _Failure(error, label)
    try:
        with Path(path).open("rb") as f:
            # One byte more than allowed tells "too large" without reading a huge file.
            data = f.read(limits.max_bytes + 1)
    except OSError as exc:
        raise fail(exc.strerror or str(exc)) from exc
    _check_size(data, limits, fail)
    return data


def parse_document(data: bytes, *, fmt: Format, error: type[EldercareError], label: str,
                   limits: DocumentLimits = DEFAULT_LIMITS) -> Any:
    """``data`` decoded into plain Python values (dicts, lists, str, numbers, datetimes, None),
    within ``limits``; for callers that merge or inspect before converting (the TOML
    configuration). Raises ``error`` with a message starting with ``label``."""
    fail = _Failure(error, label)
    _check_size(data, limits, fail)
    body = data.removeprefix(_BOM)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise fail(f"not valid UTF-8 (byte 0x{body[exc.start]:02x}) - at "
                   f"{_line_column(body, exc.start)}") from exc
    if fmt == "yaml":
        return _parse_yaml(text, limits, fail)
    value = _parse_json(body, limits, fail) if fmt == "json" else _parse_toml(text, limits, fail)
    _check_depth(value, limits, fail)
    return value


def decode_document(data: bytes, *, fmt: Format, type: type[T], error: type[EldercareError],
                    label: str, limits: DocumentLimits = DEFAULT_LIMITS) -> T:
    """``data`` decoded and validated as ``type`` (a msgspec Struct, or a list of them).

    Datetime fields take a YAML or TOML timestamp or an RFC 3339 string, so a quoted and an
    unquoted time mean the same. Raises ``error`` with a message starting with ``label``
    (e.g. ``invalid registry deploy/registry.yaml``), then the problem and where it is:
    ``- at line 3, column 7`` or ``- at `$.wearers[0].region```.
    """
    value = parse_document(data, fmt=fmt, error=error, label=label, limits=limits)
    try:
        return msgspec.convert(value, type, str_keys=True)
    except msgspec.ValidationError as exc:
        raise _Failure(error, label)(str(exc)) from exc


def load_document(path: str | Path, *, type: type[T], error: type[EldercareError], what: str,
                  fmt: Format | None = None, limits: DocumentLimits = DEFAULT_LIMITS) -> T:
    """Read, decode and validate the file at ``path``; ``fmt`` None: the suffix names it.

    ``what`` names the document in messages: ``cannot read {what} {path}: ...`` when the file
    cannot be read, ``invalid {what} {path}: ...`` when its content is wrong.
    """
    p = Path(path)
    fmt = fmt or format_of(p)
    if fmt is None:
        raise error(f"{what} {p}: expected a {', '.join(SUFFIXES)} file")
    data = read_document(p, error=error, label=f"cannot read {what} {p}", limits=limits)
    return decode_document(data, fmt=fmt, type=type, error=error, label=f"invalid {what} {p}",
                           limits=limits)


def _check_size(data: bytes, limits: DocumentLimits, fail: _Failure) -> None:
    if len(data) > limits.max_bytes:
        raise fail(f"larger than the limit of {limits.max_bytes:,} bytes")


def _line_column(body: bytes, offset: int) -> str:
    """Where byte ``offset`` lies, as people count: from 1 (the column in bytes)."""
    line = body.count(b"\n", 0, offset) + 1
    column = offset - (body.rfind(b"\n", 0, offset) + 1) + 1
    return f"line {line}, column {column}"


def _too_deep(limits: DocumentLimits) -> str:
    return f"nested deeper than {limits.max_depth} levels"


# -- JSON and TOML ------------------------------------------------------------------------------
def _parse_json(body: bytes, limits: DocumentLimits, fail: _Failure) -> Any:
    try:
        return msgspec.json.decode(body)
    except RecursionError as exc:  # msgspec's own guard, some hundreds of levels down
        raise fail(_too_deep(limits)) from exc
    except msgspec.DecodeError as exc:  # malformed, or a number out of range
        message = str(exc)
        if not message.startswith("JSON is malformed"):
            message = f"malformed JSON: {message}"
        at = _JSON_AT_BYTE.search(message)
        if at is not None:
            message = f"{message[:at.start()]} - at {_line_column(body, int(at.group(1)))}"
        raise fail(message) from exc


def _parse_toml(text: str, limits: DocumentLimits, fail: _Failure) -> Any:
    try:
        return tomllib.loads(text)
    except RecursionError as exc:  # tomllib recurses per nested array or inline table
        raise fail(_too_deep(limits)) from exc
    except ValueError as exc:  # TOMLDecodeError, or int() of more than 4,300 digits
        message = str(exc)
        at = _TOML_AT.search(message)
        if at is not None:
            message = f"{message[:at.start()]} - at {at.group(1)}"
        raise fail(f"malformed TOML: {message}") from exc


def _check_depth(value: Any, limits: DocumentLimits, fail: _Failure) -> None:
    """Refuse a tree nested deeper than the limit, without recursing (TOML's dotted keys build
    deep tables without any parser recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)] if isinstance(value, dict | list) else []
    while stack:
        node, depth = stack.pop()
        if depth > limits.max_depth:
            raise fail(_too_deep(limits))
        children = node.values() if isinstance(node, dict) else node
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))


# -- YAML ---------------------------------------------------------------------------------------
_SafeLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_OPENS: Final = (yaml.SequenceStartEvent, yaml.MappingStartEvent)
_CLOSES: Final = (yaml.SequenceEndEvent, yaml.MappingEndEvent)


class _Loader(_SafeLoader):  # type: ignore[misc]
    """PyYAML's safe loader, whose constructor errors carry the line of the bad value."""

    def construct_object(self, node: Any, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except yaml.YAMLError:
            raise
        except Exception as exc:
            # SafeConstructor turns scalars into values with int(), datetime() and dict
            # look-ups, and lets their ValueError, KeyError and AttributeError escape (year 0,
            # an int of 5,000 digits, `!!bool x`, `!!timestamp 1`): tie them to the node. Only
            # a ValueError's text says why; the others would just quote the value.
            kind = str(node.tag).rsplit(":", 1)[-1]
            why = f": {str(exc).split(';')[0]}" if isinstance(exc, ValueError) else ""
            raise yaml.constructor.ConstructorError(
                None, None, f"invalid {kind}{why}", node.start_mark) from exc


def _parse_yaml(text: str, limits: DocumentLimits, fail: _Failure) -> Any:
    _check_yaml_events(text, limits, fail)
    loader = _Loader(text)
    try:
        return loader.get_single_data()
    except yaml.YAMLError as exc:
        raise fail(_yaml_problem(exc, text)) from exc
    except RecursionError as exc:  # the pure-Python loader, without libyaml's own limit
        raise fail(_too_deep(limits)) from exc
    finally:
        loader.dispose()


def _check_yaml_events(text: str, limits: DocumentLimits, fail: _Failure) -> None:
    """Walk the events once, counting nesting, aliases and the nodes the aliases add, so a
    document over a limit is refused before any object is built."""
    loader = _Loader(text)
    try:
        _count_yaml_events(loader, limits, fail)
    except yaml.YAMLError as exc:
        raise fail(_yaml_problem(exc, text)) from exc
    finally:
        loader.dispose()


def _count_yaml_events(loader: Any, limits: DocumentLimits, fail: _Failure) -> None:
    opened: list[list[int]] = []  # per open collection: [nodes once expanded, height]
    open_anchors: list[str | None] = []
    anchors: dict[str, tuple[int, int]] = {}  # anchor -> (nodes, height) of its node
    aliases = added = 0
    while loader.check_event():
        event = loader.get_event()
        where = f"line {event.start_mark.line + 1}, column {event.start_mark.column + 1}"
        if isinstance(event, _OPENS):
            if len(opened) >= limits.max_depth:
                raise fail(f"{_too_deep(limits)} - at {where}")
            opened.append([1, 1])
            open_anchors.append(event.anchor)
            continue
        if isinstance(event, yaml.AliasEvent):
            aliases += 1
            if aliases > limits.max_aliases:
                raise fail(f"more than {limits.max_aliases:,} aliases - at {where}")
            if event.anchor in open_anchors:
                raise fail(f"alias *{event.anchor} refers to a node that contains it - at {where}")
            # An undefined alias counts as one node; the composer then reports it.
            nodes, height = anchors.get(event.anchor, (1, 0))
            added += nodes
            if added > limits.max_alias_nodes:
                raise fail(f"aliases expand to more than {limits.max_alias_nodes:,} nodes - at "
                           f"{where}")
            if len(opened) + height > limits.max_depth:
                raise fail(f"{_too_deep(limits)} - at {where}")
            anchor = None
        elif isinstance(event, yaml.ScalarEvent):
            nodes, height, anchor = 1, 0, event.anchor
        elif isinstance(event, _CLOSES):
            (nodes, height), anchor = opened.pop(), open_anchors.pop()
        else:  # stream and document boundaries
            continue
        if anchor is not None:
            anchors[anchor] = (nodes, height)
        if opened:
            parent = opened[-1]
            parent[0] += nodes
            parent[1] = max(parent[1], height + 1)


def _yaml_problem(exc: Exception, text: str) -> str:
    """PyYAML's error without the excerpt of the document it quotes (names, phone numbers)."""
    if isinstance(exc, yaml.MarkedYAMLError):
        problem = ": ".join(str(p) for p in (exc.context, exc.problem) if p)
        mark = exc.problem_mark or exc.context_mark
        where = "" if mark is None else f" - at line {mark.line + 1}, column {mark.column + 1}"
        return f"malformed YAML: {problem}{where}"
    if isinstance(exc, yaml.reader.ReaderError):  # a control character, or a stray BOM
        # libyaml gives the byte offset and the code point; PyYAML the character and its index.
        offset = (exc.position if exc.encoding != "unicode"
                  else len(text[:exc.position].encode("utf-8", "surrogatepass")))
        code = exc.character if isinstance(exc.character, int) else ord(exc.character)
        return (f"malformed YAML: {exc.reason} (U+{code:04X}) - at "
                f"{_line_column(text.encode('utf-8', 'surrogatepass'), offset)}")
    return f"malformed YAML: {exc}"
