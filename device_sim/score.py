"""Score detected events against the simulator's ground truth (issue #4; docs/simulator.md).

Pure: :func:`score` takes decoded labels and events and returns a :class:`ScoreReport`; only
:func:`score_files` touches files. The rule, per ``(device_id, type)``:

* an event may match a label when ``start - early_s <= event.ts <= start + window_s(type)``;
  ``early_s`` absorbs device-clock and fix-timing jitter, ``window_s`` is the longest plausible
  detection delay of that detector (defaults in :data:`DEFAULT_WINDOW_S`, reasons there);
* events are taken in time order and each goes to the open (unmatched, not yet expired) label
  whose window closes first. That greedy is a maximum matching for intervals and points, so two
  labels close together with overlapping windows each get their own event when there are two;
* an event with no open label but within the *repeat horizon* of an already matched label (its
  window, or longer: :data:`DEFAULT_REPEAT_S`) is a *repeat* of that incident (a geofence exit
  raised again, a second SOS after the 2-min join ran out): counted, not a false positive;
* any other event of a labelled type is a false positive. Event types with no label in the file
  are *not scored* and only counted: the ground truth says nothing about them (a battery that
  ran down on its own during a long simulation is not a false ``low_battery``).

Times are device time in ms on both sides (``Label.start_ms``, ``Event.ts``); latency is
``event.ts - start_ms`` in seconds, so it can be slightly negative (within ``early_s``).
"""

from __future__ import annotations

import heapq
import sys
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import IO, Final, TypeVar, get_args

import msgspec
import numpy as np

from detectors.events import Event
from device_sim.types import LABEL_DECODER, Label, LabelType
from foundation.errors import ValidationError

LABEL_TYPES: Final[tuple[str, ...]] = get_args(LabelType)
T = TypeVar("T")

#: Longest plausible delay from an incident's start to the ``ts`` of the event it raises, per
#: label type, in seconds (docs/detectors.md gives the detector rules behind each figure).
DEFAULT_WINDOW_S: Final[dict[str, float]] = {
    # The press itself raises it (event ts = the press): the delay is only a scripted press
    # whose first reading is lost or late; 120 s, the join window, bounds that generously.
    "sos": 120.0,
    # Event ts is the impact (the decision ~3 s later does not move it); 60 s covers a
    # device-reported fall sent after its own confirmation delay.
    "fall": 60.0,
    # Exit needs 2 fixes or 60 s outside, but a wanderer may linger at the edge, inside the
    # 50 m margin, for minutes before really leaving.
    "geofence_exit": 15 * 60.0,
    # Smoke/gas report at once; night-only bed_exit/door alarms likewise. 120 s = batching.
    "home_alarm": 120.0,
    # The wear sensor reports removal within a report or two.
    "device_removed": 120.0,
    # Start is the scripted discharge; the 20 % threshold is crossed at the next battery report,
    # which bracelets send every few minutes and home sensors far less often.
    "low_battery": 3600.0,
    # Kind unknown: the default 30 min period + 15 min; per kind see DEFAULT_OFFLINE_WINDOW_S.
    "offline": 30 * 60.0 + 15 * 60.0,
    # Three consecutive out-of-range readings; watches measure every few minutes.
    "heart_rate": 30 * 60.0,
    # 4 h without motion, + 2 h for a stray motion blip or step report early in the stillness
    # that restarts the 4 h. Checked 08:00-20:00 only: stillness starting after 16:00 is raised
    # the next morning, so scenarios script it earlier (or widen the window).
    "inactivity": 6 * 3600.0,
}

#: ``offline`` is stamped last reading + the device kind's period (detectors/params.py), so at
#: most one period after the silence began; + 15 min for a late last reading and tick timing.
#: The kind comes from the label's ``detail["kind"]`` (registry kinds).
DEFAULT_OFFLINE_WINDOW_S: Final[dict[str, float]] = {
    "bracelet": 15 * 60.0 + 15 * 60.0,
    "watch": 30 * 60.0 + 15 * 60.0,
    "pendant": 30 * 60.0 + 15 * 60.0,
    "fall_sensor": 30 * 60.0 + 15 * 60.0,
    "home_sensor": 26 * 3600.0 + 15 * 60.0,
}


