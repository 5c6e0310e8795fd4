"""The HTTP API fuzzed against its own OpenAPI document with schemathesis (issue #7).

The app is the one :class:`~alerts.service.AlertService` serves (alerts API, console login,
live stream, devices, evidence, the console page), on a real port with a real PostgreSQL,
holding alerts in every state. schemathesis reads ``/api/v1/openapi.json`` and runs every phase
(the schema's examples, coverage of boundary and invalid values, random fuzzing per
operation, and stateful sequences that follow the links between operations), in both positive
and negative mode, with every check on: no 5xx, every status, content type, header and body
as documented, invalid input rejected, valid input accepted (one blind spot of the negative-data
check is filtered by tests/api_fuzz_hooks.py, which says why). A failure prints schemathesis's
report: each failing request as a ``curl`` command to reproduce it.

Bounded: ``--max-examples`` per operation and ``--max-time`` for the whole run keep it to about
two and a half minutes on a two-core machine (some 3,300 test cases, 200 stateful scenarios).
The seed is drawn per run and printed; ``ELDERCARE_FUZZ_SEED`` repeats a run.

Why schemathesis's own runner (``python -m schemathesis.cli run``, v4) and not its pytest
integration: the runner drives all four phases through one engine under one time budget, and
writes a JSON report whose counts the test checks; ``@schema.parametrize()`` and
``schema.as_state_machine()`` would split the same work into separate Hypothesis runs (one
per operation, one for the state machine), each with its own settings and budget.
"""

from __future__ import annotations

import functools
import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import console.app
from alerts.auth import TokenEntry, TokenTable, hash_token, new_token
from alerts.service import AlertService
from console.stream import stream_router
from detectors.events import Event
from eldercare.app import HttpFront
from eldercare.config import load_config
from foundation.clock import ManualClock

ROOT = Path(__file__).resolve().parent.parent
A, B = "371002", "370102"
DAY = int(datetime(2026, 3, 2, 2, 0, tzinfo=UTC).timestamp() * 1000)
PASSWORD = "correct horse battery"
#: Operations left out, and why (none: every operation is fuzzed).
EXCLUDED: tuple[str, ...] = ()
#: Per operation and phase; and the whole run's wall-time budget, in seconds.
MAX_EXAMPLES = 60
MAX_TIME_S = 150


@dataclass
class Target:
    base: str
    token: str


@pytest.fixture
def target(migrated_db: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Target]:
    """The service's HTTP app, served, with alerts open, claimed and resolved, and an admin's
    token (admins may do everything, unlocking console users included)."""
    # A stream ends after 0.2 s (and the client reconnects): an endless response would hold
    # the fuzzer forever on GET /api/v1/stream.
    monkeypatch.setattr(console.app, "stream_router",
                        functools.partial(stream_router, max_age_s=0.2))
    config = load_config(path=None, env={}, overrides={
        "database.url": migrated_db, "api.port": 0, "alerts.mqtt_publish": False,
        "console.secure_cookies": False})
    token = new_token()[0]
    table = TokenTable([TokenEntry(name="fuzz-admin", token_sha256=hash_token(token),
                                   role="admin", regions=["*"])])
    clock = ManualClock(DAY + 60_000)
    service = AlertService(config.alerts, database_url=migrated_db,
                           timezone=config.detectors.timezone, clock=clock, channels=[])
    front = HttpFront(config, alerts=service, clock=clock, tokens=table)
    assert front.accounts is not None
    front.accounts.add_user("officer-1", PASSWORD, role="officer", regions=[A])
    _seed(service)
    service.start()
    front.start()
    try:
        yield Target(f"http://127.0.0.1:{front.port}", token)
    finally:
        front.stop()
        service.stop()


def _seed(service: AlertService) -> None:
    store = service.store
    for k, (kind, region) in enumerate([("sos", A), ("fall", A), ("geofence_exit", B),
                                        ("low_battery", A), ("offline", B), ("sos", B)]):
        event = Event(device_id=f"WT-{k}", type=kind, ts=DAY + k, severity="critical",  # type: ignore[arg-type]
                      region=region, wearer_id=f"W-{k}", lat=37.5, lon=122.1)
        (change,) = store.fold([event], now_ms=DAY + k)
        if k % 3 == 1:
            store.acknowledge(change.alert_id, by="officer-1", now_ms=DAY + 10_000)
        elif k % 3 == 2:
            store.resolve(change.alert_id, by="officer-1", outcome="safe", now_ms=DAY + 20_000)


def _schemathesis(target: Target, workdir: Path, seed: int) -> subprocess.CompletedProcess[str]:
    command = [
        sys.executable, "-m", "schemathesis.cli", "run", f"{target.base}/api/v1/openapi.json",
        "--url", target.base, "--checks", "all", "--mode", "all",
        "--phases", "examples,coverage,fuzzing,stateful",
        "--max-examples", str(MAX_EXAMPLES), "--max-time", str(MAX_TIME_S),
        "--seed", str(seed), "--workers", "2", "--request-timeout", "10",
        "-H", f"Authorization: Bearer {target.token}",
        "--report", "json", "--report-json-path", str(workdir / "report.json"),
        *(arg for path in EXCLUDED for arg in ("--exclude-path", path)),
        "--warnings", "off", "--output-truncate", "false",
    ]
    # tests/api_fuzz_hooks.py: one known blind spot of the negative-data check, filtered.
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.api_fuzz_hooks",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    # In the test's own directory: schemathesis keeps a cache (.schemathesis/) where it runs.
    return subprocess.run(command, capture_output=True, text=True, timeout=MAX_TIME_S + 120,
                          cwd=workdir, env=env, check=False)


def test_the_api_survives_schemathesis_with_every_check(target: Target, tmp_path: Path) -> None:
    seed = int(os.environ.get("ELDERCARE_FUZZ_SEED", random.randrange(2**31)))
    print(f"schemathesis seed {seed} (ELDERCARE_FUZZ_SEED={seed} repeats this run)")
    started = time.monotonic()
    run = _schemathesis(target, tmp_path, seed)
    wall = time.monotonic() - started
    print(run.stdout[-20_000:])
    report: dict[str, Any] = json.loads((tmp_path / "report.json").read_text())
    cases = report["test_cases"]
    print(f"schemathesis: {cases['generated']} test cases in {wall:.0f} s, phases "
          f"{ {name: phase['status'] for name, phase in report['phases'].items()} }")
    # One schemathesis error is not about this API: with some seeds its coverage phase dies
    # inside Hypothesis describing one of schemathesis' own filter lambdas (a traceback ending
    # in hypothesis/internal/lambda_sources.py). It is reported, not counted; any other error,
    # and every failure, still fails the test.
    upstream = (run.returncode != 0 and "hypothesis/internal/lambda_sources.py" in run.stdout
                and all(e["title"] == "Runtime Error" for e in report["errors"])
                and sum(e["count"] for e in report["errors"]) == 1)
    if upstream:
        print("schemathesis: its own Runtime Error in Hypothesis' lambda description (upstream;"
              " not counted)")
    assert run.returncode == 0 or upstream, run.stdout[-20_000:] + run.stderr[-5_000:]
    assert cases["unique_failures"] == 0 and (upstream or not report["errors"])
    # Every phase ran (the schema has no examples to replay), and every operation was tested.
    ran = {name for name, phase in report["phases"].items() if phase["status"] == "success"}
    assert ran == {"coverage", "fuzzing", "stateful"} or (
        upstream and {"fuzzing", "stateful"} <= ran), report["phases"]
    assert report["operations"]["tested"] == report["operations"]["selected"] >= 13

