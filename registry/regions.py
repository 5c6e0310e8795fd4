"""The region tree: its file format, loading it into ``regions``, and lookups (issue #12).

A tree file lists national administrative division codes with their Chinese names
(docs/registry-database.md, "Regions"): CSV with the header ``code,name[,parent]``, or YAML, a
list of ``{code, name, parent}``. :func:`parse_region_tree` is pure: it decodes and checks the
whole file, collecting every problem with its line (a code that is not 2/4/6/9/12 digits, a
zero-padded GB/T 2260 code, an empty name, a duplicate, a parent that is not the code's prefix
one level up) before raising :class:`RegionTreeError`, so a person fixing a 3,000-line file
sees every mistake at once. Messages quote division codes, never other cell text: a wrong file
uploaded by mistake (a list of elders) must not put names or phone numbers in the logs. What it cannot know alone, whether a parent missing from the file is
already in the database, :func:`load_regions` checks in the transaction that writes.

Loading upserts and never deletes: wearers, devices, accounts and old alerts may name a code
that a newer file no longer lists. A load that changed something is one ``regions_loaded`` entry
in ``registry_audit`` (who, the codes inserted, the names before and after).

What a region covers (``3710`` sees ``371002001``) is :mod:`schemas.regions`, shared with the
alerts and the live feed; :func:`regions_in_scope` serves the console's region pickers from it.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

import psycopg
import yaml  # type: ignore[import-untyped, unused-ignore]
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from foundation.errors import RegistryError, StorageError
from schemas.regions import (
    LEVEL_LENGTHS,
    RegionLevel,
    ancestors_of,
    covers_any,
    is_division_code,
    level_of,
    parent_of,
    sql_in_scope,
)

log = logging.getLogger(__name__)

TreeFormat = Literal["csv", "yaml"]
#: File suffix -> format.
SUFFIXES: Final[dict[str, TreeFormat]] = {".csv": "csv", ".yaml": "yaml", ".yml": "yaml"}
#: The national tree down to villages is ~700,000 lines, ~30 MB; a province's is a tenth.
MAX_BYTES: Final = 64 * 1024 * 1024
#: The database's limit on a region name (0011's CHECK).
MAX_NAME: Final = 100
#: Problems kept (and reported) per file: beyond this a file is wrong throughout.
MAX_PROBLEMS: Final = 200
#: Changed codes listed in one audit entry (the counts are always whole).
AUDIT_LIST_MAX: Final = 10_000
_HEADERS: Final = (("code", "name"), ("code", "name", "parent"))
_BOM: Final = "\ufeff"
_YAML_NULL: Final = "tag:yaml.org,2002:null"
_SafeLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
#: Length of a code -> the zero padding that marks it as a higher level's GB/T 2260 form.
_PADDING: Final = {4: "00", 6: "00", 9: "000", 12: "000"}


@dataclass(frozen=True, slots=True)
class RegionNode:
    """One region: ``code``, Chinese ``name``, ``parent`` (None for a province), ``level``."""

    code: str
    name: str
    parent: str | None
    level: RegionLevel


@dataclass(frozen=True, slots=True)
class RegionProblem:
    """What is wrong at ``line`` (1-based; None when not about one line) of a tree file."""

    line: int | None
    code: str | None
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}" if self.line is not None else self.message


class RegionTreeError(RegistryError):
    """A region tree file is invalid; ``problems`` lists every problem found, with its line."""

    def __init__(self, source: str, problems: Sequence[RegionProblem], *, more: int = 0) -> None:
        self.source = source
        self.problems = tuple(problems)
        self.more = more
        lines = "; ".join(str(p) for p in self.problems[:20])
        rest = len(self.problems) - 20 + more
        tail = f"; and {rest} more" if rest > 0 else ""
        super().__init__(f"invalid region tree {source}: {lines}{tail}")


@dataclass(frozen=True, slots=True)
class RegionTree:
    """A checked tree file: its nodes in file order and the line of each code."""

    source: str
    nodes: tuple[RegionNode, ...]
    lines: Mapping[str, int] = field(repr=False)

    def external_parents(self) -> list[str]:
        """Parents the file names but does not list: they must be in the database already."""
        return sorted({n.parent for n in self.nodes
                       if n.parent is not None and n.parent not in self.lines})


@dataclass(frozen=True, slots=True)
class LoadReport:
    """What :func:`load_regions` did."""

    inserted: int
    updated: int
    unchanged: int


# --- Parsing (pure) -------------------------------------------------------------------------

class _Problems:
    def __init__(self) -> None:
        self.found: list[RegionProblem] = []
        self.more = 0

    def add(self, line: int | None, code: str | None, message: str) -> None:
        if len(self.found) < MAX_PROBLEMS:
            self.found.append(RegionProblem(line, code, message))
        else:
            self.more += 1


def format_of(path: str | Path) -> TreeFormat | None:
    """The tree format a file's suffix names, or None."""
    return SUFFIXES.get(Path(path).suffix.lower())


