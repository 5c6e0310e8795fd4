"""``eldercare sim``: run a scenario, replay a recording, generate load, score detections.

Subcommands (docs/simulator.md):

* ``run SCENARIO``: build the fleet and its readings, pass them through gateway delivery, then
  publish them paced (``--speed``, ``--max-speed``) and/or record them (``--record``);
  ``--no-broker`` only records, as fast as possible. Writes the ground-truth labels (default:
  next to the recording, ``.labels.jsonl``) and, if asked, the registry the service needs.
  ``--via-gateway watch=HOST:PORT`` / ``gt06=HOST:PORT``: the scenario's watches / bracelets
  speak their vendor protocol over TCP to that device gateway instead (device_sim.via_gateway),
  with a progress bar on a terminal (a line every 10 s otherwise); the rest publishes as usual.
* ``replay FILE``: publish a recording again with its original timing (scaled by ``--speed``).
* ``load``: synthetic readings at a fixed rate (device_sim.load).
* ``score``: match detected events against labels (device_sim.score).

The heavier modules are imported inside the handlers, so ``eldercare --help`` stays quick and a
module being reworked never breaks the other commands. Ctrl-C or SIGTERM stops a run cleanly: what
was sent is acknowledged and the recording and labels are complete up to that point.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from device_sim.recording import RecordingWriter
from device_sim.types import Publication
from eldercare.config import load_config
from foundation.errors import ConfigError, ValidationError

if TYPE_CHECKING:
    from device_sim.stream import Simulation
    from device_sim.tcp_devices import DeviceStats
    from foundation.broker import BrokerAddress


def add_sim_commands(subparsers: Any) -> None:
    """Add ``sim`` and its subcommands to the ``eldercare`` parser's ``subparsers``."""
    sim = subparsers.add_parser("sim", help="device simulator: scenarios, replay, load, scoring")
    sub = sim.add_subparsers(dest="sim_command", required=True)

    p = sub.add_parser("run", help="simulate a scenario: publish and/or record its messages")
    p.add_argument("scenario", help="scenario file (docs/simulator.md)")
    _broker_options(p)
    p.add_argument("--record", metavar="FILE.jsonl", help="write the recording here")
    p.add_argument("--no-broker", action="store_true",
                   help="do not publish: only record, as fast as possible (needs --record)")
    p.add_argument("--labels", metavar="FILE",
                   help="ground-truth labels (JSONL); default: the recording's .labels.jsonl")
    p.add_argument("--registry-out", metavar="FILE",
                   help="write the fleet's device registry here (.json, else YAML)")
    p.add_argument("--via-gateway", action="append", metavar="PROTOCOL=HOST:PORT",
                   help="watch=HOST:PORT: the watches speak the 3G watch protocol to that"
                        " gateway; gt06=HOST:PORT: the bracelets speak GT06 (under IMEIs);"
                        " one or both; other devices publish over MQTT as usual")
    p.add_argument("--frames-per-s", type=float, default=15.0, metavar="N",
                   help="with --via-gateway: frames a second per device connection, at most"
                        " (default 15, under the gateway's default limit of 20)")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("replay", help="publish a recording with its original timing")
    p.add_argument("file", help="recording (JSONL) written by `eldercare sim run --record`")
    _broker_options(p)
    p.set_defaults(func=_cmd_replay)

    p = sub.add_parser("load", help="synthetic readings at a fixed rate, for load tests")
    p.add_argument("--devices", type=int, required=True, help="number of devices")
    p.add_argument("--rate", type=_rate, required=True,
                   help="readings per second in total, or 'max'")
    p.add_argument("--gateway-batch", type=int, default=50,
                   help="readings per gateway message; 1 = device topics (default 50)")
    p.add_argument("--duration", type=float, help="seconds (default: until Ctrl-C)")
    p.add_argument("--region", default="load", help="topic region (default load)")
    p.add_argument("--mqtt-url", help="mqtt://host:1883 (also ELDERCARE_MQTT_URL)")
    p.set_defaults(func=_cmd_load)

    p = sub.add_parser("score", help="score detected events against the labels")
    p.add_argument("--labels", required=True, help="labels JSONL from `sim run`")
    p.add_argument("--events", required=True, help="events JSONL (e.g. from `eldercare detect`)")
    p.add_argument("--json", metavar="FILE", help="also write the report as JSON (- = stdout)")
    p.set_defaults(func=_cmd_score)

    p = sub.add_parser("eval", help="simulate a scenario, run the detectors over it, score them")
    p.add_argument("scenario", help="scenario file (docs/simulator.md)")
    p.add_argument("--workdir", metavar="DIR",
                   help="keep the recording, labels, registry and events here "
                        "(default: a temporary directory, removed afterwards)")
    p.add_argument("--json", metavar="FILE", help="also write the report as JSON (- = stdout)")
    p.add_argument("--min-recall", type=float, metavar="R",
                   help="exit 1 if the recall over all scored types is below R (0-1)")
    p.add_argument("--config", help="TOML configuration ([detectors] parameters)")
    p.set_defaults(func=_cmd_eval)


