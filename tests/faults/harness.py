"""The fault suite's harness, in one import (each part lives in its own module):

- :class:`ServiceProcess` (``process.py``): ``eldercare run`` as a child process with a
  generated TOML config; ``start``, ``wait_ready``, ``sigkill``, ``terminate``, ``restart``,
  ``wait_log``, ``log_tail``. Failures end with the service's log tail.
- :class:`StreamPlan`, :class:`AckedPublisher`, :class:`Stream` (``stream.py``): deterministic
  readings over many devices with SOS presses on distinct devices, published at QoS 1 from a
  background thread; exactly which messages the broker acknowledged.
- :class:`Ledger` (``ledger.py``): readings stored per key, missing and duplicated; SOS events,
  alerts and webhook deliveries per press; dead letters, outbox rows, audit trails.
- :class:`DispatchPlatform` (``dispatch.py``): the dispatch webhook that fails on command (5xx,
  hangs, connection refused) and records what it answered.
- :class:`PrivatePostgres` (``pgserver.py``): a PostgreSQL of one test, to stop and start.
- :class:`FaultRow` (``report.py``): the row each fault test records (fixture ``fault_report``).

Fixtures (``conftest.py``): ``fault_scale``, ``fault_seed``, ``fault_broker`` (a private
Mosquitto with persistence, restartable), ``service_factory``, ``dispatch``,
``private_postgres``, ``fault_report``, ``plan_service`` (the service for a StreamPlan),
``mailbox`` and ``rig`` (the alert-provider tests, rig.py).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence

from tests.faults.dispatch import DispatchPlatform, Post
from tests.faults.ledger import AlarmCount, DeadLetter, Delivery, Ledger, ReadingCount
from tests.faults.pgserver import PrivatePostgres
from tests.faults.process import WEBHOOK_SECRET, ServiceError, ServiceProcess, toml_text
from tests.faults.report import FaultRow
from tests.faults.stream import (
    AckedPublisher,
    Outgoing,
    ReadingKey,
    Stream,
    StreamPlan,
    device_message,
    gateway_message,
    registry_yaml,
    streaming,
)

__all__ = [
    "WEBHOOK_SECRET", "AckedPublisher", "AlarmCount", "DeadLetter", "Delivery",
    "DispatchPlatform", "FaultRow", "Ledger", "Outgoing", "Post", "PrivatePostgres",
    "ReadingCount", "ReadingKey", "ServiceError", "ServiceProcess", "Stream", "StreamPlan",
    "device_message", "fault_scale", "gateway_message", "registry_yaml", "scaled", "settle",
    "streaming", "toml_text", "wait_until",
]


def fault_scale() -> float:
    """``ELDERCARE_FAULT_SCALE`` (default 1.0): sizes of the heavy scenarios are multiplied by
    it, for quick local runs (0.1) or soak runs (5)."""
    raw = os.environ.get("ELDERCARE_FAULT_SCALE", "1.0")
    try:
        value = float(raw)
    except ValueError as exc:
        raise ValueError(f"ELDERCARE_FAULT_SCALE must be a number, got {raw!r}") from exc
    if not 0 < value <= 100:
        raise ValueError(f"ELDERCARE_FAULT_SCALE must be in (0, 100], got {value}")
    return value


def scaled(n: int, *, minimum: int = 1) -> int:
    """``n`` times the fault scale, at least ``minimum``."""
    return max(minimum, round(n * fault_scale()))


def settle(ledger: Ledger, *, acked: set[ReadingKey], sos_devices: Sequence[str],
           dispatch: DispatchPlatform, service: ServiceProcess, timeout_s: float) -> None:
    """After a stream: wait until every acknowledged reading is stored and every SOS alert
    reached the dispatch webhook (a kill may hold one for its 30 s delivery lease)."""
    wait_until(lambda: ledger.count_readings() >= len(acked), timeout_s=timeout_s,
               service=service, what=f"{len(acked):,} acknowledged readings stored")
    wait_until(lambda: ledger.alarms(sos_devices, dispatch.received()).delivered
               == len(sos_devices), timeout_s=timeout_s, service=service,
               what="every SOS alert at the dispatch webhook")


def wait_until(predicate: Callable[[], object], *, timeout_s: float, what: str,
               service: ServiceProcess | None = None, poll_s: float = 0.1) -> float:
    """Poll ``predicate`` until truthy; returns the seconds it took. On timeout fails naming
    ``what``, with the service's log tail when given (a condition, never a fixed sleep)."""
    start = time.monotonic()
    while True:
        if predicate():
            return time.monotonic() - start
        if time.monotonic() - start > timeout_s:
            tail = f"\n{service.log_tail()}" if service is not None else ""
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}{tail}")
        time.sleep(poll_s)
