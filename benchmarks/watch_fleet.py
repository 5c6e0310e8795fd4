"""A fleet of simulated 3G watches on real TCP: the load generator of ``benchmarks.gateway``.

Runs in a process of its own (:func:`fleet_main`, started with multiprocessing's spawn, so it
never shares a core's GIL with the gateway or the benchmark) and obeys commands from the benchmark
over a pipe, answering each with a message of its own:

- ``("connect", {...})``: open N connections, each logging in with an ``LK`` and waiting for its
  answer (source addresses 127.0.0.2, .3, ... with ``per_address`` connections each, as devices
  behind carriers' NAT addresses arrive, so the gateway's per-address cap stays at its default);
- ``("run", {...})``: offer frames at an aggregate rate for some seconds, round robin over the
  connections (``UD`` position reports, an ``LK`` keepalive every ``1 / lk_share`` frames) plus
  ``AL`` alarms (SOS bit) at ``al_rate``, each alarm's round trip timed from the write to its
  ``AL`` answer (which the gateway sends only after the broker's PUBACK). Reports ``started``,
  ``progress`` every second, ``sent`` when sending stops, and ``ran`` once every alarm is
  answered (or ``settle_s`` passed);
- ``("check", {})``: totals, connections open and lost (closed by the gateway), and the alarm
  round trips timed since the last report (alarms answered late, during a drain);
- ``("close", {})``: close every connection and exit.

The connections are bare ``asyncio.Protocol`` objects written from one pacing loop: no task per
connection, so the generator spends its core on sockets, not on the event loop.
"""

from __future__ import annotations

import asyncio
import resource
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

#: Cell towers in the UD/AL tail, as real watches send them (Traccar's test frames).
_CELLS = "4,1,460,0,9360,4082,131,9360,4092,148,9360,4091,143,9360,4153,141"


def raise_nofile() -> int:
    """Raise this process's soft limit of open files to its hard limit (10,000 sockets)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def device_id(index: int) -> str:
    """The fleet's device ids: 10 digits, like real watches' (8800000015)."""
    return f"88{index:08d}"


def stamp(now_s: float) -> bytes:
    """UTC ``ddmmyy,hhmmss``, the watch's clock in a position report."""
    return time.strftime("%d%m%y,%H%M%S", time.gmtime(now_s)).encode()


