"""The alert service: folder, escalator, delivery workers and HTTP API, wired and owned.

One object the ingest service starts and stops (and the detection stage's event sink):

- the **folder** turns stored detection events into alerts; an opening alert climbs its first
  rung and queues its deliveries in the same transaction;
- the **escalator** climbs later rungs when an alert's persisted timer runs out;
- one **delivery worker** per configured channel sends the outbox (webhook to the 12349
  dispatch centre, SMS and voice calls, e-mail, MQTT);
- the **API** (FastAPI under uvicorn) lets the dispatch platform and duty staff claim, resolve
  and annotate alerts; the **duty console** (issue #6, ``console/``) is served by the same
  server: its page, the staff login, the live change stream, devices and evidence.

Committed work wakes the component that must act on it (``AlertStore.wake``), so an SOS goes
from its event to the webhook without polling delays. Start order is consumers first (workers,
escalator, folder, API); stop order is the reverse, so whatever the folder folds while stopping
is still queued durably in the outbox for the next run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from fastapi import FastAPI

from alerts.api import create_app, require_principal
from alerts.auth import TokenTable, load_tokens
from alerts.channels.aliyun import AliyunSms, AliyunVoice
from alerts.channels.base import Channel, Message
from alerts.channels.email import EmailChannel
from alerts.channels.mqtt import MqttAlertChannel, channel_address
from alerts.channels.webhook import WebhookChannel
from alerts.delivery import DeliveryWorker
from alerts.emergency import EmergencyDispatcher
from alerts.escalator import Escalator
from alerts.folder import AlertFolder
from alerts.outbox import Queued, Routing
from alerts.policy import load_policy
from alerts.probes import ReadinessChecks
from alerts.store import AlertStore
from console.accounts import AccountStore
from console.app import mount_console
from console.devices import devices_router
from console.evidence import evidence_router
from console.live import ChangeFeed
from console.stream import stream_router
from detectors.events import Event
from eldercare.config import Config
from foundation.clock import Clock
from foundation.http_server import HttpServer
from foundation.supervisor import Death, Spawn, plain_spawn

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
        channels.append(MqttAlertChannel(
            channel_address(config.mqtt, a.mqtt),
            client_id=a.mqtt.client_id or f"{config.mqtt.client_id}-alerts"))
    return channels


class AlertService:
    """Owns the alert components; see the module docstring."""

    def __init__(self, config: Config, *, clock: Clock,
                 channels: Sequence[Channel] | None = None,
                 tokens: TokenTable | None = None, spawn: Spawn = plain_spawn,
                 liveness: Callable[[], Sequence[Death]] | None = None,
                 readiness: ReadinessChecks | None = None) -> None:
        a = config.alerts
        self.liveness = liveness
        self.readiness = readiness
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
        self.escalator = Escalator(store=self.store, clock=clock, poll_s=a.poll_s, spawn=spawn)
        # MQTT carries retained *states*: one sender keeps them in queue order.
        self.workers = {c.name: DeliveryWorker(
            channel=c, store=self.store, clock=clock, poll_s=a.poll_s, lease_s=LEASE_S,
            concurrency=1 if c.name == "mqtt" else a.delivery_concurrency,
            on_given_up=self.escalator.wakeup, spawn=spawn) for c in self.channels}
        self.folder = AlertFolder(store=self.store, clock=clock, poll_s=a.poll_s, spawn=spawn)
        webhook = next((c for c in self.channels if c.name == "webhook"), None)
        self.emergency: EmergencyDispatcher | None = None
        if config.spool.enabled and config.spool.provisional_alerts and webhook and a.webhook.url:
            self.emergency = EmergencyDispatcher(channel=webhook, url=a.webhook.url,
                                                 clock=clock, map_link=a.map_link or None,
                                                 spawn=spawn)
        self.api: HttpServer | None = None
        self.accounts: AccountStore | None = None
        self.feed: ChangeFeed | None = None
        if config.api.enabled:
            self.api = HttpServer(self._app(config, clock, tokens), host=config.api.host,
                                  port=config.api.port)
        missing = {"webhook", "sms"} - {c.name for c in self.channels}
        if missing:
            log.warning("alert channels not configured: %s (notifications to them are audited"
                        " as undeliverable)", ", ".join(sorted(missing)))

    def _app(self, config: Config, clock: Clock, tokens: TokenTable | None) -> FastAPI:
        """The HTTP API, and the duty console on it when enabled (issue #6)."""
        url, c = config.database.url, config.console
        table = tokens if tokens is not None else (
            load_tokens(config.api.tokens_file) if config.api.tokens_file else TokenTable())
        if c.enabled:
            self.accounts = AccountStore(url, session_lifetime_s=round(c.session_hours * 3600),
                                         idle_timeout_s=round(c.idle_minutes * 60))
        app = create_app(store=self.store, database_url=url, tokens=table, clock=clock,
                         on_change=lambda _id: self.escalator.wake(), accounts=self.accounts,
                         secure_cookies=c.secure_cookies, login_limits=c.login_limits,
                         liveness=self.liveness, readiness=self.readiness)
        if c.enabled:
            self.feed = ChangeFeed(url)
            app.include_router(stream_router(self.feed, require_principal))
            app.include_router(devices_router(url, require_principal,
                                              offline_after_s=dict(config.detectors.supervision
                                                                   .offline_after_s)))
            app.include_router(evidence_router(url, require_principal))
            mount_console(app, tile_url=c.tile_url)
        return app

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
        if self.emergency is not None:
            self.emergency.start()
        for w in self.workers.values():
            w.start()
        self.escalator.start()
        self.folder.start()
        if self.api is not None:
            self.api.start()
            log.info("alerts API on http://%s:%d/api/v1", self.api.host, self.api.port)

    def stop(self) -> None:
        if self.feed is not None:
            self.feed.end_streams()  # open console streams would hold the server's shutdown
        if self.api is not None:
            self.api.stop()
        self.folder.stop()
        self.escalator.stop()
        if self.emergency is not None:
            self.emergency.stop()  # first: it shares the webhook channel, which its worker closes
        for w in self.workers.values():
            w.stop()
        self.store.close()
        if self.accounts is not None:
            self.accounts.close()
