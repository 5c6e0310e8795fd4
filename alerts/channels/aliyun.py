"""Aliyun (Alibaba Cloud) SMS and voice-call channels: ``SendSms`` and ``SingleCallByTts``.

Both products speak Aliyun's RPC style (API version 2017-05-25): every parameter, the common
ones (AccessKeyId, Action, Format=JSON, RegionId, SignatureMethod=HMAC-SHA1, SignatureNonce,
SignatureVersion=1.0, Timestamp, Version) and the action's own, is signed with signature
version 1.0 and sent in one request. :class:`_RpcClient` is that shared signer and transport;
:func:`signature` and :func:`percent_encode` are the pure signing rules, public so tests can
check them against the documented example.

Signing (Aliyun's "签名机制" for RPC APIs): sort the parameters by name, percent-encode names
and values as UTF-8 per RFC 3986 (only ``A-Z a-z 0-9 - _ . ~`` stay as they are, space is
``%20``), join them as ``k=v`` with ``&``; the string to sign is
``METHOD & percent_encode("/") & percent_encode(that query)``; the signature is
``Base64(HMAC-SHA1(secret + "&", string))``. We POST the parameters as a form body rather than
a GET query (the method is the only difference in the string to sign), so phone numbers never
appear in a URL (httpx logs URLs at INFO level).

Providers only send pre-approved templates: the message text is the template (one code per
alert type, see :class:`AliyunConfig`) filled with ``render(...).params``. Numbers are
normalised with ``phonenumbers`` (default region CN): mainland numbers are sent without +86
(mobiles as 11 digits, fixed lines with their leading 0), others as country code + number
without "+", as Aliyun's API reference asks.

Retries and duplicates: ``SendSms`` is not idempotent (Aliyun says so and asks callers to
deduplicate). When ``Message.attempt > 1`` the previous attempt may have gone through (a
timeout hides the outcome), so we first ask ``QuerySendDetails`` for today's records to that
number (and yesterday's, just after midnight) and, if one carries our ``OutId`` (derived from
the idempotency key), return its receipt instead of sending again, whatever its carrier status
(kept in the receipt), as a first attempt that got its reply would have. If that query fails
we send anyway: a duplicate alarm SMS is better than none. The check gets half of
``timeout_s``, the send the rest, so one ``send()`` waits about ``timeout_s`` at most (httpx
applies the time left to each connect, write and read step).
Voice calls are not deduplicated: after an unknown outcome there is no ``CallId`` to look up,
and a second call is an acceptable cost.

Failures become :class:`DeliveryFailed`: throttling, ``isv.BUSINESS_LIMIT_CONTROL``, Aliyun's
system errors, HTTP 5xx/408/429, timeouts and connection errors are retryable; anything else
Aliyun rejects (invalid number, template, signature or credentials) is permanent, so the
outbox escalates at once. Logs name delivery ids, never numbers or names.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
import time
import urllib.parse
import uuid
import zoneinfo
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Final

import httpx
import msgspec
import phonenumbers

from alerts.channels.base import DeliveryFailed, Message, Receipt
from alerts.templates import render
from foundation.clock import Clock, SystemClock

log = logging.getLogger(__name__)

API_VERSION: Final = "2017-05-25"
SMS_ENDPOINT: Final = "https://dysmsapi.aliyuncs.com/"
VOICE_ENDPOINT: Final = "https://dyvmsapi.aliyuncs.com/"
#: OutId limits: SendSms takes a string shorter than 256 characters, SingleCallByTts 1-15 bytes.
SMS_OUT_ID_MAX: Final = 255
VOICE_OUT_ID_MAX: Final = 15
#: QuerySendDetails paging: at most 50 records a page; we look at no more than 4 pages (200
#: messages to one number in one day), which bounds the time a retry spends checking.
QUERY_PAGE_SIZE: Final = 50
QUERY_MAX_PAGES: Final = 4
#: SendDate is a Beijing date; in the first hours of a day the earlier attempt may be
#: yesterday's.
PROVIDER_TZ: Final = zoneinfo.ZoneInfo("Asia/Shanghai")
YESTERDAY_HOURS: Final = 2
#: Aliyun codes that mean "not now" rather than "never".
RETRYABLE_CODES: Final = frozenset({
    "isv.BUSINESS_LIMIT_CONTROL", "isp.SYSTEM_ERROR", "isp.GATEWAY_ERROR", "ServiceUnavailable",
    "InternalError", "SignatureNonceUsed",
})

NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]


class AliyunConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Configuration of the Aliyun SMS and voice channels (decoded once, at start-up).

    ``sms_templates`` / ``voice_templates`` map an alert type (``sos``, ``fall``, ...; ``grouped``
    for grouped low-priority notices) to an approved SMS TemplateCode / TTS template code; the
    ``default`` key is used for types without their own. ``called_show_number`` is the caller
    number voice calls show (omit it for Aliyun's public number pool).
    """

    access_key_id: NonEmpty
    access_key_secret: NonEmpty
    sign_name: NonEmpty
    sms_templates: dict[str, str] = {}
    sms_endpoint: str = SMS_ENDPOINT
    voice_endpoint: str = VOICE_ENDPOINT
    voice_templates: dict[str, str] = {}
    called_show_number: str | None = None
    region_id: str = "cn-hangzhou"
    timeout_s: Annotated[float, msgspec.Meta(gt=0, le=60)] = 5.0

    def __post_init__(self) -> None:
        for url in (self.sms_endpoint, self.voice_endpoint):
            if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
                raise ValueError(f"Aliyun endpoint must be an http(s) URL, got {url!r}")

    def __repr__(self) -> str:  # the secret must never reach a log line
        return (f"AliyunConfig(access_key_id={self.access_key_id!r}, sign_name="
                f"{self.sign_name!r}, sms_endpoint={self.sms_endpoint!r}, ...)")


