"""The gateway under test, seen from outside: its process, its metrics and its profile.

:class:`GatewayProcess` starts ``eldercare gateway watch`` as a real subprocess (a TOML file sets
``[gateway] metrics_port``), scrapes its Prometheus endpoint into :class:`Metrics`, and reads its
CPU time and RSS (psutil when installed, else /proc). :func:`start_profile` samples it with
py-spy (``pip install py-spy``; the process is not ours to edit, so a sampling profiler from
outside is the way in) and :func:`profile_report` says where its main thread's time went.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from foundation.ports import free_port
from tests.services import wait_port

_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Metrics:
    """One scrape of the gateway's metrics."""

    frames: float = 0.0
    published: float = 0.0
    readings: float = 0.0
    errors: float = 0.0
    connections: float = 0.0
    closed: dict[str, float] = field(default_factory=dict)
    replies: dict[str, float] = field(default_factory=dict)
    buckets: list[tuple[float, float]] = field(default_factory=list)

    @classmethod
    def parse(cls, text: str) -> Metrics:
        m = cls()
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name == "eldercare_gateway_frames_total":
                    m.frames += s.value
                elif s.name == "eldercare_gateway_publish_seconds_count":
                    m.published = s.value
                elif s.name == "eldercare_gateway_publish_seconds_bucket":
                    m.buckets.append((float(s.labels["le"]), s.value))
                elif s.name == "eldercare_gateway_readings_published_total":
                    m.readings = s.value
                elif s.name == "eldercare_gateway_decode_errors_total":
                    m.errors = s.value
                elif s.name == "eldercare_gateway_connections":
                    m.connections = s.value
                elif s.name == "eldercare_gateway_connections_closed_total":
                    m.closed[s.labels["reason"]] = s.value
                elif s.name == "eldercare_gateway_replies_total":
                    m.replies[s.labels["when"]] = s.value
        m.buckets.sort()
        return m

    @staticmethod
    def quantile(before: Metrics, after: Metrics, q: float) -> float:
        """The ``q`` quantile of the publish latency observed between two scrapes, in seconds,
        interpolated within its histogram bucket as Prometheus' ``histogram_quantile`` does."""
        old = dict(before.buckets)
        cum = [(le, n - old.get(le, 0.0)) for le, n in after.buckets]
        if not cum or cum[-1][1] <= 0:
            return float("nan")
        rank, lower, below = q * cum[-1][1], 0.0, 0.0
        for le, n in cum:
            if n >= rank:
                if le == float("inf"):
                    return lower
                return lower + (le - lower) * (rank - below) / max(n - below, 1e-9)
            lower, below = le, n
        return lower


class GatewayProcess:
    """``eldercare gateway watch`` on a free port, with its metrics endpoint on another."""

    def __init__(self, workdir: Path, *, mqtt_url: str, region: str) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.log = workdir / "gateway.log"
        for attempt in range(3):
            if self._start(mqtt_url, region):
                return
            # A free port is free only until someone takes it (foundation.ports): another try.
            if attempt == 2 or "Address already in use" not in self.log.read_text():
                raise RuntimeError(f"the gateway did not start:\n{self.log.read_text()[-3000:]}")

    def _start(self, mqtt_url: str, region: str) -> bool:
        self.port, self.metrics_port = free_port(), free_port()
        config = self.workdir / "gateway.toml"
        config.write_text(f"[gateway]\nmetrics_port = {self.metrics_port}\n")
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "eldercare.cli", "gateway", "watch", "--listen",
                 f"127.0.0.1:{self.port}", "--mqtt-url", mqtt_url, "--region", region,
                 "--config", str(config)], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while self.proc.poll() is None and time.monotonic() < deadline:
            try:
                wait_port(self.metrics_port, 0.5)
                wait_port(self.port, 0.5)
            except TimeoutError:
                continue
            return True
        self.stop()
        return False

    @property
    def pid(self) -> int:
        return self.proc.pid

    def scrape(self) -> Metrics:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as r:
            return Metrics.parse(r.read().decode())

    def cpu(self) -> float:
        """CPU seconds (user + system) the gateway has used."""
        try:
            import psutil  # type: ignore[import-untyped]
        except ImportError:
            fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / _TICKS
        t = psutil.Process(self.pid).cpu_times()
        return float(t.user + t.system)

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def log_summary(self) -> dict[str, int]:
        """What the gateway logged: lines, bytes, and the lines that matter under load."""
        text = self.log.read_text(errors="replace")
        return {"bytes": len(text), "lines": text.count("\n"),
                "pending_calls_warnings": text.count("pending publish calls"),
                "publish_resent": text.count("interrupted"),
                "tracebacks": text.count("Traceback (most recent call last)")}

    def stop(self) -> int:
        """SIGTERM, as a supervisor stops it; its exit status (killed after 30 s: -9)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return int(self.proc.returncode)


@dataclass
class Sampling:
    """A py-spy recording in progress."""

    proc: subprocess.Popen[bytes]
    path: Path
    seconds: int


def start_profile(pid: int, seconds: float, workdir: Path, name: str) -> Sampling | None:
    """Sample ``pid`` with py-spy for ``seconds`` (collapsed stacks, per function); None
    when py-spy is not installed."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        print("profile: py-spy is not installed (pip install py-spy); no profile", flush=True)
        return None
    out = workdir / f"gateway-{name.replace('/', '-').replace(',', '')}.pyspy.txt"
    duration = max(1, int(seconds))
    proc = subprocess.Popen([spy, "record", "--pid", str(pid), "--duration", str(duration),
                             "--rate", "100", "--format", "raw", "--function", "--output",
                             str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return Sampling(proc, out, duration)


def profile_report(sampling: Sampling, top: int = 25) -> dict[str, Any]:
    """Self and inclusive shares of the main thread's busy samples (the event loop's: the
    gateway's other threads are the metrics server and an idle executor), by function and by
    the component of the innermost frame; ``busy_pct``: busy samples over the samples a fully
    busy thread gives at 100/s."""
    _, err = sampling.proc.communicate(timeout=600)
    path = sampling.path
    if not path.exists():
        return {"error": err.decode()[-500:]}
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    parts: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, n_text = line.rpartition(" ")
        n = int(n_text)
        frames = stack.split(";")
        if not frames[0].startswith("_run_module_as_main"):  # not the main thread
            continue
        total += n
        own[frames[-1]] += n
        parts[_component(frames[-1])] += n
        for f in set(frames):
            inclusive[f] += n
    def pct(c: Counter[str]) -> list[tuple[str, float]]:
        return [(name, round(100 * k / max(total, 1), 1)) for name, k in c.most_common(top)]

    return {"samples": total, "busy_pct": round(total / sampling.seconds, 1),
            "self": pct(own), "components": pct(parts),
            "inclusive": [(n, p) for n, p in pct(inclusive) if p < 99.5], "file": str(path)}


def _component(frame: str) -> str:
    """Which layer a leaf frame belongs to, from its file."""
    where = frame.rpartition("(")[2]
    for key, name in (("gateway/", "gateway code"), ("aiomqtt", "aiomqtt"),
                      ("paho", "paho-mqtt"), ("prometheus_client", "prometheus_client"),
                      ("asyncio/", "asyncio"), ("selectors", "event loop (select)"),
                      ("socket", "socket"), ("schemas/", "schemas"), ("msgspec", "msgspec"),
                      ("re/", "re"), ("threading", "threading")):
        if key in where:
            return name
    return where.split(":")[0] or frame
