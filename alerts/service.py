"""The alert service: folder, escalator, delivery workers and HTTP API, wired and owned.

One object the ingest service starts and stops (and the detection stage's event sink):

- the **folder** turns stored detection events into alerts; an opening alert climbs its first
  rung and queues its deliveries in the same transaction;
- the **escalator** climbs later rungs when an alert's persisted timer runs out;
- one **delivery worker** per configured channel sends the outbox (webhook to the 12349
  dispatch centre, SMS and voice calls, e-mail, MQTT);
- the **API** (FastAPI under uvicorn) lets the dispatch platform and duty staff claim, resolve
  and annotate alerts.

Committed work wakes the component that must act on it (``AlertStore.wake``), so an SOS goes
from its event to the webhook without polling delays. Start order is consumers first (workers,
escalator, folder, API); stop order is the reverse, so whatever the folder folds while stopping
is still queued durably in the outbox for the next run.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from alerts.api import create_app
from alerts.auth import TokenTable, load_tokens
from alerts.channels.aliyun import AliyunSms, AliyunVoice
from alerts.channels.base import Channel, Message
from alerts.channels.email import EmailChannel
from alerts.channels.mqtt import MqttAlertChannel
from alerts.channels.webhook import WebhookChannel
from alerts.delivery import DeliveryWorker
from alerts.escalator import Escalator
from alerts.folder import AlertFolder
from alerts.outbox import Queued, Routing
from alerts.policy import load_policy
from alerts.store import AlertStore
from detectors.events import Event
from eldercare.clock import Clock
from eldercare.config import Config
from eldercare.http_server import HttpServer

log = logging.getLogger(__name__)

#: How long a delivery is leased to the worker sending it. Longer than any channel's timeout
#: (so a slow send is not sent twice), short enough that a message leased by a process that
#: died is sent by another soon after.
LEASE_S = 30.0


def build_channels(config: Config, *, clock: Clock) -> list[Channel]:
    """The channels with a working configuration ([alerts.*] sections, docs/alerts.md)."""
    a = config.alerts
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
        channels.append(MqttAlertChannel(config.mqtt.url,
                                         client_id=f"{config.mqtt.client_id}-alerts"))
    return channels


class AlertService:
    """Owns the alert components; see the module docstring."""

    def __init__(self, config: Config, *, clock: Clock,
                 channels: Sequence[Channel] | None = None,
                 tokens: TokenTable | None = None) -> None:
        a = config.alerts
        policy = load_policy(a.policy_file)
        self.channels = list(channels) if channels is not None else build_channels(
            config, clock=clock)
        names = frozenset(c.name for c in self.channels)
        routing = Routing(
            dispatch_url=a.webhook.url, channels=names, map_link=a.map_link or None,
            community=policy.community, default_region=a.phone_region, handoff=names,
            lease_s=LEASE_S)
        self.store = AlertStore(config.database.url, timezone=config.detectors.timezone,
                                policy=policy, routing=routing, wake=self._wake)
        self.escalator = Escalator(store=self.store, clock=clock, poll_s=a.poll_s)
        # MQTT carries retained *states*: one sender keeps them in queue order.
        self.workers = {c.name: DeliveryWorker(
            channel=c, store=self.store, clock=clock, poll_s=a.poll_s, lease_s=LEASE_S,
            concurrency=1 if c.name == "mqtt" else a.delivery_concurrency,
            on_given_up=self.escalator.wakeup) for c in self.channels}
        self.folder = AlertFolder(store=self.store, clock=clock, poll_s=a.poll_s)
        self.api: HttpServer | None = None
        if config.api.enabled:
            table = tokens if tokens is not None else (
                load_tokens(config.api.tokens_file) if config.api.tokens_file else TokenTable())
            app = create_app(store=self.store, database_url=config.database.url, tokens=table,
                             clock=clock, on_change=lambda _id: self.escalator.wake())
            self.api = HttpServer(app, host=config.api.host, port=config.api.port)
        missing = {"webhook", "sms"} - {c.name for c in self.channels}
        if missing:
            log.warning("alert channels not configured: %s (notifications to them are audited"
                        " as undeliverable)", ", ".join(sorted(missing)))

    def handle(self, events: Sequence[Event]) -> None:
        """EventSink: new events are stored; fold them now."""
        self.folder.handle(events)

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
        self.escalator.wake()

    def start(self) -> None:
        for w in self.workers.values():
            w.start()
        self.escalator.start()
        self.folder.start()
        if self.api is not None:
            self.api.start()
            log.info("alerts API on http://%s:%d/api/v1", self.api.host, self.api.port)

    def stop(self) -> None:
        if self.api is not None:
            self.api.stop()
        self.folder.stop()
        self.escalator.stop()
        for w in self.workers.values():
            w.stop()
        self.store.close()