# Response documents: only the fields we read; unknown fields (HostId, Recommend) are ignored.
class _Detail(msgspec.Struct):
    out_id: str | None = msgspec.field(name="OutId", default=None)
    send_status: int | None = msgspec.field(name="SendStatus", default=None)
    err_code: str | None = msgspec.field(name="ErrCode", default=None)


class _Details(msgspec.Struct):
    records: list[_Detail] = msgspec.field(name="SmsSendDetailDTO", default_factory=list)


class _Reply(msgspec.Struct):
    code: str = msgspec.field(name="Code", default="")
    message: str = msgspec.field(name="Message", default="")
    request_id: str = msgspec.field(name="RequestId", default="")
    biz_id: str | None = msgspec.field(name="BizId", default=None)
    call_id: str | None = msgspec.field(name="CallId", default=None)
    total_count: int | str = msgspec.field(name="TotalCount", default=0)
    details: _Details | None = msgspec.field(name="SmsSendDetailDTOs", default=None)


_REPLY: Final = msgspec.json.Decoder(_Reply)


def percent_encode(value: str) -> str:
    """RFC 3986 encoding of ``value``'s UTF-8 bytes, as Aliyun's signature 1.0 requires."""
    return urllib.parse.quote(value, safe="~")


def string_to_sign(method: str, params: Mapping[str, str]) -> str:
    """``METHOD&%2F&`` + the percent-encoded canonical query (names sorted, each name and
    value percent-encoded, joined as ``k=v&...``)."""
    query = "&".join(f"{percent_encode(k)}={percent_encode(v)}" for k, v in sorted(params.items()))
    return f"{method}&{percent_encode('/')}&{percent_encode(query)}"


def signature(method: str, params: Mapping[str, str], secret: str) -> str:
    """Base64(HMAC-SHA1(secret + "&", string_to_sign)) over ``params`` (without Signature)."""
    digest = hmac.new(f"{secret}&".encode(), string_to_sign(method, params).encode(),
                      hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def provider_number(address: str, *, mainland_only: bool = False) -> str:
    """``address`` as Aliyun wants it: mainland numbers without +86, others as country code +
    number. Raises a permanent :class:`DeliveryFailed` for anything that is not a valid number
    (the reason never repeats the number)."""
    try:
        number = phonenumbers.parse(address, "CN")
    except phonenumbers.NumberParseException as exc:
        raise DeliveryFailed("address is not a phone number", retryable=False) from exc
    if not phonenumbers.is_valid_number(number):
        raise DeliveryFailed("invalid phone number", retryable=False)
    if phonenumbers.region_code_for_number(number) == "CN":
        # National format keeps a fixed line's trunk 0 (010...), which the voice API expects.
        national = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL)
        return re.sub(r"\D", "", national)
    if mainland_only:
        raise DeliveryFailed("Aliyun voice calls reach mainland China numbers only",
                             retryable=False)
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)[1:]


