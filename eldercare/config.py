"""Typed configuration, read once at the entry point.

Precedence, lowest first: built-in defaults, the TOML file (``--config`` or ``ELDERCARE_CONFIG``),
environment variables (``ELDERCARE_MQTT_URL``, ``ELDERCARE_DATABASE_URL``,
``ELDERCARE_METRICS_PORT``, ``ELDERCARE_REGISTRY``), then command-line options. Each component gets
only its own section. See ``docs/configuration.md`` and ``deploy/eldercare.example.toml``.
"""

from __future__ import annotations

import dataclasses
import zoneinfo
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from alerts.channels.aliyun import AliyunConfig
from alerts.channels.email import SmtpConfig
from alerts.channels.mqtt import AlertsMqttConfig
from alerts.channels.webhook import WebhookConfig
from alerts.document import DEFAULT_MAP_LINK
from console.ratelimit import LoginLimits
from detectors.fall import FallParams
from detectors.params import AlarmParams, DetectorParams, GeofenceParams, SupervisionParams
from foundation.documents import parse_document, read_document
from foundation.errors import ConfigError

Positive = Annotated[int, Meta(ge=1)]
NonNegative = Annotated[int, Meta(ge=0)]


class MqttConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Broker connection. ``client_id`` must be stable: it names the persistent session.

    The login and TLS files are checked by ``foundation.broker.BrokerAddress.from_config``
    (deploy/mosquitto/README.md, "Connecting the service").
    """

    #: ``mqtt://host[:1883]`` (plain) or ``mqtts://host[:8883]`` (TLS, always verified).
    url: str = "mqtt://127.0.0.1:1883"
    #: The login, instead of a user in ``url``; its password is the one line of
    #: ``password_file``, so no password has to sit in this file or in a URL.
    username: str | None = None
    password_file: str | None = None
    #: ``mqtts://`` only: the CA certificates (PEM) that may sign the broker's certificate;
    #: unset, the system's. A client certificate and its unencrypted key: both or neither.
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    client_id: str = "eldercare-ingest"
    protocol: Literal["auto", "5", "3.1.1"] = "auto"
    session_expiry_s: Positive = 7 * 24 * 3600
    keepalive_s: Annotated[int, Meta(ge=5, le=3600)] = 30
    connect_timeout_s: Annotated[float, Meta(gt=0)] = 30.0
    #: Ceiling of the jittered reconnect backoff: after a broker restart an SOS waits at most
    #: about this long for us to come back (paho's own ceiling, 30 s, cost one 11 s).
    reconnect_max_s: Annotated[float, Meta(gt=0, le=60)] = 2.0


class DatabaseConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """PostgreSQL/TimescaleDB connection, write method and data retention."""

    url: str = "postgresql://postgres@127.0.0.1:5432/eldercare"
    write_method: Literal["copy", "unnest"] = "copy"
    timescale: Literal["auto", "on", "off"] = "auto"
    retention_readings_days: NonNegative = 180
    retention_accel_days: NonNegative = 7
    retention_dead_letter_days: NonNegative = 90
    compress_after_days: NonNegative = 7


class IngestConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Batching, buffering and validation limits."""

    max_batch_readings: Positive = 5000
    linger_ms: Annotated[int, Meta(ge=1, le=10_000)] = 50
    #: Batches committed concurrently, one database connection each (README, Performance).
    writers: Annotated[int, Meta(ge=1, le=16)] = 2
    buffer_messages: Annotated[int, Meta(ge=1, le=65535)] = 10_000
    buffer_bytes: Positive = 64 * 1024 * 1024
    max_payload_bytes: Positive = 256 * 1024
    max_future_s: NonNegative = 300


class MetricsConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Prometheus endpoint; ``port = 0`` disables it."""

    host: str = "127.0.0.1"
    port: Annotated[int, Meta(ge=0, le=65535)] = 9108


class DetectorsConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Detection in the service: on/off, timer period, and the detector parameters
    (sub-tables ``[detectors.alarms]``, ``.geofence``, ``.supervision``, ``.fall``; defaults and
    their reasons in ``detectors/params.py`` and ``docs/detectors.md``)."""

    enabled: bool = True
    #: How often offline, inactivity and silent-fall rules are evaluated.
    tick_s: Annotated[float, Meta(gt=0, le=3600)] = 5.0
    timezone: str = "Asia/Shanghai"
    #: Device kinds whose accelerometer streams go through the fall detector (docs/detectors.md).
    accel_fall_kinds: tuple[
        Literal["bracelet", "watch", "fall_sensor", "home_sensor", "pendant"], ...
    ] = ("fall_sensor", "pendant")
    accel_fall_unregistered: bool = True
    alarms: AlarmParams = AlarmParams()
    geofence: GeofenceParams = GeofenceParams()
    supervision: SupervisionParams = SupervisionParams()
    fall: FallParams = FallParams()

    def __post_init__(self) -> None:
        try:
            zoneinfo.ZoneInfo(self.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError) as exc:
            # OSError: a directory ("Asia") or a name too long for the file system.
            raise ValueError(f"unknown timezone {self.timezone!r}") from exc

    def params(self) -> DetectorParams:
        """The parameters as the engine takes them."""
        return DetectorParams(alarms=self.alarms, geofence=self.geofence,
                              supervision=self.supervision, fall=self.fall,
                              timezone=self.timezone, accel_fall_kinds=self.accel_fall_kinds,
                              accel_fall_unregistered=self.accel_fall_unregistered)


class AlertsConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Alerts (issue #5; docs/alerts.md): folding, routing, escalation and delivery.

    Channel sections: ``[alerts.webhook]`` (the 12349 dispatch platform), ``[alerts.aliyun]``
    (SMS, and voice calls when ``voice_templates`` are set), ``[alerts.smtp]`` (e-mail). A
    channel without its section is not configured, and messages for it are audited as
    undeliverable.
    """

    enabled: bool = True
    #: Folder, escalator and delivery workers are woken at once by new work; this poll
    #: catches up after a failure and with work queued by another process.
    poll_s: Annotated[float, Meta(gt=0, le=60)] = 1.0
    #: Routing and escalation policy (docs/alerts.md); the built-in default when unset.
    policy_file: str | None = None
    #: Map link in messages ({lat}, {lon}: WGS-84); "" for none.
    map_link: str = DEFAULT_MAP_LINK
    #: Region for phone numbers written without a country code (ISO 3166 code).
    phone_region: str = "CN"
    #: Concurrent sends per channel.
    delivery_concurrency: Annotated[int, Meta(ge=1, le=64)] = 4
    #: Publish alert states on ``eldercare/v1/<region>/alerts/<id>`` (retained) on the broker.
    mqtt_publish: bool = True
    mqtt: AlertsMqttConfig = AlertsMqttConfig()
    webhook: WebhookConfig = WebhookConfig()
    aliyun: AliyunConfig | None = None
    smtp: SmtpConfig | None = None


class ApiConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The HTTP API (issue #5; docs/api.md): alerts for the dispatch platform and the console."""

    enabled: bool = True
    host: str = "127.0.0.1"
    #: 0 picks a free port (tests, demo); the bound port is logged.
    port: Annotated[int, Meta(ge=0, le=65535)] = 8080
    #: API tokens file (docs/api.md); without one, every request but /health is refused.
    tokens_file: str | None = None


class ConsoleConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The duty console (issue #6; docs/console.md), served by the API's HTTP server at ``/``."""

    enabled: bool = True
    #: XYZ map tile URL template (``https://tiles.example/{z}/{x}/{y}.png``) for production;
    #: without one the map draws zones, positions and tracks on a plain background.
    tile_url: str | None = None
    #: Mark the session cookie Secure (HTTPS only). Keep on in production behind TLS; off only
    #: for plain-HTTP local use (demo, tests).
    secure_cookies: bool = True
    session_hours: Annotated[float, Meta(gt=0, le=24)] = 12.0
    idle_minutes: Annotated[float, Meta(gt=0, le=24 * 60)] = 30.0
    #: ``[console.login_limits]``: failed logins per account name and client address (5 in
    #: 15 min; an admin lifts a lockout with ``eldercare user unlock``) and attempts
    #: per client address (30 a minute) before POST /console/login answers 429 (docs/console.md).
    login_limits: LoginLimits = LoginLimits()


class SpoolConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The local spool (docs/spool.md): where messages and events wait, durably, while
    the database is down or ingest is overloaded, and the provisional alerts sent meanwhile."""

    enabled: bool = True
    #: A local directory of this process alone; "" is
    #: ``$XDG_STATE_HOME/eldercare/spool/<mqtt.client_id>`` (``~/.local/state/...``).
    dir: str = ""
    #: Bound over all segments; when reached, ingest falls back to leaving messages with the
    #: broker (slower, loses nothing).
    max_bytes: Positive = 1024 * 1024 * 1024
    segment_bytes: Positive = 8 * 1024 * 1024
    #: Overload: alarm-free messages that waited longer than this in the buffer are deferred
    #: to the spool and stored later; 0 never defers.
    defer_after_ms: NonNegative = 500
    #: While the database is down, how often a real commit is tried.
    probe_ms: Annotated[int, Meta(ge=10, le=60_000)] = 1000
    #: Send SOS, falls and home alarms the database cannot take to the dispatch webhook at
    #: once, as provisional alerts (docs/alerts.md).
    provisional_alerts: bool = True


class Config(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The whole configuration."""

    mqtt: MqttConfig = MqttConfig()
    database: DatabaseConfig = DatabaseConfig()
    ingest: IngestConfig = IngestConfig()
    metrics: MetricsConfig = MetricsConfig()
    detectors: DetectorsConfig = DetectorsConfig()
    alerts: AlertsConfig = AlertsConfig()
    api: ApiConfig = ApiConfig()
    console: ConsoleConfig = ConsoleConfig()
    spool: SpoolConfig = SpoolConfig()
    registry: str | None = None


_ENV: dict[str, tuple[str, str]] = {
    "ELDERCARE_MQTT_URL": ("mqtt", "url"),
    "ELDERCARE_DATABASE_URL": ("database", "url"),
    "ELDERCARE_METRICS_PORT": ("metrics", "port"),
    "ELDERCARE_REGISTRY": ("", "registry"),
}


def load_config(
    *, path: str | Path | None, env: Mapping[str, str], overrides: Mapping[str, Any] | None = None
) -> Config:
    """Build the configuration from file, environment and ``overrides`` ("section.key" -> value).

    Raises ConfigError naming the bad option.
    """
    raw: dict[str, Any] = {}
    path = path or env.get("ELDERCARE_CONFIG")
    if path:
        label = f"cannot read config file {path}"
        data = read_document(path, error=ConfigError, label=label)
        raw = parse_document(data, fmt="toml", error=ConfigError, label=label)
    merged: dict[str, Any] = {}
    for var, (section, key) in _ENV.items():
        if var in env:
            value: Any = env[var]
            if key == "port":
                try:
                    value = int(value)
                except ValueError as exc:
                    raise ConfigError(f"{var} must be an integer, got {value!r}") from exc
            merged[f"{section}.{key}" if section else key] = value
    merged.update({k: v for k, v in (overrides or {}).items() if v is not None})
    for dotted, value in merged.items():
        *sections, key = dotted.split(".")
        target = raw
        for i, section in enumerate(sections):  # nested tables: "alerts.webhook.url"
            target = target.setdefault(section, {})
            if not isinstance(target, dict):
                raise ConfigError(f"config section {'.'.join(sections[:i + 1])!r} must be a"
                                  " table")
        target[key] = value
    _reject_unknown(raw.get("detectors"))
    try:
        return msgspec.convert(raw, Config)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"invalid configuration: {exc}") from exc


#: The dataclass sub-tables of [detectors], read off DetectorsConfig itself.
_DETECTOR_TABLES: dict[str, Any] = {
    f.name: f.type for f in msgspec.structs.fields(DetectorsConfig)
    if dataclasses.is_dataclass(f.type)
}


def _reject_unknown(raw: Any) -> None:
    """msgspec ignores unknown keys of dataclasses; a misspelt threshold must not silently fall
    back to its default, so the detector sub-tables are checked here."""
    if not isinstance(raw, dict):
        return
    for table, cls in _DETECTOR_TABLES.items():
        sub = raw.get(table)
        if isinstance(sub, dict):
            unknown = sorted(set(sub) - {f.name for f in dataclasses.fields(cls)})
            if unknown:
                raise ConfigError(
                    f"invalid configuration: unknown option `detectors.{table}.{unknown[0]}`")
