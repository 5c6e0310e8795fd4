"""Per-component schemas (issue #9): foundation's runner over ingest's, alerts' and console's files.

The files moved out of ``ingest/sql`` keep the version names and checksums earlier releases
recorded (pinned below, so a database they migrated is not migrated again); sources merge into one
order by number; two files claiming a number is an error before any SQL runs. Against the real
PostgreSQL of the suite; throwaway components are packages written under ``tmp_path``.
"""

from __future__ import annotations

import hashlib
import uuid
from importlib import resources
from pathlib import Path

import psycopg
import pytest

from eldercare.schema import SOURCES, migrate
from foundation.errors import MigrationError
from foundation.migrations import MigrationSource, apply_migrations, load_migrations

#: What every release before per-component schemas recorded in ``schema_migrations`` (version,
#: checksum), all from ``ingest/sql``, and which component holds each file now.
RECORDED_BY_EARLIER_RELEASES: list[tuple[str, str, str]] = [
    ("0001_readings", "c530d6db17ecfee1", "ingest"),
    ("0002_registry", "228f6f4939eb2e9f", "ingest"),
    ("0003_events", "7a780dc4d374008d", "ingest"),
    ("0004_alerts", "028fa1314d478223", "alerts"),
    ("0005_alert_folding", "7ea972c41a6fef8f", "alerts"),
    ("0006_alert_routing", "4eadb2fb5790ac98", "alerts"),
    ("0007_console", "2d938a8c1c6ef8a1", "console"),
    ("0008_console_login_unlock", "e2bb7a779c6244e8", "console"),
    ("timescale/0001_hypertables", "9fb6d7ffc4f81adf", "ingest"),
    ("timescale/0002_hourly_aggregate", "32016a539c3c2439", "ingest"),
]


def _component(root: Path, files: dict[str, str]) -> str:
    """A package of its own under ``root`` holding ``sql/<name>`` files; returns its name."""
    name = f"component_{uuid.uuid4().hex[:12]}"
    (root / name).mkdir()
    (root / name / "__init__.py").write_text("", encoding="utf-8")
    for rel, text in files.items():
        path = root / name / "sql" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return name


def _recorded(conn: psycopg.Connection) -> list[tuple[str, str]]:
    return conn.execute("SELECT version, checksum FROM schema_migrations ORDER BY version").fetchall()


def test_the_moved_files_keep_the_versions_and_checksums_earlier_releases_recorded() -> None:
    released = {v for v, _, _ in RECORDED_BY_EARLIER_RELEASES}
    loaded = load_migrations(SOURCES)
    # Released files unchanged (later files, such as 0009_device_alarm, come after them).
    assert [(m.version, m.checksum, m.package) for m in loaded
            if m.version in released] == RECORDED_BY_EARLIER_RELEASES
    for mig in loaded:  # the bytes in the wheel, not only the text read back, are unchanged
        data = resources.files(mig.package).joinpath("sql", mig.version + ".sql").read_bytes()
        assert hashlib.sha256(data).hexdigest()[:16] == mig.checksum, mig.version


def test_a_database_migrated_by_the_single_directory_layout_is_not_migrated_again(
        db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The layout of earlier releases: every file in one package's sql/ (and sql/timescale/).
    old = _component(tmp_path, {})
    released = {v for v, _, _ in RECORDED_BY_EARLIER_RELEASES}
    for mig in (m for m in load_migrations(SOURCES) if m.version in released):
        target = tmp_path / old / "sql" / (mig.version + ".sql")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(
            resources.files(mig.package).joinpath("sql", mig.version + ".sql").read_bytes())
    monkeypatch.syspath_prepend(str(tmp_path))
    with psycopg.connect(db_url, autocommit=True) as conn:
        before = apply_migrations(
            conn, sources=[MigrationSource(package=old, timescale="timescale")], timescale="off")
        assert before.applied == [v for v, _, _ in RECORDED_BY_EARLIER_RELEASES[:8]]
        recorded = _recorded(conn)
        assert recorded == sorted((v, c) for v, c, _ in RECORDED_BY_EARLIER_RELEASES[:8])

        after = migrate(conn, timescale="off")
        newer = [m.version for m in load_migrations(SOURCES)
                 if m.version not in released and not m.version.startswith("timescale/")]
        assert after.applied == newer and not after.timescale   # only what came since
        assert set(recorded) <= set(_recorded(conn))


def test_two_sources_claiming_one_number_is_an_error_before_any_sql(
        db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = _component(tmp_path, {"0001_first.sql": "CREATE TABLE first_t (id int);"})
    second = _component(tmp_path, {"0001_second.sql": "CREATE TABLE second_t (id int);"})
    late = _component(tmp_path, {"0004_late_alerts.sql": "CREATE TABLE late_t (id int);"})
    monkeypatch.syspath_prepend(str(tmp_path))
    with psycopg.connect(db_url, autocommit=True) as conn:
        with pytest.raises(MigrationError, match="number claimed twice") as err:
            apply_migrations(conn, sources=[MigrationSource(package=first),
                                            MigrationSource(package=second)], timescale="off")
        assert first in str(err.value) and second in str(err.value)
        # A new file reusing a released number of another component names the one it collides with.
        with pytest.raises(MigrationError, match=r"alerts \(0004_alerts\)"):
            apply_migrations(conn, sources=[*SOURCES, MigrationSource(package=late)],
                             timescale="off")
        assert conn.execute("SELECT to_regclass('schema_migrations')").fetchone() == (None,)


def test_sources_merge_into_one_order_by_number_timescale_files_last(
        db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Each file needs the one before it, whichever component holds it.
    a = _component(tmp_path, {
        "0001_a_base.sql": "CREATE TABLE a_base (id int PRIMARY KEY);",
        "0003_a_after_b.sql": "ALTER TABLE b_table ADD COLUMN note text;",
        "timescale/0001_a_ts.sql": "SELECT 1;",
    })
    b = _component(tmp_path, {
        "0002_b_table.sql": "CREATE TABLE b_table (a_id int REFERENCES a_base (id));",
        "0004_b_last.sql": "INSERT INTO b_table (a_id, note) SELECT NULL, 'last';",
    })
    monkeypatch.syspath_prepend(str(tmp_path))
    sources = [MigrationSource(package=b), MigrationSource(package=a, timescale="timescale")]
    assert [(m.version, m.package) for m in load_migrations(sources)] == [
        ("0001_a_base", a), ("0002_b_table", b), ("0003_a_after_b", a), ("0004_b_last", b),
        ("timescale/0001_a_ts", a)]
    with psycopg.connect(db_url, autocommit=True) as conn:
        report = apply_migrations(conn, sources=sources, timescale="off")
        assert report.applied == ["0001_a_base", "0002_b_table", "0003_a_after_b", "0004_b_last"]
        assert conn.execute("SELECT note FROM b_table").fetchall() == [("last",)]


def test_a_file_not_named_nnnn_name_is_an_error(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    odd = _component(tmp_path, {"0001_ok.sql": "SELECT 1;", "fix-later.sql": "SELECT 2;"})
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(MigrationError, match="fix-later: .*not NNNN_name.sql"):
        load_migrations([MigrationSource(package=odd)])
