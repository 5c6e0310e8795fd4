"""Wire contract v1: reading structs, topic names and the payload decoder."""

from schemas.decode import Decoded, MessageDecoder, Reject
from schemas.readings import (
    ALARM_TYPES,
    READING_TYPES,
    TYPE_NAMES,
    Accel,
    Cell,
    DeviceAlarm,
    Fall,
    Heartbeat,
    HomeAlarm,
    Location,
    RadioScan,
    Reading,
    Sos,
    Vitals,
    Wear,
    WifiAp,
)
from schemas.topics import SUBSCRIPTIONS, Topic, device_topic, gateway_topic, parse_topic

__all__ = [
    "ALARM_TYPES", "READING_TYPES", "SUBSCRIPTIONS", "TYPE_NAMES",
    "Accel", "Cell", "Decoded", "DeviceAlarm", "Fall", "Heartbeat", "HomeAlarm", "Location",
    "MessageDecoder", "RadioScan", "Reading", "Reject", "Sos", "Topic", "Vitals", "Wear", "WifiAp",
    "device_topic", "gateway_topic", "parse_topic",
]