#: How long after a matched label's start a same-device, same-type event is still the same
#: incident raised again (a *repeat*), when that is longer than the window, in seconds. Types not
#: named here (low_battery, offline, inactivity: once until re-armed) use their window.
DEFAULT_REPEAT_S: Final[dict[str, float]] = {
    # Presses join while < 120 s apart; a person nobody answered presses again minutes later.
    "sos": 15 * 60.0,
    # A device re-report after its 120 s join, or the accelerometer detector on the same fall.
    "fall": 10 * 60.0,
    # A wanderer flapping at the edge of the zone: exit, return, exit again.
    "geofence_exit": 2 * 3600.0,
    # Smoke reports every 1-5 min join within 600 s; a longer gap raises it again.
    "home_alarm": 3600.0,
    # Taken off, put back on briefly, off again.
    "device_removed": 3600.0,
    # Re-armed by one normal reading, so a sustained episode can re-raise.
    "heart_rate": 2 * 3600.0,
}


class ScoreParams(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How far around a label's start an event may lie and still detect it.

    ``window_s``, ``offline_window_s`` and ``repeat_s`` override the defaults per type / device
    kind; types and kinds not named keep :data:`DEFAULT_WINDOW_S`,
    :data:`DEFAULT_OFFLINE_WINDOW_S` and :data:`DEFAULT_REPEAT_S`.
    """

    #: An event this long *before* the start still matches: the simulated device clock and the
    #: fix schedule can put the triggering reading a little ahead of the scripted instant.
    early_s: float = 5.0
    window_s: dict[str, float] = {}
    offline_window_s: dict[str, float] = {}
    repeat_s: dict[str, float] = {}

    def __post_init__(self) -> None:
        if self.early_s < 0:
            raise ValueError("early_s must be >= 0")
        for name, windows, known in (("window_s", self.window_s, LABEL_TYPES),
                                     ("offline_window_s", self.offline_window_s,
                                      tuple(DEFAULT_OFFLINE_WINDOW_S)),
                                     ("repeat_s", self.repeat_s, LABEL_TYPES)):
            for key, value in windows.items():
                if key not in known:
                    raise ValueError(f"{name}: unknown key {key!r} (known: {', '.join(known)})")
                if not value > 0:
                    raise ValueError(f"{name}[{key!r}] must be > 0")

    def window_for(self, label: Label) -> float:
        """The detection window of ``label`` in seconds (offline: by ``detail["kind"]``)."""
        if label.type == "offline":
            kind = label.detail.get("kind")
            if isinstance(kind, str):
                if kind in self.offline_window_s:
                    return self.offline_window_s[kind]
                if kind in DEFAULT_OFFLINE_WINDOW_S:
                    return DEFAULT_OFFLINE_WINDOW_S[kind]
        return self.window_s.get(label.type, DEFAULT_WINDOW_S[label.type])

    def repeat_for(self, label: Label) -> float:
        """How long after ``label``'s start a further event is a repeat, in seconds."""
        horizon = self.repeat_s.get(label.type, DEFAULT_REPEAT_S.get(label.type, 0.0))
        return max(horizon, self.window_for(label))


#: The defaults, shared (the struct is frozen): the default argument of :func:`score`.
DEFAULT_PARAMS: Final = ScoreParams()


class MissedLabel(msgspec.Struct, frozen=True, kw_only=True):
    """A label no event detected."""

    device_id: str
    incident: str
    start_ms: int


class FalsePositive(msgspec.Struct, frozen=True, kw_only=True):
    """An event of a labelled type that matched no label's window."""

    device_id: str
    ts: int


class TypeScore(msgspec.Struct, frozen=True, kw_only=True):
    """One row: an event type (or ``"all"``, micro-averaged over the scored types).

    ``precision`` = detected / (detected + false_positives), None without such events;
    ``recall`` = detected / labels, None without labels; latencies in seconds over the matched
    pairs, None when nothing matched. Repeats count in neither precision nor recall. The
    ``"all"`` row leaves the lists empty: the per-type rows hold them.
    """

    type: str
    labels: int
    detected: int
    missed: int
    false_positives: int
    repeats: int
    precision: float | None
    recall: float | None
    latency_median_s: float | None
    latency_p95_s: float | None
    missed_labels: tuple[MissedLabel, ...] = ()
    false_positive_events: tuple[FalsePositive, ...] = ()


class ScoreReport(msgspec.Struct, frozen=True, kw_only=True):
    """Rows per labelled type, in :data:`LABEL_TYPES` order, the total, and unscored counts."""

    types: tuple[TypeScore, ...]
    total: TypeScore
    #: Events of types without any label in the file, by type: not scored (see module doc).
    unscored: dict[str, int]
    params: ScoreParams


class _Tally:
    """Mutable counts of one type while matching."""

    def __init__(self) -> None:
        self.labels = 0
        self.false_positives = 0
        self.repeats = 0
        self.latencies_s: list[float] = []
        self.missed: list[MissedLabel] = []
        self.fps: list[FalsePositive] = []


def _match_group(labels: list[Label], events: list[Event], params: ScoreParams,
                 tally: _Tally) -> None:
    """Match one (device, type) group; see the module docstring for the rule."""
    labels.sort(key=lambda lab: lab.start_ms)
    events.sort(key=lambda ev: ev.ts)
    early_ms = round(params.early_s * 1000)
    bounds = [(lab.start_ms - early_ms, lab.start_ms + round(params.window_for(lab) * 1000))
              for lab in labels]
    repeat_ends = [lab.start_ms + round(params.repeat_for(lab) * 1000) for lab in labels]
    open_heap: list[tuple[int, int]] = []     # (window end, label index) of unmatched labels
    matched = [False] * len(labels)
    repeat_until = -(2**62)                   # latest repeat horizon among matched labels
    nxt = 0
    for ev in events:
        while nxt < len(labels) and bounds[nxt][0] <= ev.ts:
            heapq.heappush(open_heap, (bounds[nxt][1], nxt))
            nxt += 1
        while open_heap and open_heap[0][0] < ev.ts:
            heapq.heappop(open_heap)          # expired unmatched: stays missed
        if open_heap:
            _, i = heapq.heappop(open_heap)
            matched[i] = True
            repeat_until = max(repeat_until, repeat_ends[i])
            tally.latencies_s.append((ev.ts - labels[i].start_ms) / 1000)
        elif ev.ts <= repeat_until:           # a matched label's start precedes it: a repeat
            tally.repeats += 1
        else:
            tally.false_positives += 1
            tally.fps.append(FalsePositive(device_id=ev.device_id, ts=ev.ts))
    tally.labels += len(labels)
    tally.missed += [MissedLabel(device_id=lab.device_id, incident=lab.incident,
                                 start_ms=lab.start_ms)
                     for lab, hit in zip(labels, matched, strict=True) if not hit]


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def _row(kind: str, tally: _Tally, *, lists: bool) -> TypeScore:
    lat = np.asarray(tally.latencies_s, dtype=np.float64)
    detected = len(tally.latencies_s)
    median = float(np.percentile(lat, 50, method="linear")) if lat.size else None
    p95 = float(np.percentile(lat, 95, method="linear")) if lat.size else None
    return TypeScore(
        type=kind, labels=tally.labels, detected=detected, missed=tally.labels - detected,
        false_positives=tally.false_positives, repeats=tally.repeats,
        precision=_ratio(detected, detected + tally.false_positives),
        recall=_ratio(detected, tally.labels), latency_median_s=median, latency_p95_s=p95,
        missed_labels=tuple(sorted(tally.missed, key=lambda m: (m.start_ms, m.device_id)))
        if lists else (),
        false_positive_events=tuple(sorted(tally.fps, key=lambda f: (f.ts, f.device_id)))
        if lists else (),
    )


def score(labels: Sequence[Label], events: Sequence[Event], *,
          params: ScoreParams = DEFAULT_PARAMS) -> ScoreReport:
    """Compare detected ``events`` with ground-truth ``labels``; see the module docstring."""
    scored: set[str] = {lab.type for lab in labels}
    label_groups: defaultdict[tuple[str, str], list[Label]] = defaultdict(list)
    event_groups: defaultdict[tuple[str, str], list[Event]] = defaultdict(list)
    unscored: Counter[str] = Counter()
    for lab in labels:
        label_groups[lab.device_id, lab.type].append(lab)
    for ev in events:
        if ev.type in scored:
            event_groups[ev.device_id, ev.type].append(ev)
        else:
            unscored[ev.type] += 1
    tallies: dict[str, _Tally] = {kind: _Tally() for kind in LABEL_TYPES if kind in scored}
    for key in label_groups.keys() | event_groups.keys():
        _match_group(label_groups.get(key, []), event_groups.get(key, []), params,
                     tallies[key[1]])
    total = _Tally()
    for tally in tallies.values():
        total.labels += tally.labels
        total.false_positives += tally.false_positives
        total.repeats += tally.repeats
        total.latencies_s += tally.latencies_s
    return ScoreReport(types=tuple(_row(kind, t, lists=True) for kind, t in tallies.items()),
                       total=_row("all", total, lists=False),
                       unscored=dict(sorted(unscored.items())), params=params)


_COLUMNS: Final = ("type", "labels", "detected", "missed", "false pos", "repeats", "precision",
                   "recall", "lat median s", "lat p95 s")


def _cells(row: TypeScore) -> list[str]:
    def num(x: float | None, fmt: str) -> str:
        return "-" if x is None else format(x, fmt)

    return [row.type if row.type != "all" else "all scored types", str(row.labels),
            str(row.detected), str(row.missed), str(row.false_positives), str(row.repeats),
            num(row.precision, ".3f"), num(row.recall, ".3f"),
            num(row.latency_median_s, ".1f"), num(row.latency_p95_s, ".1f")]


def format_table(report: ScoreReport) -> str:
    """The report as a Markdown table (aligned, so it reads in a terminal), plus notes."""
    rows = [_cells(r) for r in report.types] + [_cells(report.total)]
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(_COLUMNS)]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) if i == 0 else c.rjust(w)
                                 for i, (c, w) in enumerate(zip(cells, widths, strict=True))) + " |"

    rule = "|" + "|".join("-" * (w + 1) + (":" if i else "-") for i, w in enumerate(widths)) + "|"
    out = [line(_COLUMNS), rule, *(line(r) for r in rows)]
    if not report.types:
        out.append("\nNo labels: nothing to score.")
    if report.unscored:
        counts = ", ".join(f"{kind} {n}" for kind, n in report.unscored.items())
        out.append(f"\nNot scored: {counts}\n(no labels of these types, so the ground truth does "
                   f"not cover them; not counted as false positives)")
    return "\n".join(out) + "\n"


