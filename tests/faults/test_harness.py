"""The fault harness itself: the parts later scenarios build on, checked without a service.

- the private PostgreSQL stops (cleanly, or as a crash) and starts again with its URL and data;
- the TOML a ServiceProcess writes is accepted by the product's own configuration loader;
- the report page keeps hand-written prose around its generated table;
- a stream plan is deterministic for a seed, with unique keys and one SOS per device.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import psycopg
import pytest

from eldercare.config import load_config
from tests.faults.harness import PrivatePostgres, ServiceProcess, StreamPlan
from tests.faults.report import BEGIN, END, FaultRow, main, render


def test_private_postgres_stops_crashes_and_comes_back_with_its_data(
        private_postgres: PrivatePostgres) -> None:
    url = private_postgres.create_database()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE kept (n int)")
        conn.execute("INSERT INTO kept VALUES (1)")
    for stop in (private_postgres.stop, private_postgres.crash):
        stop()
        assert not private_postgres.running
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(url, connect_timeout=2).close()
        private_postgres.start()
        assert private_postgres.running
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT n FROM kept").fetchall() == [(1,)]


def test_service_config_is_valid_for_the_product_loader(tmp_path: Path) -> None:
    service = ServiceProcess(
        tmp_path, name="svc", mqtt_url="mqtt://127.0.0.1:1", database_url="postgresql:///x",
        client_id="c-1", registry=tmp_path / "r.yaml", webhook_url="http://127.0.0.1:2/h",
        settings={"alerts.poll_s": 0.2, "alerts.smtp.host": "127.0.0.1",
                  "alerts.smtp.sender": "a@b.example", "ingest.max_future_s": 600,
                  "detectors.supervision.offline_after_s": {"watch": 60.0}})
    config = load_config(path=service.config_path, env={})
    assert (config.mqtt.client_id, config.alerts.poll_s, config.ingest.max_future_s) == (
        "c-1", 0.2, 600)
    assert config.alerts.webhook.url == "http://127.0.0.1:2/h"
    assert config.alerts.smtp is not None and config.alerts.smtp.port == 25
    assert config.spool.dir == str(tmp_path / "svc-spool")
    assert config.detectors.supervision.offline_after_s["watch"] == 60.0


def test_report_replaces_only_its_block(tmp_path: Path) -> None:
    rows = [FaultRow(fault="a | b", injections=3, sent=10, stored=10, alerted=1, lost=0,
                     note="n", seconds=1.5)]
    data: dict[str, Any] = {"generated": "2026-01-01T00:00:00+00:00", "scale": 1.0,
            "machine": {"nproc": 2, "python": "3.11.7", "platform": "Linux"},
            "rows": [asdict(r) for r in rows]}
    page = tmp_path / "reliability.md"
    src = tmp_path / "rows.json"
    src.write_text(json.dumps(data), encoding="utf-8")
    assert main([str(src), str(page)]) == 0
    first = page.read_text(encoding="utf-8")
    assert "| a \\| b | 3 | 10 | 10 | 1 | **0** | 2 | n |" in first
    page.write_text("# Mine\n\nprose before\n\n" + first[first.index(BEGIN):]
                    + "\n## Spool\n\nprose after\n", encoding="utf-8")
    data["rows"][0]["lost"] = 4
    again = render(data, page.read_text(encoding="utf-8"))
    assert again.startswith("# Mine\n\nprose before\n\n" + BEGIN)
    assert again.endswith(END + "\n\n## Spool\n\nprose after\n")
    assert "**4**" in again and "Lost in total: **4**." in again


def test_stream_plan_is_deterministic_with_unique_keys() -> None:
    a = StreamPlan.generate(region="r1", readings=5000, sos=7, seed=42, start_ms=1_800_000_000_000)
    b = StreamPlan.generate(region="r1", readings=5000, sos=7, seed=42, start_ms=1_800_000_000_000)
    assert a == b and a.readings == 5000
    keys = [k for m in a.messages for k in m.keys]
    assert len(set(keys)) == len(keys)
    sos = [d for m in a.messages for d in m.sos_devices]
    assert sorted(sos) == list(a.sos_devices) and len(set(sos)) == 7
