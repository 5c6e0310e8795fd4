"""Registry file validation and loading; configuration precedence and errors."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from eldercare.config import load_config
from eldercare.schema import migrate
from foundation.errors import ConfigError, RegistryError
from ingest.registry_store import store_registry
from schemas.registry import load_registry, parse_registry

EXAMPLE = Path(__file__).parent.parent / "deploy" / "registry.example.yaml"


def test_example_registry_loads_into_database(db_url: str) -> None:
    reg = load_registry(EXAMPLE)
    with psycopg.connect(db_url, autocommit=True) as conn:
        migrate(conn, timescale="off")
        assert store_registry(conn, reg) == 2
        assert store_registry(conn, reg) == 2  # idempotent
        devices = conn.execute("SELECT device_id, wearer_id FROM devices ORDER BY 1").fetchall()
        zones = conn.execute("SELECT zone_id, kind, active_from::text, active_to::text"
                             " FROM geofences ORDER BY 1").fetchall()
        contacts = conn.execute("SELECT priority, relation FROM contacts"
                                " WHERE wearer_id = 'W-0001' ORDER BY 1").fetchall()
    assert devices == [("BR-0001", "W-0001"), ("HS-0001", "W-0001"), ("WT-0002", "W-0002")]
    assert ("night-home", "circle", "20:00:00", "06:00:00") in zones
    assert ("village", "polygon", None, None) in zones
    assert contacts == [(1, "son"), (2, "daughter")]


def test_a_file_load_keeps_binding_history_and_leaves_deactivated_wearers_alone(
        db_url: str) -> None:
    """The database is the live registry now: a file load records who holds each device in
    ``device_bindings``, moves a device with history, is audited, and does not undo a
    deactivation made by staff (nor bind devices to that person again)."""
    first = parse_registry(b"""wearers:
  - {id: W1, name: A, region: r1, devices: [{id: D1, kind: bracelet}]}
  - {id: W2, name: B, region: r1, devices: [{id: D2, kind: watch}]}
""", fmt="yaml")
    moved = parse_registry(b"""wearers:
  - {id: W1, name: A, region: r1}
  - {id: W2, name: B, region: r1, devices: [{id: D2, kind: watch}, {id: D1, kind: bracelet}]}
""", fmt="yaml")
    with psycopg.connect(db_url, autocommit=True) as conn:
        migrate(conn, timescale="off")
        assert store_registry(conn, first, actor="loader") == 2
        assert store_registry(conn, moved, actor="loader") == 2
        history = conn.execute(
            "SELECT wearer_id, bound_by, unbound_at IS NOT NULL, unbind_reason"
            " FROM device_bindings WHERE device_id = 'D1' ORDER BY id").fetchall()
        assert history == [("W1", "loader", True, "registry file"), ("W2", "loader", False, None)]
        conn.execute("UPDATE wearers SET active = false, deactivated_at = now(),"
                     " deactivation_reason = 'moved_away' WHERE wearer_id = 'W2'")
        conn.execute("UPDATE devices SET wearer_id = NULL WHERE wearer_id = 'W2'")
        conn.execute("UPDATE device_bindings SET unbound_at = now(), unbound_by = 'clerk'"
                     " WHERE wearer_id = 'W2' AND unbound_at IS NULL")
        assert store_registry(conn, moved, actor="loader") == 1
        active, bound = conn.execute(
            "SELECT w.active, count(d.*) FROM wearers w LEFT JOIN devices d USING (wearer_id)"
            " WHERE w.wearer_id = 'W2' GROUP BY w.active").fetchone() or (None, None)
        assert (active, bound) == (False, 0)
        audits = conn.execute("SELECT actor, after FROM registry_audit"
                              " WHERE action = 'registry_file_loaded' ORDER BY id").fetchall()
    assert [a for a, _ in audits] == ["loader"] * 3
    assert audits[-1][1]["skipped_deactivated"] == ["W2"]


@pytest.mark.parametrize(("doc", "needle"), [
    ("wearers: [{id: W1, name: A, region: BAD}]", "`$.wearers[0].region`"),
    ("wearers: [{id: W1, name: A, region: r1, zones: [{id: z, kind: circle}]}]",
     "needs center and radius_m"),
    (("wearers: [{id: W1, name: A, region: r1, zones: [{id: z, kind: polygon, "
     "points: [[1, 2], [3, 4]]}]}]"), "at least 3 points"),
    (("wearers: [{id: W1, name: A, region: r1, zones: [{id: z, kind: circle, radius_m: 5, "
     "center: {lat: 1, lon: 2}, active: '25:00-06:00'}]}]"), "HH:MM-HH:MM"),
    ("wearers: [{id: W1, name: A, region: r1, timezone: Mars/Olympus}]", "unknown timezone"),
    (("wearers: [{id: W1, name: A, region: r1, devices: [{id: D1, kind: bracelet}]},"
     " {id: W2, name: B, region: r1, devices: [{id: D1, kind: watch}]}]"), "listed for both"),
    ("wearers: [{id: W1, name: A, region: r1, colour: red}]", "colour"),
    ("wearers: [{", "invalid registry"),
])
def test_registry_errors_name_the_bad_entry(doc: str, needle: str) -> None:
    with pytest.raises(RegistryError, match="invalid registry") as info:
        parse_registry(doc.encode(), fmt="yaml")
    assert needle in str(info.value)


def test_config_precedence_file_env_overrides(tmp_path: Path) -> None:
    path = tmp_path / "eldercare.toml"
    path.write_text('[mqtt]\nurl = "mqtt://file:1883"\n[ingest]\nlinger_ms = 20\n'
                    '[database]\nurl = "postgresql://file/db"\n')
    cfg = load_config(path=path, env={"ELDERCARE_MQTT_URL": "mqtt://env:1883"},
                      overrides={"database.url": "postgresql://cli/db", "metrics.port": None})
    assert cfg.mqtt.url == "mqtt://env:1883"
    assert cfg.database.url == "postgresql://cli/db"
    assert cfg.ingest.linger_ms == 20 and cfg.metrics.port == 9108


@pytest.mark.parametrize(("text", "needle"), [
    ("[ingest]\nlinger_ms = 0\n", "`$.ingest.linger_ms`"),
    ("[mqtt]\nprotocol = \"4\"\n", "`$.mqtt.protocol`"),
    ("[mqtt]\nurll = \"x\"\n", "urll"),
    ("not toml [", "cannot read config file"),
])
def test_config_errors_name_the_option(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path=path, env={})
    assert needle in str(info.value)


def test_env_metrics_port_must_be_integer() -> None:
    with pytest.raises(ConfigError, match="ELDERCARE_METRICS_PORT"):
        load_config(path=None, env={"ELDERCARE_METRICS_PORT": "nine"})
