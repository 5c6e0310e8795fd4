"""Case accounting and the hypothesis settings every fuzz test shares.

Each fuzz test plans its cases with :func:`fuzz` (or :func:`budget` for a plain test) and counts
each case with :func:`one_case`; ``test_zz_case_budget`` compares the counts with the plans.
Tests are counted by function name, so names must be unique across the package.
"""

from __future__ import annotations

import functools
import random
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from typing import Any, Final

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

MIN_TOTAL_CASES: Final = 100_000

TestFn = Callable[..., None]
BUDGET: dict[str, int] = {}  # test -> cases it plans to run
CASES: Counter[str] = Counter()  # test -> cases it ran
KNOWN_HITS: Counter[str] = Counter()  # known bug -> times the fuzzers hit it
_RUNNING = [""]  # the test whose cases are being counted
_FUZZ: Final = settings(
    deadline=timedelta(seconds=3),  # the hang guard: the slowest example takes tens of ms
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.large_base_example],
)


def budget(cases: int) -> Callable[[TestFn], TestFn]:
    """Plan ``cases`` for the decorated test (all its parametrizations together), and count its
    cases under its name."""
    def apply(test: TestFn) -> TestFn:
        name = test.__name__
        BUDGET[name] = BUDGET.get(name, 0) + cases

        @functools.wraps(test)
        def running(*args: Any, **kwargs: Any) -> None:
            _RUNNING[0] = name
            test(*args, **kwargs)
        return running
    return apply


def fuzz(max_examples: int, *, cases: int,
         **strategies: st.SearchStrategy[Any]) -> Callable[[TestFn], TestFn]:
    """``@given(**strategies)`` with the suite's settings, planning ``cases`` cases."""
    def apply(test: TestFn) -> TestFn:
        running = budget(cases)(test)
        wrapped: TestFn = settings(_FUZZ, max_examples=max_examples)(given(**strategies)(running))
        return wrapped
    return apply


def one_case() -> None:
    """Count one input run through a decoder or parser."""
    CASES[_RUNNING[0]] += 1


# The first case of an example draws through `drawn` (shrinkable), the rest through `rng`.
randoms: Final[dict[str, st.SearchStrategy[random.Random]]] = {
    "drawn": st.randoms(), "rng": st.randoms(use_true_random=True)}
