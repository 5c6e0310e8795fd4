"""MQTT topic names of wire contract v1.

``eldercare/v1/<region>/dev/<device_id>``: readings of one device (object or array).
``eldercare/v1/<region>/gw/<gateway_id>``: an array of readings of devices behind a gateway.

The ingest service subscribes to the whole of ``eldercare/v1/#`` rather than to those two
forms, so that a reading sent to a wrong topic (``.../foo/X``, ``.../dev/X/extra``) reaches the
decoder and is dead-lettered with its topic instead of never being seen. Two namespaces under
``eldercare/v1/<region>/`` carry no readings and belong to eldercare itself: ``alerts`` (the
alert channel's retained alert states) and ``cmd`` (device commands and their results, for the
device gateway). :func:`service_namespace` names them, so ingest can drop them, acknowledged
and counted, before they take a place in its buffer. Topics outside ``eldercare/v1/`` are not
ours: the broker may carry other applications, and a future ``v2`` gets its own subscription.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal

from foundation.errors import ValidationError
from schemas.readings import DEVICE_ID_PATTERN, REGION_PATTERN

TOPIC_ROOT: Final = "eldercare/v1"
#: Subscriptions the ingest service makes (QoS 1): all of contract v1 (module docstring).
SUBSCRIPTIONS: Final = (f"{TOPIC_ROOT}/#",)
#: What earlier versions subscribed to. A persistent session made by one of them still holds
#: these, and they overlap ``SUBSCRIPTIONS``: Mosquitto then delivers every reading once per
#: matching subscription, so ingest unsubscribes them when it finds its session resumed.
RETIRED_SUBSCRIPTIONS: Final = (f"{TOPIC_ROOT}/+/dev/+", f"{TOPIC_ROOT}/+/gw/+")
#: Namespaces (the level after the region) that eldercare itself uses for other things than
#: readings: never dead-lettered, whatever follows them. The broker ACL denies them to the
#: ingest login too (eldercare/broker_acl.py).
SERVICE_NAMESPACES: Final = ("alerts", "cmd")
_ROOT_LEVELS: Final = tuple(TOPIC_ROOT.split("/"))

_TOPIC_RE: Final = re.compile(
    r"^eldercare/v1/(?P<region>[^/]*)/(?P<kind>dev|gw)/(?P<source>[^/]*)$"
)
_REGION_RE: Final = re.compile(REGION_PATTERN)
_ID_RE: Final = re.compile(DEVICE_ID_PATTERN)


@dataclass(frozen=True, slots=True)
class Topic:
    """A parsed topic: the region, whether a device or a gateway published, and its id."""

    region: str
    kind: Literal["dev", "gw"]
    source_id: str


def device_topic(region: str, device_id: str) -> str:
    """Topic a device publishes its own readings to."""
    return f"{TOPIC_ROOT}/{region}/dev/{device_id}"


def gateway_topic(region: str, gateway_id: str) -> str:
    """Topic a gateway publishes batches of its devices' readings to."""
    return f"{TOPIC_ROOT}/{region}/gw/{gateway_id}"


def service_namespace(topic: str) -> str | None:
    """The namespace of ``SERVICE_NAMESPACES`` that ``topic`` lies in, else None.

    Matches exactly what the MQTT filters ``eldercare/v1/+/alerts/#`` and
    ``eldercare/v1/+/cmd/#`` match (``#`` includes the parent level, so
    ``eldercare/v1/<region>/alerts`` is in, ``eldercare/v1/<region>/x/alerts`` is not): the ACL
    and this function draw one line. Called for every message received, hence no regex.
    """
    levels = topic.split("/", 4)
    if len(levels) < 4 or (levels[0], levels[1]) != _ROOT_LEVELS:
        return None
    namespace = levels[3]
    return namespace if namespace in SERVICE_NAMESPACES else None


def parse_topic(topic: str) -> Topic:
    """Parse and validate a topic name.

    Raises
    ------
    ValidationError
        The topic is not of the v1 forms, or its region or id is malformed.
    """
    m = _TOPIC_RE.match(topic)
    if m is None:
        raise ValidationError(
            f"topic {topic[:200]!r} is not eldercare/v1/<region>/dev/<device_id> "
            "or eldercare/v1/<region>/gw/<gateway_id>"
        )
    region, kind, source = m.group("region", "kind", "source")
    if not _REGION_RE.match(region):
        raise ValidationError(f"topic region {region[:64]!r} does not match [a-z0-9-]{{1,32}}")
    if not _ID_RE.match(source):
        what = "device_id" if kind == "dev" else "gateway_id"
        raise ValidationError(f"topic {what} {source[:80]!r} does not match [A-Za-z0-9_.:-]{{1,64}}")
    return Topic(region=region, kind="dev" if kind == "dev" else "gw", source_id=source)