def out_id(idempotency_key: str, limit: int) -> str:
    """The OutId for a message: its idempotency key, or a hash of it when the key is longer
    than Aliyun allows or not plain ASCII. Stable across attempts, which is all that matters."""
    if 0 < len(idempotency_key) <= limit and idempotency_key.isascii():
        return idempotency_key
    return hashlib.sha256(idempotency_key.encode()).hexdigest()[:limit]


def template_key(body: Mapping[str, Any]) -> str:
    """Which template a body uses: ``grouped`` for grouped notices, else its alert type."""
    if body.get("event") == "alert.grouped":
        return "grouped"
    alert = body.get("alert")
    return str(alert.get("type", "")) if isinstance(alert, dict) else ""


def _template_code(templates: Mapping[str, str], body: Mapping[str, Any], what: str) -> str:
    key = template_key(body)
    code = templates.get(key) or templates.get("default")
    if not code:
        raise DeliveryFailed(f"no {what} template for {key!r} and no 'default'", retryable=False)
    return code


def _retryable(status: int, code: str) -> bool:
    """Whether a refused call may succeed later (see the module docstring)."""
    if code in RETRYABLE_CODES or code.startswith("Throttling"):
        return True
    if status >= 500 or status in (408, 429):
        return True
    if status >= 400:
        return False
    return not code  # a 2xx without Aliyun's verdict: the outcome is unknown