def report_json(report: ScoreReport) -> bytes:
    """The report as JSON: None (no events, no labels, no latency) is ``null``, never NaN."""
    return msgspec.json.encode(report)


def _decode_lines(lines: Iterable[bytes], decoder: msgspec.json.Decoder[T]) -> list[T]:
    out: list[T] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            out.append(decoder.decode(line))
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
            raise ValidationError(f"line {number}: {exc}") from exc
    return out


_EVENT_DECODER: Final = msgspec.json.Decoder(Event)


def load_events(lines: Iterable[bytes]) -> list[Event]:
    """Decode event JSON lines (``eldercare detect`` output); blank lines are skipped.

    Raises :class:`ValidationError` whose ``reason`` starts with ``line N:``.
    """
    return _decode_lines(lines, _EVENT_DECODER)


def load_labels(lines: Iterable[bytes]) -> list[Label]:
    """Decode label JSON lines (the simulator's labels file); as :func:`load_events`."""
    return _decode_lines(lines, LABEL_DECODER)


def _read(path: Path, load: Callable[[Iterable[bytes]], list[T]], err: IO[str]) -> list[T] | None:
    """``load`` the file at ``path``; on failure report it (file, line, reason) and return None."""
    try:
        with path.open("rb") as f:
            return load(f)
    except ValidationError as exc:
        print(f"{path}: {exc.reason}", file=err)
    except OSError as exc:
        print(f"{path}: cannot read: {exc.strerror or exc}", file=err)
    return None


def score_files(labels_path: Path, events_path: Path, *, out: IO[str],
                json_path: Path | None = None, params: ScoreParams = DEFAULT_PARAMS,
                err: IO[str] | None = None) -> int:
    """Score two JSONL files; print the table to ``out``; exit code 0, or 1 on a bad file.

    ``json_path`` also writes the JSON report there; ``Path("-")`` writes the JSON to ``out``
    instead and moves the table to ``err``, so stdout stays parseable. Errors (the file, the
    line number and the reason) go to ``err`` (default: standard error).
    """
    err = err if err is not None else sys.stderr
    labels = _read(labels_path, load_labels, err)
    events = _read(events_path, load_events, err) if labels is not None else None
    if labels is None or events is None:
        return 1
    report = score(labels, events, params=params)
    if json_path is not None and str(json_path) == "-":
        err.write(format_table(report))
        out.write(report_json(report).decode() + "\n")
        return 0
    out.write(format_table(report))
    if json_path is not None:
        try:
            json_path.write_bytes(report_json(report) + b"\n")
        except OSError as exc:
            print(f"{json_path}: cannot write: {exc.strerror or exc}", file=err)
            return 1
    return 0
