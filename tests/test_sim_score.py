"""Scoring detected events against simulator labels (device_sim/score.py), on hand-made data."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import msgspec
import pytest

from detectors.events import EVENT_ENCODER, Event
from device_sim.score import (
    DEFAULT_WINDOW_S,
    ScoreParams,
    ScoreReport,
    TypeScore,
    format_table,
    load_events,
    load_labels,
    report_json,
    score,
    score_files,
)
from device_sim.types import LABEL_ENCODER, Label
from foundation.errors import ValidationError

T0 = 1_700_000_000_000  # device time of the first incident, ms
S = 1000


def lab(type_: Any, start_ms: int, device: str = "BR-1", incident: str = "x",
        **detail: Any) -> Label:
    return Label(device_id=device, type=type_, start_ms=start_ms, incident=incident,
                 detail=detail)


def ev(type_: Any, ts: int, device: str = "BR-1") -> Event:
    return Event(device_id=device, type=type_, ts=ts, severity="high", region="r1")


def row(report: ScoreReport, type_: str) -> TypeScore:
    (found,) = [r for r in report.types if r.type == type_]
    return found


def test_perfect_detection_has_precision_recall_one_and_exact_latencies() -> None:
    labels = [lab("sos", T0, "A"), lab("sos", T0, "B"), lab("fall", T0 + 60 * S, "A")]
    events = [ev("sos", T0 + 1 * S, "A"), ev("sos", T0 + 3 * S, "B"),
              ev("fall", T0 + 60 * S, "A")]
    report = score(labels, events)
    sos = row(report, "sos")
    assert (sos.labels, sos.detected, sos.missed, sos.false_positives, sos.repeats) == \
        (2, 2, 0, 0, 0)
    assert sos.precision == sos.recall == 1.0
    assert sos.latency_median_s == 2.0
    assert sos.latency_p95_s == pytest.approx(1.0 + 0.95 * 2.0)
    assert row(report, "fall").latency_median_s == 0.0
    assert [r.type for r in report.types] == ["sos", "fall"]   # LabelType order
    total = report.total
    assert (total.type, total.labels, total.detected, total.precision, total.recall) == \
        ("all", 3, 3, 1.0, 1.0)
    assert total.latency_median_s == 1.0
    assert report.unscored == {}


def test_missed_label_and_false_positive() -> None:
    labels = [lab("fall", T0, "A", incident="trip"), lab("fall", T0, "B", incident="slip")]
    events = [ev("fall", T0 + 2 * S, "A"), ev("fall", T0 + 3600 * S, "A"),
              ev("fall", T0, "C")]
    fall = row(score(labels, events), "fall")
    assert (fall.labels, fall.detected, fall.missed, fall.false_positives) == (2, 1, 1, 2)
    assert fall.precision == pytest.approx(1 / 3)
    assert fall.recall == 0.5
    assert [(m.device_id, m.incident, m.start_ms) for m in fall.missed_labels] == \
        [("B", "slip", T0)]
    assert [(f.device_id, f.ts) for f in fall.false_positive_events] == \
        [("C", T0), ("A", T0 + 3600 * S)]


def test_event_type_and_device_must_both_match() -> None:
    labels = [lab("sos", T0, "A")]
    report = score(labels, [ev("sos", T0, "B"), ev("fall", T0, "A")])
    sos = row(report, "sos")
    assert (sos.detected, sos.false_positives) == (0, 1)
    assert report.unscored == {"fall": 1}


@pytest.mark.parametrize(("offset_ms", "matched"), [
    (-5 * S, True),                    # exactly the early tolerance
    (-5 * S - 1, False),               # just before it
    (60 * S, True),                    # exactly the end of the fall window
    (60 * S + 1, False),               # just after it (and beyond no repeat: nothing matched)
])
def test_window_edges(offset_ms: int, matched: bool) -> None:
    fall = row(score([lab("fall", T0)], [ev("fall", T0 + offset_ms)],
                     params=ScoreParams(early_s=5.0, window_s={"fall": 60.0})), "fall")
    assert fall.detected == int(matched)
    assert fall.false_positives == int(not matched)
    if matched:
        assert fall.latency_median_s == offset_ms / 1000


def test_window_overrides_keep_other_defaults() -> None:
    params = ScoreParams(window_s={"fall": 10.0})
    assert params.window_for(lab("fall", T0)) == 10.0
    assert params.window_for(lab("sos", T0)) == DEFAULT_WINDOW_S["sos"]


def test_offline_window_follows_device_kind() -> None:
    params = ScoreParams()
    assert params.window_for(lab("offline", T0, kind="bracelet")) == 30 * 60
    assert params.window_for(lab("offline", T0, kind="home_sensor")) == 26 * 3600 + 15 * 60
    assert params.window_for(lab("offline", T0)) == 45 * 60   # kind unknown: default period
    late = ev("offline", T0 + 40 * 60 * S)
    assert row(score([lab("offline", T0, kind="bracelet")], [late]), "offline").detected == 0
    assert row(score([lab("offline", T0, kind="watch")], [late]), "offline").detected == 1


def test_bad_params_are_rejected() -> None:
    with pytest.raises(ValueError, match="unknown key 'sso'"):
        ScoreParams(window_s={"sso": 10.0})
    with pytest.raises(ValueError, match="early_s"):
        ScoreParams(early_s=-1.0)
    with pytest.raises(ValueError, match="> 0"):
        ScoreParams(offline_window_s={"bracelet": 0.0})


def test_repeats_are_not_false_positives() -> None:
    labels = [lab("geofence_exit", T0, incident="wander"), lab("sos", T0)]
    events = [
        ev("geofence_exit", T0 + 70 * S),
        ev("geofence_exit", T0 + 10 * 60 * S),   # raised again inside the window
        ev("geofence_exit", T0 + 50 * 60 * S),   # after a return, later in the episode
        ev("sos", T0),
        ev("sos", T0 + 200 * S),                 # pressed again after the 120 s join ran out
        ev("sos", T0 + 3600 * S),                # an hour later: a new SOS nobody scripted
    ]
    report = score(labels, events)
    exit_ = row(report, "geofence_exit")
    assert (exit_.detected, exit_.repeats, exit_.false_positives, exit_.precision) == \
        (1, 2, 0, 1.0)
    assert exit_.latency_median_s == 70.0            # the first event, not the repeats
    sos = row(report, "sos")
    assert (sos.detected, sos.repeats, sos.false_positives) == (1, 1, 1)
    assert sos.precision == 0.5
    assert (report.total.repeats, report.total.false_positives) == (3, 1)


def test_overlapping_windows_each_label_gets_its_own_event() -> None:
    # Two SOS incidents 30 s apart: windows overlap. The earlier event must go to the earlier
    # label (its window closes first), leaving the later event for the later label.
    labels = [lab("sos", T0 + 30 * S, incident="second"), lab("sos", T0, incident="first")]
    events = [ev("sos", T0 + 40 * S), ev("sos", T0 + 2 * S)]
    sos = row(score(labels, events), "sos")
    assert (sos.detected, sos.missed, sos.false_positives, sos.repeats) == (2, 0, 0, 0)
    assert sos.latency_median_s == pytest.approx((2 + 10) / 2)


def test_overlapping_windows_greedy_is_maximal() -> None:
    # The first event lies only in label 1's window, the second in both: both labels detected.
    params = ScoreParams(early_s=0.0, window_s={"fall": 60.0})
    labels = [lab("fall", T0), lab("fall", T0 + 50 * S)]
    events = [ev("fall", T0 + 10 * S), ev("fall", T0 + 55 * S)]
    fall = row(score(labels, events, params=params), "fall")
    assert (fall.detected, fall.missed, fall.false_positives) == (2, 0, 0)
    # With only the shared event, one label is detected and the other missed, not both.
    fall = row(score(labels, events[1:], params=params), "fall")
    assert (fall.detected, fall.missed, fall.false_positives) == (1, 1, 0)


def test_unlabelled_types_are_not_scored() -> None:
    labels = [lab("sos", T0)]
    events = [ev("sos", T0), ev("offline", T0), ev("online", T0 + S), ev("low_battery", T0),
              ev("geofence_return", T0), ev("offline", T0 + 9 * S, "B")]
    report = score(labels, events)
    assert [r.type for r in report.types] == ["sos"]
    assert report.unscored == {"geofence_return": 1, "low_battery": 1, "offline": 2, "online": 1}
    assert report.total.false_positives == 0 and report.total.precision == 1.0
    table = format_table(report)
    assert "Not scored" in table and "offline 2" in table and "not counted as false" in table


def test_none_cases_and_json_without_nan() -> None:
    # A labelled type with no events: precision and latencies None. Only unlabelled events.
    report = score([lab("inactivity", T0)], [ev("heart_rate", T0)])
    inact = row(report, "inactivity")
    assert inact.precision is None and inact.recall == 0.0
    assert inact.latency_median_s is None and inact.latency_p95_s is None
    assert report.unscored == {"heart_rate": 1}
    # Nothing labelled at all: an empty total row, recall None too.
    empty = score([], [ev("fall", T0)])
    assert empty.types == ()
    assert empty.total.recall is None and empty.total.precision is None
    assert "nothing to score" in format_table(empty)
    for rep in (report, empty):
        raw = report_json(rep)
        assert b"NaN" not in raw and b"Infinity" not in raw
        data = json.loads(raw)
        assert data["total"]["latency_median_s"] is None
    data = json.loads(report_json(report))
    assert data["types"][0]["precision"] is None
    assert data["types"][0]["missed_labels"] == [
        {"device_id": "BR-1", "incident": "x", "start_ms": T0}]
    assert data["params"]["early_s"] == 5.0


def test_latency_median_and_p95_on_a_known_set() -> None:
    labels = [lab("fall", T0, f"D{i}") for i in range(1, 101)]
    events = [ev("fall", T0 + i * S, f"D{i}") for i in range(1, 101)]   # latencies 1..100 s
    fall = row(score(labels, events, params=ScoreParams(window_s={"fall": 120.0})), "fall")
    assert fall.detected == 100
    assert fall.latency_median_s == pytest.approx(50.5)
    assert fall.latency_p95_s == pytest.approx(95.05)


def test_table_reads_as_markdown() -> None:
    report = score([lab("sos", T0), lab("fall", T0)], [ev("sos", T0 + 1500)])
    lines = format_table(report).splitlines()
    assert lines[0].startswith("| type ") and "precision" in lines[0]
    assert set(lines[1]) <= {"|", "-", ":"}
    assert len({len(line) for line in lines[:5]}) == 1             # aligned columns
    assert lines[2].split("|")[1].strip() == "sos"
    assert "1.5" in lines[2]
    assert lines[3].split("|")[7].strip() == "-"                      # fall precision
    assert lines[4].startswith("| all scored types")


# -- files -------------------------------------------------------------------------------------


def write_jsonl(path: Path, items: list[Label] | list[Event]) -> Path:
    enc = LABEL_ENCODER if items and isinstance(items[0], Label) else EVENT_ENCODER
    path.write_bytes(b"".join(enc.encode(x) + b"\n" for x in items))
    return path


def test_load_helpers_skip_blank_lines_and_name_the_bad_line() -> None:
    good = LABEL_ENCODER.encode(lab("sos", T0))
    assert load_labels([good, b"\n", good]) == [lab("sos", T0)] * 2
    with pytest.raises(ValidationError, match=r"^line 3: .*start_ms"):
        load_labels([good, b"", b'{"device_id": "A", "type": "sos", "start_ms": "soon"}'])
    with pytest.raises(ValidationError, match=r"^line 2: .*\$\.type"):
        load_events([EVENT_ENCODER.encode(ev("sos", T0)),
                     EVENT_ENCODER.encode(ev("sos", T0)).replace(b'"sos"', b'"sso"')])
    with pytest.raises(ValidationError, match=r"^line 1: "):
        load_events([b'{"device_id": '])


def test_score_files_prints_table_and_writes_json(tmp_path: Path) -> None:
    labels = write_jsonl(tmp_path / "labels.jsonl", [lab("sos", T0), lab("fall", T0)])
    events = write_jsonl(tmp_path / "events.jsonl",
                         [ev("sos", T0 + S), ev("online", T0 + S)])
    out, err = io.StringIO(), io.StringIO()
    json_path = tmp_path / "score.json"
    assert score_files(labels, events, out=out, err=err, json_path=json_path) == 0
    assert "| sos " in out.getvalue() and "online 1" in out.getvalue()
    assert err.getvalue() == ""
    data = msgspec.json.decode(json_path.read_bytes(), type=ScoreReport)
    assert data.total.labels == 2 and data.total.detected == 1
    # "-": JSON alone on out (parseable), the table moves to err.
    out, err = io.StringIO(), io.StringIO()
    assert score_files(labels, events, out=out, err=err, json_path=Path("-")) == 0
    assert json.loads(out.getvalue())["total"]["recall"] == 0.5
    assert "| sos " in err.getvalue()


def test_score_files_malformed_or_missing_file_exits_one(tmp_path: Path) -> None:
    labels = write_jsonl(tmp_path / "labels.jsonl", [lab("sos", T0)])
    events = tmp_path / "events.jsonl"
    events.write_bytes(EVENT_ENCODER.encode(ev("sos", T0)) + b"\n\nnot json\n")
    out, err = io.StringIO(), io.StringIO()
    assert score_files(labels, events, out=out, err=err) == 1
    assert err.getvalue().startswith(f"{events}: line 3: ")
    assert out.getvalue() == ""
    err = io.StringIO()
    assert score_files(tmp_path / "nope.jsonl", events, out=out, err=err) == 1
    assert "nope.jsonl: cannot read" in err.getvalue()
    err = io.StringIO()
    assert score_files(events, labels, out=out, err=err) == 1    # swapped: events as labels
    assert err.getvalue().startswith(f"{events}: line 1: ")
