"""Commands to an alert's device: "locate now" and "call the watch" from the duty console.

Duty staff act on the device an alert came from: make a watch report its position now, or make
it dial the dispatch centre so the elder can talk hands-free. The service asks; the device
gateway that holds the device's connection delivers it (gateway/commands.py). Both sides speak
the command contract of :mod:`schemas.commands` over the broker:

- :meth:`DeviceCommands.request` writes ``command_requested`` to the alert's audit trail (who
  asked, what), then publishes the command at QoS 1 and waits for the broker's PUBACK. A broker
  that does not take it within ``publish_timeout_s`` is a :class:`~foundation.errors.BrokerError`
  (the API answers 503) and the trail says ``command_failed``: not sent (no connection), or
  unconfirmed (handed to the client, which sends it when the connection returns);
- the gateway's results (``sent``, ``acknowledged``, ``failed`` with a reason) arrive on the
  result topics and are appended to the same trail (``command_sent``, ...), actor ``gateway``;
  the console sees them as any other change of the alert;
- :func:`command_states` folds the trail into each command's state. A command no gateway
  answered within ``result_timeout_s`` is ``no_answer``: gateways stay silent about devices
  they have never seen, so silence means no gateway holds the device.

The trail is the only record: append-only, in the same database as the alert, written before
anything leaves the service, so a command cannot have been sent without a trace.
"""

from __future__ import annotations

import logging
import re
import secrets
import threading
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any, Final

import msgspec
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from alerts.audit import SYSTEM
from alerts.settings import DeviceCommandsConfig
from alerts.store import AlertStore
from foundation.broker import BrokerAddress, stop_client
from foundation.clock import Clock
from foundation.errors import BrokerError, ValidationError
from schemas.commands import (
    RESULT_SUBSCRIPTION,
    CommandArgs,
    CommandName,
    DeviceCommand,
    command_topic,
    decode_result,
    encode,
    parse_command_topic,
)

log = logging.getLogger(__name__)

#: Command ids this service makes: the alert they belong to, and a random part.
_ID_RE: Final = re.compile(r"alert-(\d{1,19})-[0-9a-f]{8}")
#: Audit actions of the command trail, by result status.
ACTIONS: Final = {"requested": "command_requested", "sent": "command_sent",
                  "acknowledged": "command_acknowledged", "failed": "command_failed"}
_STATUS_OF: Final = {action: status for status, action in ACTIONS.items()}
#: The actor of what the gateway reports.
GATEWAY: Final = "gateway"


def command_states(trail: Iterable[Mapping[str, Any]], *, now_ms: int,
                   result_timeout_s: float) -> list[dict[str, Any]]:
    """Each command of an alert's audit ``trail`` (rows with ``at``, ``actor``, ``action``,
    ``detail``), oldest first, as ``{id, command, args, requested_by, requested_at, status,
    reason, updated_at}``. Pure: the API calls it on the trail it read."""
    states: dict[str, dict[str, Any]] = {}
    for row in trail:
        status = _STATUS_OF.get(row["action"])
        detail = row["detail"] or {}
        cid = detail.get("id")
        if status is None or not isinstance(cid, str):
            continue
        if status == "requested":
            states[cid] = {"id": cid, "command": detail.get("command"),
                           "args": detail.get("args") or {}, "requested_by": row["actor"],
                           "requested_at": row["at"], "status": "requested", "reason": None,
                           "updated_at": row["at"]}
        elif cid in states and not (status == "sent"
                                    and states[cid]["status"] == "acknowledged"):
            # A late "sent" never hides the answer that overtook it (but it does replace an
            # "unconfirmed" the service wrote when the broker was slow to acknowledge).
            states[cid].update(status=status, reason=detail.get("reason"), updated_at=row["at"])
    for state in states.values():
        asked: datetime = state["requested_at"]
        if (state["status"] == "requested"
                and now_ms - asked.timestamp() * 1000 > result_timeout_s * 1000):
            state["status"] = "no_answer"
            state["reason"] = (f"no gateway answered within {result_timeout_s:.0f} s: no gateway"
                               " holds a connection to this device")
    return list(states.values())


