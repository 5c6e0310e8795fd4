"""The ``eldercare`` command: ``run``, ``demo``, ``migrate``, ``detect``,
``registry check|load|import|export``,
``regions check|load``,
``token``, ``user add|disable|set-password``, ``broker acl``, ``sim run|replay|load|score``."""

from __future__ import annotations

import argparse
import getpass
import io
import logging
import os
import signal
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg

from eldercare.config import Config, load_config
from eldercare.gateway_cli import add_gateway_commands
from eldercare.registry_io_cli import add_registry_io_options
from eldercare.sim_cli import add_sim_commands
from foundation.errors import EldercareError

if TYPE_CHECKING:
    from registry.idcard import IdCardVault

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


#: How long the orderly stop after a worker's death may take before the process exits anyway:
#: a stalled process is what the exit is for, so the stop itself must not stall it.
DEATH_STOP_LIMIT_S = 60.0
#: How often the run loop polls the supervisor's liveness probes (HTTP server thread).
_CHECK_S = 1.0


def _cmd_run(args: argparse.Namespace) -> int:
    from eldercare.app import Application
    from foundation.supervisor import EXIT_WORKER_DIED, Supervisor

    config = _config(args)
    stop = threading.Event()
    supervisor = Supervisor(on_death=lambda _death: stop.set())
    # An exception escaping any thread of the process (paho's network loop included) is a
    # death too: the process must not stay up and deaf (foundation/supervisor.py).
    threading.excepthook = supervisor.excepthook
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with Application(config, supervisor=supervisor):
        print("eldercare: ingest running; SIGTERM or Ctrl-C stops", file=sys.stderr, flush=True)
        while not stop.wait(_CHECK_S):
            supervisor.check()
        if supervisor.failed.is_set():
            _exit_after(DEATH_STOP_LIMIT_S, EXIT_WORKER_DIED)
            log.error("stopping after a worker died: committing and acknowledging what is held")
        else:
            log.info("stopping: draining and committing held messages")
    if supervisor.deaths:
        print(f"eldercare: error: worker died: {supervisor.describe_deaths()};"
              f" exiting {EXIT_WORKER_DIED} so that the"
              " service is restarted", file=sys.stderr)
        return EXIT_WORKER_DIED
    return 0


def _exit_after(seconds: float, status: int) -> None:
    """Arm a hard exit: if the orderly stop has not ended within ``seconds``, exit anyway
    (what is unacknowledged is redelivered by the broker to the next run)."""
    def hard_exit() -> None:
        log.error("orderly stop took over %.0f s; exiting now", seconds)
        logging.shutdown()
        os._exit(status)

    timer = threading.Timer(seconds, hard_exit)
    timer.daemon = True
    timer.start()


def _cmd_demo(args: argparse.Namespace) -> int:
    from eldercare.demo import run_demo

    return run_demo(duration_s=args.duration, out=sys.stdout, speed=args.speed)


def _cmd_migrate(args: argparse.Namespace) -> int:
    from eldercare.app import prepare_database

    report = prepare_database(_config(args))
    print(f"schema up to date; applied now: {report.applied or 'nothing'};"
          f" timescaledb: {'yes' if report.timescale else 'no'}")
    return 0


def _cmd_detect(args: argparse.Namespace) -> int:
    from detectors.replay import run_detect
    from eldercare.detect import open_input
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

    if args.action in ("import", "export"):   # wearer lists, CSV/XLSX (registry_io_cli.py)
        from eldercare.registry_io_cli import run_export, run_import

        if args.action == "import":
            return run_import(_config(args), args.file, dry_run=args.dry_run, actor=args.actor)
        return run_export(_config(args), args.file, lang=args.lang)

    reg = load_registry(args.file)
    devices = sum(len(w.devices) for w in reg.wearers)
    if args.action == "check":
        print(f"{args.file}: valid: {len(reg.wearers)} wearers, {devices} devices")
        return 0
    config = _config(args)
    with psycopg.connect(config.database.url, autocommit=True) as conn:
        n = store_registry(conn, reg, actor=f"cli:{getpass.getuser()}")
    print(f"{args.file}: loaded {n} wearers, {devices} devices"
          + (f" ({len(reg.wearers) - n} deactivated wearers left as they are)"
             if n < len(reg.wearers) else ""))
    return 0


