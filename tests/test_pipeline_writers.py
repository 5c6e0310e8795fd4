"""Concurrent writers: commits may finish in any order, batches complete in decode order.

The pipeline runs here without a broker (messages go straight into its buffer, acks into a list)
but against the real PostgreSQL, so duplicates across batches committed at once meet the real
unique index and its locks.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest

from eldercare.schema import migrate
from foundation.clock import SystemClock
from foundation.errors import StorageError
from ingest.batch import Batch
from ingest.buffer import Message, MessageBuffer
from ingest.metrics import IngestMetrics
from ingest.pipeline import IngestPipeline, PipelineConfig
from ingest.storage import PostgresStore, WriteResult
from schemas import MessageDecoder, gateway_topic
from tests.conftest import count, now_ms, wait_for

PER_MESSAGE = 50
OVERLAP = 25      # message i repeats the last 25 readings of message i - 1


def _messages(n: int, region: str) -> list[Message]:
    now = now_ms()
    out = []
    for i in range(n):
        first = i * (PER_MESSAGE - OVERLAP)
        body = [{"device_id": f"HB-{s % 7}", "type": "heartbeat", "ts": now - 10**6 + s, "seq": s}
                for s in range(first, first + PER_MESSAGE)]
        out.append(Message(topic=gateway_topic(region, "GW-1"), payload=json.dumps(body).encode(),
                           mid=i + 1, qos=1, content_type=None, received_ms=now, generation=1))
    return out


class Recording:
    """A real store that records when each write finished; ``hold`` delays chosen batches."""

    def __init__(self, url: str, finished: list[int], hold: set[int], fail: set[int]) -> None:
        self.inner = PostgresStore(url)
        self.finished, self.hold, self.fail = finished, hold, fail

    def write(self, batch: Batch) -> WriteResult:
        first = min(int(r.seq or 0) for r in batch.readings)
        if first in self.fail:
            raise StorageError("injected: this batch can never be stored")
        if first in self.hold:
            time.sleep(0.3)  # the other writer commits the next batch meanwhile
        result = self.inner.write(batch)
        self.finished.append(first)
        return result

    def close(self) -> None:
        self.inner.close()


def _pipeline(buffer: MessageBuffer, stores: list[Recording], acked: list[int],
              completed: list[int], shutdown_retry_s: float = 10.0) -> IngestPipeline:
    def ack(messages: list[Message]) -> int:
        acked.extend(m.mid for m in messages)
        return len(messages)

    return IngestPipeline(
        buffer=buffer, decoder=MessageDecoder(), stores=stores, ack=ack, clock=SystemClock(),
        metrics=IngestMetrics(),
        config=PipelineConfig(max_batch_readings=100, max_take=2, linger_s=0.01,
                              shutdown_retry_s=shutdown_retry_s),
        sink=lambda batch: completed.append(min(int(r.seq or 0) for r in batch.readings)))


@pytest.fixture
def migrated(db_url: str) -> str:
    with psycopg.connect(db_url, autocommit=True) as conn:
        migrate(conn, timescale="off")
    return db_url


@contextmanager
def _running(pipe: IngestPipeline, messages: list[Message],
             stores: list[Recording]) -> Iterator[threading.Thread]:
    """The pipeline thread with ``messages`` in its buffer; stopped and joined on exit."""
    never = threading.Event()
    for m in messages:
        assert pipe.buffer.put(m, abort=never)
    thread = threading.Thread(target=pipe.run, name="test-pipeline")
    thread.start()
    try:
        yield thread
    finally:
        pipe.request_stop()
        thread.join(30)
        for s in stores:
            s.close()


def test_batches_complete_in_decode_order_whatever_order_they_commit_in(
        migrated: str, region: str) -> None:
    db_url = migrated
    messages = _messages(40, region)
    buffer = MessageBuffer(max_messages=1000, max_bytes=10**8)
    finished: list[int] = []
    acked: list[int] = []
    completed: list[int] = []
    # Batches of two messages start at seq 0, 50, 100...; hold every other one.
    hold = {s for s in range(0, 1000, 100)}
    stores = [Recording(db_url, finished, hold, set()) for _ in range(2)]
    pipe = _pipeline(buffer, stores, acked, completed)
    with _running(pipe, messages, stores):
        wait_for(lambda: len(acked) == len(messages), what="every message acknowledged")

    assert finished != sorted(finished), "the test must make commits finish out of order"
    assert acked == [m.mid for m in messages]                 # PUBACKs in PUBLISH order
    assert completed == sorted(completed) and len(completed) == len(set(finished))
    # Consecutive batches share 25 readings and were committed concurrently: stored once each.
    distinct = 40 * (PER_MESSAGE - OVERLAP) + OVERLAP
    assert count(db_url, "SELECT count(*) FROM readings") == distinct
    assert pipe.metrics.value("eldercare_readings_stored_total") == distinct


def test_a_batch_that_cannot_be_stored_holds_back_the_acks_of_later_ones(
        migrated: str, region: str) -> None:
    db_url = migrated
    messages = _messages(12, region)
    buffer = MessageBuffer(max_messages=1000, max_bytes=10**8)
    finished: list[int] = []
    acked: list[int] = []
    completed: list[int] = []
    # The second batch (seq 50...) never stores; the ones after it do.
    stores = [Recording(db_url, finished, set(), {50}) for _ in range(2)]
    pipe = _pipeline(buffer, stores, acked, completed, shutdown_retry_s=0.3)
    with _running(pipe, messages, stores) as thread:
        wait_for(lambda: 100 in finished, what="a batch after the failing one committed")
    assert not thread.is_alive(), "the pipeline must stop after giving up"

    # Only the first batch completed; everything from the failing batch on stays unacknowledged
    # (the broker redelivers it), although later batches were committed.
    assert acked == [1, 2]
    assert completed == [0]
    assert pipe.metrics.value("eldercare_storage_errors_total") >= 1
