"""A TCP proxy a test can cut and restore: a database (or any server) that goes away.

``cut()`` closes every open connection and answers new ones by closing them at once, which is
what a client sees when the server crashed or was stopped; ``restore()`` lets connections
through again. The target may be a TCP address or a PostgreSQL Unix socket directory.
"""

from __future__ import annotations

import socket
import threading
from types import TracebackType
from typing import Self

from psycopg.conninfo import conninfo_to_dict, make_conninfo


class TcpProxy:
    """Forwards 127.0.0.1:<port> to ``target``; see the module docstring."""

    def __init__(self, *, host: str, port: int) -> None:
        self._target = (host, port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._up = threading.Event()
        self._up.set()
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self.refused = 0  # connections refused while cut
        self._closed = False
        self._thread = threading.Thread(target=self._accept, name="test-tcp-proxy", daemon=True)
        self._thread.start()

    @classmethod
    def for_postgres(cls, url: str) -> tuple[TcpProxy, str]:
        """A proxy in front of the server of ``url``, and the URL that goes through it."""
        params = conninfo_to_dict(url)
        host = str(params.get("host") or "localhost")
        port = int(params.get("port") or 5432)
        proxy = cls(host=host, port=port)
        return proxy, make_conninfo(url, host="127.0.0.1", port=str(proxy.port))

    def _connect_target(self) -> socket.socket:
        host, port = self._target
        if host.startswith("/"):  # a Unix socket directory, as libpq names it
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(f"{host}/.s.PGSQL.{port}")
            return s
        return socket.create_connection((host, port))

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if not self._up.is_set():
                self.refused += 1
                client.close()
                continue
            try:
                upstream = self._connect_target()
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open.update((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True,
                                 name="test-tcp-proxy-pump").start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                self._close(s)

    def _close(self, s: socket.socket) -> None:
        with self._lock:
            self._open.discard(s)
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        s.close()

    def cut(self) -> None:
        """The server is gone: drop every connection, refuse new ones."""
        self._up.clear()
        with self._lock:
            live = list(self._open)
        for s in live:
            self._close(s)

    def restore(self) -> None:
        """The server is back."""
        self._up.set()

    def close(self) -> None:
        self._closed = True
        self.cut()
        self._listener.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
