"""Fault: Mosquitto stopped and restarted mid-stream, persistence on (issue #7).

A stream of 30,000 readings (``ELDERCARE_FAULT_SCALE`` scales it) with SOS presses runs while the
broker is stopped (SIGTERM: it writes its persistence file) for one to four seconds and started
again, three times, at random moments. Devices (the publisher) buffer and resend what the broker
never acknowledged, as real ones do. The service is never touched: it must reconnect by itself
(paho's reconnect paced by our jittered backoff, our persistent session) and lose nothing the
broker acknowledged. The reconnect time is measured from the broker listening again to the
service's log saying its session is back; it must stay within the backoff ceiling (2 s) plus
slack for a loaded machine. (Before the ceiling, paho's 1-30 s doubling took up to 11 s.)
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

import pytest

from foundation.broker import DEFAULT_RECONNECT_MAX_S
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
from tests.faults.process import SESSION_LINE
from tests.services import Mosquitto

#: The service's reconnect backoff tops out at DEFAULT_RECONNECT_MAX_S (foundation/broker.py); a
#: reconnect must come within that plus a connection's worth of slack on a loaded machine (the
#: broker reloading its persistence, the publisher's backlog arriving at the same moment).
RECONNECT_LIMIT_S = DEFAULT_RECONNECT_MAX_S + 4.0


# Soak runs (ELDERCARE_FAULT_SCALE > 1) take longer than the suite's 300 s default.
@pytest.mark.timeout(max(300, round(150 * fault_scale())))
def test_broker_restarts_lose_nothing_and_the_service_reconnects_by_itself(
        fault_broker: Mosquitto, db_url: str, fault_region: str, dispatch: DispatchPlatform,
        plan_service: Callable[[StreamPlan], ServiceProcess], fault_report: FaultReport,
        fault_seed: int) -> None:
    rng = random.Random(fault_seed)
    restarts = 3
    plan = StreamPlan.generate(region=fault_region, readings=scaled(30_000, minimum=3_000),
                               sos=scaled(9, minimum=3), seed=fault_seed,
                               start_ms=now_ms() - 3600_000)
    service = plan_service(plan)
    pid = service.pid
    duration_s = 8.0 * restarts
    reconnect_s: list[float] = []
    down_s: list[float] = []
    with streaming(fault_broker.url, plan, duration_s=duration_s) as publisher:
        t0 = time.monotonic()
        for i in range(restarts):
            delay = t0 + duration_s * (i + rng.uniform(0.1, 0.6)) / restarts - time.monotonic()
            if delay > 0:
                time.sleep(delay)  # the fault's timing
            mark = service.log_size()
            fault_broker.stop()
            down_s.append(rng.uniform(1.0, 4.0))
            time.sleep(down_s[-1])  # the outage's length is the fault
            fault_broker.start()
            reconnect_s.append(service.wait_log(SESSION_LINE, after=mark,
                                                timeout_s=RECONNECT_LIMIT_S + 30,
                                                what="the service's session back"))

    acked = publisher.acked_keys()
    ledger = Ledger(db_url, region=fault_region)
    settle(ledger, acked=acked, sos_devices=plan.sos_devices, dispatch=dispatch, service=service,
           timeout_s=180)
    same_process = service.pid == pid and service.running
    exit_status = service.terminate()
    readings = ledger.readings(acked)
    alarms = ledger.alarms(plan.sos_devices, dispatch.received())
    fault_report.record(FaultRow(
        fault=f"Mosquitto stopped and restarted {restarts}x mid-stream (persistence on;"
              f" down {min(down_s):.1f}-{max(down_s):.1f} s)",
        injections=restarts, sent=readings.sent, stored=readings.stored,
        alerted=alarms.delivered, lost=readings.lost + alarms.lost,
        note=f"seed {fault_seed}; service reconnected by itself in"
             f" {min(reconnect_s):.1f}-{max(reconnect_s):.1f} s after the broker was back;"
             f" {alarms.presses} SOS alerted once each; duplicate rows {readings.duplicates};"
             f" {publisher.stats.connects - 1} publisher reconnects",
        extra={"seed": fault_seed, "reconnect_s": [round(s, 2) for s in reconnect_s],
               "down_s": [round(s, 2) for s in down_s], "published": plan.readings,
               "unacked_stored": readings.unacked_stored}))

    assert readings.missing == (), f"acknowledged readings lost: {readings.missing[:10]}"
    assert readings.duplicates == 0
    assert readings.sent == plan.readings  # the publisher resent what the broker had not taken
    assert same_process, "the service must ride out broker restarts without a restart"
    assert max(reconnect_s) <= RECONNECT_LIMIT_S, reconnect_s
    assert (alarms.events, alarms.alerts, alarms.delivered) == (alarms.presses,) * 3, alarms
    assert (alarms.duplicate_events, alarms.duplicate_alerts, alarms.reopened) == (0, 0, 0)
    assert dispatch.bad_signatures() == 0
    assert exit_status == 0, service.log_tail()
