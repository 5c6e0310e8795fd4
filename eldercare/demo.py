"""``eldercare demo``: the whole path on embedded defaults, nothing installed by hand.

Starts an embedded broker and PostgreSQL, the ingest service with its detectors, and the
simulator's demo scenario (``device_sim/scenarios/demo.yaml``, shipped in the package) starting
now: within the first minute a watch wearer presses SOS, a fall sensor wearer falls and a
bracelet wearer walks out of the home zone, and each detection
is printed as it is stored. Alerts go, signed, to a stand-in 12349 dispatch platform (a local
HTTP server, ``alerts/webhook_receiver.py``) that prints what it receives; the duty console and
the alerts API are served with a demo login and token printed at start. A few deliberately invalid readings show the
dead-letter store at work: each is printed once, as it is stored. Counts per reading type are
printed every ten seconds and at the end, until interrupted (or for ``--duration`` seconds).
Exit status 0 means readings flowed end to end.

The report is the demo's output: while it runs, the service's INFO lines (lifecycle, one per
delivery, httpx's one per request) are held back unless ``-v`` asked for DEBUG, and so is the
warning that SMS is not configured (the demo has no SMS gateway; such notifications are audited
as undeliverable, as in production). Other warnings and errors still show.
"""

from __future__ import annotations

import heapq
import json
import logging
import secrets
import signal
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import TextIO

import msgspec
import psycopg
from psycopg.conninfo import make_conninfo

from alerts.auth import new_token
from alerts.channels.webhook import SignatureError, verify_signature
from alerts.webhook_receiver import Receiver, Recorded
from console.accounts import AccountStore
from device_sim.publisher import PublishStats, publish
from device_sim.scenario import Scenario, parse_scenario
from device_sim.stream import build
from device_sim.types import Publication
from eldercare.app import Application
from eldercare.config import load_config
from eldercare.embedded import EmbeddedBroker, EmbeddedPostgres
from foundation.ports import free_port
from foundation.supervisor import EXIT_WORKER_DIED, Supervisor
from schemas import device_topic

#: The region tree shipped as an example (Weihai, Zaozhuang, Rizhao; docs/registry-database.md).
DEMO_REGIONS = Path(str(resources.files("registry").joinpath(
    "data", "regions-weihai-zaozhuang-rizhao.csv")))


def demo_scenario(start: datetime) -> Scenario:
    """The packaged demo scenario, starting at ``start``."""
    data = resources.files("device_sim").joinpath("scenarios/demo.yaml").read_bytes()
    return msgspec.structs.replace(parse_scenario(data, fmt="yaml"), start=start)


def _invalid(scenario: Scenario) -> Iterator[Publication]:
    """A few readings that break the wire contract, early on, so dead letters show up."""
    t0 = scenario.start_ms
    topic = device_topic(scenario.region, "BR-DEMO-BAD")
    yield Publication(t0 + 3_000, topic, [{"type": "location", "ts": t0, "lat": 137.5,
                                           "lon": 122.1}], False)
    yield Publication(t0 + 6_000, topic, [{"type": "sos", "ts": t0, "device_id": "BR-OTHER"}],
                      False)


POLL_S = 2.0  # detections and dead letters are printed within this long of being stored
COUNTS_EVERY_S = 10.0
WIDTH = 100  # dead-letter reasons are wrapped to this many columns
MAX_DEAD_LETTERS_SHOWN = 5  # per poll; the rest are counted


