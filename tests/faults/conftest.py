"""Fixtures of the fault suite: private services to break, and the report every test feeds.

Each fault test gets a private Mosquitto (the session's broker is shared by every other test and
must not be stopped), its own database on the session's PostgreSQL (or a private server from
``private_postgres`` when the fault is the database itself), services started through
``service_factory`` (stopped at teardown, their log tails printed when the test failed) and a
``fault_report`` to record its row. At session end the rows go to the JSON file named by
``ELDERCARE_FAULT_REPORT``, if set (``scripts/reliability``).
"""

from __future__ import annotations

import logging
import os
import random
import time
import uuid
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from foundation.ports import free_port
from tests.faults.dispatch import DispatchPlatform
from tests.faults.harness import AckedPublisher, Ledger, StreamPlan, fault_scale
from tests.faults.pgserver import PrivatePostgres
from tests.faults.process import ServiceProcess
from tests.faults.report import FaultRow, write_json
from tests.faults.rig import Mailbox, Rig, family_settings, policy_file, registry_file
from tests.services import Mosquitto

log = logging.getLogger("tests.faults")

_REPORT_KEY = pytest.StashKey[dict[str, pytest.TestReport]]()
_SETUP_KEY = pytest.StashKey[float]()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """When the test's setup began: a row's time includes starting its services."""
    item.stash[_SETUP_KEY] = time.monotonic()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item,
                              call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    """Keep each phase's report on the item, so teardown knows whether the test failed."""
    rep = yield
    item.stash.setdefault(_REPORT_KEY, {})[rep.when] = rep
    return rep


def _failed(request: pytest.FixtureRequest) -> bool:
    reports = request.node.stash.get(_REPORT_KEY, {})
    return any(r.failed for r in reports.values())


@pytest.fixture(scope="session")
def _fault_rows() -> Iterator[list[FaultRow]]:
    rows: list[FaultRow] = []
    yield rows
    target = os.environ.get("ELDERCARE_FAULT_REPORT")
    if target:
        write_json(Path(target), rows, scale=fault_scale())


class FaultReport:
    """Records the test's row: printed (``-rA`` / ``-s`` show it), logged, and kept for the
    session's JSON. The row's ``seconds`` is the test's wall time so far, setup included."""

    def __init__(self, rows: list[FaultRow], test: str, started: float) -> None:
        self._rows = rows
        self.test = test
        self.started = started
        self.row: FaultRow | None = None

    def record(self, row: FaultRow) -> FaultRow:
        row.test = row.test or self.test
        row.seconds = time.monotonic() - self.started
        self.row = row
        self._rows.append(row)
        print(row.line())
        log.warning("%s", row.line())
        return row


@pytest.fixture
def fault_report(_fault_rows: list[FaultRow], request: pytest.FixtureRequest) -> FaultReport:
    return FaultReport(_fault_rows, request.node.nodeid,
                       request.node.stash.get(_SETUP_KEY, time.monotonic()))


@pytest.fixture
def fault_seed(request: pytest.FixtureRequest) -> int:
    """The test's random seed: ``ELDERCARE_FAULT_SEED`` to replay one, else fresh; printed."""
    seed = int(os.environ.get("ELDERCARE_FAULT_SEED") or random.SystemRandom().randrange(2**31))
    print(f"{request.node.name}: seed {seed} (replay with ELDERCARE_FAULT_SEED={seed})")
    return seed


@pytest.fixture
def fault_broker(private_broker: Mosquitto) -> Mosquitto:
    """A private Mosquitto with persistence, restartable on the same port and data."""
    return private_broker


@pytest.fixture
def fault_region() -> str:
    return "f" + uuid.uuid4().hex[:10]


@pytest.fixture
def dispatch() -> Iterator[DispatchPlatform]:
    """The dispatch platform's webhook, failing on command (tests/faults/dispatch.py)."""
    platform = DispatchPlatform()
    yield platform
    platform.close()


@pytest.fixture
def service_factory(tmp_path: Path, request: pytest.FixtureRequest
                    ) -> Iterator[Callable[..., ServiceProcess]]:
    """Make :class:`ServiceProcess` objects (same arguments, ``workdir`` defaulted); each is
    stopped at teardown, and its log tail printed if the test failed."""
    made: list[ServiceProcess] = []

    def make(**kwargs: Any) -> ServiceProcess:
        kwargs.setdefault("workdir", tmp_path / "service")
        kwargs.setdefault("name", f"eldercare-{len(made) + 1}")
        kwargs.setdefault("client_id", "fault-" + uuid.uuid4().hex[:8])
        service = ServiceProcess(**kwargs)
        made.append(service)
        return service

    yield make
    for service in made:
        service.close()
        if _failed(request):
            print(service.log_tail(80))


@pytest.fixture
def private_postgres(tmp_path: Path) -> Iterator[PrivatePostgres]:
    """A PostgreSQL of this test alone, to stop and start (tests/faults/pgserver.py)."""
    with PrivatePostgres(tmp_path / "private-pg") as pg:
        yield pg


@pytest.fixture
def mailbox() -> Iterator[tuple[Mailbox, int]]:
    """A real SMTP server (aiosmtpd) on a free port, and what reached it."""
    box = Mailbox()
    port = free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    yield box, port
    controller.stop()


@pytest.fixture
def rig(fault_broker: Mosquitto, db_url: str, fault_region: str, dispatch: DispatchPlatform,
        mailbox: tuple[Mailbox, int], service_factory: Callable[..., ServiceProcess],
        tmp_path: Path) -> Iterator[Callable[..., Rig]]:
    """Start the service with ``policy`` options and ``settings``; yields a
    :class:`tests.faults.rig.Rig`. Family contacts get e-mail (``mailbox``), or SMS through
    the Aliyun stand-in at ``sms_endpoint`` when one is given."""
    publishers: list[AckedPublisher] = []

    def make(*, devices: int = 3, sms_endpoint: str | None = None,
             settings: dict[str, object] | None = None, **policy: int) -> Rig:
        ids = [f"PW-{i:03d}" for i in range(devices)]
        family = (family_settings(sms_endpoint=sms_endpoint) if sms_endpoint is not None
                  else family_settings(smtp_port=mailbox[1]))
        service = service_factory(
            mqtt_url=fault_broker.url, database_url=db_url, webhook_url=dispatch.url,
            registry=registry_file(tmp_path / "registry.yaml", fault_region, ids,
                                   sms=sms_endpoint is not None),
            settings={"alerts.policy_file": str(policy_file(tmp_path / "policy.yaml", **policy)),
                      "alerts.poll_s": 0.2, "alerts.mqtt_publish": False, **family,
                      **(settings or {})})
        service.start()
        publishers.append(AckedPublisher(fault_broker.url))
        return Rig(service, publishers[-1], Ledger(db_url, region=fault_region), fault_region,
                   ids)

    yield make
    for p in publishers:
        p.close()


@pytest.fixture
def plan_service(fault_broker: Mosquitto, db_url: str, dispatch: DispatchPlatform,
                 service_factory: Callable[..., ServiceProcess],
                 tmp_path: Path) -> Callable[[StreamPlan], ServiceProcess]:
    """Start the service for a :class:`StreamPlan`: the plan's devices in its registry, its
    alerts to ``dispatch``."""
    def start(plan: StreamPlan) -> ServiceProcess:
        registry = tmp_path / "registry.yaml"
        registry.write_text(plan.registry_yaml(), encoding="utf-8")
        service = service_factory(mqtt_url=fault_broker.url, database_url=db_url,
                                  registry=registry, webhook_url=dispatch.url)
        service.start()
        return service

    return start
