"""The alert service's configuration sections: ``[alerts]`` (with its channel sub-tables)
and ``[api]`` (the HTTP API the dispatch platform and the console use)."""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta

from alerts.channels.aliyun import AliyunConfig
from alerts.channels.email import SmtpConfig
from alerts.channels.mqtt import AlertsMqttConfig
from alerts.channels.webhook import WebhookConfig
from alerts.document import DEFAULT_MAP_LINK
from schemas.commands import PHONE_PATTERN


class DeviceCommandsConfig(msgspec.Struct, frozen=True, kw_only=True,
                           forbid_unknown_fields=True):
    """``[alerts.commands]`` (docs/alerts.md, "Commands to devices")."""

    enabled: bool = True
    #: The number a watch dials on "call the watch": the dispatch centre's line. Unset, the
    #: console asks the officer for one.
    callback_number: Annotated[str, Meta(pattern=PHONE_PATTERN)] | None = None
    #: After this long without any result, a command is shown as not answered. Longer than the
    #: gateways' ``wait_s`` (600 s), which is how long they hold a command for a device that is
    #: not connected before they report it failed.
    result_timeout_s: Annotated[float, Meta(gt=0, le=86_400)] = 660.0
    #: How long a request waits for the broker to take the command.
    publish_timeout_s: Annotated[float, Meta(gt=0, le=60)] = 5.0


class AlertsConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Alerts (issue #5; docs/alerts.md): folding, routing, escalation and delivery.

    Channel sections: ``[alerts.webhook]`` (the 12349 dispatch platform), ``[alerts.aliyun]``
    (SMS, and voice calls when ``voice_templates`` are set), ``[alerts.smtp]`` (e-mail). A
    channel without its section is not configured, and messages for it are audited as
    undeliverable.
    """

    enabled: bool = True
    #: Folder, escalator and delivery workers are woken at once by new work; this poll
    #: catches up after a failure and with work queued by another process.
    poll_s: Annotated[float, Meta(gt=0, le=60)] = 1.0
    #: Routing and escalation policy (docs/alerts.md); the built-in default when unset.
    policy_file: str | None = None
    #: Map link in messages ({lat}, {lon}: WGS-84); "" for none.
    map_link: str = DEFAULT_MAP_LINK
    #: Region for phone numbers written without a country code (ISO 3166 code).
    phone_region: str = "CN"
    #: Concurrent sends per channel.
    delivery_concurrency: Annotated[int, Meta(ge=1, le=64)] = 4
    #: Publish alert states on ``eldercare/v1/<region>/alerts/<id>`` (retained) on the broker.
    mqtt_publish: bool = True
    mqtt: AlertsMqttConfig = AlertsMqttConfig()
    webhook: WebhookConfig = WebhookConfig()
    aliyun: AliyunConfig | None = None
    smtp: SmtpConfig | None = None
    #: Commands to an alert's device through the device gateway (``[alerts.commands]``).
    commands: DeviceCommandsConfig = DeviceCommandsConfig()


class ApiConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The HTTP API (issue #5; docs/api.md): alerts for the dispatch platform and the console."""

    enabled: bool = True
    host: str = "127.0.0.1"
    #: 0 picks a free port (tests, demo); the bound port is logged.
    port: Annotated[int, Meta(ge=0, le=65535)] = 8080
    #: API tokens file (docs/api.md); without one, every request but /health is refused.
    tokens_file: str | None = None