def _cmd_regions(args: argparse.Namespace) -> int:
    from registry.regions import load_regions, read_region_tree

    tree = read_region_tree(args.file)
    if args.action == "check":
        # Offline: whether those parents exist is for `load` to check against the database.
        outside = tree.external_parents()
        needs = f"; needs in the database: {' '.join(outside)}" if outside else ""
        print(f"{args.file}: valid: {len(tree.nodes)} regions{needs}")
        return 0
    config = _config(args)
    with psycopg.connect(config.database.url, autocommit=True) as conn:
        report = load_regions(conn, tree, actor=f"cli:{getpass.getuser()}")
    print(f"{args.file}: {report.inserted} regions inserted, {report.updated} updated,"
          f" {report.unchanged} unchanged")
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
        elif args.action == "unlock":
            # Wall-clock time: the running service forgives the failures it counted before it.
            accounts.unlock(args.name, now_ms=int(datetime.now(UTC).timestamp() * 1000))
            print(f"console user {args.name}: login lockout lifted (the running service"
                  " forgives the failed logins counted so far at the next attempt)")
        else:
            accounts.disable(args.name)
            print(f"console user {args.name} disabled, sessions ended")
    return 0


def _add_user_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("user", help="duty console accounts")
    actions = p.add_subparsers(dest="action", required=True)
    a = actions.add_parser("add", help="add a console user (password on stdin, or prompted)")
    a.add_argument("name", help="username: the actor recorded in alert audit trails")
    a.add_argument("--role", required=True, choices=["officer", "supervisor", "admin", "clerk"],
                   help="clerk: enrols wearers and devices, reads alerts without acting on them")
    a.add_argument("--regions", nargs="+", required=True, help="region codes, or * for all")
    a.add_argument("--display-name", help="the name the console shows")
    a.add_argument("--language", default="zh", choices=["zh", "en"],
                   help="console language (default zh)")
    d = actions.add_parser("disable", help="refuse a user's logins and end their sessions")
    d.add_argument("name")
    s = actions.add_parser("set-password",
                           help="replace a user's password (stdin or prompted); ends sessions")
    s.add_argument("name")
    u = actions.add_parser("unlock", help="lift a user's login lockout (too many failed logins)"
                                          " in the running service")
    u.add_argument("name")
    for q in (a, d, s, u):
        _common(q)
        q.set_defaults(func=_cmd_user)


def _cmd_broker_acl(args: argparse.Namespace) -> int:
    from eldercare.broker_acl import BrokerClients, load_broker_clients, render_acl
    from schemas.registry import load_registry

    registry = load_registry(args.registry)
    clients = load_broker_clients(args.gateways) if args.gateways else BrokerClients()
    tree: tuple[str, ...] = ()
    if args.regions:
        from registry.regions import read_region_tree
        tree = tuple(node.code for node in read_region_tree(args.regions).nodes)
    text = render_acl(registry, clients=clients, regions=tree, ingest_user=args.ingest_user,
                      alerts_user=args.alerts_user, gateway_user=args.gateway_user)
    if args.out is None:
        sys.stdout.write(text)
        return 0
    # Written beside the target and renamed over it: Mosquitto reloading on SIGHUP (or a
    # restart) reads either the old ACL or the new one, never half of one.
    tmp = f"{args.out}.tmp{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, args.out)
    except OSError as exc:
        raise EldercareError(f"cannot write {args.out}: {exc}") from exc
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    users = sum(line.startswith("user ") for line in text.splitlines())
    print(f"{args.out}: ACL for {users} broker users written; reload Mosquitto (SIGHUP)",
          file=sys.stderr)
    return 0


def _add_broker_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("broker", help="Mosquitto configuration generated from the registry")
    actions = p.add_subparsers(dest="action", required=True)
    a = actions.add_parser("acl", help="write the Mosquitto ACL (deploy/mosquitto/README.md)")
    a.add_argument("--registry", required=True, help="device registry file, YAML or JSON")
    a.add_argument("--gateways", help="broker clients file: gateways and alert readers")
    a.add_argument("--regions", help="region tree file (CSV or YAML, as [enrolment] regions):"
                                     " an alert reader's region also grants every region below"
                                     " it in the tree")
    a.add_argument("--out", help="ACL file to replace atomically (default: stdout)")
    a.add_argument("--ingest-user", default="eldercare-ingest",
                   help="broker username of the service's ingest (default eldercare-ingest)")
    a.add_argument("--alerts-user", default="eldercare-alerts",
                   help="broker username publishing alerts (default eldercare-alerts; the"
                        " service's [alerts.mqtt] username)")
    a.add_argument("--gateway-user", default="eldercare-gateway",
                   help="broker username of the device gateway (default eldercare-gateway; its"
                        " [mqtt] username)")
    a.set_defaults(func=_cmd_broker_acl)