def _broker_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mqtt-url",
                   help="mqtt://host:1883 or mqtts://host:8883 (also ELDERCARE_MQTT_URL)")
    login = p.add_argument_group("broker login and TLS (as [mqtt] in the configuration)")
    login.add_argument("--username", help="broker login (a device or gateway id)")
    login.add_argument("--password-file", metavar="FILE", help="file holding its password")
    login.add_argument("--ca-file", metavar="PEM",
                       help="CA certificates for the broker's (mqtts://; default: the system's)")
    login.add_argument("--cert-file", metavar="PEM", help="client certificate (with --key-file)")
    login.add_argument("--key-file", metavar="PEM", help="its unencrypted private key")
    pace = p.add_mutually_exclusive_group()
    pace.add_argument("--speed", type=float, default=1.0,
                      help="1 = real time, N = N times faster (default 1)")
    pace.add_argument("--max-speed", action="store_true", help="publish as fast as possible")


def _rate(text: str) -> float | None:
    if text == "max":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number or 'max': {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


def _broker(args: argparse.Namespace) -> BrokerAddress:
    """The broker, login and TLS files from the options and ``ELDERCARE_MQTT_URL``, checked as
    ``eldercare run`` checks [mqtt] (a missing file is a ConfigError naming the option)."""
    from foundation.broker import BrokerAddress

    options = {"url": args.mqtt_url, "username": args.username,
               "password_file": args.password_file, "ca_file": args.ca_file,
               "cert_file": args.cert_file, "key_file": args.key_file}
    config = load_config(path=None, env=os.environ,
                         overrides={f"mqtt.{k}": v for k, v in options.items()})
    return BrokerAddress.from_config(config.mqtt)


def _mqtt_url(args: argparse.Namespace) -> str:
    """The broker URL as ``eldercare run`` finds it: option, environment, config, default."""
    return load_config(path=None, env=os.environ, overrides={"mqtt.url": args.mqtt_url}).mqtt.url


def _speed(args: argparse.Namespace) -> float | None:
    if args.max_speed:
        return None
    if args.speed <= 0:
        raise ConfigError("--speed must be > 0")
    return float(args.speed)


def _stop_on_signals() -> threading.Event:
    """An event set by SIGINT/SIGTERM (when we are the main thread), for a clean stop."""
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
    return stop


def _open_out(path: str) -> IO[bytes]:
    try:
        return open(path, "wb")
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc}") from exc


def _open_in(path: str) -> IO[bytes]:
    try:
        return open(path, "rb")
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc


def _cmd_run(args: argparse.Namespace) -> int:
    if args.no_broker and not args.record:
        raise ConfigError("--no-broker needs --record FILE")
    from device_sim.scenario import load_scenario
    from device_sim.stream import build

    scenario = load_scenario(Path(args.scenario))
    sim = build(scenario)
    if args.via_gateway:
        return _run_via_gateways(sim, args)
    if args.registry_out:  # first: the service needs it before the first reading arrives
        _write_registry(sim.registry, Path(args.registry_out))
    pubs = sim.publications()
    if args.record:
        with _open_out(args.record) as record:
            _run_pipeline(pubs, RecordingWriter(record), args)
    else:
        _run_pipeline(pubs, None, args)
    labels = args.labels or (str(Path(args.record).with_suffix(".labels.jsonl"))
                             if args.record else None)
    if labels:
        _write_labels(sim.labels, Path(labels))
        print(f"eldercare sim: {len(sim.labels)} labels written to {labels}", file=sys.stderr)
    return 0


