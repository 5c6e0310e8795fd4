"""The device gateway end to end (issue #10): a simulated 3G watch over real TCP, the gateway
process's code, a real Mosquitto, and the service storing and raising what the watch reported.

The watch speaks the real protocol from a plain socket. The gateway runs in a thread of its own
(its asyncio loop, as ``eldercare gateway watch`` runs it); the service is the application as
``eldercare run`` builds it. The alarm's reply must come only after the broker acknowledged the
alarm: with the broker stopped it does not come, and it comes once the broker is back.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Self

import pytest

from eldercare.config import Config, load_config
from eldercare.gateway_cli import serve
from foundation.ports import free_port
from tests.conftest import count, wait_for
from tests.services import Mosquitto

WATCH = "8800000015"


def frame(content: str, *, device: str = WATCH, vendor: str = "3G") -> bytes:
    return f"[{vendor}*{device}*{len(content.encode()):04X}*{content}]".encode()


def report(command: str, status: int, *, valid: bool = True) -> bytes:
    """A UD/AL report: now (UTC), a fix in Weihai, 80 % battery and ``status``."""
    from datetime import UTC, datetime
    now = datetime.now(UTC)
    fields = [command, now.strftime("%d%m%y"), now.strftime("%H%M%S"), "A" if valid else "V",
              "37.513300", "N", "122.120500", "E", "0.00", "0", "10", "8", "90", "80", "0", "0",
              f"{status:08X}", "0", "0"]
    return frame(",".join(fields))


class Gateway:
    """``eldercare gateway watch`` in a thread: its own asyncio loop, stopped on exit."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.loop: asyncio.AbstractEventLoop | None = None
        self.ready = threading.Event()
        #: Set once the gateway's broker link is up and subscribed to commands.
        self.linked = threading.Event()
        self._stop: asyncio.Event | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="test-gateway", daemon=True)

    def _run(self) -> None:
        async def main() -> None:
            self.loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            ready, linked = asyncio.Event(), asyncio.Event()
            linked_flag = asyncio.create_task(linked.wait())
            linked_flag.add_done_callback(lambda _: self.linked.set())
            task = asyncio.create_task(serve(self.config, ready=ready, stop=self._stop,
                                             linked=linked))
            await ready.wait()
            self.ready.set()
            await task

        try:
            asyncio.run(main())  # closes the loop, as the CLI's does
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            self.error = exc
            self.ready.set()

    def __enter__(self) -> Self:
        self.thread.start()
        assert self.ready.wait(15) and self.error is None, self.error
        return self

    def __exit__(self, *exc: object) -> None:
        if self._stop is not None and self.loop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        self.thread.join(30)
        assert not self.thread.is_alive()