def read_region_tree(path: str | Path) -> RegionTree:
    """Read and check a tree file (CSV or YAML by its suffix); raises :class:`RegionTreeError`
    (or :class:`~foundation.errors.RegistryError` when it cannot be read)."""
    p = Path(path)
    fmt = format_of(p)
    if fmt is None:
        raise RegistryError(f"region tree {p}: expected a .csv, .yaml or .yml file")
    try:
        with p.open("rb") as f:
            data = f.read(MAX_BYTES + 1)
    except OSError as exc:
        raise RegistryError(f"cannot read region tree {p}: {exc.strerror or exc}") from exc
    return parse_region_tree(data, fmt=fmt, source=str(p))


def parse_region_tree(data: bytes, *, fmt: TreeFormat, source: str) -> RegionTree:
    """Decode and check a whole tree file; every problem is collected, each with its line,
    then raised together as :class:`RegionTreeError`. Parents outside the file are not an
    error here (see :meth:`RegionTree.external_parents`)."""
    problems = _Problems()
    if len(data) > MAX_BYTES:
        raise RegionTreeError(source, [RegionProblem(None, None, f"larger than {MAX_BYTES} bytes")])
    try:
        text = data.decode("utf-8").removeprefix(_BOM)
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise RegionTreeError(source, [RegionProblem(
            line, None, "not valid UTF-8 (save the file as UTF-8, not GBK)")]) from exc
    rows = _csv_rows(text, problems) if fmt == "csv" else _yaml_rows(text, problems)
    nodes: list[RegionNode] = []
    lines: dict[str, int] = {}
    for line, code, name, parent in rows:
        node = _check_row(line, code, name, parent, problems)
        if node is None:
            continue
        if code in lines:
            problems.add(line, code, f"duplicate code {code} (first on line {lines[code]})")
            continue
        lines[code] = line
        nodes.append(node)
    if not problems.found and not nodes:
        problems.add(None, None, "no regions in the file")
    if problems.found:
        raise RegionTreeError(source, problems.found, more=problems.more)
    return RegionTree(source=source, nodes=tuple(nodes), lines=lines)


def _check_row(line: int, code: str, name: str, parent: str | None,
               problems: _Problems) -> RegionNode | None:
    ok = True
    level = level_of(code)
    if level is None:
        # Not quoted: a wrong file (a list of elders) would put a phone number in the logs.
        problems.add(line, None, "the code is not a division code (2, 4, 6, 9 or 12 digits;"
                                 f" found {len(code)} characters)")
        return None
    padding = _PADDING.get(len(code))
    if padding is not None and code.endswith(padding):
        problems.add(line, code, f"code {code} looks zero-padded (the GB/T 2260 or statistical"
                                 f" form of {_unpadded(code)}): write codes without padding,"
                                 " a city as 4 digits (3710), a province as 2 (37)")
        ok = False
    if not name:
        problems.add(line, code, f"code {code}: the name is empty")
        ok = False
    elif len(name) > MAX_NAME:
        problems.add(line, code, f"code {code}: the name is longer than {MAX_NAME} characters")
        ok = False
    expected = parent_of(code)
    if parent and parent != expected:
        what = (f"{code} is a province and has no parent" if expected is None else
                f"the parent of {code} is {expected}, its prefix one level up")
        problems.add(line, code, f"parent {parent} is wrong: {what}")
        ok = False
    return RegionNode(code=code, name=name, parent=expected, level=level) if ok else None