def _run_via_gateways(sim: Simulation, args: argparse.Namespace) -> int:
    from device_sim.tcp_devices import DeviceSettings
    from device_sim.via_gateway import parse_target, route, run_via_gateways

    if args.no_broker or args.record:
        raise ConfigError("--via-gateway sends frames to device gateways: it cannot go with"
                          " --record or --no-broker (--labels FILE writes the ground truth)")
    if args.frames_per_s <= 0:
        raise ConfigError("--frames-per-s must be > 0")
    routes = route(sim, [parse_target(text) for text in args.via_gateway])
    if args.registry_out:  # under the ids the gateways publish (a GT06 tracker's IMEI)
        _write_registry(routes.registry(sim.registry), Path(args.registry_out))
    progress = _Progress(sim.start_ms, sim.end_ms)
    try:
        stats = run_via_gateways(sim, routes, mqtt=_broker(args), speed=_speed(args),
                                 stop=_stop_on_signals(), on_progress=progress,
                                 settings=DeviceSettings(max_frames_per_s=args.frames_per_s))
    finally:
        progress.close()
    kinds = Counter(str(t.protocol) for t in routes.targets.values())
    for line in _device_summary(stats.devices, kinds):
        print(f"eldercare sim: {line}", file=sys.stderr)
    if stats.mqtt is not None:
        m = stats.mqtt
        print(f"eldercare sim: the other devices published {m.messages} messages"
              f" ({m.readings} readings) over MQTT; {m.late_messages} late (max"
              f" {m.max_late_ms:.0f} ms)", file=sys.stderr)
    if args.labels:
        _write_labels(routes.labels(sim.labels), Path(args.labels))
        print(f"eldercare sim: {len(sim.labels)} labels written to {args.labels}",
              file=sys.stderr)
    return 0


def _device_summary(s: DeviceStats, kinds: Counter[str]) -> list[str]:
    protocols = ", ".join(f"{name} {n}" for name, n in sorted(kinds.items()))
    first = (f"via gateways: {_n(s.devices, 'device')} ({protocols}) on"
             f" {_n(s.connections, 'connection')} ({s.reconnects} after an outage or a lost"
             f" connection); {_n(s.readings, 'reading')} as {_n(s.frames, 'frame')},"
             f" {_n(s.replies, 'reply', 'replies')} ({s.replies_missing} missing);"
             f" {_n(s.alarms, 'alarm')}, {s.alarms_answered} answered, {s.alarm_repeats}"
             f" repeated, {s.alarms_unanswered} unanswered;"
             f" {_n(s.commands_answered, 'command')} from duty staff answered;"
             f" {s.late_frames} frames late (max"
             f" {s.max_late_ms:.0f} ms){'; stopped' if s.stopped else ''}")
    lines = [first]
    if s.not_carried or s.unlocated:
        skipped = ", ".join(f"{what} {n}" for what, n in sorted(s.not_carried.items()))
        lines.append(f"not carried by the protocols: {skipped or 'nothing'};"
                     f" {_n(s.unlocated, 'Wi-Fi/cell fix', 'Wi-Fi/cell fixes')} sent without a"
                     " position (the serving cell only)")
    if s.connect_failures or s.frames_undelivered or s.errors:
        lines.append(f"{s.connect_failures} failed connection attempts, {s.frames_undelivered}"
                     f" frames undelivered, {s.errors} readings not encoded (see the log)")
    return lines


def _n(count: int, noun: str, plural: str | None = None) -> str:
    return f"{count} {noun if count == 1 else plural or noun + 's'}"


class _Progress:
    """Progress of a long run on stderr: a bar redrawn in place on a terminal, else a line
    every ``every_s`` seconds (logs and CI keep every line)."""

    def __init__(self, start_ms: int, end_ms: int, *, stream: IO[str] | None = None,
                 every_s: float = 10.0) -> None:
        self.start_ms, self.span_ms = start_ms, max(end_ms - start_ms, 1)
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.every_s = every_s
        self._last: float | None = None
        self._drawn = False

    def __call__(self, stats: DeviceStats) -> None:
        import time

        now = time.monotonic()
        done = min(max((stats.sim_ms - self.start_ms) / self.span_ms, 0.0), 1.0)
        text = (f"{done:4.0%} of the run (t+{max(stats.sim_ms - self.start_ms, 0) // 1000} s):"
                f" {_n(stats.frames, 'frame')} sent, {_n(stats.replies, 'reply', 'replies')},"
                f" {_n(stats.alarms, 'alarm')} ({stats.alarm_repeats} repeated)")
        if self.tty:
            bar = "#" * round(done * 30)
            self.stream.write(f"\r[{bar:<30}] {text}\x1b[K")
            self.stream.flush()
            self._drawn = True
        elif self._last is None or now - self._last >= self.every_s:
            print(f"eldercare sim: {text}", file=self.stream, flush=True)
            self._last = now

    def close(self) -> None:
        """End the bar's line (a terminal)."""
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()


