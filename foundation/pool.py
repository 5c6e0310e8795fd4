"""A PostgreSQL connection pool opened on first use, for the stores that share connections
between threads (alerts, console accounts, the registry), and :class:`PooledStore`, their common
lifecycle.

Opening lazily lets a store be built before the database is migrated or even reachable (the
service builds its components, then migrates, then starts them); the first transaction opens
the pool once, under a lock, for every thread. psycopg errors pass through unchanged: each
store translates them into :class:`~foundation.errors.StorageError` with its own wording.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any, Self

import psycopg
from psycopg_pool import ConnectionPool


class LazyPool:
    """Up to ``max_size`` connections to ``url``; waits at most ``timeout_s`` for one."""

    def __init__(self, url: str, *, name: str, max_size: int = 4,
                 timeout_s: float = 5.0) -> None:
        self._pool = ConnectionPool(url, min_size=1, max_size=max_size, open=False,
                                    timeout=timeout_s, name=name)
        self._opened = False
        self._open_lock = threading.Lock()

    @contextmanager
    def transaction(self, *, pipeline: bool = False
                    ) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
        """A pooled connection in a transaction, committed when the block ends. ``pipeline``:
        in psycopg's pipeline mode, so statements whose results nobody reads go out without a
        round trip each (reading a result syncs)."""
        if not self._opened:
            with self._open_lock:
                if not self._opened:
                    self._pool.open()
                    self._opened = True
        with self._pool.connection() as conn, ExitStack() as stack:
            if pipeline:
                stack.enter_context(conn.pipeline())
            with conn.transaction():
                yield conn

    def close(self) -> None:
        """Close the pooled connections."""
        self._pool.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class PooledStore:
    """What every store holding a :class:`LazyPool` in ``_db`` shares: :meth:`close` and use
    as a context manager (closed at the end of the block)."""

    _db: LazyPool

    def close(self) -> None:
        """Close the pooled connections."""
        self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