def _cmd_wearer(args: argparse.Namespace) -> int:
    """``wearer export|delete``: one wearer's data (docs/privacy.md)."""
    from eldercare.privacy import delete_wearer

    config = _config(args)
    if args.action == "delete" and not args.yes:
        raise EldercareError(f"deleting wearer {args.id}'s data cannot be undone; add --yes")
    try:
        conn = psycopg.connect(config.database.url, autocommit=True)
    except psycopg.OperationalError as exc:
        raise EldercareError(f"database unreachable: {str(exc).strip()}") from exc
    with conn:
        if args.action == "export":
            return _export_wearer(conn, args.id, args.out, vault=_export_vault(config))
        report = delete_wearer(conn, args.id, now=datetime.now(UTC), actor=args.actor,
                               phone_region=config.alerts.phone_region)
    print(f"wearer {report.wearer_id}: data deleted by {report.actor} at"
          f" {report.at.isoformat(timespec='seconds')}")
    for table, n in report.deleted.items():
        print(f"  deleted        {table:<18}{n:>10}")
    for table, n in report.pseudonymized.items():
        print(f"  pseudonymised  {table:<18}{n:>10}")
    print(f"  audit entries  {'alert_audit':<18}{report.audited:>10}")
    # The registry file is the source of truth: left in it, the wearer comes back at the next
    # start (or registry load), without their history but with name and contacts.
    print(f"remove {report.wearer_id} and their devices from the registry file, or the next"
          " start loads them again", file=sys.stderr)
    return 0


def _export_vault(config: Config) -> IdCardVault | None:
    """The registry's ID-card vault, to reveal the number in the person's own export; None
    (the number exported masked, said on stderr) when this machine has no registry secret:
    a new one would decrypt nothing."""
    from registry.idcard import default_secret_path, load_vault

    path = Path(config.enrolment.secret_file or default_secret_path())
    if not path.exists():
        print(f"no registry secret at {path}: the ID-card number is exported masked",
              file=sys.stderr)
        return None
    return load_vault(path)


def _export_wearer(conn: psycopg.Connection, wearer_id: str, out: str, *,
                   vault: IdCardVault | None = None) -> int:
    """Stream the export to stdout, or to a new file (mode 600: it is personal data) that
    replaces ``out`` only once complete."""
    from eldercare.privacy import write_export

    if out == "-":
        sys.stdout.flush()          # UTF-8 whatever the locale says, after what was printed
        stream = io.TextIOWrapper(sys.stdout.buffer, encoding="utf-8", newline="\n")
        try:
            write_export(conn, wearer_id, stream, vault=vault)
        finally:
            stream.flush()
            stream.detach()         # sys.stdout keeps its buffer
        return 0
    tmp = f"{out}.tmp{os.getpid()}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with open(fd, "w", encoding="utf-8", newline="\n") as f:
            counts = write_export(conn, wearer_id, f, vault=vault)
        os.replace(tmp, out)
    except OSError as exc:
        raise EldercareError(f"cannot write {out}: {exc}") from exc
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    print(f"{out}: wearer {wearer_id}: " + ", ".join(f"{n} {k}" for k, n in counts.items()),
          file=sys.stderr)
    return 0


def _add_wearer_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("wearer", help="export or delete one wearer's data (docs/privacy.md)")
    actions = p.add_subparsers(dest="action", required=True)
    e = actions.add_parser("export", help="everything stored about a wearer, as JSON")
    e.add_argument("id", help="wearer id")
    e.add_argument("--out", default="-", help="file to write (default -: stdout), UTF-8")
    d = actions.add_parser("delete", help="delete a wearer's data; alerts are kept, pseudonymised")
    d.add_argument("id", help="wearer id")
    d.add_argument("--yes", action="store_true", help="confirm: this cannot be undone")
    d.add_argument("--actor", required=True,
                   help="who asks for the deletion: recorded in each kept alert's audit trail")
    for q in (e, d):
        _common(q)
        q.set_defaults(func=_cmd_wearer)


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
    p = sub.add_parser("registry", help="validate or load a device registry file; import or"
                                        " export a wearer list (CSV/XLSX)")
    p.add_argument("action", choices=["check", "load", "import", "export"])
    p.add_argument("file")
    add_registry_io_options(p)
    _common(p)
    p.set_defaults(func=_cmd_registry)
    p = sub.add_parser("regions", help="validate or load a region tree file (CSV or YAML;"
                                       " docs/registry-database.md)")
    p.add_argument("action", choices=["check", "load"])
    p.add_argument("file")
    _common(p)
    p.set_defaults(func=_cmd_regions)
    p = sub.add_parser("token", help="mint an API token and print its tokens-file entry")
    p.add_argument("name", help="who holds it: the actor recorded in alert audit trails")
    p.add_argument("--role", default="officer",
                   choices=["dispatch", "officer", "supervisor", "admin", "clerk"])
    p.add_argument("--regions", nargs="+", default=["*"], help="region codes, or * for all")
    p.set_defaults(func=_cmd_token)
    _add_user_commands(sub)
    _add_wearer_commands(sub)
    _add_broker_commands(sub)
    add_gateway_commands(sub)
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
