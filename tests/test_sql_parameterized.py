"""SQL is always parameterized (issue #7): no query text is built from runtime values.

Every ``execute``/``executemany``/``copy``/``stream`` call in the product code is parsed, and its
query argument must be made only of string literals and module-level constants (UPPER_CASE
names, e.g. ``_INSERT``), joined by ``+`` or f-string interpolation of such constants, or a
``psycopg.sql`` composition (which quotes identifiers itself). Values go in parameters. A query
built from a variable fails this test, naming the file and line, so it cannot creep in unseen.

A few functions pass a query through (helpers taking it as a parameter, loops over a literal
table of statements, migrations read from the package's own SQL files). Each is listed in
:data:`REVIEWED` with why it is safe; the list is checked for entries that no longer exist.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("foundation", "ingest", "alerts", "console", "eldercare", "schemas", "detectors",
            "device_sim")
METHODS = frozenset({"execute", "executemany", "copy", "stream"})
_CONSTANT = re.compile(r"_?[A-Z][A-Z0-9_]*\Z")

#: (file, enclosing function): why its non-literal query is not built from runtime values.
REVIEWED: dict[tuple[str, str], str] = {
    ("foundation/migrations.py", "_apply"): "the text of a migration file shipped in a"
                                            " component's sql/ directory",
    ("ingest/migrations.py", "prune"): "table and column come from a literal list of jobs",
    ("eldercare/privacy.py", "_rows"): "helper; every caller passes a module constant",
    ("eldercare/privacy.py", "_stream"): "helper; every caller passes a module constant",
    ("eldercare/privacy.py", "_delete_rows"): "a literal dict of statements",
    ("ingest/storage.py", "_copy_groups"): "COPY statements of the constant _LAYOUTS table",
    ("ingest/storage.py", "_execute"): "helper; callers pass the constant per-type INSERTs",
    ("alerts/queries.py", "_fetch_all"): "helper typed sql.SQL | sql.Composed: psycopg.sql only",
    ("console/evidence.py", "_rows"): "helper; every caller passes a module constant",
}


def _safe(node: ast.expr) -> bool:
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str | bytes)
    if isinstance(node, ast.Name):
        return bool(_CONSTANT.match(node.id))
    if isinstance(node, ast.Attribute):  # module.CONSTANT
        return bool(_CONSTANT.match(node.attr))
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _safe(node.left) and _safe(node.right)
    if isinstance(node, ast.JoinedStr):
        return all(isinstance(v, ast.Constant)
                   or (isinstance(v, ast.FormattedValue) and _safe(v.value))
                   for v in node.values)
    if isinstance(node, ast.Call):  # sql.SQL("...").format(sql.Identifier(...)), sql.SQL(...)
        f = node.func
        if isinstance(f, ast.Attribute) and f.attr == "encode" and not node.args:
            return _safe(f.value)  # "...".encode(): the text is what matters
        chain = ast.unparse(f)
        return chain.startswith(("sql.", "psycopg.sql.")) or (
            isinstance(f, ast.Attribute) and f.attr in {"format", "join"}
            and ast.unparse(f.value).startswith(("sql.", "psycopg.sql.")))
    return False


def _calls() -> list[tuple[str, str, int, str]]:
    """(file:line, enclosing function, safe, query text) of every query call."""
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for func in ast.walk(tree):
                if not isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef | ast.Module):
                    continue
                name = getattr(func, "name", "<module>")
                for node in _own_nodes(func):
                    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                            and node.func.attr in METHODS and node.args):
                        found.append((f"{path.relative_to(ROOT)}:{node.lineno}", name,
                                      int(_safe(node.args[0])), ast.unparse(node.args[0])[:80]))
    return found


def _own_nodes(scope: ast.AST) -> list[ast.AST]:
    """Nodes of ``scope`` outside nested functions (those are scopes of their own)."""
    out: list[ast.AST] = []
    stack = list(ast.iter_child_nodes(scope))
    while stack:
        node = stack.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        out.append(node)
        stack.extend(ast.iter_child_nodes(node))
    return out


def _unreviewed() -> dict[str, str]:
    return {where: text for where, func, ok, text in _calls()
            if not ok and (where.split(":")[0], func) not in REVIEWED}


def test_the_scan_sees_the_query_calls() -> None:
    calls = _calls()
    assert len(calls) > 50  # the scan is looking at the real code, not at nothing


def test_query_text_is_never_built_from_values() -> None:
    unsafe = _unreviewed()
    assert not unsafe, "queries built from non-constants (parameterize them, or review and " \
        f"list them in REVIEWED): {unsafe}"


def test_every_reviewed_exception_still_exists() -> None:
    present = {(where.split(":")[0], func) for where, func, ok, _ in _calls() if not ok}
    assert set(REVIEWED) <= present, f"stale entries: {set(REVIEWED) - present}"


def test_the_checker_refuses_what_it_should() -> None:
    def arg(src: str) -> ast.expr:
        call = ast.parse(src).body[0].value  # type: ignore[attr-defined]
        return call.args[0]  # type: ignore[no-any-return]
    assert _safe(arg('c.execute("SELECT 1 WHERE a = %s", (x,))'))
    assert _safe(arg('c.execute(f"SELECT * FROM t WHERE {_WHERE}")'))
    assert _safe(arg("c.execute(_INSERT + _DEDUP)"))
    assert _safe(arg('c.execute(sql.SQL("DROP DATABASE {}").format(sql.Identifier(n)))'))
    assert not _safe(arg('c.execute(f"SELECT * FROM t WHERE id = {wearer_id}")'))
    assert not _safe(arg('c.execute("SELECT * FROM t WHERE id = " + wearer_id)'))
    assert not _safe(arg('c.execute("SELECT %s" % value)'))
    assert not _safe(arg("c.execute(query)"))
