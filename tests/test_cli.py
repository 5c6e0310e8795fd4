"""The ``eldercare`` command as users run it: ``run`` with SIGTERM, ``demo``, ``registry``."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from schemas import device_topic
from tests.conftest import Publisher, count, now_ms, wait_for
from tests.services import Mosquitto

ROOT = Path(__file__).parent.parent
EXE = [sys.executable, "-m", "eldercare.cli"]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ELDERCARE_")}
    env.update(extra)
    return env


def _start(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    assert proc.stderr is not None
    for line in proc.stderr:
        if "ingest running" in line:
            return proc
    raise AssertionError(f"eldercare run exited with {proc.wait()} before running")


def test_run_flushes_on_sigterm_and_the_rest_is_redelivered(
    broker: Mosquitto, db_url: str, publisher: Publisher, region: str, tmp_path: Path
) -> None:
    env = _env(ELDERCARE_MQTT_URL=broker.url, ELDERCARE_DATABASE_URL=db_url,
               ELDERCARE_METRICS_PORT="0")
    config = tmp_path / "eldercare.toml"
    config.write_text(f'[mqtt]\nclient_id = "cli-{region}"\n')
    args = [*EXE, "run", "--config", str(config)]
    proc = _start(args, env)
    try:
        now = now_ms()
        for i in range(2000):
            publisher.publish(device_topic(region, f"BR-{i % 20}"),
                              json.dumps({"type": "heartbeat", "ts": now, "seq": i}).encode())
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "stopping: draining" in err and "ingest stopped" in err
    stored = count(db_url, "SELECT count(*) FROM readings")
    # Whatever arrived after intake closed was left unacknowledged: the next run gets it.
    second = _start(args, env)
    try:
        wait_for(lambda: count(db_url, "SELECT count(*) FROM readings") == 2000, timeout_s=30,
                 what=f"the remaining {2000 - stored} readings after restart")
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(30) == 0
        assert second.stderr is not None
        second.stderr.close()


def test_demo_runs_on_embedded_defaults() -> None:
    started = time.monotonic()
    # The demo scenario's first ~70 s at 5x: SOS at 10 s, a fall at 20 s, a wanderer out by ~55 s.
    proc = subprocess.run([*EXE, "demo", "--duration", "14", "--speed", "5"], env=_env(),
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "(MQTT 3.1.1)" in out  # amqtt: the client fell back from MQTT 5
    m = re.search(r"(\d+) messages published, (\d+) readings stored, (\d+) dead letters", out)
    assert m is not None, out
    published, stored, dead = map(int, m.groups())
    # Every good message holds at least one reading; the demo injects two invalid ones. The
    # broker may still hold a few messages the service had not received when it stopped.
    assert published > 50 and dead == 2 and stored >= published - dead - 10
    for kind in ("sos", "fall", "geofence_exit"):
        assert re.search(rf"DETECTED {kind} \(", out), f"no {kind} in the demo:\n{out}"
    assert "location=" in out and "dead letters" in out
    # The alerts reached the stand-in dispatch platform, signed, and the API token is printed.
    assert re.search(r"DISPATCH alert\.opened alert #\d+ sos priority 1 .*\(signature ok\)", out), out
    assert "demo token: " in out and "/api/v1" in out
    assert re.search(r"duty console http://127\.0\.0\.1:\d+/ +\(log in as duty / \S+\)", out), out
    assert time.monotonic() - started < 120


def test_registry_check_and_errors() -> None:
    ok = subprocess.run([*EXE, "registry", "check", str(ROOT / "deploy/registry.example.yaml")],
                        env=_env(), capture_output=True, text=True, check=False)
    assert ok.returncode == 0 and "valid: 2 wearers, 3 devices" in ok.stdout
    bad = subprocess.run([*EXE, "registry", "check", os.devnull], env=_env(),
                         capture_output=True, text=True, check=False)
    assert bad.returncode == 2 and "invalid registry" in bad.stderr


def test_token_prints_a_tokens_file_entry_that_authenticates_the_token(
        capsys: pytest.CaptureFixture[str]) -> None:
    from alerts.auth import parse_tokens
    from eldercare.cli import main

    assert main(["token", "dispatch-371002", "--role", "dispatch", "--regions", "371002"]) == 0
    out = capsys.readouterr().out.splitlines()
    token = out[0].rsplit(" ", 1)[1]
    table = parse_tokens(out[2].encode(), fmt="yaml")
    who = table.authenticate(token)
    assert who is not None and (who.name, who.role) == ("dispatch-371002", "dispatch")
    assert who.can_see("371002") and not who.can_see("371003")
    assert table.authenticate(token[:-1] + ("A" if token[-1] != "A" else "B")) is None


def test_user_add_reads_the_password_from_stdin_and_disable_refuses_logins(
        migrated_db: str) -> None:
    from console.accounts import AccountStore

    def user(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run([*EXE, "user", *args, "--database-url", migrated_db], env=_env(),
                              input=stdin, capture_output=True, text=True, timeout=60,
                              check=False)

    password = "a long enough password"
    added = user("add", "li.wei", "--role", "supervisor", "--regions", "371002", "370102",
                 "--display-name", "李伟", "--language", "en", stdin=password + "\n")
    assert added.returncode == 0, added.stderr
    assert "console user li.wei added" in added.stdout and password not in added.stdout
    assert password not in added.stderr
    short = user("add", "zhao", "--role", "officer", "--regions", "371002", stdin="short\n")
    assert short.returncode == 2 and "at least 10 characters" in short.stderr
    again = user("add", "li.wei", "--role", "officer", "--regions", "*", stdin=password + "\n")
    assert again.returncode == 2 and "already exists" in again.stderr
    with AccountStore(migrated_db) as accounts:
        session = accounts.login("li.wei", password, now_ms=now_ms())
        assert session is not None and session.display_name == "李伟"
        assert (session.principal.role, session.principal.regions, session.language) == (
            "supervisor", ("371002", "370102"), "en")
        assert accounts.login("zhao", "short", now_ms=now_ms()) is None
        reset = user("set-password", "li.wei", stdin="another long password\n")
        assert reset.returncode == 0, reset.stderr
        assert accounts.session(session.token or "", now_ms=now_ms()) is None
        assert accounts.login("li.wei", password, now_ms=now_ms()) is None
        password = "another long password"
        session = accounts.login("li.wei", password, now_ms=now_ms())
        assert session is not None
        disabled = user("disable", "li.wei")
        assert disabled.returncode == 0, disabled.stderr
        assert accounts.login("li.wei", password, now_ms=now_ms()) is None
        assert accounts.session(session.token or "", now_ms=now_ms()) is None
    assert user("disable", "nobody").returncode == 2


def test_user_add_on_a_terminal_prompts_twice(migrated_db: str, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    import getpass

    from eldercare.cli import main

    typed = iter(["first password!", "second password"])
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True)
    monkeypatch.setattr(getpass, "getpass", lambda prompt: next(typed))
    args = ["user", "add", "wang", "--role", "officer", "--regions", "371002",
            "--database-url", migrated_db]
    assert main(args) == 2 and "the passwords differ" in capsys.readouterr().err
    typed = iter(["the same password", "the same password"])
    assert main(args) == 0 and "console user wang added" in capsys.readouterr().out
