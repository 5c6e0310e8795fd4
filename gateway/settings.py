"""The gateway's configuration section, ``[gateway]`` (docs/gateway.md)."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta


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
    #: The gateway's MQTT client id (its own session; distinct from the service's).
    client_id: str = "eldercare-gateway"
    #: Prometheus endpoint port of the gateway; 0 disables it.
    metrics_port: Annotated[int, Meta(ge=0, le=65535)] = 0
