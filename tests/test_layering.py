"""The plan of the house stays true: packages import downward only (docs/architecture.md).

Every import of every module of the project's packages is parsed (``ast``, nothing is run),
including imports inside functions and ``TYPE_CHECKING`` blocks, and mapped to an edge
package -> package. An edge is allowed only downward (:data:`ALLOWED`)::

    eldercare           the application shell: CLI, configuration, demo, composition
        |
    ingest     console      device_sim --+          (console on alerts; device_sim on gateway,
        |       alerts          |       gateway     whose framing and tables its simulated
        |         |             |          |        devices reuse; gateway on schemas and
        +------ registry        |          |        foundation alone; registry, the elderly
        +------ detectors ------+          |        information database, on schemas)
                schemas -------------------+
                foundation       imports none of the others

The test fails on any edge outside the rules, naming the modules that make it. (Issue #9
began with ten wrong-way edges, listed here and ratcheted down as they went; none is left.)
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_BASE = {"foundation", "schemas", "detectors"}
#: What each package may import: only what lies below it.
ALLOWED: dict[str, set[str]] = {
    "foundation": set(), "schemas": {"foundation"}, "detectors": {"foundation", "schemas"},
    "registry": {"foundation", "schemas"},
    "ingest": _BASE | {"registry"}, "alerts": _BASE | {"registry"},
    "device_sim": _BASE | {"gateway"},
    "console": _BASE | {"alerts", "registry"},
    "gateway": {"foundation", "schemas"},
    "eldercare": _BASE | {"ingest", "alerts", "console", "device_sim", "gateway", "registry"},
}


def package_edges(root: Path = ROOT) -> dict[tuple[str, str], set[str]]:
    """(importing package, imported package) -> importing modules, across packages."""
    edges: dict[tuple[str, str], set[str]] = defaultdict(set)
    for package in ALLOWED:
        for path in sorted((root / package).rglob("*.py")):
            module = ".".join(path.relative_to(root).with_suffix("").parts)
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    target = name.split(".")[0]
                    if target in ALLOWED and target != package:
                        edges[(package, target)].add(module.removesuffix(".__init__"))
    return edges


def test_packages_import_downward_only() -> None:
    edges = package_edges()
    wrong = {f"{a} -> {b}: {sorted(modules)}" for (a, b), modules in edges.items()
             if b not in ALLOWED[a]}
    assert not wrong, f"imports pointing the wrong way (docs/architecture.md): {sorted(wrong)}"


def test_the_foundation_imports_nothing_of_ours_and_nothing_imports_the_shell() -> None:
    edges = package_edges()
    assert not [e for e in edges if e[0] == "foundation"]
    assert not {e for e in edges if e[1] == "eldercare"}


def test_the_parser_sees_imports_in_functions_and_type_checking_blocks(tmp_path: Path) -> None:
    (tmp_path / "schemas").mkdir()
    (tmp_path / "schemas" / "leak.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
        "    from ingest.batch import Batch\ndef f():\n    import alerts.store\n"
        "from . import readings\n", encoding="utf-8")
    assert package_edges(tmp_path) == {("schemas", "ingest"): {"schemas.leak"},
                                       ("schemas", "alerts"): {"schemas.leak"}}
