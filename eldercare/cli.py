"""The ``eldercare`` command: ``run``, ``demo``, ``migrate``, ``detect``, ``registry check|load``,
``token``, ``user add|disable|set-password``, ``sim run|replay|load|score``."""

from __future__ import annotations

import argparse
import getpass
import logging
import os
import signal
import sys
import threading

import psycopg

from device_sim.cli import add_sim_commands
from eldercare.config import Config, load_config
from eldercare.errors import EldercareError

log = logging.getLogger("eldercare")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="TOML configuration file (also ELDERCARE_CONFIG)")
    p.add_argument("--mqtt-url", help="mqtt://host:1883 (also ELDERCARE_MQTT_URL)")
    p.add_argument("--database-url", help="postgresql://... (also ELDERCARE_DATABASE_URL)")
    p.add_argument("--registry", help="device registry file, YAML or JSON (also ELDERCARE_REGISTRY)")
    p.add_argument("--metrics-port", type=int, help="Prometheus port, 0 = off (default 9108)")


def _config(args: argparse.Namespace) -> Config:
    return load_config(path=args.config, env=os.environ, overrides={
        "mqtt.url": args.mqtt_url, "database.url": args.database_url,
        "registry": args.registry, "metrics.port": args.metrics_port,
    })


def _cmd_run(args: argparse.Namespace) -> int:
    from ingest.service import IngestService

    config = _config(args)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with IngestService(config):
        print("eldercare: ingest running; SIGTERM or Ctrl-C stops", file=sys.stderr, flush=True)
        stop.wait()
        log.info("stopping: draining and committing held messages")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from eldercare.demo import run_demo

    return run_demo(duration_s=args.duration, out=sys.stdout, speed=args.speed)


def _cmd_migrate(args: argparse.Namespace) -> int:
    from ingest.service import prepare_database

    report = prepare_database(_config(args))
    print(f"schema up to date; applied now: {report.applied or 'nothing'};"
          f" timescaledb: {'yes' if report.timescale else 'no'}")
    return 0


def _cmd_detect(args: argparse.Namespace) -> int:
    from eldercare.detect import open_input, run_detect
    from schemas.registry import load_registry

    config = load_config(path=args.config, env={}, overrides={"registry": args.registry})
    registry = load_registry(config.registry) if config.registry else None
    try:
        source = open_input(args.file)
    except OSError as exc:
        raise EldercareError(f"cannot read {args.file}: {exc}") from exc
    with source:
        report = run_detect(source, sys.stdout, sys.stderr, registry=registry,
                            params=config.detectors.params(), default_region=args.region,
                            batch_lines=args.batch, tick_s=config.detectors.tick_s)
    print(f"eldercare detect: {report.readings} readings, {report.events} events,"
          f" {report.rejected} rejected lines, {report.detector_failures} detector failures",
          file=sys.stderr)
    return 1 if report.detector_failures or (args.strict and report.rejected) else 0


def _cmd_registry(args: argparse.Namespace) -> int:
    from ingest.registry_store import store_registry
    from schemas.registry import load_registry

    reg = load_registry(args.file)
    devices = sum(len(w.devices) for w in reg.wearers)
    if args.action == "check":
        print(f"{args.file}: valid: {len(reg.wearers)} wearers, {devices} devices")
        return 0
    config = _config(args)
    with psycopg.connect(config.database.url, autocommit=True) as conn:
        n = store_registry(conn, reg)
    print(f"{args.file}: loaded {n} wearers, {devices} devices")
    return 0


def _cmd_token(args: argparse.Namespace) -> int:
    from alerts.auth import new_token

    token, digest = new_token()
    print(f"token (give it to its holder once; it is not stored): {token}")
    print("tokens file entry (docs/api.md):")
    print(f"- {{name: {args.name}, token_sha256: {digest}, role: {args.role},"
          f" regions: [{', '.join(repr(r) for r in args.regions)}]}}")
    return 0


