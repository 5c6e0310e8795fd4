"""The device gateway (issue #10): speaks the vendor TCP protocols of the watches and trackers
12349 platforms hand out, and publishes what they report as wire-contract readings over MQTT.

A component of its own, on ``schemas`` and ``foundation`` only (it imports neither ingest nor
alerts), run as its own process (``eldercare gateway watch|gt06``). Each protocol is one codec
module behind the seam in :mod:`gateway.codec`; the asyncio server owns connections and the
broker.
"""
