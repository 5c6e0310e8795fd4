"""A local stand-in for Amap's hardware positioning service (智能硬件定位), speaking its protocol.

:class:`AmapStandIn` is a real HTTP server in a thread. It checks each request as the service
does (the key; ``accesstype`` 0 with ``cdma``, ``network`` and a ``bts`` of five fields, or 1
with at least two ``macs``; each tower ``mcc,mnc,lac,cellid,signal`` and each access point
``mac,signal,ssid``) and refuses what does not pass with the service's JSON refusal (``status``
"0", an ``info`` such as ``INVALID_USER_KEY`` or ``INVALID_PARAMS``). It answers ``location``
"lon,lat" in GCJ-02 and a ``radius``, and can be told to answer ``type`` "0" (no position),
HTTP 500, a refusal, garbage, an answer too large, or to hang past the client's timeout; and to
hold every answer until the test lets it go (``proceed``), so a test can look at the gateway
while a lookup is in flight. It records every request's form, method and query string, so tests
can check what left the gateway.
"""

from __future__ import annotations

import json
import re
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

KEY = "standin-key-0123456789abcdef"
#: The answer's position, as Amap gives it: GCJ-02 (Weihai, near the demo's homes).
GCJ02_LON, GCJ02_LAT = 122.125557, 37.514332
_BTS = re.compile(r"\d{1,3},\d{1,3},\d+,\d+,-?\d+")
_MAC = re.compile(r"([0-9a-f]{2}:){5}[0-9a-f]{2},-?\d+,.*")


class AmapStandIn:
    """See the module docstring. ``behaviour``: ``ok``, ``none`` (type 0), ``http500``,
    ``refuse`` (status 0, a quota exceeded), ``garbage``, ``huge``, ``hang``. Answers wait
    until ``proceed`` is set (it is, unless a test clears it)."""

    def __init__(self) -> None:
        self.behaviour = "ok"
        self.radius = "30"
        self.proceed = threading.Event()
        self.proceed.set()
        self.requests: list[dict[str, str]] = []   # each request's form, as received
        self.methods: list[str] = []
        self.queries: list[str] = []                # each request's query string (must be empty)
        self.release = threading.Event()            # ends delays and hangs at teardown
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                form = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode("utf-8"),
                                                   keep_blank_values=True))
                standin._record("POST", self.path, form)
                standin._answer(self, form)

            def do_GET(self) -> None:
                query = urllib.parse.urlsplit(self.path).query
                standin._record("GET", self.path, dict(urllib.parse.parse_qsl(query)))
                standin._answer(self, dict(urllib.parse.parse_qsl(query)))

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = _Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        name="amap-standin")
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/position"

    def close(self) -> None:
        self.release.set()
        self.proceed.set()
        self._server.shutdown()
        self._server.server_close()

    def _record(self, method: str, path: str, form: dict[str, str]) -> None:
        self.methods.append(method)
        self.queries.append(urllib.parse.urlsplit(path).query)
        self.requests.append(form)

    def _answer(self, handler: BaseHTTPRequestHandler, form: dict[str, str]) -> None:
        self.proceed.wait(60)
        if self.release.is_set():
            return
        if self.behaviour == "hang":
            self.release.wait(60)
            return
        if self.behaviour == "http500":
            self._send(handler, 500, b"internal error")
            return
        if self.behaviour == "garbage":
            self._send(handler, 200, b"<html>not json</html>")
            return
        if self.behaviour == "huge":
            self._send(handler, 200, b'{"status": "1", "pad": "' + b"x" * 100_000 + b'"}')
            return
        problem = self._check(form)
        if problem is not None:
            self._send(handler, 200, _json(status="0", info=problem, infocode="10001"))
        elif self.behaviour == "refuse":
            self._send(handler, 200, _json(status="0", info="DAILY_QUERY_OVER_LIMIT",
                                           infocode="10003"))
        elif self.behaviour == "none":
            self._send(handler, 200, _json(status="1", info="OK", infocode="10000",
                                           result={"type": "0"}))
        else:
            self._send(handler, 200, _json(status="1", info="OK", infocode="10000", result={
                "type": "4", "location": f"{GCJ02_LON},{GCJ02_LAT}", "radius": self.radius,
                "desc": "山东省 威海市 环翠区", "country": "中国", "province": "山东省",
                "city": "威海市", "citycode": "0631", "adcode": "371002"}))

    @staticmethod
    def _check(form: dict[str, str]) -> str | None:
        """The service's own checks: the refusal's ``info``, or None."""
        if form.get("key") != KEY:
            return "INVALID_USER_KEY"
        macs = [m for m in form.get("macs", "").split("|") if m]
        if not form.get("imei") or form.get("output") != "json":
            return "INVALID_PARAMS"
        if not all(_MAC.fullmatch(m) for m in macs):
            return "INVALID_PARAMS"
        if form.get("accesstype") == "0":
            towers = [form.get("bts", "")] + [t for t in form.get("nearbts", "").split("|") if t]
            if form.get("cdma") != "0" or not form.get("network") or not all(
                    _BTS.fullmatch(t) for t in towers):
                return "INVALID_PARAMS"
        elif form.get("accesstype") != "1" or len(macs) < 2:
            return "INVALID_PARAMS"
        return None

    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, status: int, body: bytes) -> None:
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", "application/json;charset=UTF-8")
            handler.send_header("Content-Length", str(len(body)))
            handler.end_headers()
            handler.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (its timeout): what a slow service sees too


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that gave up mid-answer is expected here, not an error


def _json(**fields: Any) -> bytes:
    return json.dumps(fields, ensure_ascii=False).encode("utf-8")