class DeviceCommands:
    """Asks gateways for commands and records their answers; one paho client with its network
    thread. ``on_change(alert_id)`` runs after a result is recorded (the console's live feed)."""

    def __init__(self, address: BrokerAddress, *, client_id: str, store: AlertStore,
                 clock: Clock, settings: DeviceCommandsConfig,
                 on_change: Callable[[int], None] | None = None) -> None:
        self.address = address
        self.client_id = client_id
        self.store = store
        self.clock = clock
        self.settings = settings
        self.on_change = on_change
        self._connected = threading.Event()
        self._client: mqtt.Client | None = None

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def start(self) -> None:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id,
                             protocol=mqtt.MQTTv311, clean_session=True)
        self.address.configure(client)
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        # Asynchronous: a broker that is down at start-up does not stop the service; requests
        # meanwhile fail with 503 and say so.
        client.connect_async(self.address.host, self.address.port, keepalive=30)
        client.loop_start()
        self._client = client

    def stop(self) -> None:
        if self._client is not None:
            stop_client(self._client)
            self._client = None
        self._connected.clear()

    # --- Asking ----------------------------------------------------------------------------

    def request(self, *, alert_id: int, region: str, device_id: str, command: CommandName,
                args: CommandArgs, by: str) -> DeviceCommand:
        """Record and publish ``command`` for the alert's device; returns it once the broker
        has it. Raises :class:`BrokerError` when the broker does not take it in time (recorded
        as failed, not sent)."""
        now_ms = self.clock.now_ms()
        cmd = DeviceCommand(id=f"alert-{alert_id}-{secrets.token_hex(4)}", command=command,
                            ts=now_ms, args=args)
        detail = {"id": cmd.id, "command": command, "args": msgspec.to_builtins(args)}
        self.store.record_command(alert_id, action=ACTIONS["requested"], detail=detail, by=by,
                                  now_ms=now_ms)
        client = self._client
        reason: str | None = None
        if client is None or not self._connected.wait(self.settings.publish_timeout_s):
            reason = "not sent: no connection to the broker"
        else:
            info = client.publish(command_topic(region, device_id), encode(cmd), qos=1)
            try:
                info.wait_for_publish(self.settings.publish_timeout_s)
            except (RuntimeError, ValueError):  # paho: queue full, or the connection went
                pass
            if not info.is_published():
                # paho holds it and sends it when the connection returns: say so.
                reason = ("unconfirmed: the broker did not acknowledge it within"
                          f" {self.settings.publish_timeout_s:.0f} s; it may still go out"
                          " when the connection returns")
        if reason is not None:
            self.store.record_command(alert_id, action=ACTIONS["failed"],
                                      detail={"id": cmd.id, "command": command,
                                              "reason": reason},
                                      by=SYSTEM, now_ms=self.clock.now_ms())
            raise BrokerError(f"device command {cmd.id}: {reason}")
        return cmd

    # --- Results ---------------------------------------------------------------------------

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: ReasonCode,
                    properties: Any = None) -> None:
        if rc.is_failure:
            log.warning("device commands: broker refused the connection: %s", rc)
            return
        client.subscribe(RESULT_SUBSCRIPTION, qos=1)
        self._connected.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: ReasonCode,
                       properties: Any = None) -> None:
        self._connected.clear()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        try:
            self.record_result(message.topic, bytes(message.payload))
        except Exception:  # a bad result or a database hiccup must not stop paho's thread
            log.exception("device commands: a result on %s was not recorded", message.topic)

    def record_result(self, topic: str, payload: bytes) -> int | None:
        """Append a gateway's result to its alert's trail; the alert id, or None when the
        result is not one of ours (another requester's command) or is malformed (logged)."""
        try:
            _, device = parse_command_topic(topic, result=True)
            result = decode_result(payload)
        except ValidationError as exc:
            log.warning("device commands: dropped a result on %s: %s", topic[:120], exc.reason)
            return None
        match = _ID_RE.fullmatch(result.id)
        if match is None or result.device_id != device:
            return None
        alert_id = int(match[1])
        detail: dict[str, Any] = {"id": result.id, "command": result.command}
        if result.reason:
            detail["reason"] = result.reason
        self.store.record_command(alert_id, action=ACTIONS[result.status], detail=detail,
                                  by=GATEWAY, now_ms=self.clock.now_ms())
        if self.on_change is not None:
            self.on_change(alert_id)
        return alert_id
