"""The gateway's batcher (issue #10): many connections' readings in one message per region, each
submitter released only once the message carrying its readings is acknowledged."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from gateway.batcher import Batcher
from schemas import gateway_topic
from schemas.readings import Cell, Heartbeat, RadioScan, Sos

TS = 1_760_000_000_000


class Broker:
    """A publisher whose acknowledgements the test releases, recording what was published."""

    def __init__(self, *, hold: bool = False, fail: bool = False) -> None:
        self.published: list[tuple[str, list[dict[str, Any]]]] = []
        self.in_flight = 0
        self.most_in_flight = 0
        self.release = asyncio.Event()
        if not hold:
            self.release.set()
        self.fail = fail

    async def publish(self, topic: str, payload: bytes) -> None:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await self.release.wait()
            if self.fail:
                raise ConnectionError("broker gone")
            self.published.append((topic, json.loads(payload)))
        finally:
            self.in_flight -= 1


def batcher(broker: Broker, **kw: Any) -> Batcher:
    return Batcher(publisher=broker, topic_of=lambda r: gateway_topic(r, "gw-test"), **kw)


def beat(device: str) -> Heartbeat:
    return Heartbeat(device_id=device, ts=TS, battery_pct=80.0)


async def running(b: Batcher) -> asyncio.Task[None]:
    task = asyncio.create_task(b.run())
    await asyncio.sleep(0)
    return task


def test_many_connections_share_one_message_per_region_and_wait_for_its_puback() -> None:
    async def main() -> None:
        broker = Broker()
        b = batcher(broker, linger_s=0.02)
        task = await running(b)
        await asyncio.gather(*(b.submit("371002", [beat(f"W{i}")], urgent=False)
                               for i in range(50)),
                             b.submit("370100", [beat("X1")], urgent=False))
        task.cancel()
        topics = sorted(t for t, _ in broker.published)
        assert topics == [gateway_topic("370100", "gw-test"), gateway_topic("371002", "gw-test")]
        (big,) = [m for t, m in broker.published if "371002" in t]
        assert [r["device_id"] for r in big] == [f"W{i}" for i in range(50)]  # in order
    asyncio.run(main())


def test_an_alarm_goes_at_once_and_its_submitter_is_released_only_after_the_puback() -> None:
    async def main() -> None:
        broker = Broker(hold=True)
        b = batcher(broker, linger_s=10.0)          # only the alarm can close the batch
        task = await running(b)
        quiet = asyncio.ensure_future(b.submit("371002", [beat("W1")], urgent=False))
        sos = asyncio.ensure_future(b.submit("371002", [Sos(device_id="W2", ts=TS)],
                                             urgent=True))
        await asyncio.sleep(0.05)
        assert broker.in_flight == 1 and not sos.done() and not quiet.done()
        broker.release.set()
        await asyncio.wait_for(asyncio.gather(quiet, sos), 1)
        ((_, readings),) = broker.published
        assert [r["type"] for r in readings] == ["heartbeat", "sos"]
        task.cancel()
    asyncio.run(main())


def test_messages_in_flight_are_bounded_and_a_full_batch_closes_itself() -> None:
    async def main() -> None:
        broker = Broker(hold=True)
        b = batcher(broker, linger_s=10.0, max_readings=2, max_in_flight=3)
        task = await running(b)
        waits = [asyncio.ensure_future(b.submit("r1", [beat(f"W{i}")], urgent=False))
                 for i in range(20)]
        await asyncio.sleep(0.05)
        assert broker.most_in_flight == 3            # 10 full batches, 3 at a time
        broker.release.set()
        await asyncio.wait_for(asyncio.gather(*waits), 2)
        assert len(broker.published) == 10 and broker.most_in_flight == 3
        task.cancel()
    asyncio.run(main())


def test_a_batch_too_large_for_ingest_is_split_and_a_failure_reaches_every_submitter() -> None:
    async def main() -> None:
        broker = Broker()
        b = batcher(broker, linger_s=0.01, max_bytes=4096)
        scan = RadioScan(device_id="W1", ts=TS, cells=[
            Cell(mcc=460, mnc=0, lac=100 + i, cid=1000 + i) for i in range(16)])
        task = await running(b)
        await b.submit("r1", [scan] * 20, urgent=False)
        assert len(broker.published) > 1
        assert sum(len(m) for _, m in broker.published) == 20
        task.cancel()

        failing = Broker(fail=True)
        b = batcher(failing, linger_s=0.01)
        task = await running(b)
        with pytest.raises(ConnectionError):
            await b.submit("r1", [beat("W1")], urgent=False)
        task.cancel()
    asyncio.run(main())
