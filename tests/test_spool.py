"""The local spool: durable segments of records, and the replay cursor over them."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingest.buffer import Message
from ingest.replay import SpoolReplay, spool_records
from ingest.spool import SegmentLog, SpoolFull


def _msg(i: int) -> Message:
    return Message(f"eldercare/v1/r1/dev/d{i}", b'{"n":%d}' % i, i + 1, 1, None, 1000 + i, 3)


def test_records_survive_a_reopen_in_order(tmp_path: Path) -> None:
    log = SegmentLog(tmp_path, name="messages", max_bytes=1 << 20, segment_bytes=200)
    for i in range(10):
        log.append(spool_records([_msg(i)]))
    log.close()
    again = SegmentLog(tmp_path, name="messages", max_bytes=1 << 20)
    segments = again.sealed()
    assert len(segments) > 1  # 200-byte segments: the ten frames spread over several
    records = [r for s in segments for r in again.read(s)]
    assert [r[1] for r in records] == [b'{"n":%d}' % i for i in range(10)]
    assert records[3] == ["eldercare/v1/r1/dev/d3", b'{"n":3}', None, 1003]


def test_a_torn_last_frame_is_skipped_and_the_rest_read(tmp_path: Path) -> None:
    log = SegmentLog(tmp_path, name="messages", max_bytes=1 << 20)
    log.append(spool_records([_msg(1), _msg(2)]))
    log.append(spool_records([_msg(3)]))
    (segment,) = log.sealed(seal_current=True)
    path = tmp_path / f"messages-{segment:012d}.seg"
    path.write_bytes(path.read_bytes()[:-3])  # a crash in the middle of the second frame
    assert [r[1] for r in log.read(segment)] == [b'{"n":1}', b'{"n":2}']


def test_full_spool_refuses_and_holds_what_it_has(tmp_path: Path) -> None:
    log = SegmentLog(tmp_path, name="messages", max_bytes=150)
    log.append(spool_records([_msg(1)]))
    with pytest.raises(SpoolFull):
        log.append(spool_records([_msg(i) for i in range(10)]))
    (segment,) = log.sealed(seal_current=True)
    assert len(log.read(segment)) == 1


def test_release_deletes_the_segment_file(tmp_path: Path) -> None:
    log = SegmentLog(tmp_path, name="events", max_bytes=1 << 20)
    log.append([{"a": 1}])
    (segment,) = log.sealed(seal_current=True)
    log.release(segment)
    assert list(tmp_path.glob("*.seg")) == []
    assert log.bytes == 0


def test_two_logs_share_a_directory_without_mixing(tmp_path: Path) -> None:
    messages = SegmentLog(tmp_path, name="messages", max_bytes=1 << 20)
    events = SegmentLog(tmp_path, name="events", max_bytes=1 << 20)
    messages.append(spool_records([_msg(1)]))
    events.append([{"type": "sos"}])
    messages.close()
    events.close()
    reopened = SegmentLog(tmp_path, name="events", max_bytes=1 << 20)
    assert [reopened.read(s) for s in reopened.sealed()] == [[{"type": "sos"}]]


def test_replay_releases_a_segment_only_when_all_of_it_is_stored(tmp_path: Path) -> None:
    log = SegmentLog(tmp_path, name="messages", max_bytes=1 << 20)
    log.append(spool_records([_msg(i) for i in range(5)]))
    replay = SpoolReplay(log)
    assert replay.has_work()
    first = replay.take(3)
    rest = replay.take(10)
    assert [m.payload for m in first + rest] == [b'{"n":%d}' % i for i in range(5)]
    assert all(m.qos == 0 and m.segment and m.received_ms >= 1000 for m in first + rest)
    replay.done(first, stored=True)
    assert log.bytes > 0  # two messages still out
    replay.done(rest, stored=True)
    assert log.bytes == 0 and not replay.has_work()
    assert replay.replayed == 5


def test_replay_retries_a_segment_that_was_not_all_stored(tmp_path: Path) -> None:
    log = SegmentLog(tmp_path, name="messages", max_bytes=1 << 20)
    log.append(spool_records([_msg(i) for i in range(4)]))
    replay = SpoolReplay(log)
    a, b = replay.take(2), replay.take(2)
    replay.done(a, stored=True)
    replay.done(b, stored=False)  # the database failed again
    assert replay.has_work()
    again = replay.take(10)
    assert len(again) == 4  # the whole segment: stored ones are duplicates, dropped by the store
    replay.done(again, stored=True)
    assert log.bytes == 0
