"""Typed configuration, read once at the entry point.

Precedence, lowest first: built-in defaults, the TOML file (``--config`` or ``ELDERCARE_CONFIG``),
environment variables (``ELDERCARE_MQTT_URL``, ``ELDERCARE_DATABASE_URL``,
``ELDERCARE_METRICS_PORT``, ``ELDERCARE_REGISTRY``), then command-line options. Each component gets
only its own section. See ``docs/configuration.md`` and ``deploy/eldercare.example.toml``.

Each section's type lives with the component it configures (``[mqtt]`` and ``[database]`` in the
foundation, ``[ingest]`` in ingest, ...); this module only assembles them into :class:`Config`
and reads it, so no component imports the shell for its configuration.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec

from alerts.settings import AlertsConfig, ApiConfig
from console.settings import ConsoleConfig
from detectors.settings import DetectorsConfig
from foundation.broker import MqttConfig
from foundation.database import DatabaseConfig
from foundation.documents import parse_document, read_document
from foundation.errors import ConfigError
from gateway.settings import GatewayConfig
from ingest.settings import IngestConfig, MetricsConfig, SpoolConfig
from registry.settings import EnrolmentConfig

__all__ = ["AlertsConfig", "ApiConfig", "Config", "ConsoleConfig", "DatabaseConfig",
           "DetectorsConfig", "EnrolmentConfig", "GatewayConfig", "IngestConfig", "MetricsConfig", "MqttConfig", "SpoolConfig",
           "load_config"]


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
    gateway: GatewayConfig = GatewayConfig()
    enrolment: EnrolmentConfig = EnrolmentConfig()
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
