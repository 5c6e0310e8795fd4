"""Feature probe for the PGlite+TimescaleDB test server.

Usage: node server.mjs 55432 &   then   .venv/bin/python tests/pglite/verify.py 55432
Prints one OK/FAIL line per check.
"""
import sys
import threading
import time

import psycopg

PORT = sys.argv[1] if len(sys.argv) > 1 else "55432"
DSN = f"postgresql://postgres:postgres@127.0.0.1:{PORT}/postgres?sslmode=disable"


def check(name, fn):
    try:
        res = fn()
        print(f"OK   {name}: {res!r}"[:300])
    except Exception as e:  # noqa: BLE001
        print(f"FAIL {name}: {type(e).__name__}: {e}".replace("\n", " | ")[:400])


MODE = sys.argv[2] if len(sys.argv) > 2 else "main"
conn = psycopg.connect(DSN, autocommit=True)
q = lambda sql, *a: conn.execute(sql, *a).fetchall()

if MODE != "main":  # each of these is run against a FRESH server (they may kill it)
    conn.execute("CREATE TABLE IF NOT EXISTS ms (id int)")
    conn.execute("INSERT INTO ms VALUES (1), (2)")
    if MODE == "copy-in":
        def run():
            with conn.cursor() as cur, cur.copy("COPY ms (id) FROM STDIN") as cp:
                cp.write_row((99,))
            return q("SELECT count(*) FROM ms WHERE id = 99")
    elif MODE == "copy-out":
        def run():
            with conn.cursor() as cur, cur.copy("COPY ms TO STDOUT") as cp:
                return len(list(cp.rows()))
    elif MODE == "pipeline":
        def run():
            with conn.pipeline():
                conn.execute("SELECT 1")
                conn.execute("SELECT 2")
            with conn.pipeline():
                for i in range(500):
                    conn.execute("INSERT INTO ms VALUES (%s)", (i,))
            r = q("SELECT count(*) FROM ms")
            try:
                with conn.pipeline():
                    conn.execute("SELECT 1/0")
                    conn.execute("SELECT 3")
            except psycopg.Error as e:
                r = (r, f"expected error surfaced: {e}")
            return r
    check(MODE, run)
    time.sleep(0.5)
    check("same conn alive afterwards", lambda: q("SELECT 1"))
    conn.close()
    check("new conn afterwards", lambda: psycopg.connect(DSN, connect_timeout=5).execute("SELECT 1").fetchone())
    sys.exit(0)

