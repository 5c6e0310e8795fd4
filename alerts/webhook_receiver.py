"""A stand-in for the 12349 dispatch platform's side of the webhook: a real local HTTP server
that records every POST it receives and answers as told.

Used by ``eldercare demo`` (which prints what the platform receives), by the tests (which
check signatures with :func:`alerts.channels.webhook.verify_signature`) and by the latency
benchmark; integrators can read it as the smallest possible receiver. Not for production.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from foundation.ports import free_port


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (a sender's timeout) is expected here, not an error to print.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


@dataclass
class Recorded:
    """One request as received."""

    path: str
    headers: dict[str, str]
    body: bytes
    #: Wall-clock arrival (time.time()), for latency measurements.
    at: float = field(default_factory=time.time)


@dataclass
class Behaviour:
    """What the server answers; tests change it before sending."""

    status: int = 200
    body: bytes = b'{"ok":true}'
    headers: dict[str, str] = field(default_factory=lambda: {"X-Request-Id": "req-1"})
    delay_s: float = 0.0


class Receiver:
    """A stdlib HTTP server in a thread that records every POST."""

    def __init__(self, port: int | None = None) -> None:
        self.requests: list[Recorded] = []
        #: Called with each request as it arrives (in the server's thread).
        self.on_request: Callable[[Recorded], None] | None = None
        self.behaviour = Behaviour()
        self.release = threading.Event()  # ends a slow answer early at teardown
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as any production web server does

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                rec = Recorded(self.path, dict(self.headers.items()), self.rfile.read(length))
                receiver.requests.append(rec)
                if receiver.on_request is not None:
                    receiver.on_request(rec)
                b = receiver.behaviour
                if b.delay_s:
                    receiver.release.wait(b.delay_s)
                self.send_response(b.status)
                for k, v in b.headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(b.body)))
                self.end_headers()
                self.wfile.write(b.body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = _Server(("127.0.0.1", port or free_port()), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks/12349"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)
