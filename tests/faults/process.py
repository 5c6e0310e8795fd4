"""The service as production runs it: ``eldercare run --config FILE`` in a child process.

:class:`ServiceProcess` writes a TOML configuration for a given broker, database, webhook and
registry (plus any overrides), starts the command with its stdout and stderr appended to one log
file, and waits for the line the command prints once it is running. Faults act on the process
from outside: :meth:`ServiceProcess.sigkill` (no drain, no flush: a crash, a power cut, the OOM
killer), :meth:`ServiceProcess.terminate` (SIGTERM, the orderly stop), :meth:`restart`.

Every restart uses the same configuration, hence the same MQTT client id (the persistent
session) and the same spool directory, as a supervisor such as systemd would. The object's
``repr`` names the service and its log, and every failure it raises ends with the log's tail,
so a failing test shows what the service said.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Self

#: The line ``eldercare run`` prints on stderr once ingest runs (eldercare/cli.py).
READY_LINE = "eldercare: ingest running"
#: What the ingest source logs when a broker session is (re)established (ingest/source.py).
SESSION_LINE = re.compile(r"MQTT session (resumed|started)")
#: The shared secret of the dispatch webhook in every fault test.
WEBHOOK_SECRET = "fault-suite-secret"
ROOT = Path(__file__).resolve().parents[2]


class ServiceError(AssertionError):
    """The service did not do what the harness waited for; the message ends with its log tail.

    An AssertionError, so pytest reports it as a test failure rather than an error."""


def toml_text(table: Mapping[str, object]) -> str:
    """Render nested mappings of str, int, float, bool and lists of them as TOML.

    Enough for eldercare's configuration; strings are JSON-escaped, which TOML basic strings
    accept. Scalars of a table come before its sub-tables, as TOML requires."""
    lines: list[str] = []

    def scalar(value: object) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, int | float):
            return repr(value)
        if isinstance(value, str):
            return json.dumps(value, ensure_ascii=False)
        if isinstance(value, list | tuple):
            return "[" + ", ".join(scalar(v) for v in value) + "]"
        if isinstance(value, Mapping):
            return "{" + ", ".join(f"{json.dumps(str(k))} = {scalar(v)}"
                                   for k, v in value.items()) + "}"
        raise TypeError(f"cannot write {type(value).__name__} to TOML")

    def emit(prefix: str, t: Mapping[str, object]) -> None:
        subtables = {k: v for k, v in t.items() if isinstance(v, Mapping) and _is_table(k, v)}
        if prefix and (len(subtables) < len(t) or not t):
            lines.append(f"\n[{prefix}]")
        for k, v in t.items():
            if k not in subtables:
                lines.append(f"{k} = {scalar(v)}")
        for k, v in subtables.items():
            assert isinstance(v, Mapping)
            emit(f"{prefix}.{k}" if prefix else k, v)

    emit("", table)
    return "\n".join(lines).lstrip("\n") + "\n"


def _is_table(key: str, value: Mapping[str, object]) -> bool:
    """Inline tables for maps whose keys are data, not options (per-kind thresholds)."""
    return key not in {"offline_after_s", "sms_templates", "voice_templates"}


def merge(base: dict[str, object], dotted: Mapping[str, object]) -> dict[str, object]:
    """``base`` updated with ``{"section.key": value}`` overrides (nested tables created)."""
    for path, value in dotted.items():
        *sections, key = path.split(".")
        target = base
        for s in sections:
            nxt = target.setdefault(s, {})
            assert isinstance(nxt, dict), f"{path}: {s} is not a table"
            target = nxt
        target[key] = value
    return base


class ServiceProcess:
    """``eldercare run`` in a child process; see the module docstring.

    ``settings`` are dotted overrides (``{"alerts.poll_s": 0.2}``) applied last. The workdir
    holds ``<name>.toml``, ``<name>.log`` and the spool (``<name>-spool/``).
    """

    def __init__(self, workdir: Path, *, name: str, mqtt_url: str, database_url: str,
                 client_id: str, registry: Path | None = None, webhook_url: str | None = None,
                 webhook_secret: str = WEBHOOK_SECRET,
                 settings: Mapping[str, object] | None = None) -> None:
        self.name = name
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = workdir / f"{name}.toml"
        self.log_path = workdir / f"{name}.log"
        self.spool_dir = workdir / f"{name}-spool"
        config: dict[str, object] = {
            "mqtt": {"url": mqtt_url, "client_id": client_id, "connect_timeout_s": 60.0},
            "database": {"url": database_url, "timescale": "off"},
            "metrics": {"port": 0},
            "api": {"port": 0},
            "console": {"secure_cookies": False},
            "spool": {"dir": str(self.spool_dir)},
        }
        if registry is not None:
            config["registry"] = str(registry)
        if webhook_url is not None:
            merge(config, {"alerts.webhook.url": webhook_url,
                           "alerts.webhook.secret": webhook_secret,
                           "alerts.webhook.timeout_s": 2.0})
        merge(config, settings or {})
        self.config = config
        self.config_path.write_text(toml_text(config), encoding="utf-8")
        self.proc: subprocess.Popen[bytes] | None = None
        #: Starts and SIGKILLs so far (the report's injection counts).
        self.starts = 0
        self.kills = 0
        self._log_offset = 0  # where the current run's output begins in the log

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.running else "stopped"
        return f"<ServiceProcess {self.name} ({state}), log {self.log_path}>"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def start(self, *, wait: bool = True, timeout_s: float = 90.0,
              inject: tuple[str, str] | None = None) -> None:
        """Start ``eldercare run``; with ``wait``, return once it prints that it is running.
        ``inject=(fault, device)`` runs it with one injected bug (tests/faults/inject.py)."""
        if self.running:
            raise ServiceError(f"{self!r} is already running")
        self.starts += 1
        with self.log_path.open("ab") as log:
            self._log_offset = log.tell()
            log.write(f"\n===== fault harness: start #{self.starts} of {self.name} at"
                      f" {time.strftime('%H:%M:%S')} =====\n".encode())
            env = {k: v for k, v in os.environ.items() if not k.startswith("ELDERCARE_")}
            launcher = ["eldercare.cli"] if inject is None else [
                "tests.faults.inject", *inject, "--"]
            self.proc = subprocess.Popen(
                [sys.executable, "-m", *launcher, "run", "--config", str(self.config_path)],
                cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        if wait:
            self.wait_ready(timeout_s=timeout_s)

    def wait_ready(self, *, timeout_s: float = 90.0) -> float:
        """Wait for this run's ready line; returns the seconds waited."""
        return self.wait_log(READY_LINE, timeout_s=timeout_s, what="the service to be running")

    def wait_log(self, pattern: str | re.Pattern[str], *, timeout_s: float = 60.0,
                 after: int | None = None, what: str = "") -> float:
        """Wait until this run's log (from byte ``after``, default the run's start) matches
        ``pattern``; returns the seconds waited. Fails with the log tail if the process exits."""
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        start = time.monotonic()
        offset = self._log_offset if after is None else after
        while time.monotonic() - start < timeout_s:
            if regex.search(self.log_since(offset)):
                return time.monotonic() - start
            if self.proc is not None and self.proc.poll() is not None:
                raise ServiceError(f"{self!r} exited with {self.proc.returncode} while waiting"
                                   f" for {what or regex.pattern}\n{self.log_tail()}")
            time.sleep(0.05)
        raise ServiceError(f"{self!r}: no {what or regex.pattern!r} after {timeout_s:.0f} s\n"
                           f"{self.log_tail()}")

    def log_size(self) -> int:
        """The log's length now: pass it as ``after`` to wait for what comes next."""
        try:
            return self.log_path.stat().st_size
        except FileNotFoundError:
            return 0

    def log_since(self, offset: int) -> str:
        try:
            with self.log_path.open("rb") as f:
                f.seek(offset)
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 60) -> str:
        """The last ``lines`` lines of the log, headed by the service's name."""
        text = self.log_since(0).splitlines()[-lines:]
        return f"--- last {len(text)} log lines of {self.name} ({self.log_path}) ---\n" + \
            "\n".join(text)

    def sigkill(self) -> None:
        """Kill with SIGKILL (nothing drained, flushed or acknowledged) and reap the process."""
        if not self.running:
            raise ServiceError(f"{self!r} is not running\n{self.log_tail()}")
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)
        self.kills += 1
        with self.log_path.open("ab") as log:
            log.write(f"===== fault harness: SIGKILL at {time.strftime('%H:%M:%S')} =====\n"
                      .encode())

    def wait_exit(self, *, timeout_s: float) -> int:
        """Wait for the process to exit by itself; returns its status."""
        assert self.proc is not None
        try:
            return int(self.proc.wait(timeout_s))
        except subprocess.TimeoutExpired:
            raise ServiceError(f"{self!r} still running {timeout_s:.0f} s later\n"
                               f"{self.log_tail()}") from None

    def terminate(self, *, timeout_s: float = 60.0) -> int:
        """SIGTERM and wait for the orderly stop; returns the exit status (SIGKILL after
        ``timeout_s``: a drain that hangs is itself a failure the caller sees as -9)."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)
        return int(self.proc.returncode)

    def restart(self, *, kill: bool = False, wait: bool = True, timeout_s: float = 90.0) -> None:
        """Stop (SIGTERM, or SIGKILL with ``kill``) and start again with the same config."""
        if self.running:
            if kill:
                self.sigkill()
            else:
                self.terminate()
        self.start(wait=wait, timeout_s=timeout_s)

    def close(self) -> None:
        """Stop the process if it still runs (SIGTERM, then SIGKILL)."""
        if self.running:
            self.terminate(timeout_s=30)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
