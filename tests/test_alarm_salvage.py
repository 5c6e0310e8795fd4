"""An SOS whose device clock is implausible is judged on its receipt time, end to end.

The review's case: a watch stamped a press 2099. Kept with that time, it opened an SOS episode
and an alert in 2099: every later press of the same wearer was raised against a 2099 episode
and folded into an alert whose ``last_ts`` stayed in 2099, so what dispatch was shown never moved.
The decoder now stamps such a press with the receipt time (docs/wire-contract.md, alarm
salvage), so the detector's episode join (docs/detectors.md, ``sos_window_s``) and the alert's
times are the receipt time's, like any other press's.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from alerts.store import AlertStore
from detectors.engine import DetectorEngine
from detectors.events import Event
from schemas import MessageDecoder, device_topic

T0 = int(datetime(2026, 3, 2, 2, 0, tzinfo=UTC).timestamp() * 1000)
TS_2099 = int(datetime(2099, 1, 1, tzinfo=UTC).timestamp() * 1000)
TOPIC = device_topic("371002", "WT-2099")
MINUTE = 60_000


class Watch:
    """A watch publishing through the service's decoder into one detector engine."""

    def __init__(self) -> None:
        self.decoder = MessageDecoder()
        self.engine = DetectorEngine()

    def press(self, *, device_ts: object, received_ms: int) -> list[Event]:
        out = self.decoder.decode(TOPIC, json.dumps({"type": "sos", "ts": device_ts}).encode(),
                                  now_ms=received_ms)
        assert len(out.readings) == 1
        n = len(out.readings)
        return self.engine.process(out.readings, ["371002"] * n, [received_ms] * n)


def test_a_press_stamped_2099_is_judged_on_its_receipt_time() -> None:
    watch = Watch()
    first = watch.press(device_ts=TS_2099, received_ms=T0)
    assert [(e.type, e.ts) for e in first] == [("sos", T0)]
    # Pressed again 30 s later (a good clock now): the same episode, no second page...
    assert watch.press(device_ts=T0 + 30_000, received_ms=T0 + 30_100) == []
    # ...and ten minutes later a new one, as for any press (not an episode kept in 2099).
    later = watch.press(device_ts=T0 + 10 * MINUTE, received_ms=T0 + 10 * MINUTE)
    assert [(e.type, e.ts) for e in later] == [("sos", T0 + 10 * MINUTE)]
    # Clocks reset to 1970 press after press: each press still joins or opens by receipt time.
    assert watch.press(device_ts=5_000, received_ms=T0 + 11 * MINUTE) == []
    assert len(watch.press(device_ts=9_000, received_ms=T0 + 20 * MINUTE)) == 1


def test_a_press_stamped_2099_no_longer_holds_its_alert_in_2099(store: AlertStore) -> None:
    watch = Watch()
    opened = store.fold(watch.press(device_ts=TS_2099, received_ms=T0), now_ms=T0)
    assert [c.action for c in opened] == ["opened"]
    alert_id = opened[0].alert_id
    later = watch.press(device_ts=T0 + 10 * MINUTE, received_ms=T0 + 10 * MINUTE)
    assert [c.action for c in store.fold(later, now_ms=T0 + 10 * MINUTE)] == ["updated"]
    alert = store.get(alert_id)
    assert alert["event_count"] == 2
    assert _ms(alert["first_ts"]) == T0 and _ms(alert["last_ts"]) == T0 + 10 * MINUTE
    # Resolved, the next press of the wearer opens (and routes) an alert of its own.
    store.resolve(alert_id, by="officer", outcome="false_alarm", now_ms=T0 + 15 * MINUTE)
    again = watch.press(device_ts=TS_2099, received_ms=T0 + 20 * MINUTE)
    changes = store.fold(again, now_ms=T0 + 20 * MINUTE)
    assert [c.action for c in changes] == ["opened"] and changes[0].alert_id != alert_id
    assert _ms(store.get(changes[0].alert_id)["first_ts"]) == T0 + 20 * MINUTE


def _ms(t: datetime) -> int:
    return round(t.timestamp() * 1000)
