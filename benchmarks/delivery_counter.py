"""Counts what reaches the broker: a lean MQTT 3.1.1 subscriber in a process of its own.

``benchmarks.gateway`` checks end-to-end delivery with it: every message published on
``eldercare/v1/+/gw/+`` (the gateway batches its connections' readings) is counted by reading
(and the SOS readings among them), subscribed at QoS 1 and
acknowledged, so the broker must deliver each one. Not paho: paho reads a packet's header a byte
a recv() at a time and runs callbacks per message, some 30 us each, and at 20,000 messages/s that
is most of a core taken from the gateway on a two-core machine. This reads 256 KiB at once,
walks the packets with a few slices, and answers every PUBACK of a read in one send.
"""

from __future__ import annotations

import socket
import struct
import time
import uuid
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Event

_SOS = b'"type":"sos"'
_TYPE = b'"type":'


def _connect_packet(client_id: str, keepalive_s: int) -> bytes:
    cid = client_id.encode()
    body = (b"\x00\x04MQTT\x04\x02" + struct.pack("!H", keepalive_s)
            + struct.pack("!H", len(cid)) + cid)  # level 4 (3.1.1), clean session
    return b"\x10" + _length(len(body)) + body


def _subscribe_packet(topic: str) -> bytes:
    t = topic.encode()
    body = b"\x00\x01" + struct.pack("!H", len(t)) + t + b"\x01"  # packet id 1, QoS 1
    return b"\x82" + _length(len(body)) + body


def _length(n: int) -> bytes:
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _packets(buf: bytearray) -> tuple[list[tuple[int, bytes]], int]:
    """The whole packets at the start of ``buf`` (first byte, body) and the bytes they use."""
    found: list[tuple[int, bytes]] = []
    at, size = 0, len(buf)
    while at + 2 <= size:
        length, mult, i = 0, 1, at + 1
        while True:
            if i >= size:
                return found, at
            b = buf[i]
            length += (b & 0x7F) * mult
            mult *= 128
            i += 1
            if not b & 0x80:
                break
        if i + length > size:
            break
        found.append((buf[at], bytes(buf[i:i + length])))
        at = i + length
    return found, at


def count_messages(host: str, port: int, topic: str, count: Synchronized[int],
                   sos: Synchronized[int], ready: Event, stop: Event) -> None:
    """Subscribe to ``topic`` and count the readings published (and the SOS among them)
    until ``stop``."""
    sock = socket.create_connection((host, port), timeout=10)
    sock.sendall(_connect_packet("bench-counter-" + uuid.uuid4().hex[:8], 60))
    sock.sendall(_subscribe_packet(topic))
    sock.settimeout(0.5)
    buf = bytearray()
    last_ping = time.monotonic()
    while not stop.is_set():
        try:
            data = sock.recv(256 * 1024)
        except TimeoutError:
            data = b""
        else:
            if not data:
                raise ConnectionError("the broker closed the counter's connection")
        buf += data
        packets, used = _packets(buf)
        del buf[:used]
        acks = bytearray()
        n = n_sos = 0
        for first, body in packets:
            kind = first >> 4
            if kind == 3:  # PUBLISH: one array of readings, each with its "type"
                n += body.count(_TYPE)
                n_sos += body.count(_SOS)
                if first & 0x06:  # QoS 1: answer with its packet id
                    tlen = struct.unpack_from("!H", body)[0]
                    acks += b"\x40\x02" + body[2 + tlen:4 + tlen]
            elif kind == 9:  # SUBACK
                ready.set()
        if acks:
            sock.sendall(acks)
        if n:
            count.value += n
            sos.value += n_sos
        if time.monotonic() - last_ping > 30:
            sock.sendall(b"\xc0\x00")  # PINGREQ
            last_ping = time.monotonic()
    sock.sendall(b"\xe0\x00")  # DISCONNECT
    sock.close()