def _unpadded(code: str) -> str:
    """The shortest division code that ``code`` is a zero-padded form of
    (``371000`` -> ``3710``, ``370000000000`` -> ``37``)."""
    for length in sorted(LEVEL_LENGTHS):
        if length < len(code) and not code[length:].strip("0"):
            return code[:length]
    return code


def _csv_rows(text: str, problems: _Problems) -> Iterator[tuple[int, str, str, str | None]]:
    """(line, code, name, parent) of each data row; comment (#) and blank lines skipped."""
    numbers: list[int] = []

    def content() -> Iterator[str]:
        for number, raw in enumerate(text.splitlines(), start=1):
            if raw.strip() and not raw.lstrip().startswith("#"):
                numbers.append(number)
                yield raw

    reader = csv.reader(content(), strict=True)
    header: tuple[str, ...] | None = None
    try:
        for row in reader:
            line = numbers[reader.line_num - 1]
            cells = [c.strip() for c in row]
            if header is None:
                header = tuple(c.lower() for c in cells)
                if header not in _HEADERS:   # its text is not quoted: it may be a person's
                    problems.add(line, None, "the first line must be the header code,name or"
                                             f" code,name,parent (found {len(cells)} columns)")
                    return
                continue
            if len(cells) != len(header):
                code = cells[0] if cells and is_division_code(cells[0]) else None
                problems.add(line, code, f"{len(cells)} columns where the header has"
                                         f" {len(header)}")
                continue
            yield line, cells[0], cells[1], cells[2] if len(cells) > 2 else None
    except csv.Error as exc:
        line = numbers[min(reader.line_num, len(numbers)) - 1] if numbers else 1
        problems.add(line, None, f"not valid CSV: {exc}")


