"""The registry snapshot (registry/snapshot.py), detector state over a reload, the watcher.

The snapshot is what admission and detection run on: read from the real PostgreSQL after
rows were written the ways staff write them (the file loader, and plain SQL standing in for the
console's store). Detector state is checked on the engine itself: a reload (set_registry with a
changed registry) must neither raise an alarm again nor lose one in progress.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import msgspec
import numpy as np
import psycopg
import pytest

from detectors.engine import DetectorEngine
from detectors.events import Event
from ingest.admission import RegistryAdmission
from ingest.metrics import IngestMetrics
from ingest.pipeline import RegistryChange
from ingest.registry_store import store_registry
from ingest.registry_watch import RegistryWatch
from registry.snapshot import Snapshot, load_snapshot, read_snapshot, read_version
from schemas import MessageDecoder
from schemas.readings import Accel, Location, Reading
from schemas.registry import Registry
from tests.conftest import wait_for

REG = "371002"


def registry(*wearers: dict[str, object]) -> Registry:
    return msgspec.convert({"wearers": list(wearers)}, Registry)


FULL = registry(
    {"id": "W-1", "name": "王秀英", "region": REG, "birth_year": 1941, "conditions": ["dementia"],
     "timezone": "Asia/Shanghai", "home": {"lat": 37.5131, "lon": 122.1204},
     "devices": [{"id": "BR-1", "kind": "bracelet", "model": "X1"},
                 {"id": "WT-1", "kind": "watch", "coord_system": "gcj02"}],
     "contacts": [{"name": "李明", "relation": "son", "phone": "+86 138 0000 0001"},
                  {"name": "李华", "phone": "13800000002", "email": "lihua@example.com",
                   "language": "en", "channels": ["sms", "voice", "email"]}],
     "zones": [{"id": "home", "kind": "circle", "center": {"lat": 37.5131, "lon": 122.1204},
                "radius_m": 300},
               {"id": "night", "kind": "circle", "center": {"lat": 37.5131, "lon": 122.1204},
                "radius_m": 80, "active": "20:00-06:00"},
               {"id": "village", "kind": "polygon",
                "points": [[37.51, 122.115], [37.518, 122.115], [37.518, 122.126]]}]},
    {"id": "W-2", "name": "张", "region": "371002001", "timezone": "Asia/Urumqi",
     "devices": [{"id": "PD-2", "kind": "pendant"}]},
)


def test_a_snapshot_gives_back_what_was_stored(migrated_db: str) -> None:
    with psycopg.connect(migrated_db, autocommit=True) as conn:
        store_registry(conn, FULL)
        snap = read_snapshot(conn)
        assert snap.registry == FULL and snap.invalid == ()
        assert snap.version == read_version(conn) > 1
        assert load_snapshot(conn) == FULL


def test_only_active_wearers_and_their_currently_bound_unretired_devices(migrated_db: str) -> None:
    with psycopg.connect(migrated_db, autocommit=True) as conn:
        store_registry(conn, FULL)
        before = read_version(conn)
        conn.execute("UPDATE wearers SET active = false, deactivated_at = now(),"
                     " deactivation_reason = 'moved_away' WHERE wearer_id = 'W-2'")
        conn.execute("UPDATE devices SET wearer_id = NULL WHERE device_id = 'BR-1'")
        conn.execute("UPDATE devices SET retired_at = now() WHERE device_id = 'WT-1'")
        assert read_version(conn) == before + 3  # one bump per statement
        reg = load_snapshot(conn)
    assert [w.id for w in reg.wearers] == ["W-1"]
    (w1,) = reg.wearers
    assert w1.devices == [] and len(w1.contacts) == 2 and len(w1.zones) == 3


def test_a_wearer_whose_rows_do_not_validate_is_left_out_and_named(migrated_db: str) -> None:
    with psycopg.connect(migrated_db, autocommit=True) as conn:
        store_registry(conn, FULL)
        # What the file format refuses but the tables allow: a zone window with one end.
        conn.execute("UPDATE geofences SET active_to = NULL WHERE zone_id = 'night'")
        snap = read_snapshot(conn)
    assert [w.id for w in snap.registry.wearers] == ["W-2"]
    ((wid, reason),) = snap.invalid
    assert wid == "W-1" and "active" in reason


def test_a_snapshot_needs_an_idle_connection(migrated_db: str) -> None:
    from foundation.errors import StorageError
    with psycopg.connect(migrated_db) as conn:
        conn.execute("SELECT 1")
        with pytest.raises(StorageError, match="outside a transaction"):
            read_snapshot(conn)


def test_100k_wearers_with_zones_load_whole(migrated_db: str) -> None:
    """The figure of docs/registry-database.md: 100,000 active wearers, each with a device,
    two contacts and a circle zone (and every tenth a polygon too)."""
    n = 100_000
    with psycopg.connect(migrated_db, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO wearers (wearer_id, name, region, timezone, home_lat, home_lon)"
            " SELECT 'W' || i, '老人' || i, '371002' || lpad((i %% 90 + 1)::text, 3, '0'),"
            " 'Asia/Shanghai', 37.5 + i * 1e-6, 122.1 FROM generate_series(1, %s) AS i", (n,))
        conn.execute("INSERT INTO devices (device_id, wearer_id, kind, region)"
                     " SELECT 'D' || i, 'W' || i, 'bracelet', '371002'"
                     " FROM generate_series(1, %s) AS i", (n,))
        conn.execute("INSERT INTO contacts (wearer_id, priority, name, phone)"
                     " SELECT 'W' || i, p, '家属' || p, '1380000' || lpad(p::text, 4, '0')"
                     " FROM generate_series(1, %s) AS i, generate_series(1, 2) AS p", (n,))
        conn.execute("INSERT INTO geofences (wearer_id, zone_id, kind, center_lat, center_lon,"
                     " radius_m) SELECT 'W' || i, 'home', 'circle', 37.5 + i * 1e-6, 122.1, 300"
                     " FROM generate_series(1, %s) AS i", (n,))
        conn.execute("INSERT INTO geofences (wearer_id, zone_id, kind, polygon, active_from,"
                     " active_to) SELECT 'W' || i, 'area', 'polygon',"
                     " '[[37.5, 122.1], [37.51, 122.1], [37.51, 122.11], [37.5, 122.11]]',"
                     " '08:00', '20:00' FROM generate_series(1, %s, 10) AS i", (n,))
        conn.execute("ANALYZE")
        snap = read_snapshot(conn)
        # One enrolment after that: a wearer, its bracelet, a contact and a zone (4 statements).
        conn.execute(f"INSERT INTO wearers (wearer_id, name, region) VALUES ('W-NEW', '新', '{REG}')")
        conn.execute(f"INSERT INTO devices (device_id, wearer_id, kind, region) VALUES ('D-NEW',"
                     f" 'W-NEW', 'bracelet', '{REG}')")
        conn.execute("INSERT INTO contacts (wearer_id, priority, name, phone) VALUES ('W-NEW', 1,"
                     " '儿子', '13800000001')")
        conn.execute("INSERT INTO geofences (wearer_id, zone_id, kind, center_lat, center_lon,"
                     " radius_m) VALUES ('W-NEW', 'home', 'circle', 37.5, 122.1, 300)")
        patched = read_snapshot(conn, snap)
    assert patched.reread == 1 and len(patched.registry.wearers) == n + 1
    assert next(w for w in patched.registry.wearers if w.id == "W-NEW").devices[0].id == "D-NEW"
    reg = snap.registry
    assert len(reg.wearers) == n and snap.invalid == ()
    assert sum(len(w.zones) for w in reg.wearers) == n + n // 10
    started = time.perf_counter()
    admission = RegistryAdmission(reg)
    built = time.perf_counter() - started
    engine = DetectorEngine(registry=reg)
    started = time.perf_counter()
    prepared = engine.prepare_registry(reg)
    prepare = time.perf_counter() - started
    started = time.perf_counter()
    engine.apply_registry(prepared)
    apply = time.perf_counter() - started
    print(f"\n100k snapshot: {snap.seconds:.2f} s whole, {patched.seconds * 1000:.1f} ms patched"
          f" after one enrolment;"
          f" admission built in {built:.3f} s; engine prepared in {prepare:.2f} s"
          f" (watcher thread), applied in {apply:.3f} s (the pipeline thread's pause)")
    assert len(admission.regions) == n
    assert len(engine.devices) == n and int((engine.devices.wearer[:n] >= 0).sum()) == n
    # The figures are printed and documented; speed is not this test's to judge on a shared
    # CI machine (docs/registry-database.md, "Live effect").


# -- detector state over a reload ---------------------------------------------------------------

HOME = (37.5, 122.1)
T0 = 1_795_000_000_000  # 2026-11-19, a weekday


def wearer(wid: str, *devices: str, radius: float = 200) -> dict[str, object]:
    return {"id": wid, "name": wid, "region": REG,
            "devices": [{"id": d, "kind": "bracelet"} for d in devices],
            "zones": [{"id": f"home-{wid}", "kind": "circle",
                       "center": {"lat": HOME[0], "lon": HOME[1]}, "radius_m": radius}]}


def fix(ts: int, metres_north: float, dev: str = "BR-1") -> Location:
    return Location(device_id=dev, ts=ts, lat=HOME[0] + metres_north / 111_195.0, lon=HOME[1],
                    accuracy_m=10.0)


def run(engine: DetectorEngine, readings: Sequence[Reading]) -> list[Event]:
    return engine.process(list(readings), [REG] * len(readings), [r.ts for r in readings])


def kinds(events: Sequence[Event]) -> list[str]:
    return [e.type for e in events if e.type.startswith("geofence")]


def test_a_wearer_outside_stays_outside_over_a_reload_no_second_alarm() -> None:
    eng = DetectorEngine(registry=registry(wearer("W-1", "BR-1")))
    t = [T0 + i * 20_000 for i in range(10)]
    assert kinds(run(eng, [fix(t[0], 0), fix(t[1], 400), fix(t[2], 450)])) == ["geofence_exit"]
    # Somebody else is enrolled (the registry's wearer indexes and zone rows all move).
    eng.set_registry(registry(wearer("W-0", "BR-0"), wearer("W-1", "BR-1"),
                              wearer("W-3", "BR-3")))
    assert kinds(run(eng, [fix(t[3], 460), fix(t[4], 470)])) == []  # no second exit
    back = run(eng, [fix(t[5], 50)])
    assert kinds(back) == ["geofence_return"]
    assert back[0].wearer_id == "W-1" and back[0].evidence["zone_id"] == "home-W-1"


def test_a_new_zone_and_a_new_device_take_effect_at_the_reload() -> None:
    eng = DetectorEngine(registry=registry({"id": "W-1", "name": "a", "region": REG,
                                            "devices": [{"id": "BR-1", "kind": "bracelet"}]}))
    t = [T0 + i * 20_000 for i in range(6)]
    assert kinds(run(eng, [fix(t[0], 400), fix(t[1], 450)])) == []  # no zone yet
    eng.set_registry(registry(wearer("W-1", "BR-1", "BR-2")))
    assert kinds(run(eng, [fix(t[2], 460), fix(t[3], 470)])) == ["geofence_exit"]
    events = run(eng, [fix(t[2], 400, "BR-2"), fix(t[3], 450, "BR-2")])
    assert kinds(events) == ["geofence_exit"] and events[0].wearer_id == "W-1"


def test_an_unbound_device_loses_its_wearer_and_zones_and_a_rebound_one_starts_afresh() -> None:
    eng = DetectorEngine(registry=registry(wearer("W-1", "BR-1"), wearer("W-2")))
    t = [T0 + i * 20_000 for i in range(10)]
    assert kinds(run(eng, [fix(t[0], 400), fix(t[1], 450)])) == ["geofence_exit"]
    eng.set_registry(registry(wearer("W-1"), wearer("W-2")))          # unbound
    events = run(eng, [fix(t[2], 0), fix(t[3], 500), fix(t[4], 520)])
    assert kinds(events) == [] and {e.wearer_id for e in events} <= {None}
    assert eng.devices.offline_after_ms[eng.devices.row("BR-1", REG)] == \
        eng.devices.offline_default_ms
    # Bound to W-2, whose zone is larger: the exit state of W-1's zone is not carried over.
    eng.set_registry(registry(wearer("W-1"), wearer("W-2", "BR-1", radius=1000)))
    assert kinds(run(eng, [fix(t[5], 1200), fix(t[6], 1250)])) == ["geofence_exit"]


def fall_chunks(dev: str, t0: int, rate: float = 50.0) -> list[Accel]:
    """2 s standing, 0.4 s free fall, impact, lying still on the side (as tests/test_engine.py)."""
    n = int(8 * rate)
    t = np.arange(n) / rate
    xyz = np.zeros((n, 3))
    xyz[:, 2] = 1.0
    xyz[(t >= 2.0) & (t < 2.4)] = [0.0, 0.0, 0.15]
    xyz[(t >= 2.4) & (t < 2.5)] = [3.5, 1.0, 2.0]
    xyz[t >= 2.5] = [1.0, 0.0, 0.05]
    xyz += np.random.default_rng(3).normal(0, 0.01, xyz.shape)
    per = int(rate)
    return [Accel(device_id=dev, ts=t0 + int(1000 * k / rate), rate_hz=rate,
                  x=xyz[k:k + per, 0].tolist(), y=xyz[k:k + per, 1].tolist(),
                  z=xyz[k:k + per, 2].tolist()) for k in range(0, n, per)]


def test_a_fall_in_progress_and_the_learned_upright_survive_a_reload() -> None:
    reg = registry({"id": "W-1", "name": "a", "region": REG,
                    "devices": [{"id": "PD-1", "kind": "pendant"}]})
    eng = DetectorEngine(registry=reg)
    chunks = fall_chunks("PD-1", T0)
    events = []
    for c in chunks[:3]:  # standing, the free fall, the impact
        events += eng.process([c], [REG], [c.ts])
    falls = eng.falls
    row = falls._rows["PD-1"]
    learned = {k: falls._arrays[k][row].copy() for k in ("up", "up_s", "walk_dir", "walk_s",
                                                         "pending", "last_t")}
    eng.set_registry(registry({"id": "W-0", "name": "b", "region": REG},
                              {"id": "W-1", "name": "a", "region": REG,
                               "devices": [{"id": "PD-1", "kind": "pendant"}]}))
    for k, v in learned.items():
        assert np.array_equal(falls._arrays[k][falls._rows["PD-1"]], v), k
    for c in chunks[3:]:
        events += eng.process([c], [REG], [c.ts])
    events += eng.tick(T0 + 60_000)
    falls_raised = [e for e in events if e.type == "fall"]
    assert len(falls_raised) == 1 and falls_raised[0].wearer_id == "W-1"


def test_offline_supervision_of_a_device_enrolled_live_starts_at_the_reload() -> None:
    eng = DetectorEngine(registry=registry(wearer("W-1")), watch_unlisted=False)
    eng.set_registry(registry(wearer("W-1", "BR-9")))
    assert eng.watch_registered(T0) == 1
    period = eng.devices.offline_after_ms[eng.devices.row("BR-9", REG)]
    assert [e.type for e in eng.tick(T0 + int(period) + 1)] == ["offline"]


# -- the watcher --------------------------------------------------------------------------------

def test_a_failing_reload_is_counted_and_retried_and_the_previous_registry_stays(
        migrated_db: str) -> None:
    delivered: list[RegistryChange] = []
    metrics = IngestMetrics()

    def build(snap: Snapshot) -> RegistryChange:
        return RegistryChange(version=snap.version, decoder=MessageDecoder(
            admission=RegistryAdmission(snap.registry)))

    watch = RegistryWatch(database_url="postgresql://nobody@127.0.0.1:1/none", interval_s=0.05,
                          build=build, deliver=delivered.append, metrics=metrics)
    # As if a registry had been loaded before the database went away.
    watch.snapshot = Snapshot(registry=Registry(wearers=[]), version=7)
    watch.start()
    try:
        wait_for(lambda: metrics.value("eldercare_registry_reloads_total", outcome="failed") >= 3,
                 what="failed reloads")
        assert watch.worker.is_alive() and delivered == [] and watch.version == 7
        watch.database_url = migrated_db  # the database is back
        wait_for(lambda: delivered, what="the reload once the database answers")
        with psycopg.connect(migrated_db, autocommit=True) as conn:
            store_registry(conn, FULL)
            version = read_version(conn)
        wait_for(lambda: delivered[-1].version == version, what="the enrolment's reload")
        assert delivered[-1].decoder.admission is not None
        assert delivered[-1].decoder.admission.regions["WT-1"] == REG
        assert metrics.value("eldercare_registry_reloads_total", outcome="ok") == len(delivered)
    finally:
        assert watch.stop(5)


# -- incremental reads --------------------------------------------------------------------------

CHANGES = (
    "UPDATE contacts SET phone = '13900000009' WHERE wearer_id = 'W-1' AND priority = 1",
    ("INSERT INTO geofences (wearer_id, zone_id, kind, center_lat, center_lon, radius_m)"
    " VALUES ('W-2', 'park', 'circle', 37.5, 122.1, 200)"),
    "UPDATE devices SET wearer_id = 'W-2' WHERE device_id = 'BR-1'",    # moved: both change
    "DELETE FROM geofences WHERE wearer_id = 'W-1' AND zone_id = 'night'",
    "UPDATE geofences SET active_from = '20:00' WHERE zone_id = 'park'",  # W-2 now invalid
    "UPDATE geofences SET active_to = '06:00' WHERE zone_id = 'park'",    # and valid again
    f"INSERT INTO wearers (wearer_id, name, region) VALUES ('W-3', '赵', '{REG}')",
    (f"INSERT INTO devices (device_id, wearer_id, kind, region) VALUES ('BR-3', 'W-3',"
    f" 'bracelet', '{REG}')"),
    "UPDATE wearers SET name = '王秀英2', birth_year = 1942 WHERE wearer_id = 'W-1'",
    ("UPDATE wearers SET active = false, deactivated_at = now(),"
    " deactivation_reason = 'moved_away' WHERE wearer_id = 'W-1'"),
    "UPDATE devices SET retired_at = now() WHERE device_id = 'PD-2'",
    "DELETE FROM contacts WHERE wearer_id = 'W-1'",
    "DELETE FROM devices WHERE device_id = 'BR-3'",
    "DELETE FROM wearers WHERE wearer_id = 'W-3'",
)


def test_a_patched_snapshot_equals_a_whole_read_after_each_kind_of_change(
        migrated_db: str) -> None:
    with psycopg.connect(migrated_db, autocommit=True) as conn:
        store_registry(conn, FULL)
        snap = read_snapshot(conn)
        assert snap.reread is None                 # the first read is whole
        seen_invalid = False
        for sql in CHANGES:
            conn.execute(sql)
            patched = read_snapshot(conn, snap)
            whole = read_snapshot(conn)
            assert patched.reread is not None and 1 <= patched.reread <= 2, sql
            assert (patched.registry, patched.invalid, patched.version) == (
                whole.registry, whole.invalid, whole.version), sql
            assert read_snapshot(conn, snap, verify=True).mismatched == (), sql
            seen_invalid |= bool(patched.invalid)
            snap = patched
        assert seen_invalid                        # the invalid wearer came and went
        assert [w.id for w in snap.registry.wearers] == ["W-2"]
        assert {d.id for d in snap.registry.wearers[0].devices} == {"BR-1"}


def test_a_change_of_no_wearer_rereads_nothing_and_a_truncate_reads_whole(
        migrated_db: str) -> None:
    with psycopg.connect(migrated_db, autocommit=True) as conn:
        store_registry(conn, FULL)
        snap = read_snapshot(conn)
        conn.execute(f"INSERT INTO devices (device_id, kind, region) VALUES ('SP-9', 'bracelet',"
                     f" '{REG}')")                 # on the shelf: nobody's
        after = read_snapshot(conn, snap)
        assert after.reread == 0 and after.version > snap.version
        assert after.registry == snap.registry
        conn.execute("TRUNCATE contacts")
        truncated = read_snapshot(conn, after)
        assert truncated.reread is None            # no transition table: everything
        assert all(w.contacts == [] for w in truncated.registry.wearers)


def test_a_big_change_or_a_gap_in_the_log_reads_whole(migrated_db: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import registry.snapshot as snapshot_module
    from registry.snapshot import prune_changes

    with psycopg.connect(migrated_db, autocommit=True) as conn:
        store_registry(conn, FULL)
        old = read_snapshot(conn)
        conn.execute("UPDATE wearers SET birth_year = 1940")       # two wearers, one statement
        monkeypatch.setattr(snapshot_module, "PATCH_MAX_WEARERS", 1)
        assert read_snapshot(conn, old).reread is None
        monkeypatch.undo()
        recent = read_snapshot(conn, old)
        assert recent.reread == 2
        # A day later the log is pruned: a snapshot older than what is left reads whole, a
        # recent one still patches.
        conn.execute("UPDATE registry_changes SET at = now() - interval '2 days'")
        assert prune_changes(conn) > 0 and prune_changes(conn) == 0
        conn.execute("UPDATE contacts SET relation = 'daughter' WHERE wearer_id = 'W-1'")
        assert read_snapshot(conn, old).reread is None
        patched = read_snapshot(conn, recent)
        assert patched.reread == 1
        assert patched.registry == read_snapshot(conn).registry
        # A database whose counter went back (restored from a backup): whole.
        ahead = Snapshot(registry=patched.registry, version=patched.version + 100)
        assert read_snapshot(conn, ahead).reread is None


def test_verify_names_what_a_write_with_triggers_off_hid_and_the_watcher_heals_it(
        migrated_db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import ingest.registry_watch as watch_module

    metrics = IngestMetrics()
    delivered: list[Snapshot] = []
    watch = RegistryWatch(database_url=migrated_db, interval_s=0.05,
                          build=lambda snap: snap,  # type: ignore[arg-type,return-value]
                          deliver=delivered.append,  # type: ignore[arg-type]
                          metrics=metrics)
    with psycopg.connect(migrated_db, autocommit=True) as conn:
        store_registry(conn, FULL)
        watch.load()
        # An ordinary change: the round patches one wearer in.
        conn.execute("UPDATE contacts SET relation = 'niece' WHERE wearer_id = 'W-1'"
                     " AND priority = 1")
        watch._round()
        assert delivered[-1].reread == 1
        assert delivered[-1].registry.wearers[0].contacts[0].relation == "niece"
        # A write the log never saw (the table's triggers off): the patched copy is stale.
        conn.execute("ALTER TABLE contacts DISABLE TRIGGER USER")
        conn.execute("UPDATE contacts SET relation = 'nephew' WHERE wearer_id = 'W-1'"
                     " AND priority = 1")
        conn.execute("ALTER TABLE contacts ENABLE TRIGGER USER")
        watch._round()
        assert len(delivered) == 1                 # nothing moved as far as it can tell
        monkeypatch.setattr(watch_module, "VERIFY_EVERY_S", 0.0)
        watch._round()                             # the hourly whole read
    assert len(delivered) == 2 and delivered[-1].mismatched == ("W-1",)
    assert delivered[-1].registry.wearers[0].contacts[0].relation == "nephew"
    assert metrics.value("eldercare_registry_reloads_total", outcome="healed") == 1
    watch.stop(1)
