"""A stand-in 12349 dispatch platform that can be told to fail, for the fault suite.

Like ``alerts/webhook_receiver.py`` (the demo's receiver) it is a real local HTTP server that
records every POST, but it also records how it answered each one, verifies every signature,
and fails on command:

- ``platform.fail(status=503, times=3)`` answers the next 3 POSTs with 503 (``times=None``:
  until told otherwise);
- ``platform.hang(times=2)`` reads the next 2 requests and never answers (until
  :meth:`DispatchPlatform.recover` or close), so the sender's timeout is what ends them;
- ``platform.go_down()`` closes the listening socket (connection refused);
  ``platform.come_back()`` listens again on the same port;
- ``platform.recover()`` answers 200 again and releases hung requests.

A delivery counts when the platform answered 2xx: :meth:`DispatchPlatform.accepted`. A request
it received but did not answer (hung) is *received* but not accepted: the sender retries it with
the same ``Idempotency-Key``, and the platform deduplicates (docs/alerts.md).
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from alerts.channels.webhook import SignatureError, verify_signature
from foundation.ports import free_port
from tests.faults.process import WEBHOOK_SECRET
from tests.held_port import HeldPort


@dataclass(frozen=True, slots=True)
class Post:
    """One POST as received, and what the platform did with it."""

    idempotency_key: str
    document: dict[str, Any]
    signature_ok: bool
    at: float  # time.monotonic() of arrival
    outcome: str  # "200", "503", "hung", ...

    @property
    def accepted(self) -> bool:
        return self.outcome.startswith("2")

    @property
    def event(self) -> str:
        return str(self.document.get("event", ""))

    @property
    def alert_id(self) -> int | None:
        alert = self.document.get("alert") or {}
        return int(alert["id"]) if "id" in alert else None


@dataclass(slots=True)
class _Plan:
    mode: str = "ok"  # ok | fail | hang
    status: int = 200
    times: int | None = None
    counted: int = field(default=0)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A sender that gave up on a hung request is the point of the exercise, not an error.
        if not isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            super().handle_error(request, client_address)


class DispatchPlatform:
    """See the module docstring."""

    def __init__(self, *, secret: str = WEBHOOK_SECRET, port: int | None = None) -> None:
        self.secret = secret.encode()
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/hooks/12349"
        self.posts: list[Post] = []
        self._plan = _Plan()
        self._lock = threading.Lock()
        self._release = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()  # open client connections (keep-alive)
        self._held: HeldPort | None = None
        self.come_back()

    # -- faults --
    def fail(self, *, status: int = 503, times: int | None = None) -> None:
        with self._lock:
            self._plan = _Plan("fail", status, times)

    def hang(self, *, times: int | None = None) -> None:
        with self._lock:
            self._release.clear()
            self._plan = _Plan("hang", 0, times)

    def recover(self) -> None:
        with self._lock:
            self._plan = _Plan()
            self._release.set()

    def go_down(self) -> None:
        """Stop listening and cut open connections: senders now get connection refused (a
        kept-alive connection would otherwise still be served by its handler thread)."""
        server, self._server = self._server, None
        if server is not None:
            self._release.set()
            server.shutdown()
            server.server_close()
            # Held while down: refused, and not handed to another server (held_port.py).
            self._held = HeldPort(self.port)
        with self._lock:
            connections, self._connections = list(self._connections), set()
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed by the client
        if self._thread is not None:
            self._thread.join(5)

    def come_back(self) -> None:
        """Listen again, on the same port."""
        if self._server is not None:
            return
        if self._held is not None:
            self._held.release()
            self._held = None
        platform = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                with platform._lock:
                    platform._connections.add(self.connection)

            def finish(self) -> None:
                with platform._lock:
                    platform._connections.discard(self.connection)
                super().finish()

            def do_POST(self) -> None:
                platform._handle(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = _Server(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,),
                                        name="fault-dispatch-platform", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.recover()
        self.go_down()
        if self._held is not None:
            self._held.release()
            self._held = None

    # -- serving --
    def _next_answer(self) -> tuple[str, int]:
        with self._lock:
            plan = self._plan
            if plan.mode != "ok" and plan.times is not None and plan.counted >= plan.times:
                self._plan = plan = _Plan()
            plan.counted += 1
            return plan.mode, plan.status

    def _handle(self, req: BaseHTTPRequestHandler) -> None:
        length = int(req.headers.get("Content-Length", "0"))
        body = req.rfile.read(length)
        try:
            verify_signature(secret=self.secret, timestamp=req.headers["X-Eldercare-Timestamp"],
                             signature=req.headers["X-Eldercare-Signature"], body=body,
                             now_s=time.time())
            signature_ok = True
        except (KeyError, SignatureError):  # a header missing, or a signature that fails
            signature_ok = False
        mode, status = self._next_answer()
        outcome = "hung" if mode == "hang" else str(status if mode == "fail" else 200)
        post = Post(req.headers.get("Idempotency-Key", ""), json.loads(body or b"{}"),
                    signature_ok, time.monotonic(), outcome)
        with self._lock:
            self.posts.append(post)
        if mode == "hang":
            self._release.wait(600)
            req.close_connection = True
            return
        answer = b'{"ok":true}' if outcome == "200" else b'{"error":"unavailable"}'
        req.send_response(int(outcome))
        req.send_header("Content-Type", "application/json")
        req.send_header("Content-Length", str(len(answer)))
        req.end_headers()
        req.wfile.write(answer)

    # -- what it saw --
    def received(self) -> list[Post]:
        with self._lock:
            return list(self.posts)

    def accepted(self, event: str | None = None) -> list[Post]:
        """POSTs answered 2xx (deliveries), optionally of one document ``event``."""
        return [p for p in self.received() if p.accepted and (event is None or p.event == event)]

    def bad_signatures(self) -> int:
        return sum(not p.signature_ok for p in self.received())
