"""Fault: PostgreSQL unavailable for 30 s in the middle of a stream (issue #7).

The service reaches the database through a TCP proxy that the test cuts (every connection
dropped, new ones refused) and restores. Asserted: no reading lost (each stored exactly once once
the database is back), memory bounded (the in-memory buffer never exceeds its bound; the backlog
waits on disk), an SOS pressed during the outage reaches the dispatch webhook within seconds as a
provisional alert, and after the outage it becomes an ordinary alert, the spool and the event
journal empty. ``ELDERCARE_FAULT_SCALE`` scales the outage (30 s at 1.0).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from alerts.webhook_receiver import Receiver
from eldercare.app import Application
from eldercare.config import Config
from schemas import device_topic
from tests.conftest import count, now_ms, wait_for
from tests.faults.conftest import FaultReport
from tests.faults.harness import fault_scale
from tests.faults.report import FaultRow
from tests.services import Mosquitto
from tests.tcp_proxy import TcpProxy

OUTAGE_S = max(5.0, 30.0 * fault_scale())
RATE = 400  # messages per second, one reading each, over 100 devices


def _rss() -> int:
    """Resident memory of this process (the service runs in it), bytes."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class _Stream:
    """Publishes location readings at ``RATE`` from a thread; counts what the broker took."""

    def __init__(self, url: str, region: str) -> None:
        host, port = url.removeprefix("mqtt://").split(":")
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="outage-stream")
        self.client.max_inflight_messages_set(1000)
        self.client.connect(host, int(port))
        self.client.loop_start()
        self.region = region
        self.acked = 0
        self._infos: list[mqtt.MQTTMessageInfo] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="outage-stream", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        i = 0
        started = time.monotonic()
        base = now_ms()
        while not self._stop.is_set():
            due = started + i / RATE
            if (wait := due - time.monotonic()) > 0:
                time.sleep(wait)
            device = f"OUT-{i % 100:03d}"
            payload = json.dumps({"type": "location", "ts": base + i, "seq": i,
                                  "lat": 37.5 + (i % 100) * 1e-4, "lon": 122.1}).encode()
            self._infos.append(self.client.publish(device_topic(self.region, device), payload,
                                                   qos=1))
            i += 1

    def stop(self) -> int:
        """Stop publishing; wait for every PUBACK; return how many readings were sent."""
        self._stop.set()
        self._thread.join()
        for info in self._infos:
            info.wait_for_publish(30)
        assert all(info.is_published() for info in self._infos)
        self.client.loop_stop()
        self.client.disconnect()
        return len(self._infos)


def test_database_outage_loses_nothing_and_sos_still_reaches_dispatch(
        make_config: Callable[..., Config], broker: Mosquitto, db_url: str, region: str,
        receiver: Receiver, tmp_path: Path, fault_report: FaultReport) -> None:
    proxy, proxied_url = TcpProxy.for_postgres(db_url)
    config = make_config(**{
        "database.url": proxied_url, "alerts.webhook.url": receiver.url,
        "alerts.webhook.secret": "outage", "spool.dir": str(tmp_path / "spool"),
        "spool.probe_ms": 500})
    with proxy, Application(config) as svc:
        stream = _Stream(broker.url, region)
        stream.start()
        wait_for(lambda: count(db_url, "SELECT count(*) FROM readings") > 1000, 30,
                 "readings flowing before the outage")
        rss_before = _rss()
        proxy.cut()
        cut_at = time.monotonic()
        buffered_max = 0
        time.sleep(min(5.0, OUTAGE_S / 3))
        sos_ts = now_ms()
        sent_at = time.time()
        stream.client.publish(device_topic(region, "OUT-SOS"), json.dumps(
            {"type": "sos", "ts": sos_ts, "lat": 37.51, "lon": 122.12}).encode(), qos=1)

        def provisional() -> list[float]:
            return [r.at for r in list(receiver.requests)
                    if json.loads(r.body).get("provisional", {}).get("device_id") == "OUT-SOS"]
        while not provisional():
            buffered_max = max(buffered_max, len(svc.ingest.buffer))
            assert time.monotonic() - cut_at < OUTAGE_S, "no provisional SOS during the outage"
            time.sleep(0.05)
        sos_latency_s = provisional()[0] - sent_at
        while time.monotonic() - cut_at < OUTAGE_S:
            buffered_max = max(buffered_max, len(svc.ingest.buffer))
            time.sleep(0.1)
        rss_outage = _rss()
        spooled = svc.ingest.metrics.value("eldercare_spooled_messages_total", reason="outage")
        proxy.restore()
        restored_at = time.monotonic()
        sent = stream.stop()

        wait_for(lambda: count(db_url, "SELECT count(*) FROM readings WHERE type = 'location'")
                 >= sent, 120, "every reading stored after the outage")
        wait_for(lambda: count(db_url, "SELECT count(*) FROM alerts WHERE device_id = 'OUT-SOS'"
                               " AND type = 'sos'") == 1, 60, "the SOS alert opened")
        wait_for(lambda: any(json.loads(r.body).get("event") == "alert.opened"
                             for r in list(receiver.requests)), 60, "the ordinary alert sent")
        caught_up_s = time.monotonic() - restored_at
        wait_for(lambda: not list((tmp_path / "spool").glob("*.seg"))
                 or all(p.stat().st_size == 0 for p in (tmp_path / "spool").glob("*.seg")),
                 60, "the spool emptied")

    stored = count(db_url, "SELECT count(*) FROM readings WHERE type = 'location'")
    distinct = count(db_url, "SELECT count(DISTINCT (device_id, ts, seq)) FROM readings"
                             " WHERE type = 'location'")
    provisional_docs = [json.loads(r.body) for r in receiver.requests
                        if "provisional" in json.loads(r.body)]
    fault_report.record(FaultRow(
        fault=f"PostgreSQL unavailable for {OUTAGE_S:.0f} s mid-stream", injections=1,
        sent=sent + 1, stored=distinct + count(db_url, "SELECT count(*) FROM readings"
                                                       " WHERE type = 'sos'"),
        alerted=len({d["provisional"]["key"] for d in provisional_docs}), lost=sent - distinct,
        note=f"SOS reached the dispatch webhook {sos_latency_s:.2f} s after its publish, as a"
             f" provisional alert, then as an ordinary alert after the outage; {spooled:,.0f}"
             f" messages spooled on disk, all stored {caught_up_s:.1f} s after the database came"
             f" back; in-memory buffer at most {buffered_max} messages"))
    print(f"\nDB outage {OUTAGE_S:.0f} s: sent {sent}, spooled {spooled:.0f}, stored {stored}, "
          f"lost {sent - distinct}; SOS provisional after {sos_latency_s:.2f} s; caught up "
          f"{caught_up_s:.1f} s after restore; buffer max {buffered_max}/"
          f"{config.ingest.buffer_messages}; RSS +{(rss_outage - rss_before) / 2**20:.0f} MiB "
          f"during the outage; refused connections {proxy.refused}")
    assert stored == distinct == sent  # exactly once
    assert spooled > 0
    assert sos_latency_s < 10.0
    assert buffered_max <= config.ingest.buffer_messages
    (doc,) = {d["provisional"]["key"]: d for d in provisional_docs}.values()
    assert doc["event"] == "alert.provisional"
    assert doc["provisional"]["type"] == "sos"
    assert doc["provisional"]["position"] == {"lat": 37.51, "lon": 122.12}
    assert doc["provisional"]["key"] == f"provisional:OUT-SOS:sos:{sos_ts}"