def _read_password() -> str:
    """The new password: one line of stdin when it is not a terminal (scripts, provisioning),
    else typed twice without echo. Never taken from the command line, where ``ps`` and the
    shell history would show it."""
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise EldercareError("the passwords differ")
    return first


def _cmd_user(args: argparse.Namespace) -> int:
    from console.accounts import AccountStore, validate_password

    url = _config(args).database.url
    password = ""
    if args.action in ("add", "set-password"):
        password = _read_password()
        validate_password(password)      # before connecting: a typo costs nothing
    with AccountStore(url) as accounts:
        if args.action == "add":
            accounts.add_user(args.name, password, role=args.role, regions=args.regions,
                              display_name=args.display_name, language=args.language)
            print(f"console user {args.name} added: {args.role},"
                  f" regions {' '.join(args.regions)}")
        elif args.action == "set-password":
            accounts.set_password(args.name, password)
            print(f"console user {args.name}: password set, sessions ended")
        else:
            accounts.disable(args.name)
            print(f"console user {args.name} disabled, sessions ended")
    return 0


def _add_user_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("user", help="duty console accounts")
    actions = p.add_subparsers(dest="action", required=True)
    a = actions.add_parser("add", help="add a console user (password on stdin, or prompted)")
    a.add_argument("name", help="username: the actor recorded in alert audit trails")
    a.add_argument("--role", required=True, choices=["officer", "supervisor", "admin"])
    a.add_argument("--regions", nargs="+", required=True, help="region codes, or * for all")
    a.add_argument("--display-name", help="the name the console shows")
    a.add_argument("--language", default="zh", choices=["zh", "en"],
                   help="console language (default zh)")
    d = actions.add_parser("disable", help="refuse a user's logins and end their sessions")
    d.add_argument("name")
    s = actions.add_parser("set-password",
                           help="replace a user's password (stdin or prompted); ends sessions")
    s.add_argument("name")
    for q in (a, d, s):
        _common(q)
        q.set_defaults(func=_cmd_user)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation and tests)."""
    parser = argparse.ArgumentParser(prog="eldercare", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="run the ingest service against a broker and database")
    _common(p)
    p.set_defaults(func=_cmd_run)
    p = sub.add_parser("demo", help="embedded broker + PostgreSQL + demo fleet, no setup")
    p.add_argument("--duration", type=float, help="stop after this many seconds")
    p.add_argument("--speed", type=float, default=1.0,
                   help="run the demo scenario N times faster than real time (at most ~5)")
    p.set_defaults(func=_cmd_demo)
    p = sub.add_parser("migrate", help="apply schema migrations (and load --registry) and exit")
    _common(p)
    p.set_defaults(func=_cmd_migrate)
    p = sub.add_parser("detect", help="run the detectors over a JSONL file of readings")
    p.add_argument("file", help="readings, one JSON object per line; - for stdin")
    p.add_argument("--registry", help="device registry (zones, devices, time zones)")
    p.add_argument("--config", help="TOML configuration ([detectors] parameters)")
    p.add_argument("--region", default="unknown", help="region of lines that carry none")
    p.add_argument("--batch", type=int, default=5000, help="lines per batch (default 5000)")
    p.add_argument("--strict", action="store_true", help="exit 1 if any line is rejected")
    p.set_defaults(func=_cmd_detect)
    p = sub.add_parser("registry", help="validate or load a device registry file")
    p.add_argument("action", choices=["check", "load"])
    p.add_argument("file")
    _common(p)
    p.set_defaults(func=_cmd_registry)
    p = sub.add_parser("token", help="mint an API token and print its tokens-file entry")
    p.add_argument("name", help="who holds it: the actor recorded in alert audit trails")
    p.add_argument("--role", default="officer",
                   choices=["dispatch", "officer", "supervisor", "admin"])
    p.add_argument("--regions", nargs="+", default=["*"], help="region codes, or * for all")
    p.set_defaults(func=_cmd_token)
    _add_user_commands(sub)
    add_sim_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``eldercare`` console script."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args))
    except EldercareError as exc:
        print(f"eldercare: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