class Watch:
    """A watch on a plain TCP socket."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def reply(self, timeout_s: float = 10.0) -> bytes | None:
        """The next whole reply frame, or None if none comes within ``timeout_s``."""
        self.sock.settimeout(timeout_s)
        while b"]" not in self.buf:
            try:
                chunk = self.sock.recv(4096)
            except TimeoutError:
                return None
            if not chunk:
                return None
            self.buf += chunk
        end = self.buf.index(b"]") + 1
        out, self.buf = self.buf[:end], self.buf[end:]
        return out

    def close(self) -> None:
        self.sock.close()


@contextmanager
def watch(port: int) -> Iterator[Watch]:
    w = Watch(port)
    try:
        yield w
    finally:
        w.close()


def gateway_config(broker_url: str, region: str) -> Config:
    return load_config(path=None, env={}, overrides={
        "mqtt.url": broker_url, "gateway.protocol": "watch", "gateway.region": region,
        "gateway.listen": f"127.0.0.1:{free_port()}", "gateway.client_id": f"gw-{region}"})


def port_of(config: Config) -> int:
    return int(config.gateway.listen.rpartition(":")[2])


def test_a_watch_through_the_gateway_is_stored_and_its_sos_and_low_battery_raised(
        make_config: Callable[..., Config], broker: Mosquitto, region: str,
        db_url: str) -> None:
    from eldercare.app import Application

    gw = gateway_config(broker.url, region)
    with Application(make_config()), Gateway(gw), watch(port_of(gw)) as w:
        w.send(frame("LK,0,0,80"))
        assert w.reply() == frame("LK")                      # a keepalive is answered at once
        w.send(report("UD", 0))
        # SOS and low battery in one alarm frame: both, not the first bit alone.
        w.send(report("AL", (1 << 16) | (1 << 17)))
        assert w.reply() == frame("AL")
        wait_for(lambda: count(db_url, "SELECT count(*) FROM detection_events WHERE device_id"
                               " = %s AND type IN ('sos', 'low_battery')", WATCH) == 2,
                 timeout_s=15, what="the SOS and the low battery raised")
    stored = {t for (t,) in _rows(db_url, "SELECT DISTINCT type FROM readings WHERE"
                                  " device_id = %s", WATCH)}
    assert {"location", "sos", "device_alarm"} <= stored
    assert count(db_url, "SELECT count(*) FROM readings WHERE device_id = %s AND type ="
                 " 'device_alarm' AND alarm = 'low_battery'", WATCH) == 1
    assert count(db_url, "SELECT count(*) FROM readings WHERE device_id = %s AND region = %s",
                 WATCH, region) >= 3


def test_an_alarm_is_answered_only_after_the_broker_has_it(
        private_broker: Mosquitto, region: str) -> None:
    gw = gateway_config(private_broker.url, region)
    with Gateway(gw), watch(port_of(gw)) as w:
        w.send(frame("LK,0,0,80"))
        assert w.reply() == frame("LK")
        private_broker.stop()
        w.send(report("AL", 1 << 16))
        # The broker is away: no PUBACK, so no reply; the watch would repeat its alarm.
        assert w.reply(timeout_s=2.0) is None
        # A keepalive is still answered at once (a watch reboots after a few unanswered ones).
        w.send(frame("LK,0,0,80"))
        assert w.reply(timeout_s=5.0) == frame("LK")
        private_broker.start()
        # Once the broker has the alarm, its reply comes.
        assert w.reply(timeout_s=20.0) == frame("AL")


def _rows(db_url: str, sql: str, *args: object) -> list[tuple[object, ...]]:
    import psycopg
    with psycopg.connect(db_url) as conn:
        return conn.execute(sql, args).fetchall()  # type: ignore[arg-type]


@pytest.mark.parametrize("junk", [b"garbage\x00\xff", b"[3G*" + b"9" * 70000])
def test_garbage_closes_or_is_skipped_and_other_watches_are_unaffected(
        broker: Mosquitto, region: str, junk: bytes) -> None:
    gw = gateway_config(broker.url, region)
    with Gateway(gw), watch(port_of(gw)) as bad, watch(port_of(gw)) as good:
        bad.send(junk)
        good.send(frame("LK,0,0,80"))
        assert good.reply() == frame("LK")


def test_a_gt06_tracker_logs_in_and_its_sos_is_stored_and_raised(
        make_config: Callable[..., Config], broker: Mosquitto, region: str,
        db_url: str) -> None:
    """The binary protocol through the same server: login answered at once, the SOS alarm
    answered once the broker has it, the SOS raised by the service."""
    import datetime as dt

    from eldercare.app import Application
    from tests.test_gateway_gt06 import DEV, alarm_content, fix, wire

    gw = load_config(path=None, env={}, overrides={
        "mqtt.url": broker.url, "gateway.protocol": "gt06", "gateway.region": region,
        "gateway.listen": f"127.0.0.1:{free_port()}", "gateway.client_id": f"gw-{region}"})
    imei = bytes.fromhex("0" + DEV)
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)
    with Application(make_config()), Gateway(gw), \
            socket.create_connection(("127.0.0.1", port_of(gw)), timeout=10) as tracker:
        tracker.sendall(wire(0x01, imei, 1))
        assert tracker.recv(64) == wire(0x01, b"", 1)                 # login: at once
        tracker.sendall(wire(0x16, alarm_content(0x01, gps=fix(when=now)), 2))
        assert tracker.recv(64) == wire(0x16, b"", 2)                 # after the PUBACK
        wait_for(lambda: count(db_url, "SELECT count(*) FROM detection_events WHERE"
                               " device_id = %s AND type = 'sos'", DEV) == 1,
                 timeout_s=15, what="the tracker's SOS raised")
    assert count(db_url, "SELECT count(*) FROM readings WHERE device_id = %s AND type = 'sos'"
                 " AND region = %s", DEV, region) == 1


def test_the_gateway_runs_as_its_own_process_and_stops_cleanly_on_sigterm(
        broker: Mosquitto, region: str) -> None:
    import signal
    import subprocess
    import sys
    import time

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "eldercare.cli", "gateway", "watch", "--listen",
         f"127.0.0.1:{port}", "--mqtt-url", broker.url, "--region", region],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                w = Watch(port)
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, proc.stderr
                time.sleep(0.1)
        try:
            w.send(frame("LK,0,0,80"))
            assert w.reply() == frame("LK")
        finally:
            w.close()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err.decode()
    assert b"gateway (watch) on 127.0.0.1" in err
