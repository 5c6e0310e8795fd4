"""A run whose wearables speak vendor protocols to device gateways (``sim run --via-gateway``).

:func:`route` assigns the scenario's devices to protocols by kind (:data:`KINDS`): watches
speak the 3G watch protocol, bracelets GT06 (the Concox-style trackers of 12349 bracelets), each
kind only when a gateway for its protocol is given. Everything else (fall sensors, whose raw
accelerometer chunks neither protocol can carry; home kits behind their own hubs; a kind whose
protocol has no gateway in this run) publishes JSON over MQTT as in any run.

A GT06 tracker is known by its IMEI, so the gateway publishes its readings under
:func:`~device_sim.gt06_protocol.imei_for` of its fleet id: :attr:`Routes.wire_ids` maps the
ids, and :meth:`Routes.registry` and :meth:`Routes.labels` give the registry and the ground
truth under the ids the service will see. Watches keep their ids (the protocol carries any).

:func:`run_via_gateways` runs both halves on one schedule (:class:`~device_sim.publisher.Pace`):
the routed devices on TCP (:class:`~device_sim.tcp_devices.DeviceFleet`, in this thread's event
loop) and the rest through the MQTT publisher (in a thread of its own, as ``sim run`` does).
The routed devices' readings go through the delivery stage with the scenario's outages but no
network mangling: TCP keeps order and never duplicates; an outage's burst comes on a new
connection.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final, Literal, NamedTuple

import msgspec

from device_sim.device_frames import DeviceEncoder
from device_sim.gateway import deliver
from device_sim.gt06_protocol import Gt06Encoder, imei_for
from device_sim.publisher import Pace, PublishStats, publish
from device_sim.stream import Simulation
from device_sim.tcp_devices import DeviceFleet, DeviceSettings, DeviceStats, Endpoint
from device_sim.types import DeliveryParams, Label
from device_sim.watch_protocol import WatchEncoder
from foundation.broker import BrokerAddress
from foundation.errors import ConfigError
from schemas.registry import Registry

Protocol = Literal["watch", "gt06"]
#: The device kinds each protocol carries.
KINDS: Final[dict[Protocol, tuple[str, ...]]] = {"watch": ("watch",), "gt06": ("bracelet",)}
#: Delivery for device connections: the outages only (TCP neither reorders nor duplicates).
_STRAIGHT: Final = DeliveryParams(duplicate_rate=0.0, reorder_rate=0.0, delay_rate=0.0)


class GatewayTarget(NamedTuple):
    """One protocol's gateway: ``watch=127.0.0.1:5050``."""

    protocol: Protocol
    endpoint: Endpoint


def parse_target(text: str) -> GatewayTarget:
    """``PROTOCOL=HOST:PORT`` (ConfigError naming what is wrong)."""
    protocol, eq, address = text.partition("=")
    host, colon, port = address.rpartition(":")
    if not eq or protocol not in KINDS:
        raise ConfigError(f"--via-gateway {text!r}: expected watch=HOST:PORT or gt06=HOST:PORT")
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"--via-gateway {text!r}: the address must be HOST:PORT")
    return GatewayTarget(protocol, Endpoint(host.strip("[]"), int(port)))


@dataclass(frozen=True, slots=True)
class Routes:
    """Which devices of a run go to which gateway, and under which id."""

    #: Fleet id -> its protocol and its gateway's address.
    targets: dict[str, GatewayTarget]
    #: Fleet id -> the id the gateway publishes it under (only the ids that change).
    wire_ids: dict[str, str]

    def encoders(self) -> dict[str, tuple[DeviceEncoder, Endpoint]]:
        """A fresh encoder per routed device (they keep per-run state), with its address."""
        out: dict[str, tuple[DeviceEncoder, Endpoint]] = {}
        for device_id, target in self.targets.items():
            encoder: DeviceEncoder = (Gt06Encoder(self.wire_ids[device_id])
                                      if target.protocol == "gt06" else WatchEncoder(device_id))
            out[device_id] = (encoder, target.endpoint)
        return out

    def registry(self, registry: Registry) -> Registry:
        """``registry`` with the devices under their wire ids."""
        return msgspec.structs.replace(registry, wearers=[
            msgspec.structs.replace(w, devices=[
                msgspec.structs.replace(d, id=self.wire_ids.get(d.id, d.id)) for d in w.devices])
            for w in registry.wearers])

    def labels(self, labels: Iterable[Label]) -> list[Label]:
        """The ground truth under the wire ids."""
        return [msgspec.structs.replace(lab, device_id=self.wire_ids.get(lab.device_id,
                                                                         lab.device_id))
                for lab in labels]


