"""A port that refuses connections and that nothing else can take: a server "down" (the fault
suite, tests/faults, and the alert end-to-end tests).

A fault test stops a server (or never starts it) so that senders get "connection refused",
then starts it again on the same port. Left unbound meanwhile, the port went back to the
kernel's pool: once in CI the service under test, binding its HTTP API to port 0, was given
the very port the SMS provider was to come back on, and the "refused" SMS attempts reached the
service's own API instead (405, given up). A socket bound to the port and not listening keeps
it: connections are refused (no listener) and no other bind or outgoing connection gets it
(no SO_REUSEADDR here, so nothing shares it). :meth:`release` frees it just before the server
binds again.
"""

from __future__ import annotations

import socket


class HeldPort:
    """``port`` (a free one when 0), held until :meth:`release`."""

    def __init__(self, port: int = 0, host: str = "127.0.0.1") -> None:
        self._sock: socket.socket | None = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            self._sock.bind((host, port))
        except OSError:
            self._sock.close()
            raise
        self.port = int(self._sock.getsockname()[1])

    def release(self) -> None:
        """Free the port (for the server about to listen on it again)."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