class _Report:
    """What the demo prints from the database: each detection event and each dead letter once,
    as it is stored, and the stored counts when asked. Each poll's lines go out in one write, so
    the dispatch stand-in's lines (another thread) fall between polls, not inside one."""

    def __init__(self, url: str, out: TextIO) -> None:
        self.url = url
        self.out = out
        self.total = self.dead = 0
        self._seen: set[tuple[str, str, int]] = set()
        self._last_dead_id = 0

    def poll(self, elapsed: float, *, counts: bool) -> None:
        """Print what is new since the last poll, then the counts if ``counts``."""
        at = f"[{elapsed:5.1f}s]"
        with psycopg.connect(self.url) as conn:
            events = conn.execute(
                "SELECT device_id, type, (extract(epoch FROM ts) * 1000)::bigint, severity"
                " FROM detection_events ORDER BY ts").fetchall()
            dead = conn.execute("SELECT id, reason FROM dead_letters WHERE id > %s ORDER BY id",
                                (self._last_dead_id,)).fetchall()
            dead_total = conn.execute("SELECT count(*) FROM dead_letters").fetchone()
            per_type = dict(conn.execute(
                "SELECT type, count(*) FROM readings GROUP BY type ORDER BY type").fetchall())
            accel = conn.execute("SELECT count(*) FROM accel_chunks").fetchone()
        assert accel is not None and dead_total is not None
        per_type["accel"] = accel[0]
        self.total, self.dead = sum(per_type.values()), int(dead_total[0])
        lines = self._new_events(at, events) + self._new_dead_letters(at, dead)
        if counts:
            lines += self._counts(at, per_type, events)
        if lines:
            self.out.write("\n".join(lines) + "\n")
            self.out.flush()

    def _new_events(self, at: str, events: list[tuple[str, str, int, str]]) -> list[str]:
        lines = []
        for device_id, kind, ts, severity in events:
            if (device_id, kind, ts) not in self._seen:
                self._seen.add((device_id, kind, ts))
                when = datetime.fromtimestamp(ts / 1000, UTC).astimezone().strftime("%H:%M:%S")
                lines.append(f"{at} DETECTED {kind} ({severity}) on {device_id} at {when}")
        return lines

    def _new_dead_letters(self, at: str, dead: list[tuple[int, str]]) -> list[str]:
        """Each reason whole, wrapped (it ends with the JSON path of the bad field)."""
        lines = [textwrap.fill(reason, WIDTH, initial_indent=f"{at} DEAD LETTER ",
                               subsequent_indent=" " * (len(at) + 1), max_lines=4,
                               break_long_words=False, break_on_hyphens=False)
                 for _, reason in dead[:MAX_DEAD_LETTERS_SHOWN]]
        if len(dead) > MAX_DEAD_LETTERS_SHOWN:
            lines.append(f"{at} DEAD LETTER and {len(dead) - MAX_DEAD_LETTERS_SHOWN} more")
        if dead:
            self._last_dead_id = dead[-1][0]
        return lines

    def _counts(self, at: str, per_type: dict[str, int],
                events: list[tuple[str, str, int, str]]) -> list[str]:
        cells = "  ".join(f"{k}={v}" for k, v in sorted(per_type.items()))
        lines = [f"{at} stored {self.total}: {cells} | dead letters {self.dead}"]
        by_type: dict[str, int] = {}
        for _, kind, _, _ in events:
            by_type[kind] = by_type.get(kind, 0) + 1
        if by_type:
            lines.append(" " * (len(at) + 1) + "detected: "
                         + "  ".join(f"{k}={v}" for k, v in sorted(by_type.items())))
        return lines


@contextmanager
def _report_only_logs() -> Iterator[None]:
    """Hold back the service's INFO lines and the no-SMS warning while the demo reports (see the
    module docstring); ``-v`` (DEBUG on the root logger) shows everything."""
    root = logging.getLogger()
    level = root.level
    if level == logging.INFO:
        root.setLevel(logging.WARNING)
    alerts_log = logging.getLogger("alerts.service")

    def no_sms_warning(record: logging.LogRecord) -> bool:
        return not (str(record.msg).startswith("alert channels not configured")
                    and record.args == ("sms",))

    if level != logging.DEBUG:
        alerts_log.addFilter(no_sms_warning)
    try:
        yield
    finally:
        alerts_log.removeFilter(no_sms_warning)
        root.setLevel(level)


@contextmanager
def _platform(secret: str, began: list[float], out: TextIO) -> Iterator[Receiver]:
    """The stand-in 12349 platform: checks each webhook's signature and prints the alert."""
    platform = Receiver()

    def show(rec: Recorded) -> None:
        h = rec.headers
        try:
            verify_signature(secret=secret.encode(), timestamp=h.get("X-Eldercare-Timestamp", ""),
                             signature=h.get("X-Eldercare-Signature", ""), body=rec.body,
                             now_s=time.time())
            check = "signature ok"
        except SignatureError as exc:
            check = f"BAD SIGNATURE ({exc.reason})"
        doc = json.loads(rec.body)
        a = doc["alert"]
        step = doc.get("escalation", {}).get("action", "")
        out.write(f"[{time.monotonic() - began[0]:5.1f}s] DISPATCH {doc['event']} alert"
                  f" #{a['id']} {a['type']} priority {a['priority']} {a['subject']} {step}"
                  f" ({check})\n")
        out.flush()

    platform.on_request = show
    try:
        yield platform
    finally:
        platform.close()


