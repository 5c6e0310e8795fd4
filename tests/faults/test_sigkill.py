"""Fault: the ingest service killed with SIGKILL at random moments during a stream (issue #7).

A 100,000-reading stream (``ELDERCARE_FAULT_SCALE`` scales it) over 500 registered watches,
with 20 SOS presses on distinct watches, is published at QoS 1 while the service is killed 10
times and restarted each time with the same client id (its persistent session) and the same
spool directory. Nothing is drained, flushed or acknowledged at a kill. Afterwards:

- every reading the broker acknowledged is stored exactly once (keys compared, rows counted);
- every SOS press has one event, one alert, and its ``alert.opened`` reached the dispatch
  webhook, signed; no escalation rung reached it twice. Duplicate deliveries of one message
  (same ``Idempotency-Key``) are counted, not failed: delivery is at-least-once, and a kill
  between the POST and the commit of its receipt sends it again after the 30 s lease;
- the last run stops cleanly on SIGTERM.

The kill moments come from a seeded generator whose seed is printed.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

import pytest

from tests.conftest import now_ms
from tests.faults.conftest import FaultReport
from tests.faults.dispatch import DispatchPlatform
from tests.faults.harness import (
    FaultRow,
    Ledger,
    ServiceProcess,
    StreamPlan,
    fault_scale,
    scaled,
    settle,
    streaming,
)
from tests.services import Mosquitto


def kill_moments(rng: random.Random, *, kills: int, duration_s: float) -> list[float]:
    """One kill somewhere in each of ``kills`` equal slices of the stream (seconds from its
    start), so kills spread over the whole stream yet land at random phases of the work."""
    return [duration_s * (i + rng.uniform(0.05, 0.95)) / kills for i in range(kills)]


# Soak runs (ELDERCARE_FAULT_SCALE > 1) take longer than the suite's 300 s default.
@pytest.mark.timeout(max(300, round(200 * fault_scale())))
def test_sigkill_loses_no_acknowledged_reading_and_alerts_each_sos_once(
        fault_broker: Mosquitto, db_url: str, fault_region: str, dispatch: DispatchPlatform,
        plan_service: Callable[[StreamPlan], ServiceProcess], fault_report: FaultReport,
        fault_seed: int) -> None:
    rng = random.Random(fault_seed)
    kills = scaled(10, minimum=3)
    plan = StreamPlan.generate(region=fault_region, readings=scaled(100_000, minimum=2_000),
                               sos=scaled(20, minimum=3), seed=fault_seed,
                               start_ms=now_ms() - 3 * 3600_000)
    service = plan_service(plan)
    duration_s = 5.0 * kills
    ready_s: list[float] = []
    with streaming(fault_broker.url, plan, duration_s=duration_s) as publisher:
        t0 = time.monotonic()
        for moment in kill_moments(rng, kills=kills, duration_s=duration_s):
            ready_s.append(service.wait_ready(timeout_s=90))
            delay = t0 + moment - time.monotonic()
            if delay > 0:
                time.sleep(delay)  # the fault's timing, not a wait for a result
            service.sigkill()
            service.start(wait=False)
        ready_s.append(service.wait_ready(timeout_s=90))

    acked = publisher.acked_keys()
    ledger = Ledger(db_url, region=fault_region)
    settle(ledger, acked=acked, sos_devices=plan.sos_devices, dispatch=dispatch, service=service,
           timeout_s=180)
    exit_status = service.terminate()
    readings = ledger.readings(acked)
    alarms = ledger.alarms(plan.sos_devices, dispatch.received())
    fault_report.record(FaultRow(
        fault=f"ingest killed (SIGKILL) {kills}x during a {plan.readings:,}-reading stream,"
              " restarted with the same session",
        injections=service.kills, sent=readings.sent, stored=readings.stored,
        alerted=alarms.delivered, lost=readings.lost + alarms.lost,
        note=f"seed {fault_seed}; {alarms.presses} SOS: {alarms.events} events, {alarms.alerts}"
             f" alerts, {alarms.duplicate_deliveries} duplicate webhook POSTs (same"
             f" Idempotency-Key); duplicate rows {readings.duplicates}; restart to ready"
             f" max {max(ready_s):.1f} s",
        extra={"seed": fault_seed, "readings": readings.sent, "kills": service.kills,
               "published_readings": plan.readings, "unacked_stored": readings.unacked_stored,
               "ready_s": [round(s, 2) for s in ready_s]}))

    assert readings.missing == (), f"acknowledged readings lost: {readings.missing[:10]}"
    assert readings.duplicates == 0
    assert readings.sent == plan.readings  # the broker, never down here, took everything
    assert (alarms.events, alarms.alerts, alarms.delivered) == (alarms.presses,) * 3, alarms
    assert (alarms.duplicate_events, alarms.duplicate_alerts) == (0, 0), alarms
    assert (alarms.reopened, alarms.rungs_twice) == (0, 0), alarms
    assert dispatch.bad_signatures() == 0
    assert ledger.dead_letters() == []
    assert exit_status == 0, service.log_tail()
