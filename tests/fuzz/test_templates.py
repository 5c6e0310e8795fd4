"""Fuzzing ``alerts.templates.render``: any JSON alert body renders, in every language (a text
with a blank beats no alarm)."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from typing import Any, Final

from alerts.templates import TYPE_WORDS, Rendered, render
from tests.fuzz.budget import fuzz, one_case, randoms
from tests.fuzz.values import r_id, r_json, r_text, to_json

TIMESTAMPS: Final = ("2026-03-02T07:55:00Z", "2026-03-02T07:55:00", "9999-12-31T23:59:59-23:59",
                     "0001-01-01T00:00:00+23:59", "2026-13-01", "", "now", "2026-03-02")
ZONES: Final = ("Asia/Shanghai", "UTC", "Asia", "Europe/London", "a" * 300, "\x00", "../x",
                "/etc/localtime", "")


def r_alert(rng: random.Random) -> Any:
    """An alert object: plausible fields, some of them random or of a wrong type."""
    plausible: dict[str, Callable[[], object]] = {
        "type": lambda: rng.choice([*TYPE_WORDS["en"], "teleport"]),
        "wearer": lambda: {"name": rng.choice(("张秀英", "", r_text(rng, 40)))},
        "device_id": lambda: r_id(rng), "map_link": lambda: "https://m.example/?q=1",
        "priority": lambda: rng.randint(0, 5), "event_count": lambda: rng.randint(-1, 10**6),
        "first_ts": lambda: rng.choice(TIMESTAMPS), "last_ts": lambda: rng.choice(TIMESTAMPS),
        "timezone": lambda: rng.choice(ZONES),
    }
    return {k: make() if rng.random() < 0.7 else r_json(rng, 2)
            for k, make in plausible.items() if rng.random() < 0.7}


def r_body(rng: random.Random) -> dict[str, Any]:
    """An alert document as the outbox holds it, or any JSON object."""
    if rng.random() < 0.1:
        junk = r_json(rng)
        return junk if isinstance(junk, dict) else {"alert": junk}
    body: dict[str, Any] = {"event": rng.choice(("alert.opened", "alert.grouped", "alert.resolved",
                                                 "alert.escalated", "alert.claim_expired",
                                                 "alert.acknowledged", None, r_text(rng)))}
    body["alert"] = r_alert(rng) if rng.random() < 0.8 else r_json(rng, 2)
    if rng.random() < 0.5:
        body["alerts"] = ([r_alert(rng) for _ in range(rng.randint(0, 4))]
                          if rng.random() < 0.7 else r_json(rng, 2))
    if rng.random() < 0.5:
        body["escalation"] = {"step": r_json(rng, 1)} if rng.random() < 0.7 else r_json(rng, 1)
    return body


RENDERS: Final = 10


@fuzz(300, cases=300 * (RENDERS + 1) * 3, **randoms)
def test_render_never_raises(drawn: random.Random, rng: random.Random) -> None:
    """Any JSON alert body renders, in every language (a text with a blank beats no alarm)."""
    for r in [drawn] + [rng] * RENDERS:
        body = json.loads(to_json(r_body(r)))  # what the outbox hands over: parsed JSON
        for lang in ("zh", "en", r_text(r, 6)):
            one_case()
            out = render(body, language=lang)
            assert isinstance(out, Rendered) and out.text and out.subject, body
            assert set(out.params) == {"name", "type", "time", "link"}