def _yaml_rows(text: str, problems: _Problems) -> Iterator[tuple[int, str, str, str | None]]:
    """(line, code, name, parent) of each entry of a YAML list of mappings. Composed into
    nodes, never constructed: values stay the text written (``3710`` unquoted is the string
    ``3710``, not a number), aliases are not expanded, and tags build nothing."""
    try:
        root = yaml.compose(text, Loader=_SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problems.add(mark.line + 1 if mark is not None else None, None,
                     f"not valid YAML: {getattr(exc, 'problem', None) or exc}")
        return
    if not isinstance(root, yaml.SequenceNode):
        problems.add(1, None, "expected a list of {code, name, parent} entries")
        return
    for item in root.value:
        line = item.start_mark.line + 1
        if not isinstance(item, yaml.MappingNode):
            problems.add(line, None, "expected a mapping {code, name, parent}")
            continue
        fields: dict[str, str | None] = {}
        for key, value in item.value:
            if not isinstance(key, yaml.ScalarNode) or key.value not in ("code", "name", "parent"):
                problems.add(line, None, "unknown field (expected code, name, parent)")
                break
            if not isinstance(value, yaml.ScalarNode):
                problems.add(line, None, f"{key.value} must be a plain value")
                break
            fields[key.value] = None if value.tag == _YAML_NULL else value.value.strip()
        else:
            if fields.get("code") is None:
                problems.add(line, None, "code is missing")
                continue
            yield line, fields["code"] or "", fields.get("name") or "", fields.get("parent")


# --- The database ---------------------------------------------------------------------------

_KNOWN: Final = "SELECT code FROM regions WHERE code = ANY(%(codes)s::text[])"
# IF NOT EXISTS and TRUNCATE: a second load in one outer transaction (a savepoint) finds it.
_STAGE: Final = ("CREATE TEMP TABLE IF NOT EXISTS regions_load (code text PRIMARY KEY,"
                 " name text NOT NULL, parent text, level text NOT NULL) ON COMMIT DROP")
_UNSTAGE: Final = "TRUNCATE regions_load"
_STAGE_COPY: Final = "COPY regions_load (code, name, parent, level) FROM STDIN"
#: Rows the load will change, with their names before (for the audit entry).
_CHANGED: Final = ("SELECT r.code, r.name AS before, l.name AS after FROM regions_load l"
                   " JOIN regions r ON r.code = l.code"
                   " WHERE (r.name, r.parent, r.level) IS DISTINCT FROM (l.name, l.parent, l.level)"
                   " ORDER BY r.code")
_NEW: Final = ("SELECT l.code FROM regions_load l WHERE NOT EXISTS"
               " (SELECT 1 FROM regions r WHERE r.code = l.code) ORDER BY l.code")
# One statement: the parent foreign key is checked at its end, so order within it is free;
# ordering by length still writes parents first, which reads well in a trace.
_UPSERT: Final = ("INSERT INTO regions (code, name, parent, level)"
                  " SELECT code, name, parent, level FROM regions_load ORDER BY length(code), code"
                  " ON CONFLICT (code) DO UPDATE SET name = EXCLUDED.name,"
                  " parent = EXCLUDED.parent, level = EXCLUDED.level, updated_at = now()"
                  " WHERE (regions.name, regions.parent, regions.level)"
                  " IS DISTINCT FROM (EXCLUDED.name, EXCLUDED.parent, EXCLUDED.level)")
_AUDIT: Final = ("INSERT INTO registry_audit (actor, action, before, after)"
                 " VALUES (%(actor)s, 'regions_loaded', %(before)s, %(after)s)")


def load_regions(conn: psycopg.Connection[Any], tree: RegionTree, *, actor: str) -> LoadReport:
    """Upsert ``tree`` into ``regions`` in one transaction, after checking that every parent
    outside the file is in the database (else :class:`RegionTreeError` naming each line, and
    nothing is written). A load that changes something is audited as ``actor``."""
    try:
        with conn.transaction():
            _check_external_parents(conn, tree)
            with conn.cursor() as cur:
                cur.execute(_STAGE)
                cur.execute(_UNSTAGE)
                with cur.copy(_STAGE_COPY) as copy:
                    for n in tree.nodes:
                        copy.write_row((n.code, n.name, n.parent, n.level))
                renamed: list[tuple[str, str, str]] = cur.execute(_CHANGED).fetchall()
                new = [row[0] for row in cur.execute(_NEW).fetchall()]
                cur.execute(_UPSERT)
                if new or renamed:
                    cur.execute(_AUDIT, _audit_params(actor, tree, new, renamed))
    except psycopg.Error as exc:
        raise StorageError(f"loading region tree {tree.source}: {exc}".strip()) from exc
    report = LoadReport(inserted=len(new), updated=len(renamed),
                        unchanged=len(tree.nodes) - len(new) - len(renamed))
    log.info("region tree %s loaded: %d inserted, %d updated, %d unchanged", tree.source,
             report.inserted, report.updated, report.unchanged)
    return report


def _check_external_parents(conn: psycopg.Connection[Any], tree: RegionTree) -> None:
    wanted = tree.external_parents()
    if not wanted:
        return
    known = {row[0] for row in conn.execute(_KNOWN, {"codes": wanted}).fetchall()}
    problems = _Problems()
    for n in tree.nodes:
        if n.parent is not None and n.parent not in tree.lines and n.parent not in known:
            problems.add(tree.lines[n.code], n.code,
                         f"parent {n.parent} of {n.code} is neither in the file nor in the"
                         " database")
    if problems.found:
        raise RegionTreeError(tree.source, problems.found, more=problems.more)


def _audit_params(actor: str, tree: RegionTree, new: list[str],
                  renamed: list[tuple[str, str, str]]) -> dict[str, Any]:
    listed = renamed[:AUDIT_LIST_MAX]
    return {"actor": actor,
            "before": Jsonb({"names": {code: before for code, before, _ in listed}}),
            "after": Jsonb({"source": Path(tree.source).name, "inserted": len(new),
                            "updated": len(renamed), "codes_inserted": new[:AUDIT_LIST_MAX],
                            "names": {code: after for code, _, after in listed},
                            "lists_truncated": max(len(new), len(renamed)) > AUDIT_LIST_MAX})}


# --- Lookups --------------------------------------------------------------------------------

#: Nodes returned by :func:`regions_in_scope` at most (a national tree is ~700,000).
MAX_NODES: Final = 20_000

_IN_SCOPE: Final = (
    "SELECT code, name, parent, level FROM regions r"
    f" WHERE {sql_in_scope('r.code', 'scopes')}"
    f" AND {sql_in_scope('r.code', 'under')}"
    " AND length(r.code) <= %(max_length)s"
    " ORDER BY code LIMIT %(limit)s")
_BY_CODE: Final = ("SELECT code, name, parent, level FROM regions"
                   " WHERE code = ANY(%(codes)s::text[]) ORDER BY code")


@dataclass(frozen=True, slots=True)
class ScopedTree:
    """The regions a caller sees (``in_scope``) and, for breadcrumbs, their ancestors."""

    nodes: list[tuple[RegionNode, bool]]
    truncated: bool


def regions_in_scope(conn: psycopg.Connection[Any], scopes: Sequence[str] | None, *,
                     under: str | None = None, depth: int | None = None) -> ScopedTree:
    """The tree nodes within ``scopes`` (``None``: everything) and below ``under`` (itself
    included; ``depth``: at most that many levels below it, or below the province level
    without ``under``), plus the ancestors of every node
    returned, so each has its breadcrumbs. Each node comes with whether ``scopes`` cover it.
    Sorted by code; at most :data:`MAX_NODES` (``truncated`` says when more matched)."""
    max_length = 12
    if depth is not None:
        lengths = sorted(LEVEL_LENGTHS)
        start = lengths.index(len(under)) if under is not None and is_division_code(under) else 0
        max_length = lengths[min(start + depth, len(lengths) - 1)]
    try:
        with conn.cursor(row_factory=dict_row) as cur:
            rows = cur.execute(_IN_SCOPE, {
                "scopes": None if scopes is None else list(scopes),
                "under": None if under is None else [under],
                "max_length": max_length, "limit": MAX_NODES + 1}).fetchall()
            truncated = len(rows) > MAX_NODES
            found = {r["code"]: _node(r) for r in rows[:MAX_NODES]}
            above = sorted({a for code in found for a in ancestors_of(code)} - found.keys())
            if above:
                found.update((r["code"], _node(r))
                             for r in cur.execute(_BY_CODE, {"codes": above}).fetchall())
    except psycopg.Error as exc:
        raise StorageError(f"region tree: {exc}".strip()) from exc
    return ScopedTree(nodes=[(found[c], scopes is None or covers_any(scopes, c))
                             for c in sorted(found)], truncated=truncated)


def unknown_regions(conn: psycopg.Connection[Any], codes: Sequence[str]) -> set[str]:
    """The division codes among ``codes`` that are not in the tree (for enrolment and
    import checks). Codes that are not division codes (legacy names) are never in it and
    are returned too."""
    wanted = sorted(set(codes))
    try:
        known = {row[0] for row in conn.execute(_KNOWN, {"codes": wanted}).fetchall()}
    except psycopg.Error as exc:
        raise StorageError(f"region tree: {exc}".strip()) from exc
    return set(wanted) - known


def _node(row: Mapping[str, Any]) -> RegionNode:
    return RegionNode(code=row["code"], name=row["name"], parent=row["parent"],
                      level=row["level"])
