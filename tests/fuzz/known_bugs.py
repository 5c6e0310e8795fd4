"""Crashes the fuzzers found that are not fixed yet, and the parser contract that tolerates them.

Each entry of :data:`KNOWN_BUGS` is a crash signature (exception types, message pattern, a file
on the traceback) and has an ``xfail(strict=True)`` test with its smallest input. The property
tests count a known signature in ``KNOWN_HITS`` and go on hunting; anything else fails them.
When a bug is fixed, its strict xfail passes, which fails the run: then delete its entry here
and make its test a plain one.
"""

from __future__ import annotations

import re
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from tests.fuzz.budget import KNOWN_HITS, one_case


@dataclass(frozen=True, slots=True)
class KnownBug:
    """A crash signature: exception types, message pattern, a file on the traceback."""

    key: str
    parsers: frozenset[str]
    exc: tuple[type[BaseException], ...]
    message: str
    raised_in: str


class KnownBugHit(Exception):
    """Raised by a known-bug test when the parser fails with exactly the pinned signature."""


KNOWN_BUGS: Final[tuple[KnownBug, ...]] = ()  # none open: all found so far are fixed


def known_bug(parser: str, exc: BaseException) -> str | None:
    """The key of the known bug ``exc`` is an instance of, in ``parser``, or None."""
    files = [f.filename for f in traceback.extract_tb(exc.__traceback__)]
    for bug in KNOWN_BUGS:
        if (parser in bug.parsers and isinstance(exc, bug.exc)
                and re.search(bug.message, str(exc))
                and any(bug.raised_in in name for name in files)):
            return bug.key
    return None


def accept_or_refuse(parser: str, call: Callable[[], object], documented: type[Exception],
                     result: type, doc: object) -> None:
    """One parser case: ``result`` comes back or ``documented`` is raised with a message; a
    known bug is counted; anything else fails, showing the input."""
    one_case()
    try:
        value = call()
    except documented as exc:
        assert str(exc).strip(), "an error must say what is wrong"
        return
    except Exception as exc:  # anything but the documented error: is it a known bug?
        bug = known_bug(parser, exc)
        if bug is None:
            raise AssertionError(f"{parser} raised {exc!r} for {doc!r:.3000}") from exc
        KNOWN_HITS[bug] += 1
        return
    assert isinstance(value, result)


def pin_known_bug(parser: str, bug: str, call: Callable[[], object],
                  documented: type[Exception]) -> None:
    """The body of a known bug's strict-xfail test: passes once ``call`` raises ``documented``,
    raises :class:`KnownBugHit` (the expected failure) for exactly the pinned signature, and
    lets anything else fail the test."""
    try:
        call()
    except documented:
        return
    except Exception as exc:  # classify, then fail
        if known_bug(parser, exc) == bug:
            raise KnownBugHit(f"{bug}: {exc!r}") from exc
        raise
