"""Escalation as a pure state machine (alerts/escalation.py) and the policy file (alerts/policy.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from alerts.escalation import on_claim, on_due, on_open
from alerts.policy import Ladder, Step, ladder_of, load_policy
from foundation.errors import ConfigError

T0 = 1_700_000_000_000
LADDER = Ladder(steps=[Step(notify=["dispatch", "family:1"], wait_s=60),
                       Step(notify=["dispatch"], action="call_elder", wait_s=120)],
                claim_timeout_s=600, repeat=2)


def test_open_climbs_the_first_rung_at_once_and_sets_the_timer() -> None:
    d = on_open(LADDER, now_ms=T0)
    assert d.notify == ("dispatch", "family:1") and d.rung == 0 and d.status == "open"
    assert (d.step, d.cycle, d.next_action_at_ms) == (1, 0, T0 + 60_000)
    assert d.audit[-1][0] == "routed"


def test_the_ladder_repeats_then_raises_priority_once_and_never_goes_silent() -> None:
    d = on_open(LADDER, now_ms=T0)
    seen = []
    now = T0
    for _ in range(6):
        assert d.next_action_at_ms is not None
        now = d.next_action_at_ms
        d = on_due(LADDER, status="open", step=d.step, cycle=d.cycle, now_ms=now)
        seen.append((d.rung, d.cycle, d.raise_priority, d.action))
    assert seen == [
        (1, 0, False, "call_elder"),          # second rung after 60 s
        (0, 1, False, "notify"),              # second pass
        (1, 1, False, "call_elder"),
        (1, 2, True, "call_elder"),           # repeat=2 passes done: priority raised once...
        (1, 3, False, "call_elder"),          # ...and the last rung keeps calling
        (1, 4, False, "call_elder"),
    ]
    assert now == T0 + 60_000 + 120_000 + 60_000 + 120_000 + 120_000 + 120_000


def test_a_claim_pauses_and_an_expired_claim_resumes_where_the_ladder_stopped() -> None:
    d = on_open(LADDER, now_ms=T0)
    c = on_claim(LADDER, step=d.step, cycle=d.cycle, now_ms=T0 + 30_000)
    assert c.status == "acknowledged" and c.next_action_at_ms == T0 + 630_000 and not c.notify
    r = on_due(LADDER, status="acknowledged", step=c.step, cycle=c.cycle, now_ms=T0 + 630_000)
    assert r.status == "open" and r.rung == 1 and r.notify == ("dispatch",)
    assert [a for a, _ in r.audit] == ["claim_expired", "escalated"]


def test_a_resolved_alert_has_nothing_left_to_do() -> None:
    d = on_due(LADDER, status="resolved", step=1, cycle=0, now_ms=T0)
    assert d.notify == () and d.next_action_at_ms is None


def test_default_policy_routes_every_alert_type_and_snapshots_survive_a_round_trip() -> None:
    policy = load_policy()
    day = policy.snapshot("geofence_exit", night=False)
    night = policy.snapshot("geofence_exit", night=True)
    assert day["ladder"] == "wandering_day" and day["steps"][0]["notify"] == ["family:1"]
    assert day["steps"][0]["wait_s"] == 300          # dispatch after 5 min without a claim
    assert night["steps"][0]["notify"][0] == "dispatch"   # at once at night
    sos = policy.snapshot("sos", night=False)
    assert sos["steps"][0]["notify"] == ["dispatch", "family:1"]
    assert ladder_of(sos) == policy.ladders["life_safety"]
    assert policy.snapshot("low_battery", night=False)["steps"][0]["notify"] == ["family:1"]


@pytest.mark.parametrize(("text", "message"), [
    ("ladders: {a: {steps: [{notify: [dispatch], wait_s: 60}]}}\nroutes: {sos: {ladder: b}}",
     "unknown ladder 'b'"),
    ("ladders: {a: {steps: [{notify: [dispatch], wait_s: 60}]}}\nroutes: {sos: {ladder: a}}",
     "no route for alert type(s)"),
    ("ladders: {a: {steps: [{notify: ['family:0'], wait_s: 60}]}}\nroutes: {}",
     "$.ladders[...].steps[0].notify[0]"),
    ("ladders: {a: {steps: [{notify: [dispatch], wait_s: 0}]}}\nroutes: {}",
     "$.ladders[...].steps[0].wait_s"),
])
def test_policy_errors_name_the_bad_entry(tmp_path: Path, text: str, message: str) -> None:
    f = tmp_path / "policy.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_policy(f)


def test_life_safety_alerts_can_be_neither_grouped_nor_kept_from_dispatch(tmp_path: Path) -> None:
    base = Path(__file__).parent.parent / "alerts" / "policy.yaml"
    grouped = base.read_text().replace("    dedup_window_s: 60\n",
                                       "    dedup_window_s: 60\n    group_window_s: 30\n")
    f = tmp_path / "p.yaml"
    f.write_text(grouped)
    with pytest.raises(ConfigError, match="must not be grouped"):
        load_policy(f)
    f.write_text(base.read_text().replace('- {notify: [dispatch, "family:1"], wait_s: 60}',
                                          '- {notify: ["family:1"], wait_s: 60}'))
    with pytest.raises(ConfigError, match="must notify dispatch"):
        load_policy(f)
