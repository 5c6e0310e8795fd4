"""Prometheus metrics of the ingest service (one registry per service instance)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass
class IngestMetrics:
    """Counters, gauges and histograms; exposed at ``/metrics`` by the service."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.messages_received = Counter(
            "eldercare_messages_received", "MQTT messages received", registry=r)
        self.readings_received = Counter(
            "eldercare_readings_received", "Valid readings decoded, by type", ["type"], registry=r)
        self.readings_stored = Counter(
            "eldercare_readings_stored", "New reading rows committed", registry=r)
        self.readings_duplicate = Counter(
            "eldercare_readings_duplicate", "Readings already stored (redelivery)", registry=r)
        self.dead_letters = Counter(
            "eldercare_dead_letters", "Messages or readings dead-lettered", registry=r)
        # Never labelled by device id (unbounded); regions where no wearer is registered are
        # "other" (ingest/admission.py), so invented regions cannot add series either.
        self.unregistered_readings = Counter(
            "eldercare_unregistered_readings",
            "Readings of devices not registered in their topic's region (issue #7), by topic"
            " region, reason (unknown_device, wrong_region) and admitted (alarms: stored anyway)",
            ["region", "reason", "admitted"], registry=r)
        self.storage_errors = Counter(
            "eldercare_storage_errors", "Failed batch commits (retried)", registry=r)
        self.batches = Counter("eldercare_batches", "Batches committed", registry=r)
        self.commit_seconds = Histogram(
            "eldercare_batch_commit_seconds", "Time to commit one batch",
            buckets=_LATENCY_BUCKETS, registry=r)
        self.batch_latency = Histogram(
            "eldercare_batch_latency_seconds",
            "From receipt of a batch's first message to its commit",
            buckets=_LATENCY_BUCKETS, registry=r)
        self.buffered = Gauge(
            "eldercare_buffer_messages", "Messages received, not yet taken by the pipeline",
            registry=r)
        self.connected = Gauge(
            "eldercare_mqtt_connected", "1 while connected to the broker", registry=r)
        # Either is a warning sign rather than an error: what is counted here is survivable.
        self.sessions_lost = Counter(
            "eldercare_mqtt_sessions_lost",
            "Reconnects on which the broker no longer held our persistent session (messages it"
            " had queued for us while we were away are gone)", registry=r)
        self.ignored_messages = Counter(
            "eldercare_mqtt_ignored_messages",
            "Messages on eldercare's own non-reading topics (alerts, cmd), acknowledged and"
            " dropped before the buffer, by namespace", ["namespace"], registry=r)
        # The local spool (docs/spool.md): what was acknowledged without being stored yet.
        self.spooled = Counter(
            "eldercare_spooled_messages",
            "Messages written to the local spool instead of the database, by reason (outage:"
            " the database failed; overload: periodic readings deferred)", ["reason"], registry=r)
        self.replayed = Counter(
            "eldercare_replayed_messages", "Spooled messages committed on replay", registry=r)
        self.database_down = Gauge(
            "eldercare_database_down", "1 while batch commits fail and ingest spools", registry=r)
        # The live registry (ingest/registry_watch.py).
        self.registry_reloads = Counter(
            "eldercare_registry_reloads",
            "Registry reloads after registry_version moved, by outcome (ok; failed: the"
            " previous registry stays and the load is retried; healed: the hourly whole read"
            " found the patched registry wrong and replaced it)", ["outcome"], registry=r)
        self.registry_reload_seconds = Histogram(
            "eldercare_registry_reload_seconds",
            "Time to read a registry snapshot (the changed wearers, or all) and build admission"
            " and detection from it",
            buckets=_LATENCY_BUCKETS, registry=r)
        self.registry_version = Gauge(
            "eldercare_registry_version",
            "registry_version of the registry admission and detection use now", registry=r)
        self.registry_wearers = Gauge(
            "eldercare_registry_wearers", "Active wearers in the registry in use", registry=r)
        self.registry_invalid = Gauge(
            "eldercare_registry_invalid_wearers",
            "Wearers left out of the registry in use because their records do not validate"
            " (logged by id)", registry=r)

    def value(self, name: str, **labels: str) -> float:
        """Current value of a sample (for the demo and tests), 0 when never set."""
        v = self.registry.get_sample_value(name, labels or None)
        return 0.0 if v is None else v