check("server_version", lambda: (conn.info.server_version, q("SHOW server_version")))
check("current_user/db", lambda: q("SELECT current_user, current_database()"))
check("create extension", lambda: conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb").statusmessage)
check("extversion", lambda: q("SELECT extname, extversion FROM pg_extension"))
conn.execute("DROP TABLE IF EXISTS t1, t2, dev_loc CASCADE")
check("hypertable new-style by_range", lambda: (
    conn.execute("CREATE TABLE t1 (ts timestamptz NOT NULL, device_id int, v float8)"),
    q("SELECT create_hypertable('t1', by_range('ts', INTERVAL '1 day'))"))[1])
check("hypertable old-style", lambda: (
    conn.execute("CREATE TABLE t2 (ts timestamptz NOT NULL, device_id int, v float8)"),
    q("SELECT create_hypertable('t2','ts')"))[1])
check("unique index incl ts", lambda: conn.execute(
    "CREATE UNIQUE INDEX t1_dev_ts ON t1 (device_id, ts)").statusmessage)
check("insert on conflict do nothing", lambda: [conn.execute(
    "INSERT INTO t1 VALUES (now(), 1, 1.0), (now() - interval '2 days', 1, 2.0) "
    "ON CONFLICT DO NOTHING").rowcount, conn.execute(
    "INSERT INTO t1 SELECT ts, device_id, 9 FROM t1 ON CONFLICT DO NOTHING").rowcount])
check("set compress segmentby", lambda: conn.execute(
    "ALTER TABLE t1 SET (timescaledb.compress, timescaledb.compress_segmentby = 'device_id')").statusmessage)
check("add_compression_policy", lambda: q("SELECT add_compression_policy('t1', INTERVAL '7 days')"))
check("compress_chunk now", lambda: q("SELECT compress_chunk(c) FROM show_chunks('t1', older_than => INTERVAL '1 day') c"))
check("add_retention_policy", lambda: q("SELECT add_retention_policy('t1', INTERVAL '30 days')"))
check("remove_retention_policy if_exists", lambda: (
    q("SELECT remove_retention_policy('t1', if_exists => true)"),
    q("SELECT remove_retention_policy('t1', if_exists => true)")))
check("continuous aggregate", lambda: (
    conn.execute("CREATE TABLE dev_loc (ts timestamptz NOT NULL, device_id int, lat float8, lon float8)"),
    conn.execute("SELECT create_hypertable('dev_loc', by_range('ts', INTERVAL '1 day'))"),
    conn.execute("INSERT INTO dev_loc VALUES (now() - interval '3 hours', 1, 1.5, 2.5)"),
    conn.execute("CREATE MATERIALIZED VIEW dev_loc_1h WITH (timescaledb.continuous) AS "
                 "SELECT time_bucket('1 hour', ts) AS bucket, device_id, last(lat, ts) AS lat "
                 "FROM dev_loc GROUP BY 1,2 WITH NO DATA").statusmessage)[-1])
check("add_continuous_aggregate_policy", lambda: q(
    "SELECT add_continuous_aggregate_policy('dev_loc_1h', start_offset => INTERVAL '1 day', "
    "end_offset => INTERVAL '1 hour', schedule_interval => INTERVAL '1 hour')"))
check("refresh_continuous_aggregate (CALL)", lambda: (
    conn.execute("CALL refresh_continuous_aggregate('dev_loc_1h', NULL, NULL)"),
    q("SELECT count(*) FROM dev_loc_1h"))[1])
check("pg_advisory_lock", lambda: q("SELECT pg_advisory_lock(42), pg_advisory_unlock(42)"))


def multi():
    cur = conn.execute(
        "CREATE TABLE IF NOT EXISTS ms (id int); INSERT INTO ms VALUES (1); "
        "INSERT INTO ms VALUES (2);\nUPDATE ms SET id = id + 10; SELECT count(*) FROM ms;")
    res = [cur.statusmessage]
    while cur.nextset():
        res.append(cur.statusmessage)
    return res, cur.fetchall()


check("multi-statement script (no params)", multi)
check("executemany", lambda: (conn.cursor().executemany(
    "INSERT INTO ms VALUES (%s)", [(i,) for i in range(20)]), q("SELECT count(*) FROM ms"))[1])


def tx():
    c = psycopg.connect(DSN)  # autocommit off (default)
    c.execute("CREATE TABLE IF NOT EXISTS txt (id int)")
    c.commit()
    c.execute("INSERT INTO txt VALUES (1)")
    c.rollback()
    n1 = c.execute("SELECT count(*) FROM txt").fetchone()[0]
    c.rollback()
    c.autocommit = True
    with c.transaction():
        c.execute("INSERT INTO txt VALUES (2)")
    try:
        with c.transaction():
            c.execute("INSERT INTO txt VALUES (3)")
            raise RuntimeError("rollback me")
    except RuntimeError:
        pass
    with c.transaction():  # nested -> savepoint
        c.execute("INSERT INTO txt VALUES (4)")
        try:
            with c.transaction():
                c.execute("INSERT INTO txt VALUES (5)")
                raise RuntimeError
        except RuntimeError:
            pass
    res = (n1, c.execute("SELECT array_agg(id ORDER BY id) FROM txt").fetchone()[0])
    c.close()
    return res


conn.close()  # pglite-socket serves one client at a time
check("autocommit off/on + transaction()/savepoints", tx)


def second_conn():
    a = psycopg.connect(DSN, autocommit=True)
    t0 = time.time()
    out = {}

    def other():
        try:
            b = psycopg.connect(DSN, autocommit=True, connect_timeout=30)
            out["b"] = (b.execute("SELECT 2").fetchone()[0], round(time.time() - t0, 2))
            b.close()
        except Exception as e:  # noqa: BLE001
            out["b"] = repr(e)

    th = threading.Thread(target=other)
    th.start()
    th.join(3)
    blocked = th.is_alive()
    a.execute("SELECT pg_advisory_lock(7)")  # session state that must not leak
    a.execute("BEGIN")  # leave a transaction open on disconnect
    a.close()
    th.join(30)
    return {"second_blocked_while_first_open": blocked, "second_result(value,secs)": out.get("b")}


check("second simultaneous connection", second_conn)


def after_reset():
    c = psycopg.connect(DSN, autocommit=True)
    r = c.execute("SELECT transaction_timestamp() = statement_timestamp(), "
                  "(SELECT count(*) FROM pg_locks WHERE locktype = 'advisory')").fetchone()
    c.close()
    return {"fresh_tx": r[0], "leftover_advisory_locks": r[1]}


check("session reset between clients", after_reset)


def prepared(threshold):
    c = psycopg.connect(DSN, autocommit=True, prepare_threshold=threshold)
    for i in range(10):
        c.execute("SELECT %s::int + 1", (i,)).fetchone()
    c.close()
    c = psycopg.connect(DSN, autocommit=True, prepare_threshold=threshold)  # names reused
    for i in range(10):
        c.execute("SELECT %s::int + 1", (i,)).fetchone()
    r = c.execute("SELECT count(*) FROM pg_prepared_statements").fetchone()[0]
    c.close()
    return f"10+10 executions ok, pg_prepared_statements={r}"


check("prepared stmts default threshold (5)", lambda: prepared(5))
check("prepared stmts prepare_threshold=0 (always)", lambda: prepared(0))
check("prepare_threshold=None", lambda: prepared(None))

conn = psycopg.connect(DSN, autocommit=True)
q = lambda sql, *a: conn.execute(sql, *a).fetchall()
check("bytea small", lambda: (
    conn.execute("CREATE TABLE IF NOT EXISTS b (x bytea)"),
    conn.execute("INSERT INTO b VALUES (%s)", (b"\x00\x01\xff",)),
    q("SELECT x FROM b"))[-1])
big = bytes(range(256)) * 4096  # 1 MiB, spans many TCP chunks
check("bytea 1 MiB roundtrip", lambda: (
    conn.execute("INSERT INTO b VALUES (%s)", (big,)),
    conn.execute("SELECT x FROM b WHERE length(x) = %s", (len(big),)).fetchone()[0] == big)[-1])
check("big text 5 MB param", lambda: len(conn.execute("SELECT %s::text", ("x" * 5_000_000,)).fetchone()[0]))
check("epoch + ms interval", lambda: q(
    "SELECT timestamptz 'epoch' + 1700000000000 * interval '1 millisecond'"))
check("timezone", lambda: q("SHOW timezone"))
check("timescaledb jobs", lambda: q("SELECT job_id, proc_name FROM timescaledb_information.jobs ORDER BY 1"))
conn.close()
