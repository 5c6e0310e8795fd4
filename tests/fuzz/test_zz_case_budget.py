"""The case budget of the whole fuzz suite, checked after every other fuzz test has run.

pytest runs a directory's files in name order, so this module runs last. It imports every test
module of the package itself, so the budget is complete even when pytest collected only some of
them: the check then skips rather than pass on a part.
"""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import tests.fuzz
from tests.fuzz.budget import BUDGET, CASES, KNOWN_HITS, MIN_TOTAL_CASES

_PACKAGE = tests.fuzz.__name__
for _module in pkgutil.iter_modules(tests.fuzz.__path__):
    if _module.name.startswith("test_"):
        importlib.import_module(f"{_PACKAGE}.{_module.name}")


def test_zz_case_budget(request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str]) -> None:
    """Prints the cases per test and fails if any test ran fewer than planned or the total
    falls short of ``MIN_TOTAL_CASES``."""
    selected = {item.function.__name__ for item in request.session.items
                if isinstance(item, pytest.Function)
                and item.module is not None and item.module.__name__.startswith(f"{_PACKAGE}.")}
    if not set(BUDGET) <= selected:
        pytest.skip("part of the fuzz suite was deselected: the budget is checked on the whole")
    total = sum(CASES[name] for name in BUDGET)
    with capsys.disabled():
        print(f"\nfuzz cases per test (at least {MIN_TOTAL_CASES:,} in all):")
        for name, planned in BUDGET.items():
            print(f"  {name:<42} {CASES[name]:>7,}  (planned {planned:,})")
        print(f"  {'total':<42} {total:>7,}")
        if KNOWN_HITS:
            print("  known bugs hit: " + ", ".join(f"{k} x{v}" for k, v in KNOWN_HITS.items()))
    assert not set(CASES) - set(BUDGET), "cases counted under a name outside the budget"
    short = {n: CASES[n] for n in BUDGET if CASES[n] < BUDGET[n]}
    assert not short, f"tests ran fewer cases than planned: {short}"
    assert total >= MIN_TOTAL_CASES
