"""The gateway's configuration section, ``[gateway]`` (docs/gateway.md)."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta


class CommandsConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``[gateway.commands]``: downlink commands (docs/gateway.md)."""

    #: Subscribe to command topics at all.
    enabled: bool = True
    #: How long a command waits for its device to connect.
    wait_s: Annotated[float, Meta(gt=0, le=86_400)] = 600.0
    #: How long a sent command waits for the device's answer.
    ack_timeout_s: Annotated[float, Meta(gt=0, le=3_600)] = 60.0
    #: A command this old on arrival is not sent (the broker held it through an outage).
    max_age_s: Annotated[float, Meta(gt=0, le=86_400)] = 900.0
    max_waiting_per_device: Annotated[int, Meta(ge=1, le=1_000)] = 8
    max_waiting: Annotated[int, Meta(ge=1, le=1_000_000)] = 10_000


class GeolocationConfig(msgspec.Struct, frozen=True, kw_only=True,
                        forbid_unknown_fields=True):
    """``[gateway.geolocation]``: positions from cell towers and Wi-Fi access points
    (docs/gateway.md, "Positions without GPS"; :mod:`gateway.geolocate`)."""

    #: ``none``: scans are published as they are, with no position; ``amap``: Amap's hardware
    #: positioning service.
    provider: Literal["none", "amap"] = "none"
    url: str = "https://apilocate.amap.com/position"
    #: File holding the provider's API key on one line (never in this file, never logged).
    key_file: str | None = None
    #: One lookup's limit; an alarm never waits for it (its position follows).
    timeout_s: Annotated[float, Meta(gt=0, le=60)] = 3.0
    #: Positions kept per set of towers and access points, and for how long.
    cache_size: Annotated[int, Meta(ge=1, le=10_000_000)] = 100_000
    cache_ttl_s: Annotated[float, Meta(gt=0, le=30 * 86_400)] = 86_400.0
    #: Requests a second to the provider, for the whole process (its quota); beyond, a scan is
    #: published without a position, counted.
    max_requests_per_s: Annotated[float, Meta(gt=0, le=10_000)] = 5.0

    def __post_init__(self) -> None:
        if self.provider != "none" and not self.key_file:
            raise ValueError(f"geolocation provider {self.provider!r} needs key_file")


class BatchConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``[gateway.batch]``: many connections' readings in one message (gateway/batcher.py)."""

    #: How long readings wait for others of their region (an alarm's batch goes at once).
    linger_ms: Annotated[float, Meta(ge=0, le=1000)] = 5.0
    #: Readings per message at most (ingest's payload limit is checked again on encoding).
    max_readings: Annotated[int, Meta(ge=1, le=10_000)] = 500
    #: Messages waiting for their PUBACK at once (the MQTT client's window is set to match).
    max_in_flight: Annotated[int, Meta(ge=1, le=1000)] = 16


class GatewayConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One gateway process: one protocol on one listening address."""

    protocol: Literal["watch", "gt06"] = "watch"
    #: ``HOST:PORT`` to accept device connections on.
    listen: str = "0.0.0.0:5050"
    #: Region code for devices the registry does not name (or without a registry); unset, such a
    #: device cannot be published and its connection is closed (logged, counted).
    region: str | None = None
    #: A connection that sends nothing for this long is closed (watches send a keepalive every
    #: 1-10 minutes; a half-open TCP connection must not hold a slot for ever).
    idle_timeout_s: Annotated[float, Meta(gt=0, le=86_400)] = 900.0
    #: Connections at once from one address. Generous on purpose: mobile carriers put many
    #: devices behind one NAT address; this only stops one host from exhausting the process.
    max_connections_per_address: Annotated[int, Meta(ge=1, le=1_000_000)] = 2_000
    #: Frames a second one connection may send (a short burst twice this is allowed); beyond,
    #: the connection is closed as broken or hostile.
    max_frames_per_s: Annotated[float, Meta(gt=0, le=10_000)] = 20.0
    #: How long an alarm's reply may wait for the broker's PUBACK before the connection is closed
    #: unanswered (the device repeats the alarm on its next connection; nothing is lost).
    publish_timeout_s: Annotated[float, Meta(gt=0, le=3600)] = 60.0
    #: The gateway's MQTT client id (its own persistent session, which holds commands for it
    #: through an outage); empty: ``eldercare-gateway-<protocol>``, so the watch and GT06
    #: gateways never share one (the broker would disconnect one each time the other connects).
    client_id: str = ""
    #: Prometheus endpoint port of the gateway; 0 disables it.
    metrics_port: Annotated[int, Meta(ge=0, le=65535)] = 0
    #: The gateway's id in its topic ``eldercare/v1/<region>/gw/<id>``; empty: the client id.
    id: str = ""
    batch: BatchConfig = msgspec.field(default_factory=BatchConfig)
    #: Downlink commands (``[gateway.commands]``).
    commands: CommandsConfig = msgspec.field(default_factory=CommandsConfig)
    #: Positions from towers and access points (``[gateway.geolocation]``).
    geolocation: GeolocationConfig = msgspec.field(default_factory=GeolocationConfig)

    @property
    def mqtt_client_id(self) -> str:
        return self.client_id or f"eldercare-gateway-{self.protocol}"

    @property
    def gateway_id(self) -> str:
        return self.id or self.mqtt_client_id
