"""The gateway benchmark runs (issue #10): ``python -m benchmarks.gateway --quick`` end to end.

A functional check, not a speed threshold (speed targets live in the benchmark's output): a real
Mosquitto, the baselines, one ``eldercare gateway watch`` process and 500 watch connections; every
connection is held to the end, every alarm answered, every frame decoded, published and
delivered, and the gateway stops cleanly.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(420)
def test_the_quick_gateway_benchmark_holds_every_connection_and_answers_every_alarm(
        tmp_path: Path) -> None:
    out = tmp_path / "figures.json"
    run = subprocess.run([sys.executable, "-m", "benchmarks.gateway", "--quick", "--json",
                          str(out)], cwd=ROOT, capture_output=True, text=True, timeout=400,
                         check=False)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    r = json.loads(out.read_text())
    held, drain = r["held"], r["drain"]
    assert r["connect"]["open"] == 500 and r["connect"]["failed"] == 0
    assert held["open_at_watches"] == held["open_at_gateway"] == 500
    assert held["lost_at_watches"] == 0
    assert not any(held["closed_by_gateway"].values()), held["closed_by_gateway"]
    assert drain["sent"]["AL"] > 0
    assert drain["al_answers"] == drain["sent"]["AL"] and drain["al_outstanding"] == 0
    assert drain["frames_sent"] == drain["frames_decoded"] == drain["published"]
    assert drain["delivered"] >= drain["readings"]     # readings, batched on the gw topic
    assert drain["sos_delivered"] >= drain["sent"]["AL"]
    assert r["gateway_exit"] == 0
    # What the report prints: the phases' rates and latencies, and the baselines.
    assert "| 1,000/s |" in run.stdout and "baseline, same run" in run.stdout
    assert all(p["al_rtt_samples"] > 0 for p in r["phases"])