def route(sim: Simulation, targets: Iterable[GatewayTarget]) -> Routes:
    """Assign ``sim``'s devices to ``targets`` by kind (:data:`KINDS`). ConfigError for a
    protocol given twice, or one that no device of the scenario would speak."""
    by_protocol: dict[Protocol, GatewayTarget] = {}
    for target in targets:
        if target.protocol in by_protocol:
            raise ConfigError(f"--via-gateway names {target.protocol} twice")
        by_protocol[target.protocol] = target
    routed: dict[str, GatewayTarget] = {}
    wire_ids: dict[str, str] = {}
    for protocol, target in by_protocol.items():
        devices = [d for d, dev in sim.devices.items() if dev.kind in KINDS[protocol]]
        if not devices:
            raise ConfigError(f"--via-gateway {protocol}: the scenario has no "
                              f"{' or '.join(KINDS[protocol])} to speak it")
        for device_id in devices:
            routed[device_id] = target
            if protocol == "gt06":
                wire_ids[device_id] = imei_for(device_id)
    return Routes(targets=routed, wire_ids=wire_ids)


@dataclass(frozen=True, slots=True)
class ViaGatewayStats:
    """What a run through gateways did: the device connections, and the MQTT rest (None when
    every device went through a gateway)."""

    devices: DeviceStats
    mqtt: PublishStats | None


def run_via_gateways(sim: Simulation, routes: Routes, *, mqtt: str | BrokerAddress | None,
                     speed: float | None, stop: threading.Event | None = None,
                     settings: DeviceSettings | None = None,
                     on_progress: Callable[[DeviceStats], None] | None = None,
                     progress_s: float = 1.0) -> ViaGatewayStats:
    """Run ``sim``: routed devices to their gateways, the rest to the broker ``mqtt``, paced
    together from the run's start (``speed`` as ``sim run``'s). Returns when both are done;
    raises what either raised (BrokerError, ...) after stopping the other."""
    stop = stop or threading.Event()
    routed = set(routes.targets)
    rest = set(sim.devices) - routed
    if rest and mqtt is None:
        raise ConfigError("devices that do not go through a gateway need a broker")
    device_pubs = deliver(sim.readings(routed), params=_STRAIGHT, seed=0,
                          outages={d: w for d, w in sim.outages.items() if d in routed})
    mqtt_pubs = sim.publications(rest) if rest else None

    async def main() -> ViaGatewayStats:
        pace = Pace(speed=speed, origin_ms=sim.start_ms, start=time.monotonic())
        fleet = DeviceFleet(routes.encoders(), pace=pace, settings=settings, stop=stop,
                            on_progress=on_progress, progress_s=progress_s)
        devices = asyncio.create_task(fleet.run(device_pubs), name="sim-devices")
        tasks: set[asyncio.Task[DeviceStats] | asyncio.Task[PublishStats]] = {devices}
        published = None
        if mqtt_pubs is not None and mqtt is not None:
            published = asyncio.create_task(asyncio.to_thread(
                publish, mqtt_pubs, url=mqtt, speed=speed, stop=stop, pace=pace),
                name="sim-mqtt")
            tasks.add(published)
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        if any(not t.cancelled() and t.exception() is not None for t in done):
            stop.set()  # one half failed: wind the other down before raising
        await asyncio.wait(tasks)
        return ViaGatewayStats(devices=devices.result(),
                               mqtt=published.result() if published is not None else None)

    return asyncio.run(main())
