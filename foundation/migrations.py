"""Versioned SQL migrations of several components, applied in one order at start-up.

Each component owns its schema: a :class:`MigrationSource` names its package, the directory of its
``NNNN_name.sql`` files (applied everywhere) and optionally a subdirectory of files applied only
where the ``timescaledb`` extension is available (or required by configuration). The application
shell passes every source to :func:`apply_migrations`, which merges them into ONE order: the plain
files by number across all sources, then the TimescaleDB files by number (they convert tables the
plain files made). A number belongs to one file of one source, so the order is total and a file may
build on tables of another component's earlier file; two files claiming a number is an error.

Each file runs once, in its own transaction, recorded in ``schema_migrations`` under its path in its
source directory without ``.sql`` (``0004_alerts``, ``timescale/0001_hypertables``): the name does
not say which component holds the file, so moving a file between components (as issue #9 moved
alerts' and console's out of ``ingest/sql``) never applies it twice. A file whose checksum changed
after it was applied is an error, because silently re-running or skipping edited DDL is how schemas
drift. A file whose first line contains ``eldercare: no-transaction`` runs in autocommit
(TimescaleDB continuous aggregates need that). A session advisory lock serialises concurrent
starters; work that must not race either (data policies re-applied on every start) runs under it
through ``then``.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Final, Literal

import psycopg

from foundation.errors import MigrationError, StorageError

log = logging.getLogger(__name__)

# The same key as every earlier release, so an old and a new process never migrate at once.
_LOCK_KEY: Final = 0x454C4443  # "ELDC": one advisory lock for all eldercare migrators
_NO_TX_MARK: Final = "eldercare: no-transaction"
_FILE_NAME: Final = re.compile(r"(\d+)_[A-Za-z0-9_]+\.sql\Z")

TimescaleMode = Literal["auto", "on", "off"]


@dataclass(frozen=True, kw_only=True, slots=True)
class MigrationSource:
    """Where one component's migration files are: ``<package>/<directory>/NNNN_name.sql``.

    ``timescale`` is a subdirectory of ``directory`` whose files apply only with TimescaleDB;
    their versions are recorded as ``<timescale>/NNNN_name``.
    """

    package: str
    directory: str = "sql"
    timescale: str | None = None


@dataclass(slots=True)
class MigrationReport:
    """What :func:`apply_migrations` did: versions applied now, and whether TimescaleDB is in use."""

    applied: list[str] = field(default_factory=list)
    timescale: bool = False


@dataclass(frozen=True, kw_only=True, slots=True)
class Migration:
    """One migration file: its recorded ``version``, text, owning package and number."""

    version: str
    sql: str
    package: str
    number: int
    timescale: bool = False

    @property
    def checksum(self) -> str:
        """What ``schema_migrations`` records: a prefix of the SHA-256 of the text."""
        return hashlib.sha256(self.sql.encode()).hexdigest()[:16]

    @property
    def transactional(self) -> bool:
        """False when the first line carries the ``eldercare: no-transaction`` mark."""
        return _NO_TX_MARK not in self.sql.split("\n", 1)[0]


def load_migrations(sources: Sequence[MigrationSource]) -> list[Migration]:
    """Every migration of ``sources`` in the order they apply: plain ones, then TimescaleDB ones.

    Raises
    ------
    MigrationError
        A file name is not ``NNNN_name.sql``, a directory is missing, or two files claim a number.
    """
    plain: list[Migration] = []
    timescale: list[Migration] = []
    for source in sources:
        root = resources.files(source.package).joinpath(source.directory)
        plain += _read_directory(root, package=source.package, prefix="")
        if source.timescale:
            timescale += _read_directory(root.joinpath(source.timescale), package=source.package,
                                         prefix=source.timescale + "/", timescale=True)
    return _ordered(plain) + _ordered(timescale)


def _read_directory(root: Traversable, *, package: str, prefix: str,
                    timescale: bool = False) -> list[Migration]:
    if not root.is_dir():
        raise MigrationError(f"no migration directory in package {package}",
                             version=prefix + "*")
    found = []
    for path in root.iterdir():
        if not path.name.endswith(".sql"):
            continue
        version = prefix + path.name.removesuffix(".sql")
        match = _FILE_NAME.match(path.name)
        if match is None:
            raise MigrationError(f"{package}: file name is not NNNN_name.sql", version=version)
        # Text mode, as every release read it: the checksums already recorded depend on it.
        found.append(Migration(version=version, sql=path.read_text("utf-8"), package=package,
                               number=int(match[1]), timescale=timescale))
    return found


def _ordered(migrations: list[Migration]) -> list[Migration]:
    """Sorted by number; a number claimed twice (in one source or two) is an error."""
    by_number: dict[int, Migration] = {}
    for mig in migrations:
        other = by_number.setdefault(mig.number, mig)
        if other is not mig:
            raise MigrationError(
                f"number claimed twice: {other.package} ({other.version}) and {mig.package}"
                f" ({mig.version}); renumber the file not yet released",
                version=mig.version,
            )
    return [by_number[n] for n in sorted(by_number)]


def _timescale_available(conn: psycopg.Connection) -> bool:
    row = conn.execute(
        "SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'"
    ).fetchone()
    return row is not None


def apply_migrations(
    conn: psycopg.Connection,
    *,
    sources: Sequence[MigrationSource],
    timescale: TimescaleMode = "auto",
    then: Callable[[MigrationReport], None] | None = None,
) -> MigrationReport:
    """Bring the schema of every source up to date, then run ``then`` under the same lock.

    ``conn`` must be in autocommit mode; it is used for this and nothing else meanwhile. ``then``
    gets the report (``timescale`` already set); a psycopg error it raises becomes a
    :class:`StorageError` like the runner's own.

    Raises
    ------
    MigrationError
        A migration failed, an applied file was edited, two files claim one number, or
        ``timescale="on"`` without the extension.
    StorageError
        The database could not be reached.
    """
    if not conn.autocommit:
        raise ValueError("apply_migrations() needs an autocommit connection")
    migrations = load_migrations(sources)  # before any SQL: a bad layout changes nothing
    report = MigrationReport()
    try:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version text PRIMARY KEY, checksum text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            use_ts = timescale == "on" or (timescale == "auto" and _timescale_available(conn))
            if timescale == "on" and not _timescale_available(conn):
                raise MigrationError("timescaledb extension is not available", version="timescale")
            if use_ts:
                conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
            done: dict[str, str] = dict(
                conn.execute("SELECT version, checksum FROM schema_migrations").fetchall())
            for mig in migrations:
                if mig.timescale and not use_ts:
                    continue
                if mig.version in done:
                    if done[mig.version] != mig.checksum:
                        raise MigrationError(
                            "file changed after it was applied; add a new migration instead",
                            version=mig.version,
                        )
                    continue
                _apply(conn, mig)
                report.applied.append(mig.version)
            # Hypertables made earlier stay hypertables even when this start says "off".
            report.timescale = use_ts or any(m.timescale and m.version in done for m in migrations)
            if then is not None:
                then(report)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    except psycopg.Error as exc:
        raise StorageError(f"migration failed: {exc}") from exc
    if report.applied:
        log.info("applied migrations %s (timescale=%s)", report.applied, report.timescale)
    return report


def _apply(conn: psycopg.Connection, mig: Migration) -> None:
    log.info("applying migration %s (%s)", mig.version, mig.package)
    try:
        if mig.transactional:
            with conn.transaction():
                conn.execute(mig.sql.encode())
                conn.execute(
                    "INSERT INTO schema_migrations (version, checksum) VALUES (%s, %s)",
                    (mig.version, mig.checksum),
                )
        else:
            conn.execute(mig.sql.encode())
            conn.execute(
                "INSERT INTO schema_migrations (version, checksum) VALUES (%s, %s)",
                (mig.version, mig.checksum),
            )
    except psycopg.Error as exc:
        raise MigrationError(str(exc).strip(), version=mig.version) from exc