def run_demo(*, duration_s: float | None, out: TextIO, metrics_port: int | None = None,
             speed: float = 1.0) -> int:
    """Run the demo; returns a process exit status. ``speed`` > 1 runs the scenario faster than
    real time (readings then carry future times: keep ``speed * duration`` within the
    service's ``max_future_s`` of 300 s)."""
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
    scenario = demo_scenario(datetime.now(UTC))
    sim = build(scenario)
    secret = secrets.token_hex(16)
    began = [time.monotonic()]  # the fleet's start, once known: one time base for all lines
    with _report_only_logs(), tempfile.TemporaryDirectory(prefix="eldercare-demo-") as tmp, \
            EmbeddedBroker() as broker, EmbeddedPostgres(Path(tmp) / "pgdata") as pg, \
            _platform(secret, began, out) as platform:
        with psycopg.connect(pg.url, autocommit=True) as conn:
            conn.execute("CREATE DATABASE eldercare")
        db_url = make_conninfo(pg.url, dbname="eldercare")
        registry = Path(tmp) / "registry.json"
        registry.write_bytes(msgspec.json.encode(sim.registry))
        port = metrics_port if metrics_port is not None else free_port()
        token, digest = new_token()
        tokens = Path(tmp) / "tokens.yaml"
        tokens.write_text(f"- {{name: demo-officer, token_sha256: {digest}, role: officer,"
                          " regions: ['*']}\n")
        config = load_config(path=None, env={}, overrides={
            "mqtt.url": broker.url, "mqtt.client_id": "eldercare-demo",
            "database.url": db_url, "metrics.port": port, "registry": str(registry),
            "detectors.timezone": scenario.timezone, "api.port": free_port(),
            "api.tokens_file": str(tokens), "alerts.webhook.url": platform.url,
            "alerts.webhook.secret": secret,
            "console.secure_cookies": False,  # plain HTTP on localhost
            "spool.dir": str(Path(tmp) / "spool"),  # the demo's database lives in tmp too
            # The seed cities' region tree, so the elders pages can enrol in Huancui's streets;
            # the ID-card secret lives and dies with the demo's database.
            "enrolment.regions": str(DEMO_REGIONS),
            "enrolment.secret_file": str(Path(tmp) / "registry.key"),
        })
        # A worker that dies ends the demo too, with a non-zero status (docs/supervision.md).
        supervisor = Supervisor(on_death=lambda _death: stop.set())
        with Application(config, supervisor=supervisor) as service:
            print(f"eldercare demo: broker {broker.url} (MQTT"
                  f" {service.ingest.source.negotiated}), metrics"
                  f" http://127.0.0.1:{service.ingest.metrics_port}/metrics; Ctrl-C stops",
                  file=out)
            password = secrets.token_urlsafe(9)
            with AccountStore(db_url) as accounts:
                accounts.add_user("duty", password, role="officer", regions=["*"],
                                  display_name="值班员")
                accounts.add_user("clerk", password, role="clerk", regions=[scenario.region],
                                  display_name="建档员")
            print(f"eldercare demo: duty console http://127.0.0.1:{config.api.port}/"
                  f"  (log in as duty / {password})", file=out)
            print(f"eldercare demo: elders database (老人档案) for street offices: log in as"
                  f" clerk / {password} (enrolment clerk of region {scenario.region})", file=out)
            print(f"eldercare demo: alerts API http://127.0.0.1:{config.api.port}/api/v1"
                  f" (docs at /api/v1/docs); demo token: {token}\n"
                  f"    curl -H 'Authorization: Bearer {token}'"
                  f" http://127.0.0.1:{config.api.port}/api/v1/alerts", file=out)
            print(f"eldercare demo: scenario {scenario.name!r}, {len(sim.devices)} devices, "
                  f"{len(sim.labels)} scripted incidents; SOS, a fall and a wandering wearer "
                  "within the first minute", file=out)
            pubs = heapq.merge(sim.publications(), _invalid(scenario))
            published: list[PublishStats] = []
            fleet_stop = threading.Event()
            fleet = threading.Thread(
                target=lambda: published.append(publish(pubs, url=broker.url, speed=speed,
                                                         stop=fleet_stop)),
                name="eldercare-demo-fleet", daemon=True)
            fleet.start()
            started = began[0] = time.monotonic()
            report = _Report(db_url, out)
            next_counts = COUNTS_EVERY_S
            try:
                while not stop.wait(POLL_S) and fleet.is_alive():
                    elapsed = time.monotonic() - started
                    if duration_s is not None and elapsed >= duration_s:
                        break  # the final report below has the counts
                    report.poll(elapsed, counts=elapsed >= next_counts)
                    while next_counts <= elapsed:
                        next_counts += COUNTS_EVERY_S
            finally:
                fleet_stop.set()
                fleet.join(30)
        # After the service's clean stop, which commits what it had received.
        report.poll(time.monotonic() - started, counts=True)
        sent = published[0].messages if published else 0
        print(f"eldercare demo: {sent} messages published, {report.total} readings stored, "
              f"{report.dead} dead letters", file=out)
    if supervisor.deaths:
        print(f"eldercare demo: error: worker died: {supervisor.describe_deaths()}", file=out)
        return EXIT_WORKER_DIED
    return 0 if report.total > 0 else 1
