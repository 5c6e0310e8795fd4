"""Shared fixtures: real Mosquitto and PostgreSQL (see tests/services.py)."""

from __future__ import annotations

import itertools
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from alerts.store import AlertStore
from alerts.webhook_receiver import Receiver
from eldercare.config import Config, load_config
from eldercare.schema import migrate
from tests.aliyun_fake import FakeAliyun
from tests.services import Mosquitto, Postgres

if TYPE_CHECKING:
    from playwright.sync_api import Browser


@pytest.fixture(autouse=True)
def _private_state_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test its own default spool directory (``$XDG_STATE_HOME/eldercare/spool``): one
    test's spooled messages must never replay into another test's database."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Postgres]:
    pg = Postgres(tmp_path_factory.mktemp("pg"))
    yield pg
    pg.close()


@pytest.fixture
def db_url(postgres: Postgres) -> Iterator[str]:
    with postgres.database() as url:
        yield url


@pytest.fixture
def migrated_db(db_url: str) -> str:
    """The test's database with every migration applied (plain PostgreSQL)."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        migrate(conn, timescale="off")
    return db_url


@pytest.fixture
def store(migrated_db: str) -> Iterator[AlertStore]:
    """An alert store on the migrated database, default policy and routing."""
    with AlertStore(migrated_db) as s:
        yield s


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A local HTTP server standing in for the 12349 dispatch platform's webhook."""
    r = Receiver()
    yield r
    r.close()


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    b = Mosquitto(tmp_path_factory.mktemp("mosquitto"))
    b.start()
    yield b
    b.stop()


@pytest.fixture
def private_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A Mosquitto of this test alone, with persistence: free to be restarted (same port and
    data) without disturbing the session broker."""
    b = Mosquitto(tmp_path / "mosquitto")
    b.start()
    yield b
    b.stop()


@pytest.fixture
def region() -> str:
    """A unique region per test, so topics never collide between tests."""
    return "t" + uuid.uuid4().hex[:10]


@pytest.fixture
def make_config(broker: Mosquitto, db_url: str) -> Callable[..., Config]:
    counter = itertools.count()
    client_id = "eldercare-test-" + uuid.uuid4().hex[:8]

    def make(**overrides: object) -> Config:
        base: dict[str, object] = {
            "mqtt.url": broker.url, "mqtt.client_id": client_id, "database.url": db_url,
            "metrics.port": 0, "ingest.linger_ms": 20, "api.port": 0,
        }
        base.update(overrides)
        next(counter)
        return load_config(path=None, env={}, overrides=base)

    return make


class Publisher:
    """A plain paho QoS 1 publisher that waits for every PUBACK."""

    def __init__(self, url: str) -> None:
        host, port = url.removeprefix("mqtt://").split(":")
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5,
                                  client_id="pub-" + uuid.uuid4().hex[:8])
        self.client.connect(host, int(port))
        self.client.loop_start()

    def publish(self, topic: str, payload: bytes, **kw: object) -> None:
        info = self.client.publish(topic, payload, qos=1, **kw)  # type: ignore[arg-type]
        info.wait_for_publish(10)
        assert info.is_published()

    def close(self) -> None:
        stop_paho(self.client)


def stop_paho(client: mqtt.Client) -> None:
    """Disconnect and stop a paho client's network thread, and close the socket pair that
    ``loop_start`` opened: paho (2.1) leaves it to the garbage collector, whose ResourceWarning
    then lands, as an unraisable-exception warning (an error here), in whichever test runs."""
    client.disconnect()
    client.loop_stop()
    client._reset_sockets(sockpair_only=True)


@pytest.fixture
def publisher(broker: Mosquitto) -> Iterator[Publisher]:
    p = Publisher(broker.url)
    yield p
    p.close()


def wait_for(predicate: Callable[[], object], timeout_s: float = 15.0, what: str = "") -> None:
    """Poll until ``predicate()`` is truthy; fail with ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def count(url: str, sql: str, *args: object) -> int:
    with psycopg.connect(url) as c:
        row = c.execute(sql, args).fetchone()
    assert row is not None
    return int(row[0])


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@pytest.fixture
def tmp(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture
def aliyun() -> Iterator[FakeAliyun]:
    """A local stand-in for Aliyun's SMS and voice APIs (tests/aliyun_fake.py), running."""
    fake = FakeAliyun()
    fake.start()
    yield fake
    fake.stop()


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    assert found, "Chromium is missing: scripts/test installs Debian's chromium package"
    return found


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's headless Chromium driven by Playwright, one per test module (the console)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium(), headless=True,
                              args=["--no-sandbox", "--disable-dev-shm-usage"])
        yield b
        b.close()