def report_parts(index: int, command: str, status: int) -> tuple[bytes, bytes]:
    """A UD/AL frame of watch ``index`` split around its 13-byte time stamp (fixed width, so the
    length field stays right whatever the time)."""
    lat, lon = 22.5 + (index % 1000) * 1e-4, 113.8 + (index // 1000) * 1e-4
    rest = (f",A,{lat:.6f},N,{lon:.7f},E,0.00,249.5,0.0,6,100,98,1000,0,{status:08X},"
            f"{_CELLS}")
    length = len(command) + 1 + 13 + len(rest)
    return (f"[3G*{device_id(index)}*{length:04X}*{command},".encode(), f"{rest}]".encode())


def keepalive(index: int) -> bytes:
    """An ``LK`` frame: steps, tumbles, battery %."""
    content = "LK,1000,0,98"
    return f"[3G*{device_id(index)}*{len(content):04X}*{content}]".encode()


@dataclass
class Tally:
    """What the fleet did, cumulative over its life."""

    sent: dict[str, int] = field(default_factory=lambda: {"UD": 0, "LK": 0, "AL": 0})
    lk_answers: int = 0
    al_answers: int = 0
    lost: int = 0
    al_rtt_ms: list[float] = field(default_factory=list)


class _Watch(asyncio.Protocol):
    """One connection: counts the gateway's answers and times its outstanding alarm."""

    def __init__(self, index: int, tally: Tally, closing: list[bool]) -> None:
        self.index = index
        self.tally = tally
        self.closing = closing
        self.transport: asyncio.Transport | None = None
        self.tail = b""
        self.login: asyncio.Future[None] | None = None
        self.al_sent: float | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.tail:
            data = self.tail + data
        end = data.rfind(b"]") + 1
        self.tail, data = data[end:], data[:end]
        if lk := data.count(b"*LK]"):
            self.tally.lk_answers += lk
            if self.login is not None and not self.login.done():
                self.login.set_result(None)
        if al := data.count(b"*AL]"):
            self.tally.al_answers += al
            if self.al_sent is not None:
                self.tally.al_rtt_ms.append(1000 * (time.perf_counter() - self.al_sent))
                self.al_sent = None

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if not self.closing[0]:
            self.tally.lost += 1


class Fleet:
    """The watches of one generator process."""

    def __init__(self, out: Connection, host: str, port: int) -> None:
        self.out = out
        self.host, self.port = host, port
        self.tally = Tally()
        self.closing = [False]
        self.watches: list[_Watch] = []

    async def connect(self, n: int, per_address: int, concurrency: int = 100) -> dict[str, Any]:
        """Open ``n`` connections, each logged in (its LK answered); failures are counted."""
        loop = asyncio.get_running_loop()
        gate = asyncio.Semaphore(concurrency)
        failed = 0
        t0 = time.monotonic()

        async def one(i: int) -> None:
            nonlocal failed
            async with gate:
                w = _Watch(i, self.tally, self.closing)
                w.login = loop.create_future()
                try:
                    await loop.create_connection(
                        lambda: w, self.host, self.port,
                        local_addr=(f"127.0.0.{2 + i // per_address}", 0))
                    assert w.transport is not None
                    w.transport.write(keepalive(i))
                    self.tally.sent["LK"] += 1
                    await asyncio.wait_for(w.login, 30)
                    self.watches.append(w)
                except (OSError, TimeoutError):
                    failed += 1

        await asyncio.gather(*(one(i) for i in range(len(self.watches), n)))
        return {"open": self.open(), "failed": failed, "seconds": time.monotonic() - t0}

    def open(self) -> int:
        return sum(1 for w in self.watches if w.transport is not None)

    async def run(self, p: dict[str, Any]) -> dict[str, Any]:
        """Offer ``rate`` frames/s for ``seconds``; see the module docstring."""
        sent0, al0 = dict(self.tally.sent), self.tally.al_answers
        self.out.send(("started", self.progress()))
        elapsed = await self._offer(p["rate"], p["seconds"], p["al_rate"], p["lk_share"])
        sent = {k: v - sent0[k] for k, v in self.tally.sent.items()}
        self.out.send(("sent", {"name": p["name"], "t": time.time(), "seconds": elapsed,
                                "sent": sent, "total_sent": dict(self.tally.sent)}))
        deadline = time.monotonic() + p["settle_s"]
        while self.outstanding() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return {"name": p["name"], "seconds": elapsed, "sent": sent,
                "al_answers": self.tally.al_answers - al0, "al_rtt_ms": self.take_rtts(),
                "al_outstanding": self.outstanding()}

    def outstanding(self) -> int:
        """Alarms sent on open connections and not answered yet."""
        return sum(1 for w in self.watches if w.al_sent is not None and w.transport is not None)

    def take_rtts(self) -> list[float]:
        """The alarm round trips timed since the last call."""
        rtts, self.tally.al_rtt_ms = self.tally.al_rtt_ms, []
        return rtts

    async def _offer(self, rate: float, seconds: float, al_rate: float, lk_share: float) -> float:
        n = len(self.watches)
        top = max(w.index for w in self.watches) + 1
        ud = [report_parts(i, "UD", 0) for i in range(top)]
        al = [report_parts(i, "AL", 1 << 16) for i in range(top)]  # bit 16: SOS
        lk = [keepalive(i) for i in range(top)]
        lk_every = max(1, round(1 / lk_share)) if lk_share > 0 else 0
        t0 = time.monotonic()
        end, due_al, frames, cursor, al_cursor = t0 + seconds, t0, 0, 0, 0
        next_report, second, ts = t0 + 1, -1, b""
        sent = self.tally.sent
        while (now := time.monotonic()) < end:
            if int(time.time()) != second:
                second = int(time.time())
                ts = stamp(second)
            for _ in range(int(rate * (now - t0)) - frames):
                frames += 1
                w = self.watches[cursor]
                cursor = (cursor + 1) % n
                if w.transport is None:
                    continue
                if lk_every and frames % lk_every == 0:
                    w.transport.write(lk[w.index])
                    sent["LK"] += 1
                else:
                    pre, post = ud[w.index]
                    w.transport.write(pre + ts + post)
                    sent["UD"] += 1
            while al_rate > 0 and now >= due_al:
                due_al += 1 / al_rate
                al_cursor = self._alarm(al_cursor, al, ts)
            if now >= next_report:
                next_report += 1
                self.out.send(("progress", self.progress()))
            await asyncio.sleep(0.005)
        return time.monotonic() - t0

    def _alarm(self, cursor: int, al: list[tuple[bytes, bytes]], ts: bytes) -> int:
        """Send an SOS from the next watch with no alarm outstanding; the new cursor."""
        n = len(self.watches)
        for _ in range(n):
            cursor = (cursor + 7919) % n  # a prime stride: alarms from all over the fleet
            w = self.watches[cursor]
            if w.transport is not None and w.al_sent is None:
                pre, post = al[w.index]
                w.al_sent = time.perf_counter()
                w.transport.write(pre + ts + post)
                self.tally.sent["AL"] += 1
                break
        return cursor

    def progress(self) -> dict[str, Any]:
        t = self.tally
        return {"sent": dict(t.sent), "lk_answers": t.lk_answers, "al_answers": t.al_answers,
                "al_outstanding": self.outstanding(), "lost": t.lost, "open": self.open(),
                "t": time.time()}

    def close(self) -> None:
        self.closing[0] = True
        for w in self.watches:
            if w.transport is not None:
                w.transport.close()


async def _serve(conn: Connection, host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    fleet = Fleet(conn, host, port)
    while True:
        command, params = await loop.run_in_executor(None, conn.recv)
        if command == "connect":
            conn.send(("connected", await fleet.connect(params["n"], params["per_address"])))
        elif command == "run":
            conn.send(("ran", await fleet.run(params)))
        elif command == "check":
            conn.send(("checked", {**fleet.progress(), "al_rtt_ms": fleet.take_rtts()}))
        elif command == "close":
            fleet.close()
            await asyncio.sleep(0.5)
            conn.send(("closed", fleet.progress()))
            return


def fleet_main(conn: Connection, host: str, port: int) -> None:
    """The generator process's entry point (multiprocessing target)."""
    raise_nofile()
    asyncio.run(_serve(conn, host, port))