class _RpcClient:
    """Signed RPC calls to one Aliyun endpoint over one pooled httpx client."""

    def __init__(self, config: AliyunConfig, endpoint: str, clock: Clock) -> None:
        self._config = config
        self._endpoint = endpoint
        self._clock = clock
        # trust_env=False: no proxy settings picked up from the environment behind our back.
        self._http = httpx.Client(timeout=config.timeout_s, trust_env=False)

    def signed(self, action: str, params: Mapping[str, str]) -> dict[str, str]:
        """``params`` plus the common parameters and their Signature."""
        now = datetime.fromtimestamp(self._clock.now_ms() / 1000, UTC)
        full = {
            "AccessKeyId": self._config.access_key_id, "Action": action, "Format": "JSON",
            "RegionId": self._config.region_id, "SignatureMethod": "HMAC-SHA1",
            "SignatureNonce": uuid.uuid4().hex, "SignatureVersion": "1.0",
            "Timestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ"), "Version": API_VERSION, **params,
        }
        full["Signature"] = signature("POST", full, self._config.access_key_secret)
        return full

    def call(self, action: str, params: Mapping[str, str], *, deadline: float) -> _Reply:
        """Call ``action``; returns the reply when Aliyun answers ``OK``, else raises
        :class:`DeliveryFailed`. Waits no later than ``deadline`` (``time.monotonic()``)."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise DeliveryFailed(f"{action}: no time left", retryable=True)
        try:
            response = self._http.post(self._endpoint, data=self.signed(action, params),
                                       timeout=remaining)
        except httpx.TimeoutException as exc:
            raise DeliveryFailed(f"{action}: timed out ({type(exc).__name__})",
                                 retryable=True) from exc
        except httpx.TransportError as exc:
            raise DeliveryFailed(f"{action}: {type(exc).__name__}: {exc}", retryable=True) from exc
        try:
            reply: _Reply | None = _REPLY.decode(response.content)
        except msgspec.DecodeError:
            reply = None
        if response.status_code == 200 and reply is not None and reply.code == "OK":
            return reply
        code = reply.code if reply is not None else ""
        detail = f"{code}: {reply.message[:200]}" if reply is not None and code else "no code"
        raise DeliveryFailed(f"{action}: HTTP {response.status_code}, {detail}",
                             retryable=_retryable(response.status_code, code))

    def close(self) -> None:
        self._http.close()


class AliyunSms:
    """SMS through Aliyun ``SendSms``; see the module docstring for retries and duplicates."""

    name = "sms"

    def __init__(self, config: AliyunConfig, *, clock: Clock | None = None) -> None:
        self._config = config
        self._clock = clock or SystemClock()
        self._rpc = _RpcClient(config, config.sms_endpoint, self._clock)

    def send(self, message: Message) -> Receipt:
        """Send ``message`` (or find that an earlier attempt already did)."""
        started = time.monotonic()
        number = provider_number(message.address)
        oid = out_id(message.idempotency_key, SMS_OUT_ID_MAX)
        if message.attempt > 1:
            # Half the budget for the check, so a slow query still leaves time to send.
            earlier = self._earlier(message.delivery_id, number, oid,
                                    deadline=started + self._config.timeout_s / 2)
            if earlier is not None:
                return earlier
        params = render(message.body, language=message.language).params
        reply = self._rpc.call("SendSms", {
            "PhoneNumbers": number, "SignName": self._config.sign_name,
            "TemplateCode": _template_code(self._config.sms_templates, message.body, "SMS"),
            "TemplateParam": msgspec.json.encode(params).decode(), "OutId": oid,
        }, deadline=started + self._config.timeout_s)
        log.debug("delivery %d: SendSms accepted, BizId %s", message.delivery_id, reply.biz_id)
        return Receipt(provider_id=reply.biz_id,
                       detail={"code": reply.code, "request_id": reply.request_id})

    def _earlier(self, delivery_id: int, number: str, oid: str, *,
                 deadline: float) -> Receipt | None:
        """The receipt of an earlier attempt Aliyun recorded, or None (also when the query
        fails: the caller then sends again, since a duplicate SMS is better than none)."""
        try:
            for day in self._send_dates():
                found = self._find(number, oid, day, deadline=deadline)
                if found is not None:
                    log.info("delivery %d: an earlier attempt was sent (%s), not sending again",
                             delivery_id, day)
                    return found
        except DeliveryFailed as exc:
            log.warning("delivery %d: could not check for an earlier send (%s); sending again",
                        delivery_id, exc.reason)
        return None

    def _send_dates(self) -> list[str]:
        now = datetime.fromtimestamp(self._clock.now_ms() / 1000, PROVIDER_TZ)
        days = [now] + ([now - timedelta(days=1)] if now.hour < YESTERDAY_HOURS else [])
        return [day.strftime("%Y%m%d") for day in days]

    def _find(self, number: str, oid: str, day: str, *, deadline: float) -> Receipt | None:
        """Page through ``QuerySendDetails`` for ``day`` looking for ``oid``."""
        for page in range(1, QUERY_MAX_PAGES + 1):
            reply = self._rpc.call("QuerySendDetails", {
                "PhoneNumber": number, "SendDate": day, "PageSize": str(QUERY_PAGE_SIZE),
                "CurrentPage": str(page)}, deadline=deadline)
            records = reply.details.records if reply.details is not None else []
            for record in records:
                if record.out_id == oid:
                    return Receipt(provider_id=None, detail={
                        "code": reply.code, "request_id": reply.request_id, "deduplicated": True,
                        "send_date": day, "send_status": record.send_status,
                        "err_code": record.err_code})
            total = int(reply.total_count) if str(reply.total_count).isdigit() else 0
            if len(records) < QUERY_PAGE_SIZE or page * QUERY_PAGE_SIZE >= total:
                break
        return None

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._rpc.close()


class AliyunVoice:
    """Voice calls through Aliyun ``SingleCallByTts`` (mainland China numbers only)."""

    name = "voice"

    def __init__(self, config: AliyunConfig, *, clock: Clock | None = None) -> None:
        self._config = config
        self._rpc = _RpcClient(config, config.voice_endpoint, clock or SystemClock())

    def send(self, message: Message) -> Receipt:
        """Place one call reading the TTS template filled with the alert's variables."""
        deadline = time.monotonic() + self._config.timeout_s
        number = provider_number(message.address, mainland_only=True)
        # No link: TTS variables may not carry URLs, and a URL read aloud helps nobody.
        params = {k: v for k, v in render(message.body, language=message.language).params.items()
                  if k != "link"}
        request = {
            "CalledNumber": number,
            "TtsCode": _template_code(self._config.voice_templates, message.body, "voice"),
            "TtsParam": msgspec.json.encode(params).decode(),
            "OutId": out_id(message.idempotency_key, VOICE_OUT_ID_MAX),
        }
        if self._config.called_show_number:
            request["CalledShowNumber"] = self._config.called_show_number
        reply = self._rpc.call("SingleCallByTts", request, deadline=deadline)
        log.debug("delivery %d: SingleCallByTts accepted, CallId %s", message.delivery_id,
                  reply.call_id)
        return Receipt(provider_id=reply.call_id,
                       detail={"code": reply.code, "request_id": reply.request_id})

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._rpc.close()
