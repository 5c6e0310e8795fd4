"""Fault: a worker thread of the real service raises something other than a database error.

An outside review found that a writer raising ``RuntimeError`` (a driver bug, ``MemoryError``)
ended the pipeline thread while ``eldercare run`` kept waiting for a signal: the process stayed
up, "healthy", and deaf to every later SOS until a person restarted it. Now any worker that dies
unexpectedly stops the service in order and exits 70 (EX_SOFTWARE), so its supervisor (systemd,
Kubernetes) restarts it; the restart loses nothing, because nothing after the failure was
acknowledged and the broker redelivers it to the same persistent session.

Each case runs ``eldercare run`` with one injected bug (tests/faults/inject.py) that fires when
an SOS of the watch ``WD-BOOM`` passes through the worker: the commit writer, paho's network
thread (a thread eldercare does not start; ``threading.excepthook`` catches it) and the
pipeline thread's decoder. Around the SOS another watch streams ordinary readings. After the exit the service is
started again, without the bug: every acknowledged reading is stored once, and the SOS is
alerted to the dispatch webhook.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import now_ms
from tests.faults.dispatch import DispatchPlatform
from tests.faults.harness import (
    AckedPublisher,
    Ledger,
    ServiceProcess,
    device_message,
    registry_yaml,
    wait_until,
)
from tests.faults.stream import periodic_reading
from tests.services import Mosquitto

BOOM, CALM = "WD-BOOM", "WD-CALM"
#: foundation/supervisor.py EXIT_WORKER_DIED, as documented (docs/supervision.md)
EXIT_WORKER_DIED = 70


@pytest.mark.parametrize(("fault", "worker"), [
    ("writer", r"eldercare-pipeline"),
    ("network", r"paho-mqtt-client-\S+"),
    ("decoder", r"eldercare-pipeline"),
])
def test_a_dead_worker_stops_the_service_non_zero_and_the_restart_loses_nothing(
        fault: str, worker: str, fault_broker: Mosquitto, db_url: str, fault_region: str,
        dispatch: DispatchPlatform, service_factory: Callable[..., ServiceProcess],
        tmp_path: Path) -> None:
    rng = random.Random(f"worker-death-{fault}")
    registry = tmp_path / "registry.yaml"
    registry.write_text(registry_yaml(fault_region, [BOOM, CALM]), encoding="utf-8")
    service = service_factory(mqtt_url=fault_broker.url, database_url=db_url,
                              registry=registry, webhook_url=dispatch.url,
                              settings={"alerts.mqtt_publish": False, "alerts.poll_s": 0.2})
    service.start(inject=(fault, BOOM))
    publisher = AckedPublisher(fault_broker.url)
    ledger = Ledger(db_url, region=fault_region)
    try:
        start = now_ms() - 60_000
        for seq in range(20):
            publisher.publish(device_message(fault_region, CALM, [
                periodic_reading(rng, CALM, ts=start + seq * 1000, seq=seq)]))
        publisher.publish(device_message(fault_region, BOOM, [
            {"type": "sos", "ts": now_ms(), "seq": 1, "lat": 37.5, "lon": 122.1}]))
        pressed = time.monotonic()
        for seq in range(20, 40):
            publisher.publish(device_message(fault_region, CALM, [
                periodic_reading(rng, CALM, ts=start + seq * 1000, seq=seq)]))

        status = service.wait_exit(timeout_s=60)
        exited_after = time.monotonic() - pressed
        log = service.log_since(0)
        assert status == EXIT_WORKER_DIED, service.log_tail()
        assert re.search(rf"worker {worker} died: .*Error: injected", log), service.log_tail()
        assert re.search(r"eldercare: error: worker died: ", log), service.log_tail()
        print(f"{fault}: exited {status} {exited_after:.1f} s after the SOS was published")

        publisher.wait_acked(timeout_s=30)
        service.start()  # the same client id and spool: what a supervisor's restart does
        sent = [k for m in publisher.acked() for k in m.keys]
        wait_until(lambda: ledger.readings(sent).lost == 0, timeout_s=60, service=service,
                   what="every acknowledged reading stored after the restart")
        wait_until(lambda: ledger.alarms([BOOM], dispatch.received()).lost == 0,
                   timeout_s=60, service=service, what="the SOS alerted to dispatch")
        count = ledger.readings(sent)
        assert (count.sent, count.lost, count.duplicates) == (41, 0, 0)
        assert ledger.alarms([BOOM], dispatch.received()).duplicate_alerts == 0
        assert service.terminate() == 0
    finally:
        publisher.close()
