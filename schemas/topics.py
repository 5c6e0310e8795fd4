"""MQTT topic names of wire contract v1.

``eldercare/v1/<region>/dev/<device_id>``: readings of one device (object or array).
``eldercare/v1/<region>/gw/<gateway_id>``: an array of readings of devices behind a gateway.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal

from eldercare.errors import ValidationError
from schemas.readings import DEVICE_ID_PATTERN, REGION_PATTERN

TOPIC_ROOT: Final = "eldercare/v1"
#: Subscriptions the ingest service makes (QoS 1).
SUBSCRIPTIONS: Final = (f"{TOPIC_ROOT}/+/dev/+", f"{TOPIC_ROOT}/+/gw/+")

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
