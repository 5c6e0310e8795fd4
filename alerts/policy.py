"""The routing and escalation policy file: who is told about which alert, how, and when (pure).

A policy has *ladders* (ordered steps: whom to notify, what the dispatch centre is expected to
do, how long to wait for a claim before the next step) and *routes* (alert type -> ladder, with
an optional night ladder). The built-in default is ``alerts/policy.yaml``; a deployment names its
own in ``[alerts] policy_file``. Loading validates everything up front, with errors that give
the path of the bad entry, because a routing mistake found at 3 a.m. during an SOS is too late.

When an alert opens, :meth:`Policy.snapshot` copies its ladder (and the delivery settings) into
the alert row; escalation reads only the snapshot, so editing the file never changes a running
escalation.

Rules enforced at load:

- every alert type that opens alerts (``alerts.model.PRIORITY``) has a route: an alert nobody
  is routed to would be silent;
- a life-safety type (priority 1) is never grouped (``group_window_s`` must be 0) and its first
  step notifies the dispatch centre: life-safety alerts are never delayed by quiet rules.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Final, Literal

import msgspec
from msgspec import Meta

from alerts.model import PRIORITY
from foundation.documents import decode_document, load_document
from foundation.errors import ConfigError

# \Z, not $: `$` also matches before a final newline.
Target = Annotated[str, Meta(pattern=r"^(dispatch|community|family:([1-9][0-9]?|all))\Z")]
Action = Literal["notify", "call_elder", "send_staff", "call_emergency", "call_police"]
Seconds = Annotated[int, Meta(ge=1, le=7 * 24 * 3600)]

DEFAULT_POLICY: Final = "policy.yaml"


class Step(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One rung: notify ``notify`` now, then wait ``wait_s`` for a claim."""

    notify: Annotated[list[Target], Meta(min_length=1)]
    action: Action = "notify"
    wait_s: Seconds


class Ladder(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """An escalation ladder; see docs/alerts.md for each field's meaning."""

    steps: Annotated[list[Step], Meta(min_length=1, max_length=20)]
    #: A claim ("I'm on it") pauses escalation this long; unresolved after it, escalation
    #: resumes (as PagerDuty's acknowledgement timeout does).
    claim_timeout_s: Seconds = 600
    #: Passes through the ladder before the priority is raised; after that the last step
    #: repeats until resolution (an unresolved alert never goes silent).
    repeat: Annotated[int, Meta(ge=1, le=20)] = 3
    #: The same message to the same address for the same alert is suppressed this long.
    dedup_window_s: Annotated[int, Meta(ge=0, le=86400)] = 300
    #: Low-priority grouping: messages to one address about one wearer wait this long and go
    #: out as one. 0 = no grouping (required for life safety).
    group_window_s: Annotated[int, Meta(ge=0, le=86400)] = 0


class Route(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Which ladder an alert type climbs; ``night_ladder`` at night (20:00-06:00 local)."""

    ladder: str
    night_ladder: str | None = None


class DeliveryPolicy(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Retries of one delivery: exponential backoff with jitter, then give up and escalate."""

    max_attempts: Annotated[int, Meta(ge=1, le=50)] = 8
    backoff_s: Annotated[float, Meta(gt=0, le=3600)] = 2.0
    backoff_max_s: Annotated[float, Meta(gt=0, le=86400)] = 300.0


class Staff(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A community staff member (网格员) for the ``community`` target."""

    name: Annotated[str, Meta(min_length=1, max_length=100)]
    phone: Annotated[str, Meta(pattern=r"^\+?[0-9 -]{3,20}\Z")]
    language: Literal["zh", "en"] = "zh"
    channels: Annotated[tuple[Literal["sms", "voice"], ...], Meta(min_length=1)] = ("sms",)


class Policy(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The whole policy file."""

    ladders: dict[str, Ladder]
    routes: dict[str, Route]
    delivery: DeliveryPolicy = DeliveryPolicy()
    community: dict[str, list[Staff]] = {}

    def __post_init__(self) -> None:
        for kind, route in self.routes.items():
            for name in (route.ladder, route.night_ladder):
                if name is not None and name not in self.ladders:
                    raise ValueError(f"route {kind!r} names unknown ladder {name!r}")
        missing = sorted(set(PRIORITY) - set(self.routes))
        if missing:
            raise ValueError(f"no route for alert type(s) {', '.join(missing)}")
        for kind, route in self.routes.items():
            if PRIORITY.get(kind) != 1:
                continue
            for name in (route.ladder, route.night_ladder):
                ladder = self.ladders[name] if name else None
                if ladder and ladder.group_window_s:
                    raise ValueError(f"life-safety type {kind!r} must not be grouped "
                                     f"(ladder {name!r} has group_window_s)")
                if ladder and "dispatch" not in ladder.steps[0].notify:
                    raise ValueError(f"life-safety type {kind!r}: the first step of ladder "
                                     f"{name!r} must notify dispatch")

    def snapshot(self, alert_type: str, *, night: bool) -> dict[str, Any]:
        """The ladder for a new alert of ``alert_type``, as JSON for the alert row.

        Types without a route (none pass validation for alert-opening types) raise KeyError.
        """
        route = self.routes[alert_type]
        name = route.night_ladder if night and route.night_ladder else route.ladder
        return {"ladder": name, **msgspec.to_builtins(self.ladders[name]),
                "delivery": msgspec.to_builtins(self.delivery)}


def ladder_of(snapshot: dict[str, Any]) -> Ladder:
    """The :class:`Ladder` back from an alert's policy snapshot."""
    fields = {k: v for k, v in snapshot.items() if k not in ("ladder", "delivery")}
    return msgspec.convert(fields, Ladder)


def delivery_of(snapshot: dict[str, Any]) -> DeliveryPolicy:
    """The :class:`DeliveryPolicy` back from an alert's policy snapshot."""
    return msgspec.convert(snapshot.get("delivery", {}), DeliveryPolicy)


def load_policy(path: str | Path | None = None) -> Policy:
    """Load and validate the policy file (the built-in default when ``path`` is None).

    Raises ConfigError naming the file and the bad entry. The file is YAML whatever its suffix
    (JSON, being YAML too, is read as well).
    """
    if path is None:
        data = resources.files("alerts").joinpath(DEFAULT_POLICY).read_bytes()
        return decode_document(data, fmt="yaml", type=Policy, error=ConfigError,
                               label="invalid alert policy built-in alerts/policy.yaml")
    return load_document(path, type=Policy, error=ConfigError, what="alert policy",
                         fmt="yaml")
