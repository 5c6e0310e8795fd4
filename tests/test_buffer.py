"""The network-thread to pipeline hand-off (ingest/buffer.py): bounds, the urgent lane, and when
the consumer is woken. Every wait here is bounded by a generous timeout; a test asserts what was
taken, and that a take woken early returned before its timeout (a behaviour, not a speed)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from ingest.buffer import Message, MessageBuffer, may_hold_alarm

LONG_S = 10.0
NEVER = threading.Event()


def message(i: int, payload: bytes = b'{"type":"location"}') -> Message:
    return Message(f"eldercare/v1/r/dev/D{i}", payload, i, 1, None, 0, 0,
                   urgent=may_hold_alarm(payload))


def in_thread(fn: Callable[[], None]) -> threading.Thread:
    t = threading.Thread(target=fn, daemon=True)
    t.start()
    return t


def timed_take(buffer: MessageBuffer, *, max_items: int, timeout_s: float,
               min_items: int) -> tuple[list[Message], float]:
    start = time.monotonic()
    got = buffer.take(max_items, timeout_s=timeout_s, min_items=min_items)
    return got, time.monotonic() - start


@pytest.mark.parametrize(("payload", "alarm"), [
    (b'{"type":"sos","ts":1}', True), (b'[{"type":"location"},{"type":"fall"}]', True),
    (b'{"type":"wear","worn":false}', True), (b'{"type":"home_alarm"}', True),
    (b'{"type":"location","lat":1}', False), (b'{"type":"heartbeat"}', False)])
def test_alarm_byte_test(payload: bytes, alarm: bool) -> None:
    assert may_hold_alarm(payload) is alarm


def test_take_returns_at_once_what_is_there_when_min_items_is_met() -> None:
    buffer = MessageBuffer(max_messages=100, max_bytes=1 << 20)
    for i in range(5):
        assert buffer.put(message(i), abort=NEVER)
    got, took = timed_take(buffer, max_items=3, timeout_s=LONG_S, min_items=3)
    assert [m.mid for m in got] == [0, 1, 2]
    assert took < LONG_S / 2
    assert [m.mid for m in buffer.take(10, timeout_s=0)] == [3, 4]
    assert buffer.take(10, timeout_s=0) == [] and len(buffer) == 0


def test_a_take_waiting_for_many_is_woken_once_they_are_there() -> None:
    buffer = MessageBuffer(max_messages=1000, max_bytes=1 << 20)
    result: list[tuple[list[Message], float]] = []
    t = in_thread(lambda: result.append(timed_take(buffer, max_items=100, timeout_s=LONG_S,
                                                   min_items=50)))
    for i in range(50):
        buffer.put(message(i), abort=NEVER)
    t.join(LONG_S + 5)
    (got, took), = result
    assert len(got) >= 50 and [m.mid for m in got] == list(range(len(got)))
    assert took < LONG_S / 2, "the 50th message did not wake the consumer"


def test_at_the_timeout_a_take_returns_what_there_is() -> None:
    buffer = MessageBuffer(max_messages=100, max_bytes=1 << 20)
    for i in range(3):
        buffer.put(message(i), abort=NEVER)
    got, took = timed_take(buffer, max_items=100, timeout_s=0.3, min_items=50)
    assert [m.mid for m in got] == [0, 1, 2]
    assert took >= 0.3 - 0.01  # it did wait for more, as asked


def test_an_urgent_message_wakes_a_take_waiting_for_many_and_goes_first() -> None:
    buffer = MessageBuffer(max_messages=1000, max_bytes=1 << 20)
    for i in range(10):
        buffer.put(message(i), abort=NEVER)
    result: list[tuple[list[Message], float]] = []
    t = in_thread(lambda: result.append(timed_take(buffer, max_items=100, timeout_s=LONG_S,
                                                   min_items=500)))
    time.sleep(0.05)  # let it wait (if it has not started yet, the test still holds)
    buffer.put(message(99, b'{"type":"sos"}'), abort=NEVER)
    t.join(LONG_S + 5)
    (got, took), = result
    assert [m.mid for m in got] == [99], "the urgent lane is taken first, alone"
    assert took < LONG_S / 2
    assert [m.mid for m in buffer.take(100, timeout_s=0)] == list(range(10))


def test_urgent_messages_are_admitted_when_full_and_ordinary_ones_wait() -> None:
    buffer = MessageBuffer(max_messages=2, max_bytes=1 << 20)
    buffer.put(message(0), abort=NEVER)
    buffer.put(message(1), abort=NEVER)
    assert buffer.put(message(7, b'{"type":"fall"}'), abort=NEVER)
    assert len(buffer) == 3
    aborted = threading.Event()
    aborted.set()
    assert buffer.put(message(2), abort=aborted) is False  # full: it would have waited


def test_a_full_buffer_wakes_a_take_waiting_for_more_than_fits() -> None:
    # 4 messages of 100 bytes fill max_bytes; the consumer waits for 50: it must be woken when
    # the producer waits for room (else both wait until the consumer's timeout).
    buffer = MessageBuffer(max_messages=1000, max_bytes=400)
    result: list[tuple[list[Message], float]] = []
    consumer = in_thread(lambda: result.append(timed_take(buffer, max_items=100,
                                                          timeout_s=LONG_S, min_items=50)))
    time.sleep(0.05)  # let it wait (if it has not started yet, the test still holds)

    def produce() -> None:
        for i in range(8):
            buffer.put(message(i, b"x" * 100), abort=NEVER)

    producer = in_thread(produce)
    consumer.join(LONG_S + 5)
    (got, took), = result
    assert [m.mid for m in got] == [0, 1, 2, 3]
    assert took < LONG_S / 2, "a full buffer did not wake the consumer"
    producer.join(LONG_S)
    assert [m.mid for m in buffer.take(100, timeout_s=0)] == [4, 5, 6, 7]


def test_a_producer_waiting_for_room_gives_up_when_aborted() -> None:
    buffer = MessageBuffer(max_messages=1, max_bytes=1 << 20)
    buffer.put(message(0), abort=NEVER)
    abort = threading.Event()
    result: list[bool] = []
    t = in_thread(lambda: result.append(buffer.put(message(1), abort=abort)))
    time.sleep(0.05)
    abort.set()
    t.join(LONG_S)
    assert result == [False] and len(buffer) == 1
    # ...and a later take is not held back by a stale "full" flag.
    assert [m.mid for m in buffer.take(10, timeout_s=0)] == [0]
    got, took = timed_take(buffer, max_items=10, timeout_s=0.2, min_items=5)
    assert got == [] and took >= 0.2 - 0.01


def test_bounds_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        MessageBuffer(max_messages=0, max_bytes=1)
