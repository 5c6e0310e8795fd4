"""Fuzzing the JSON Lines readers: simulator recordings (replay) and the scorer's labels and
events. Each returns a list or raises ValidationError naming the line."""

from __future__ import annotations

import functools
import json
import random
from collections.abc import Callable
from typing import Final

import pytest

from device_sim.recording import read_recording
from device_sim.score import load_events, load_labels
from foundation.errors import ValidationError
from tests.fuzz.budget import fuzz, randoms
from tests.fuzz.documents import JSON_TOKENS, mutate_tree
from tests.fuzz.known_bugs import accept_or_refuse
from tests.fuzz.values import DEEP_ARRAY, mutate_bytes, r_json, to_json

LINE_SEEDS: Final[dict[str, tuple[bytes, ...]]] = {
    "recording": (
        (b'{"msg":1,"sent_ms":1790000000000,"topic":"eldercare/v1/r1/dev/BR-1","type":"sos",'
         b'"ts":1790000000000}'),
        (b'{"msg":2,"sent_ms":1790000001000,"topic":"eldercare/v1/r1/gw/GW-1",'
         b'"device_id":"BR-2","type":"heartbeat","ts":1790000000500,"battery_pct":80}'),
        (b'{"msg":2,"sent_ms":1790000001000,"topic":"eldercare/v1/r1/gw/GW-1",'
         b'"device_id":"BR-3","type":"wear","ts":1790000000600,"worn":false}'),
        (b'{"msg":3,"sent_ms":1790000002000,"topic":"eldercare/v1/r1/dev/BR-4","array":true,'
         b'"type":"fall","ts":1790000001900}'),
    ),
    "labels": ((b'{"device_id":"BR-1","type":"sos","start_ms":1790000000000,"incident":"sos",'
                b'"wearer_id":"W-1","detail":{"presses":2}}'),),
    "events": ((b'{"device_id":"BR-1","type":"sos","ts":1790000000000,"severity":"critical",'
                b'"region":"371002","lat":37.5,"lon":122.1,"evidence":{"presses":2,"x":[1.0]}}'),),
}
LINE_READERS: Final[dict[str, Callable[[list[bytes]], object]]] = {
    "recording": lambda lines: list(read_recording(lines)),
    "labels": load_labels,
    "events": load_events,
}
LINE_MUTANTS: Final = 20


def lines_case(rng: random.Random, reader: str) -> list[bytes]:
    """The seed lines of ``reader``, one to three of them mutated (bytes or structure), random
    lines added, and sometimes shuffled."""
    lines = list(LINE_SEEDS[reader])
    for _ in range(rng.randint(0, 2)):
        lines.insert(rng.randint(0, len(lines)),
                     to_json(r_json(rng)) if rng.random() < 0.7 else rng.randbytes(32))
    for _ in range(rng.randint(1, 3)):
        i = rng.randrange(len(lines))
        if rng.random() < 0.5:
            lines[i] = mutate_bytes(rng, lines[i], JSON_TOKENS)
        else:
            lines[i] = to_json(mutate_tree(rng, json.loads(rng.choice(LINE_SEEDS[reader]))))
    if rng.random() < 0.3:
        rng.shuffle(lines)
    return lines


@pytest.mark.parametrize("reader", sorted(LINE_READERS))
@fuzz(150, cases=150 * (LINE_MUTANTS + 1) * len(LINE_READERS), **randoms)
def test_jsonl_readers(reader: str, drawn: random.Random, rng: random.Random) -> None:
    """Simulator recordings (JSONL replay) and the scorer's labels and events: a list or a
    ValidationError."""
    for r in [drawn] + [rng] * LINE_MUTANTS:
        lines = lines_case(r, reader)
        accept_or_refuse(reader, functools.partial(LINE_READERS[reader], lines),
                         ValidationError, list, lines)


def test_recording_line_of_bad_utf8_is_refused() -> None:
    """Found by this suite (a bare UnicodeDecodeError); fixed since by msgspec's own check."""
    with pytest.raises(ValidationError, match="line 1"):
        list(read_recording([b'{"msg":1,"x":"\xff"}']))


def test_recording_line_nested_10000_deep_is_refused() -> None:
    """Found by this suite: read_recording let msgspec's RecursionError escape."""
    with pytest.raises(ValidationError, match="line 1: nested too deeply"):
        list(read_recording([b'{"msg":1,"x":' + DEEP_ARRAY + b"}"]))