def _run_pipeline(pubs: Iterable[Publication], writer: RecordingWriter | None,
                  args: argparse.Namespace) -> None:
    from device_sim.publisher import publish

    if args.no_broker:
        assert writer is not None
        for pub in pubs:
            writer.write(pub)
    else:
        stats = publish(_tee(pubs, writer), url=_broker(args), speed=_speed(args),
                        stop=_stop_on_signals())
        print(f"eldercare sim: published {stats.messages} messages ({stats.readings} readings)"
              f" in {stats.seconds:.1f} s; {stats.late_messages} late (max"
              f" {stats.max_late_ms:.0f} ms){'; stopped' if stats.stopped else ''}",
              file=sys.stderr)
    if writer is not None:
        s = writer.stats
        print(f"eldercare sim: recorded {s.messages} messages ({s.readings} readings) to"
              f" {args.record}", file=sys.stderr)


def _tee(pubs: Iterable[Publication], writer: RecordingWriter | None
         ) -> Iterator[Publication]:
    """Record each message as it goes to the publisher (so a stopped run records what it sent)."""
    for pub in pubs:
        if writer is not None:
            writer.write(pub)
        yield pub


def _write_labels(labels: Iterable[Any], path: Path) -> None:
    from device_sim.types import LABEL_ENCODER

    with _open_out(str(path)) as out:
        for label in labels:
            out.write(LABEL_ENCODER.encode(label) + b"\n")


def _write_registry(registry: Any, path: Path) -> None:
    import msgspec

    data = (msgspec.json.encode(registry) if path.suffix.lower() == ".json"
            else msgspec.yaml.encode(registry))
    try:
        path.write_bytes(data)
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc}") from exc


def _cmd_replay(args: argparse.Namespace) -> int:
    from device_sim.publisher import publish
    from device_sim.recording import read_recording

    with _open_in(args.file) as source:
        try:
            stats = publish(read_recording(source), url=_broker(args), speed=_speed(args),
                            stop=_stop_on_signals())
        except ValidationError as exc:
            raise ValidationError(f"{args.file}: {exc.reason}") from exc
    print(f"eldercare sim: replayed {stats.messages} messages ({stats.readings} readings) in"
          f" {stats.seconds:.1f} s; {stats.late_messages} late (max {stats.max_late_ms:.0f} ms)"
          f"{'; stopped' if stats.stopped else ''}", file=sys.stderr)
    return 0


def _cmd_load(args: argparse.Namespace) -> int:
    from device_sim.load import LoadParams, format_stats, run_load

    try:
        params = LoadParams(devices=args.devices, rate=args.rate,
                            gateway_batch=args.gateway_batch, duration_s=args.duration,
                            region=args.region)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    stats = run_load(params, url=_mqtt_url(args), stop=_stop_on_signals())
    print(format_stats(stats))
    print(json.dumps({"messages": stats.messages, "readings": stats.readings,
                      "seconds": round(stats.seconds, 3), "readings_per_s": round(stats.rate, 1),
                      "cpu_seconds": round(stats.cpu_seconds, 3), "refused": stats.refused}))
    return 0


def _cmd_score(args: argparse.Namespace) -> int:
    from device_sim.score import score_files

    return score_files(Path(args.labels), Path(args.events), out=sys.stdout,
                       json_path=Path(args.json) if args.json else None)



def _cmd_eval(args: argparse.Namespace) -> int:
    import tempfile

    from device_sim.evaluate import evaluate
    from device_sim.scenario import load_scenario
    from device_sim.score import format_table, report_json
    from eldercare.config import load_config

    scenario = load_scenario(Path(args.scenario))
    params = load_config(path=args.config, env={}).detectors.params() if args.config else None
    with tempfile.TemporaryDirectory(prefix="eldercare-sim-eval-") as tmp:
        ev = evaluate(scenario, workdir=Path(args.workdir or tmp), params=params)
        table = format_table(ev.report)
        if args.json == "-":
            sys.stdout.buffer.write(report_json(ev.report) + b"\n")
            print(table, file=sys.stderr)
        else:
            print(table)
            if args.json:
                Path(args.json).write_bytes(report_json(ev.report) + b"\n")
    print(f"eldercare sim eval: {ev.recording.readings} readings in {ev.recording.messages} "
          f"messages, {ev.detect.events} events, {ev.detect.rejected} rejected lines, "
          f"{ev.detect.detector_failures} detector failures"
          + (f"; files in {args.workdir}" if args.workdir else ""), file=sys.stderr)
    if ev.detect_errors:
        print(ev.detect_errors, end="", file=sys.stderr)
    recall = ev.report.total.recall
    if args.min_recall is not None and (recall is None or recall < args.min_recall):
        print(f"eldercare sim eval: recall {recall} is below {args.min_recall}", file=sys.stderr)
        return 1
    return 1 if ev.detect.detector_failures or ev.detect.rejected else 0
