"""The alert service: folder, escalator and delivery workers, wired and owned.

One object the application starts and stops (and the detection stage's event sink):

- the **folder** turns stored detection events into alerts; an opening alert climbs its first
  rung and queues its deliveries in the same transaction;
- the **escalator** climbs later rungs when an alert's persisted timer runs out;
- one **delivery worker** per configured channel sends the outbox (webhook to the 12349
  dispatch centre, SMS and voice calls, e-mail, MQTT);
- the **API** (:mod:`alerts.api`) lets the dispatch platform and duty staff claim, resolve
  and annotate alerts; it is built on :attr:`AlertService.store` by the application, which
  serves it with the duty console (``console/``) on one HTTP server, and tells
  :meth:`AlertService.changed` of every write;
- **device commands** (:mod:`alerts.device_commands`): "locate now" and "call the watch" on an
  alert, through the device gateway, every step in the alert's trail.

Committed work wakes the component that must act on it (``AlertStore.wake``), so an SOS goes
from its event to the webhook without polling delays. Start order is consumers first (workers,
escalator, folder); stop order is the reverse, so whatever the folder folds while stopping
is still queued durably in the outbox for the next run.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from alerts.channels.aliyun import AliyunSms, AliyunVoice
from alerts.channels.base import Channel, Message
from alerts.channels.email import EmailChannel
from alerts.channels.mqtt import MqttAlertChannel, channel_address
from alerts.channels.webhook import WebhookChannel
from alerts.delivery import DeliveryWorker
from alerts.device_commands import DeviceCommands
from alerts.emergency import EmergencyDispatcher
from alerts.escalator import Escalator
from alerts.folder import AlertFolder
from alerts.outbox import Queued, Routing
from alerts.policy import load_policy
from alerts.settings import AlertsConfig
from alerts.store import AlertStore
from detectors.events import Event
from foundation.broker import MqttConfig
from foundation.clock import Clock
from foundation.supervisor import Spawn, plain_spawn

log = logging.getLogger(__name__)

#: How long a delivery is leased to the worker sending it. Longer than any channel's timeout
#: (so a slow send is not sent twice), short enough that a message leased by a process that
#: died is sent by another soon after.
LEASE_S = 30.0


def build_channels(a: AlertsConfig, *, broker: MqttConfig, clock: Clock) -> list[Channel]:
    """The channels with a working configuration ([alerts.*] sections, docs/alerts.md);
    ``broker`` is the service's own ``[mqtt]`` section, which the MQTT channel defaults to."""
    channels: list[Channel] = []
    if a.webhook.url:
        channels.append(WebhookChannel(a.webhook, clock=clock))
    if a.aliyun is not None:
        channels.append(AliyunSms(a.aliyun, clock=clock))
        if a.aliyun.voice_templates:
            channels.append(AliyunVoice(a.aliyun, clock=clock))
    if a.smtp is not None:
        channels.append(EmailChannel(a.smtp))
    if a.mqtt_publish:
        channels.append(MqttAlertChannel(
            channel_address(broker, a.mqtt),
            client_id=a.mqtt.client_id or f"{broker.client_id}-alerts"))
    return channels


class AlertService:
    """Owns the alert components; see the module docstring."""

    def __init__(self, settings: AlertsConfig, *, database_url: str, timezone: str,
                 clock: Clock, broker: MqttConfig | None = None, provisional: bool = True,
                 channels: Sequence[Channel] | None = None,
                 spawn: Spawn = plain_spawn) -> None:
        """``timezone``: the detectors' (quiet hours, messages); ``broker``: the service's
        ``[mqtt]`` section, for the MQTT channel; ``provisional``: send what the database
        cannot take to the dispatch webhook at once (``[spool] provisional_alerts``, and only
        where there is a spool to journal it); ``channels`` replace the configured ones."""
        a = settings
        policy = load_policy(a.policy_file)
        self.channels = list(channels) if channels is not None else build_channels(
            a, broker=broker if broker is not None else MqttConfig(), clock=clock)
        names = frozenset(c.name for c in self.channels)
        routing = Routing(
            dispatch_url=a.webhook.url, channels=names, map_link=a.map_link or None,
            community=policy.community, default_region=a.phone_region, handoff=names,
            lease_s=LEASE_S)
        self.store = AlertStore(database_url, timezone=timezone,
                                policy=policy, routing=routing, wake=self._wake)
        self.escalator = Escalator(store=self.store, clock=clock, poll_s=a.poll_s, spawn=spawn)
        # MQTT carries retained *states*: one sender keeps them in queue order.
        self.workers = {c.name: DeliveryWorker(
            channel=c, store=self.store, clock=clock, poll_s=a.poll_s, lease_s=LEASE_S,
            concurrency=1 if c.name == "mqtt" else a.delivery_concurrency,
            on_given_up=self.escalator.wakeup, spawn=spawn) for c in self.channels}
        self.folder = AlertFolder(store=self.store, clock=clock, poll_s=a.poll_s, spawn=spawn)
        webhook = next((c for c in self.channels if c.name == "webhook"), None)
        self.emergency: EmergencyDispatcher | None = None
        if provisional and webhook and a.webhook.url:
            self.emergency = EmergencyDispatcher(channel=webhook, url=a.webhook.url,
                                                 clock=clock, map_link=a.map_link or None,
                                                 spawn=spawn)
        self.commands: DeviceCommands | None = None
        if a.commands.enabled:
            own = broker if broker is not None else MqttConfig()
            self.commands = DeviceCommands(
                channel_address(own, a.mqtt), client_id=f"{own.client_id}-commands",
                store=self.store, clock=clock, settings=a.commands)
        missing = {"webhook", "sms"} - {c.name for c in self.channels}
        if missing:
            log.warning("alert channels not configured: %s (notifications to them are audited"
                        " as undeliverable)", ", ".join(sorted(missing)))

    def changed(self, alert_id: int) -> None:
        """An alert was written through the API (a claim, a resolution, a note): wake the
        escalator at once, so a claim stops the ladder now rather than at its next poll."""
        del alert_id  # any write may end or restart a ladder; the escalator reads them all
        self.escalator.wake()

    def handle(self, events: Sequence[Event]) -> None:
        """EventSink: new events are stored; fold them now."""
        self.folder.handle(events)

    def unstored(self, events: Sequence[Event]) -> None:
        """Events the database could not take (journaled): life-safety ones go to the
        dispatch centre provisionally (alerts/emergency.py)."""
        if self.emergency is not None:
            self.emergency.submit(events)

    def _wake(self, queued: Queued) -> None:
        by_channel: dict[str, list[Message]] = {}
        for m in queued.messages:
            by_channel.setdefault(m.channel, []).append(m)
        for name, messages in by_channel.items():
            self.workers[name].submit(messages)
        for name in queued.channels:
            worker = self.workers.get(name)
            if worker is not None:
                worker.wake()
        # Not the escalator: a commit here never moves a timer earlier than the escalator's
        # next look (new alerts' timers run a rung's wait ahead, and it looks every poll_s);
        # claims through the API and given-up deliveries wake it themselves.

    def start(self) -> None:
        if self.commands is not None:
            self.commands.start()
        if self.emergency is not None:
            self.emergency.start()
        for w in self.workers.values():
            w.start()
        self.escalator.start()
        self.folder.start()

    def stop(self) -> None:
        if self.commands is not None:
            self.commands.stop()
        self.folder.stop()
        self.escalator.stop()
        if self.emergency is not None:
            self.emergency.stop()  # first: it shares the webhook channel, which its worker closes
        for w in self.workers.values():
            w.stop()
        self.store.close()
