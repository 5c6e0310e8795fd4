"""Downlink commands through the gateway (issue #10): the protocols' words, the command desk's
bookkeeping, and a command over a real broker to a watch on a real TCP connection.

The desk tests give it in-memory device links and a list as publisher (the desk's two seams);
time is a variable the test moves. The end-to-end tests run the gateway as ``eldercare gateway``
runs it, with a real Mosquitto, and a watch on a plain socket.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from gateway.codec import UnsupportedCommand
from gateway.commands import CommandDesk
from gateway.gt06 import Gt06Codec
from gateway.gt06_framing import Gt06Framer, build_frame
from gateway.settings import CommandsConfig
from gateway.watch3g import WatchCodec
from schemas.commands import (
    COMMAND_NAMES,
    CommandArgs,
    DeviceCommand,
    decode_command,
    decode_result,
    encode,
)
from tests.services import Mosquitto
from tests.test_gateway_e2e import WATCH, Gateway, frame, gateway_config, port_of, watch

NOW = 1_760_000_000_000
DEV = "8800000015"


def command(name: str, *, id: str = "c1", ts: int = NOW, **args: Any) -> DeviceCommand:
    return DeviceCommand(id=id, command=name, ts=ts, args=CommandArgs(**args))  # type: ignore[arg-type]


# --- The contract --------------------------------------------------------------------------


def test_a_command_names_the_arguments_it_needs() -> None:
    with pytest.raises(Exception, match="call_back needs args.number"):
        decode_command(b'{"id":"x","command":"call_back","ts":%d}' % NOW)
    with pytest.raises(Exception, match="device command"):
        decode_command(b'{"id":"x","command":"self_destruct","ts":%d}' % NOW)
    with pytest.raises(Exception, match="number"):
        decode_command(b'{"id":"x","command":"monitor","ts":%d,"args":{"number":"12 34"}}' % NOW)
    ok = decode_command(encode(command("set_interval", interval_s=60)))
    assert ok.args.interval_s == 60


# --- The watch's words ---------------------------------------------------------------------

WATCH_WORDS = {
    "locate": ({}, "CR"),
    "set_interval": ({"interval_s": 300}, "UPLOAD,300"),
    "set_sos_numbers": ({"numbers": ["12349", "13800138000"]}, "SOS,12349,13800138000,"),
    "find": ({}, "FIND"),
    "call_back": ({"number": "12349"}, "CALL,12349"),
    "monitor": ({"number": "13800138000"}, "MONITOR,13800138000"),
    "power_off": ({}, "POWEROFF"),
}


@pytest.mark.parametrize("name", sorted(WATCH_WORDS))
def test_each_command_in_the_watchs_words_and_its_echo_acknowledges_it(name: str) -> None:
    args, content = WATCH_WORDS[name]
    codec = WatchCodec()
    out = codec.encode_command(command(name, **args), device_id=DEV, context={"vendor": "3G"},
                               serial=1)
    assert out.frame == frame(content, device=DEV)
    answer = codec.decode(frame(out.ack, device=DEV), now_ms=NOW, session_device=None)
    assert answer.acknowledges == out.ack and not answer.unknown and not answer.readings


def test_every_command_has_the_watchs_word() -> None:
    codec = WatchCodec()
    for name in COMMAND_NAMES:
        args = {"set_interval": {"interval_s": 60}, "call_back": {"number": "12349"},
                "monitor": {"number": "12349"}}.get(name, {"numbers": ["12349"]}
                                                     if "numbers" in name else {})
        codec.encode_command(command(name, **args), device_id=DEV, context={}, serial=1)


def test_a_watch_command_repeats_the_vendor_and_numbers_the_index_field() -> None:
    out = WatchCodec().encode_command(command("locate"), device_id=DEV,
                                      context={"vendor": "ZJ", "index": "0003"}, serial=0x1A)
    assert out.frame == f"[ZJ*{DEV}*001A*0002*CR]".encode()


def test_the_phone_book_carries_names_a_watch_shows_and_refuses_more_than_it_holds() -> None:
    codec = WatchCodec()
    out = codec.encode_command(command("set_family_numbers", numbers=["13800138000"]),
                               device_id=DEV, context={}, serial=1)
    content = out.frame.decode().split("*")[-1].rstrip("]")
    word, number, name = content.split(",")
    assert (word, number) == ("PHB", "13800138000")
    assert bytes.fromhex(name).decode("utf-16-be") == "家人1"
    with pytest.raises(UnsupportedCommand, match="5 numbers"):
        codec.encode_command(command("set_family_numbers", numbers=["12349"] * 6),
                             device_id=DEV, context={}, serial=1)
    with pytest.raises(UnsupportedCommand, match="3 numbers"):
        codec.encode_command(command("set_sos_numbers", numbers=["12349"] * 4),
                             device_id=DEV, context={}, serial=1)


# --- The tracker's words -------------------------------------------------------------------


@pytest.mark.parametrize(("name", "args", "text"), [
    ("locate", {}, b"WHERE#"),
    ("set_interval", {"interval_s": 60}, b"TIMER,60,60#"),
    ("set_sos_numbers", {"numbers": ["12349", "13800138000"]}, b"SOS,A,12349,13800138000#"),
])
def test_a_gt06_command_is_a_0x80_frame_whose_flag_the_answer_repeats(
        name: str, args: dict[str, Any], text: bytes) -> None:
    codec = Gt06Codec()
    out = codec.encode_command(command(name, **args), device_id="355951092918858",
                               context={}, serial=0x2B)
    (whole,) = Gt06Framer().feed(out.frame)  # a valid frame: length and CRC check out
    assert whole[3] == 0x80
    assert whole[4] == 4 + len(text) and whole[5:9] == (0x2B).to_bytes(4, "big")
    assert whole[9:9 + len(text)] == text
    # The GT06 answer (0x15: length, flag, text) and the Concox one (0x21: flag, code, text).
    flag = whole[5:9]
    for answer in (build_frame(0x15, bytes([4 + 2]) + flag + b"OK", 9),
                   build_frame(0x21, flag + b"\x01" + b"OK", 9)):
        decoded = codec.decode(answer, now_ms=NOW, session_device="355951092918858")
        assert decoded.acknowledges == out.ack == "0000002B"


@pytest.mark.parametrize("name", ["find", "call_back", "monitor", "set_family_numbers",
                                  "power_off"])
def test_a_tracker_refuses_what_it_cannot_do_with_the_reason(name: str) -> None:
    args = {"call_back": {"number": "12349"}, "monitor": {"number": "12349"},
            "set_family_numbers": {"numbers": ["12349"]}}.get(name, {})
    with pytest.raises(UnsupportedCommand, match="GT06 tracker cannot"):
        Gt06Codec().encode_command(command(name, **args), device_id="1", context={}, serial=1)


# --- The desk ------------------------------------------------------------------------------


class Links:
    """Device connections as the desk sees them: which are up, and what was written."""

    def __init__(self) -> None:
        self.up: set[str] = set()
        self.written: list[tuple[str, bytes]] = []
        self.broken = False

    def connected(self, device: str) -> bool:
        return device in self.up

    def context(self, device: str) -> Mapping[str, object]:
        return {"vendor": "3G"}

    async def write(self, device: str, frame: bytes) -> None:
        if self.broken:
            raise ConnectionError("gone")
        self.written.append((device, frame))


class Results:
    def __init__(self) -> None:
        self.published: list[tuple[str, dict[str, Any]]] = []

    async def publish(self, topic: str, payload: bytes) -> None:
        self.published.append((topic, json.loads(payload)))


class Desk:
    """A desk on a clock the test moves, its results drained after each step."""

    def __init__(self, **settings: Any) -> None:
        self.links, self.results = Links(), Results()
        self.t = 100.0
        self.desk = CommandDesk(codec=WatchCodec(), links=self.links, publisher=self.results,
                                settings=CommandsConfig(**settings), now_ms=lambda: NOW,
                                monotonic=lambda: self.t)

    def statuses(self) -> list[tuple[str, str, str | None]]:
        """(id, status, reason) of what the desk published so far."""
        queue = self.desk._results
        while not queue.empty():
            topic, result = queue.get_nowait()
            self.results.published.append((topic, json.loads(encode(result))))
        return [(r["id"], r["status"], r.get("reason")) for _, r in self.results.published]

    def receive(self, cmd: DeviceCommand, device: str = DEV) -> None:
        asyncio.run(self.desk.receive(f"eldercare/v1/371002/cmd/{device}", encode(cmd)))


def test_a_connected_device_gets_the_command_at_once_and_its_answer_acknowledges_it() -> None:
    d = Desk()
    d.links.up.add(DEV)
    d.receive(command("locate"))
    assert d.links.written == [(DEV, frame("CR", device=DEV))]
    d.desk.answered(DEV, "CR")
    assert d.statuses() == [("c1", "sent", None), ("c1", "acknowledged", None)]
    assert d.results.published[0][0] == f"eldercare/v1/371002/cmd/{DEV}/result"


def test_no_answer_in_time_fails_the_command_with_the_reason() -> None:
    d = Desk(ack_timeout_s=30)
    d.links.up.add(DEV)
    d.receive(command("find"))
    d.t += 29
    d.desk.sweep()
    assert [s for _, s, _ in d.statuses()] == ["sent"]
    d.t += 2
    d.desk.sweep()
    assert d.statuses()[-1] == ("c1", "failed", ("sent, but the device did not answer within"
                                " 30 s"))


def test_a_command_waits_for_its_device_and_goes_out_in_order_when_it_connects() -> None:
    d = Desk()
    d.receive(command("set_interval", id="a", interval_s=60))
    d.receive(command("locate", id="b"))
    assert d.links.written == [] and d.desk.waiting == 2
    d.links.up.add(DEV)
    asyncio.run(d.desk.device_ready(DEV))
    assert [f for _, f in d.links.written] == [frame("UPLOAD,60", device=DEV),
                                                frame("CR", device=DEV)]
    assert d.statuses() == [("a", "sent", None), ("b", "sent", None)] and d.desk.waiting == 0


def test_a_device_that_never_comes_fails_only_where_the_gateway_has_seen_it() -> None:
    d = Desk(wait_s=60)
    d.receive(command("locate", id="ours"), device="SEEN")
    d.receive(command("locate", id="theirs"), device="NEVER")
    asyncio.run(d.desk.device_ready("SEEN"))  # it was here (and its command went out) ...
    d.receive(command("find", id="later"), device="SEEN")  # ... and is gone again
    d.links.up.discard("SEEN")
    d.t += 61
    d.desk.sweep()
    statuses = d.statuses()
    # The unseen device's command is left to the gateway that holds it: no result from here.
    assert ("theirs", "failed") not in [(i, s) for i, s, _ in statuses]
    assert [("later", "failed", "the device did not connect within 60 s")] == [
        x for x in statuses if x[0] == "later"]
    assert d.desk.waiting == 0


def test_a_command_held_too_long_by_the_broker_expires_instead_of_being_sent() -> None:
    d = Desk(max_age_s=900)
    d.links.up.add(DEV)
    d.receive(command("call_back", ts=NOW - 3_600_000, number="12349"))
    assert d.links.written == []
    ((_, status, reason),) = d.statuses()
    assert status == "failed" and reason is not None and reason.startswith("expired")


def test_waiting_is_bounded_per_device_and_a_full_queue_fails_with_the_reason() -> None:
    d = Desk(max_waiting_per_device=2)
    asyncio.run(d.desk.device_ready(DEV))
    d.links.up.clear()  # seen, now away
    for i in range(3):
        d.receive(command("locate", id=f"c{i}"))
    assert d.desk.waiting == 2
    assert d.statuses() == [("c2", "failed", ("too many commands already waiting for this device"
                                             " to connect"))]


def test_an_unsupported_command_fails_at_once_and_a_malformed_one_is_dropped() -> None:
    d = Desk()
    d.links.up.add(DEV)
    d.receive(command("set_sos_numbers", numbers=["1234"] * 4))
    ((_, status, reason),) = d.statuses()
    assert status == "failed" and reason is not None and reason.startswith("unsupported:")
    asyncio.run(d.desk.receive(f"eldercare/v1/371002/cmd/{DEV}", b"{not json"))
    asyncio.run(d.desk.receive("eldercare/v1/371002/cmd/a/b/c", encode(command("locate"))))
    assert len(d.statuses()) == 1 and d.links.written == []


def test_a_second_command_of_one_kind_before_the_answer_supersedes_the_first() -> None:
    d = Desk()
    d.links.up.add(DEV)
    d.receive(command("locate", id="first"))
    d.receive(command("locate", id="second"))
    d.desk.answered(DEV, "CR")
    assert d.statuses() == [("first", "sent", None),
                            ("first", "failed", ("superseded by a later command of the same kind"
                                                " before the device answered")),
                            ("second", "sent", None), ("second", "acknowledged", None)]


def test_a_connection_lost_at_the_write_keeps_the_command_waiting() -> None:
    d = Desk()
    d.links.up.add(DEV)
    d.links.broken = True
    d.receive(command("locate"))
    assert d.desk.waiting == 1 and d.statuses() == []
    d.links.broken = False
    asyncio.run(d.desk.device_ready(DEV))
    assert d.statuses() == [("c1", "sent", None)]


# --- End to end: broker -> gateway -> watch -> gateway -> broker -----------------------------


class ResultWatcher:
    """Subscribes to command results and publishes commands, on the real broker."""

    def __init__(self, url: str) -> None:
        host, port = url.removeprefix("mqtt://").split(":")
        self.results: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"test-cmd-{time.time_ns()}")
        self.client.on_message = self._on_message
        self.client.connect(host, int(port))
        self.client.loop_start()
        self.subscribed = threading.Event()
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.subscribe("eldercare/v1/+/cmd/+/result", qos=1)
        assert self.subscribed.wait(10)

    def _on_message(self, client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self.lock:
            decode_result(msg.payload)  # the gateway's results keep the contract
            self.results.append(json.loads(msg.payload))

    def send(self, region: str, device: str, cmd: DeviceCommand) -> None:
        self.client.publish(f"eldercare/v1/{region}/cmd/{device}", encode(cmd),
                            qos=1).wait_for_publish(5)

    def gateway_listening(self, region: str) -> None:
        """An expired command is answered by any gateway, at once: the results path works."""
        self.send(region, "probe", command("locate", id="probe", ts=int(time.time() * 1000)
                                           - 86_400_000))
        assert wait_until(lambda: "failed" in self.statuses("probe"), 20)

    def statuses(self, id: str) -> list[str]:
        with self.lock:
            return [r["status"] for r in self.results if r["id"] == id]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@contextmanager
def result_watcher(url: str) -> Iterator[ResultWatcher]:
    w = ResultWatcher(url)
    try:
        yield w
    finally:
        w.close()


def wait_until(check: Any, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return bool(check())


def test_locate_now_reaches_a_connected_watch_and_its_answer_comes_back_as_acknowledged(
        broker: Mosquitto, region: str) -> None:
    gw = gateway_config(broker.url, region)
    with Gateway(gw) as g, result_watcher(broker.url) as results, watch(port_of(gw)) as w:
        # A command sent before the gateway's first subscription is not held for it.
        assert g.linked.wait(20)
        results.gateway_listening(region)
        w.send(frame("LK"))
        assert w.reply() == frame("LK")
        results.send(region, WATCH, command("locate", id="loc-1", ts=int(time.time() * 1000)))
        assert w.reply() == frame("CR")
        assert wait_until(lambda: results.statuses("loc-1") == ["sent"])
        w.send(frame("CR"))
        assert wait_until(lambda: results.statuses("loc-1") == ["sent", "acknowledged"])


def test_a_command_for_a_watch_not_yet_connected_goes_out_when_it_connects(
        broker: Mosquitto, region: str) -> None:
    gw = gateway_config(broker.url, region)
    with Gateway(gw) as g, result_watcher(broker.url) as results:
        assert g.linked.wait(20)
        results.gateway_listening(region)
        results.send(region, WATCH, command("call_back", id="cb-1", ts=int(time.time() * 1000),
                                            number="12349"))
        time.sleep(0.5)
        assert results.statuses("cb-1") == []  # waiting: this gateway has not seen the watch
        with watch(port_of(gw)) as w:
            w.send(frame("LK"))
            assert w.reply() == frame("LK")
            assert w.reply() == frame("CALL,12349")
            w.send(frame("CALL"))
            assert wait_until(lambda: results.statuses("cb-1") == ["sent", "acknowledged"])
