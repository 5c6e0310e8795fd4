"""An ASGI app served by uvicorn in a named daemon thread, startable and stoppable from sync code.

The service is synchronous at its top (threads for ingest writers, the alert folder, delivery
workers); the HTTP API, and later the duty console, are ASGI apps. :class:`HttpServer` runs one
app on its own event loop in the ``eldercare-http`` thread:

- the listening socket is bound here, before the thread starts, so a port taken or a bad host
  fails :meth:`HttpServer.start` at once as :class:`~foundation.errors.ConfigError`, and port 0
  gives a free port whose number is known (``port``) before the first request;
- :meth:`HttpServer.start` returns once uvicorn accepts connections (or raises if it failed to
  start, e.g. the app's lifespan startup failed);
- :meth:`HttpServer.stop` asks uvicorn to exit: it stops accepting, lets requests in flight
  finish for up to ``graceful_timeout_s``, then cancels them; the thread is joined with a bound.

uvicorn is told not to touch logging (``log_config=None``): the entry point owns logging, and
access logs are off by default (a request line per poll of the dispatch platform is noise).
Signals are the entry point's business too: uvicorn installs no handlers outside the main thread.
"""

from __future__ import annotations

import enum
import logging
import socket
import threading
import time
from typing import Final

import uvicorn
from starlette.types import ASGIApp

from foundation.errors import ConfigError, EldercareError
from foundation.lifecycle import StartStop

log = logging.getLogger(__name__)

THREAD_NAME: Final = "eldercare-http"
#: Poll period while waiting for uvicorn to start (it exposes a flag, not an event).
_POLL_S: Final = 0.01


class State(enum.Enum):
    """Lifecycle of an :class:`HttpServer`; each instance runs once."""

    NEW = "new"
    RUNNING = "running"
    STOPPED = "stopped"


class HttpServer(StartStop):
    """Serve ``app`` on ``host``:``port`` (0 = a free port) in a daemon thread."""

    def __init__(self, app: ASGIApp, *, host: str, port: int,
                 graceful_timeout_s: float = 5.0, access_log: bool = False) -> None:
        self.host = host
        self.port = port
        self.state = State.NEW
        self.graceful_timeout_s = graceful_timeout_s
        self._config = uvicorn.Config(
            app, log_config=None, access_log=access_log, lifespan="auto",
            timeout_graceful_shutdown=max(1, round(graceful_timeout_s)), server_header=False)
        self._server = uvicorn.Server(self._config)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=THREAD_NAME, daemon=True)
        self._socket: socket.socket | None = None

    def start(self, timeout_s: float = 10.0) -> None:
        """Bind, start serving, and return once connections are accepted."""
        if self.state is not State.NEW:
            raise EldercareError(f"HTTP server already {self.state.value}")
        self._socket = self._bind()
        self.port = int(self._socket.getsockname()[1])
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.state = State.STOPPED
                self._stop_thread(timeout_s=1.0)
                raise EldercareError(f"HTTP server on {self.host}:{self.port} did not start: "
                                     f"{self._error or 'timed out'}")
            time.sleep(_POLL_S)
        self.state = State.RUNNING
        log.info("HTTP server listening on %s:%d", self.host, self.port)

    def stop(self) -> None:
        """Stop accepting, let requests in flight finish (bounded), and join the thread."""
        if self.state is not State.RUNNING:
            self.state = State.STOPPED
            return
        self.state = State.STOPPED
        self._stop_thread(timeout_s=self.graceful_timeout_s + 5.0)
        log.info("HTTP server on %s:%d stopped", self.host, self.port)

    def alive(self) -> bool:
        """Whether the server thread still serves (a liveness probe for the supervisor)."""
        return self.state is not State.RUNNING or self._thread.is_alive()

    def _bind(self) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        # IPPROTO_TCP named, not left 0: asyncio sets TCP_NODELAY on accepted connections only
        # when the socket says it is TCP. Without it Nagle held each response's body until the
        # client's delayed ACK of its headers: 40 ms more on every request (44 ms for a trivial
        # endpoint on a kept-alive connection, 1.2 ms with it; benchmarks/http_latency.py).
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        try:
            # A restarted service must not wait out TIME_WAIT connections of its predecessor.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))
        except OSError as exc:
            sock.close()
            raise ConfigError(f"cannot listen on {self.host}:{self.port}: {exc}") from exc
        return sock

    def _run(self) -> None:
        assert self._socket is not None
        try:
            self._server.run(sockets=[self._socket])
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - reported by start() and the log
            # (SystemExit: uvicorn exits on a failed lifespan startup)
            self._error = exc
            log.error("HTTP server on %s:%d failed: %r", self.host, self.port, exc)
        finally:
            self._socket.close()

    def _stop_thread(self, *, timeout_s: float) -> None:
        self._server.should_exit = True
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            # Graceful shutdown overran (a stuck request): skip the lifespan shutdown wait.
            log.warning("HTTP server on %s:%d: forcing exit", self.host, self.port)
            self._server.force_exit = True
            self._thread.join(2.0)
