"""The few types every part of the simulator shares (issue #4; docs/simulator.md).

The simulator is a pipeline of pure stages, each a separate module:

    scenario file -> fleet (wearers, homes, devices, registry)        device_sim.scenario/.fleet
                  -> device models -> SimReading stream, time-ordered   device_sim.wearables/
                                                      .fall_sensor/.home (on .devices,
                                                      .motion, .battery, .signals), .stream
                  -> gateway delivery -> Publication stream            device_sim.gateway
                  -> publisher (MQTT, paced) and/or recording (JSONL)   device_sim.publisher/.recording
       or (watches, bracelets) -> vendor frames on TCP to a device gateway   device_sim.via_gateway/
                                   .tcp_devices/.device_link/.watch_protocol/.gt06_protocol
    labels (ground truth, written by the models)  + detected events -> score   device_sim.score

Times: ``t_ms`` is the simulation's true clock (Unix ms). A reading's own ``ts`` field is the
*device's* clock, which may be skewed; labels are in device time too, because detection works on
device time and latency is measured against it.
"""

from __future__ import annotations

from typing import Any, Final, Literal, NamedTuple

import msgspec


class SimReading(NamedTuple):
    """One reading as a device produced it, before any gateway touched it.

    ``body`` is the wire object (``device_id``, ``ts`` in device time, ``seq``, ``type`` and the
    type's fields), ready to be JSON-encoded.
    """

    t_ms: int                 # true time the device took it
    device_id: str
    region: str
    gateway_id: str | None    # the gateway this device reports through; None: its own topic
    body: dict[str, Any]


class Publication(NamedTuple):
    """One MQTT message: what is published, on which topic, when (true time)."""

    t_ms: int
    topic: str
    readings: list[dict[str, Any]]   # wire objects; one on a device topic may be sent unwrapped
    as_array: bool                    # payload is a JSON array (gateway topics always)


#: What a scripted incident is expected to raise: its label ``type`` is the detector event type.
LabelType = Literal["sos", "fall", "geofence_exit", "home_alarm", "device_removed",
                    "low_battery", "offline", "heart_rate", "inactivity"]


class Label(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Ground truth: one scripted incident, one line of the labels file.

    ``start_ms`` is when the incident began in the device's clock (the press, the impact, the
    moment the wearer crossed the zone boundary, the smoke). ``incident`` is the scenario's name
    for it (``wander``, ``smoke``...); ``type`` the event the detectors should raise for it.
    """

    device_id: str
    type: LabelType
    start_ms: int
    incident: str
    wearer_id: str | None = None
    detail: dict[str, Any] = {}


LABEL_ENCODER: Final = msgspec.json.Encoder()
LABEL_DECODER: Final = msgspec.json.Decoder(Label)


class DeliveryParams(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How gateways and the network mangle delivery (the scenario's ``delivery`` section).

    Defaults are mild, as in a healthy deployment; scenarios raise them to test robustness.
    """

    #: A gateway flushes its batch at this many readings...
    gateway_batch: int = 50
    #: ... or this long after the first reading in it.
    gateway_flush_s: float = 5.0
    #: Fraction of messages published twice (QoS 1 retries, gateway resends).
    duplicate_rate: float = 0.005
    #: Fraction of readings inside a gateway message that are shuffled out of time order.
    reorder_rate: float = 0.02
    #: Fraction of messages delayed (and so overtaken by later ones) by up to ``delay_max_s``.
    delay_rate: float = 0.01
    delay_max_s: float = 30.0

    def __post_init__(self) -> None:
        if self.gateway_batch < 1 or self.gateway_flush_s <= 0 or self.delay_max_s < 0:
            raise ValueError("gateway_batch >= 1, gateway_flush_s > 0, delay_max_s >= 0")
        for name in ("duplicate_rate", "reorder_rate", "delay_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be within [0, 1]")
