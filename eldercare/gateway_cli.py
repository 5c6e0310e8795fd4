"""``eldercare gateway watch|gt06``: run the device gateway (issue #10) as its own process.

The shell side of the gateway: reads ``[gateway]`` and ``[mqtt]`` (options override them),
builds the protocol's codec, the broker link and the server, and runs them until SIGTERM or
Ctrl-C. The gateway needs no database; the registry file, when given, names each device's region
and is the list of admitted device ids (docs/gateway.md).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys

from eldercare.config import Config, load_config
from foundation.broker import Backoff, BrokerAddress
from gateway.codec import Codec
from gateway.link import BrokerLink
from gateway.server import GatewayMetrics, GatewayServer
from schemas.commands import COMMAND_SUBSCRIPTION
from schemas.registry import Registry, load_registry

log = logging.getLogger(__name__)


def codec_of(protocol: str) -> Codec:
    """The codec of ``protocol`` (one module per protocol: gateway/watch3g.py, gateway/gt06.py)."""
    if protocol == "watch":
        from gateway.watch3g import WatchCodec
        return WatchCodec()
    if protocol == "gt06":
        from gateway.gt06 import Gt06Codec
        return Gt06Codec()
    raise ValueError(f"unknown protocol {protocol!r}")


def regions_of(registry: Registry) -> dict[str, str]:
    """Device id -> its wearer's region."""
    return {d.id: w.region for w in registry.wearers for d in w.devices}


async def serve(config: Config, *, ready: asyncio.Event | None = None,
                stop: asyncio.Event | None = None,
                linked: asyncio.Event | None = None) -> None:
    """Run the gateway of ``config`` until ``stop`` is set (or the task is cancelled).
    ``ready`` is set once devices can connect, ``linked`` once the broker link is up and
    subscribed to commands (the first time)."""
    g = config.gateway
    registry = load_registry(config.registry) if config.registry else None
    link = BrokerLink(BrokerAddress.from_config(config.mqtt), client_id=g.mqtt_client_id,
                      backoff=Backoff(max_s=config.mqtt.reconnect_max_s),
                      subscriptions=(COMMAND_SUBSCRIPTION,) if g.commands.enabled else (),
                      max_in_flight=2 * g.batch.max_in_flight)
    metrics = GatewayMetrics()
    if g.metrics_port:
        from prometheus_client import start_http_server
        start_http_server(g.metrics_port, registry=metrics.registry)
    from gateway.geolocate import build_locator, metrics_observer
    locator = build_locator(g.geolocation,
                            observe=metrics_observer(metrics.lookups, metrics.lookup_latency))
    server = GatewayServer(codec=codec_of(g.protocol), settings=g, publisher=link,
                           regions=regions_of(registry) if registry is not None else None,
                           metrics=metrics, locator=locator)
    if server.desk is not None:
        link.on_message = server.desk.receive
    stop = stop or asyncio.Event()
    link_task = asyncio.create_task(link.run(), name="eldercare-gateway-broker")
    if linked is not None:
        # Done by the first connection: nothing to cancel later but this short wait.
        waiting = asyncio.create_task(link.wait_connected(), name="eldercare-gateway-linked")
        waiting.add_done_callback(lambda t: linked.set() if not t.cancelled() else None)
    try:
        await server.start()
        if ready is not None:
            ready.set()
        stopping = asyncio.ensure_future(stop.wait())
        # The link never returns by itself: if it ends, it failed, and the gateway with it.
        await asyncio.wait({stopping, link_task}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if link_task.done():
            link_task.result()
    finally:
        await server.stop()
        if locator is not None:
            await locator.aclose()
        link.close()
        link_task.cancel()
        # Bounded: a broker that does not answer our DISCONNECT must not hold the stop.
        await asyncio.wait({link_task}, timeout=5.0)


def _cmd_gateway(args: argparse.Namespace) -> int:
    overrides = {"gateway.protocol": args.protocol, "gateway.listen": args.listen,
                 "gateway.region": args.region, "mqtt.url": args.mqtt_url,
                 "registry": args.registry}
    config = load_config(path=args.config, env={}, overrides=overrides)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve(config, stop=stop)

    print(f"eldercare: gateway ({config.gateway.protocol}) on {config.gateway.listen};"
          " SIGTERM or Ctrl-C stops", file=sys.stderr, flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
    return 0


def add_gateway_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``eldercare gateway watch|gt06``."""
    p = sub.add_parser("gateway", help="run the device gateway for a vendor TCP protocol")
    p.add_argument("protocol", choices=["watch", "gt06"],
                   help="watch: the 3G watch protocol; gt06: Concox/Jimi trackers")
    p.add_argument("--listen", help="HOST:PORT for device connections (default 0.0.0.0:5050)")
    p.add_argument("--mqtt-url", help="broker URL (default [mqtt] url)")
    p.add_argument("--region", help="region code of devices the registry does not name")
    p.add_argument("--registry", help="device registry file: regions and admitted device ids")
    p.add_argument("--config", help="TOML configuration ([gateway], [mqtt])")
    p.set_defaults(func=_cmd_gateway)
