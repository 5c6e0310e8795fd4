"""Escalation as a pure state machine over an alert's ladder (issue #5; docs/alerts.md).

An alert carries ``status``, ``step`` (the next rung to climb), ``cycle`` (completed passes
through the ladder) and ``next_action_at`` (its persisted timer). This module decides, given
that state, the policy snapshot and ``now``, what happens when the timer fires; the store
(``alerts/escalator.py``) applies the decision and the deliveries in one transaction, so a
restart neither loses nor repeats a step. No I/O, no clock: time comes in as ``now_ms``.

The three kinds of acknowledgement are kept apart. A channel's delivery receipt changes
nothing here. A person's *claim* pauses escalation for ``claim_timeout_s``; if the alert is
still unresolved then, the claim expires and the ladder resumes where it stopped, because an
elder on the floor is not helped by an acknowledged alert. Only *resolution* ends escalation.

After ``repeat`` passes the priority is raised once, and the last rung repeats every
``wait_s`` until resolution: an unresolved alert never goes silent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from alerts.model import Status
from alerts.policy import Ladder


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do for one alert now.

    ``notify`` are the targets to notify now (empty: nothing to send) with ``action`` and the
    rung index ``rung``; the alert's new state is ``status``, ``step``, ``cycle`` and
    ``next_action_at_ms`` (None: no timer). ``audit`` lists (action, detail) entries to append.
    """

    status: Status
    step: int
    cycle: int
    next_action_at_ms: int | None
    notify: tuple[str, ...] = ()
    action: str = "notify"
    rung: int | None = None
    raise_priority: bool = False
    audit: tuple[tuple[str, dict[str, Any]], ...] = field(default=())


def on_open(ladder: Ladder, *, now_ms: int) -> Decision:
    """A new alert climbs the first rung at once, in the transaction that opens it."""
    return _climb(ladder, step=0, cycle=0, now_ms=now_ms, audit=())


def on_due(ladder: Ladder, *, status: Status, step: int, cycle: int, now_ms: int) -> Decision:
    """The alert's timer fired: climb the next rung, or resume after an expired claim."""
    if status == "resolved":  # a timer left behind by a race: nothing to do
        return Decision(status, step, cycle, None)
    audit: tuple[tuple[str, dict[str, Any]], ...] = ()
    if status == "acknowledged":
        audit = (("claim_expired", {"claim_timeout_s": ladder.claim_timeout_s}),)
    raised = False
    if step >= len(ladder.steps):  # a pass is complete
        cycle += 1
        if cycle < ladder.repeat:
            step = 0
            audit += (("ladder_repeated", {"cycle": cycle}),)
        else:
            step = len(ladder.steps) - 1  # keep calling on the last rung
            raised = cycle == ladder.repeat
            if raised:
                audit += (("priority_raised", {"after_cycles": cycle}),)
    return _climb(ladder, step=step, cycle=cycle, now_ms=now_ms, audit=audit,
                  raise_priority=raised)


def on_claim(ladder: Ladder, *, step: int, cycle: int, now_ms: int) -> Decision:
    """A person claimed the alert: the timer becomes the claim's timeout."""
    return Decision("acknowledged", step, cycle, now_ms + 1000 * ladder.claim_timeout_s)


def _climb(ladder: Ladder, *, step: int, cycle: int, now_ms: int,
           audit: tuple[tuple[str, dict[str, Any]], ...], raise_priority: bool = False
           ) -> Decision:
    rung = ladder.steps[step]
    detail = {"step": step, "cycle": cycle, "action": rung.action, "targets": list(rung.notify)}
    return Decision(
        status="open", step=step + 1, cycle=cycle, next_action_at_ms=now_ms + 1000 * rung.wait_s,
        notify=tuple(rung.notify), action=rung.action, rung=step, raise_priority=raise_priority,
        audit=(*audit, ("escalated" if step or cycle else "routed", detail)),
    )
