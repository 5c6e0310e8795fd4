"""The Aliyun SMS and voice channels against a local stand-in for dysmsapi/dyvmsapi.

The stand-in, :class:`tests.aliyun_fake.FakeAliyun`, verifies every request's signature with
its own implementation of the documented algorithm and can be told to fail (see its module).
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest

from alerts.channels.aliyun import (
    AliyunConfig,
    AliyunSms,
    AliyunVoice,
    out_id,
    percent_encode,
    provider_number,
    signature,
    string_to_sign,
)
from alerts.channels.base import Channel, DeliveryFailed, Message
from foundation.ports import free_port
from tests.aliyun_fake import BEIJING, KEY_ID, SECRET, FakeAliyun, expected_signature

# 2026-03-02 10:00 in Beijing.
NOON_ISH = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)
LINK = "https://uri.amap.com/marker?position=122.1,37.5"


class FixedClock:
    def __init__(self, when: datetime) -> None:
        self.ms = int(when.timestamp() * 1000)

    def now_ms(self) -> int:
        return self.ms


def config(aliyun: FakeAliyun, **overrides: Any) -> AliyunConfig:
    values: dict[str, Any] = {
        "access_key_id": KEY_ID, "access_key_secret": SECRET, "sign_name": "颐养平安",
        "sms_templates": {"sos": "SMS_SOS", "default": "SMS_DEFAULT", "grouped": "SMS_GROUP"},
        "voice_templates": {"default": "TTS_ALARM"}, "called_show_number": "057112345678",
        "sms_endpoint": aliyun.url, "voice_endpoint": aliyun.url, "timeout_s": 2.0,
    }
    values.update(overrides)
    return AliyunConfig(**values)


def message(*, attempt: int = 1, address: str = "+8613900000000", kind: str = "sos",
            key: str = "alert-7:sms:family:1") -> Message:
    body = {"event": "alert.opened", "alert": {
        "id": 7, "type": kind, "priority": 1, "severity": "critical", "status": "open",
        "region": "371002", "wearer": {"id": "W-1", "name": "张秀英"}, "device_id": "WT-1",
        "first_ts": "2026-03-02T01:58:00Z", "last_ts": "2026-03-02T01:58:00Z",
        "position": {"lat": 37.5, "lon": 122.1}, "map_link": LINK, "event_count": 1}}
    return Message(delivery_id=41, alert_id=7, channel="sms", recipient="family:1",
                   address=address, language="zh", idempotency_key=key, attempt=attempt,
                   body=body)


def sms(aliyun: FakeAliyun, when: datetime = NOON_ISH, **overrides: Any) -> AliyunSms:
    channel = AliyunSms(config(aliyun, **overrides), clock=FixedClock(when))
    aliyun.channels.append(channel)
    return channel


def voice(aliyun: FakeAliyun, **overrides: Any) -> AliyunVoice:
    channel = AliyunVoice(config(aliyun, **overrides), clock=FixedClock(NOON_ISH))
    aliyun.channels.append(channel)
    return channel


# --- signing ---------------------------------------------------------------------------------

DOC_PARAMS = {  # the worked example of Aliyun's SMS signing guide (help.aliyun.com 101343)
    "AccessKeyId": "testId", "Action": "SendSms", "Format": "XML", "OutId": "123",
    "PhoneNumbers": "15300000001", "RegionId": "cn-hangzhou", "SignName": "阿里云短信测试专用",
    "SignatureMethod": "HMAC-SHA1", "SignatureNonce": "45e25e9b-0a6f-4070-8c85-2956eda1b466",
    "SignatureVersion": "1.0", "TemplateCode": "SMS_71390007",
    "TemplateParam": '{"customer":"test"}', "Timestamp": "2017-07-12T02:42:19Z",
    "Version": "2017-05-25",
}


def test_signature_matches_the_documented_example() -> None:
    assert string_to_sign("GET", DOC_PARAMS).startswith(
        "GET&%2F&AccessKeyId%3DtestId%26Action%3DSendSms%26Format%3DXML%26OutId%3D123%26"
        "PhoneNumbers%3D15300000001%26RegionId%3Dcn-hangzhou%26SignName%3D%25E9%2598%25BF")
    assert string_to_sign("GET", DOC_PARAMS).endswith(
        "TemplateParam%3D%257B%2522customer%2522%253A%2522test%2522%257D%26"
        "Timestamp%3D2017-07-12T02%253A42%253A19Z%26Version%3D2017-05-25")
    assert signature("GET", DOC_PARAMS, "testSecret") == "zJDF+Lrzhj/ThnlvIToysFRq6t4="
    # ... and the test server's own implementation agrees with the guide too.
    assert expected_signature("GET", DOC_PARAMS, "testSecret") == "zJDF+Lrzhj/ThnlvIToysFRq6t4="


@pytest.mark.parametrize(("raw", "encoded"), [
    ("a b", "a%20b"), ("a*b", "a%2Ab"), ("a~b-_.", "a~b-_."), ("a+b", "a%2Bb"), ("/", "%2F"),
    ("阿", "%E9%98%BF"), ('{"k":1}', "%7B%22k%22%3A1%7D"),
])
def test_percent_encoding_follows_rfc3986(raw: str, encoded: str) -> None:
    assert percent_encode(raw) == encoded


def test_wrong_secret_is_refused_and_permanent(aliyun: FakeAliyun) -> None:
    channel = sms(aliyun, access_key_secret="not-the-secret")
    with pytest.raises(DeliveryFailed) as failed:
        channel.send(message())
    assert not failed.value.retryable and "SignatureDoesNotMatch" in failed.value.reason
    assert aliyun.rejected == ["signature"] and aliyun.sms == []


# --- SendSms ---------------------------------------------------------------------------------

def test_sms_is_sent_signed_with_template_and_params(aliyun: FakeAliyun) -> None:
    channel: Channel = sms(aliyun)
    receipt = channel.send(message())
    assert aliyun.rejected == []
    (request,) = aliyun.calls("SendSms")
    assert receipt.provider_id == "9006191^0"
    assert receipt.detail == {"code": "OK", "request_id": "F655A8D5-B967-440B"}
    assert request["PhoneNumbers"] == "13900000000"  # mainland: no +86
    assert request["SignName"] == "颐养平安" and request["TemplateCode"] == "SMS_SOS"
    assert request["OutId"] == "alert-7:sms:family:1"
    assert request["Timestamp"] == "2026-03-02T02:00:00Z"
    assert json.loads(request["TemplateParam"]) == {
        "name": "张秀英", "type": "SOS求助", "time": "03-02 09:58", "link": LINK}
    assert aliyun.calls("QuerySendDetails") == []  # a first attempt does not look for earlier ones


def test_types_without_their_own_template_use_default(aliyun: FakeAliyun) -> None:
    sms(aliyun).send(message(kind="low_battery"))
    assert aliyun.calls("SendSms")[0]["TemplateCode"] == "SMS_DEFAULT"


def test_no_template_at_all_is_permanent_and_sends_nothing(aliyun: FakeAliyun) -> None:
    with pytest.raises(DeliveryFailed) as failed:
        sms(aliyun, sms_templates={"sos": "SMS_SOS"}).send(message(kind="fall"))
    assert not failed.value.retryable and aliyun.requests == []


@pytest.mark.parametrize(("behaviour", "retryable"), [
    ("500", True), ("html_502", True), ("throttle", True), ("throttling_user", True),
    ("invalid_number", False), ("bad_template", False),
])
def test_refusals_map_to_retryable_or_permanent(aliyun: FakeAliyun, behaviour: str,
                                                retryable: bool) -> None:
    aliyun.plan["SendSms"] = [behaviour]
    with pytest.raises(DeliveryFailed) as failed:
        sms(aliyun).send(message())
    assert failed.value.retryable is retryable, failed.value.reason
    assert aliyun.rejected == [] and aliyun.sms == []


def test_unknown_credentials_are_permanent(aliyun: FakeAliyun) -> None:
    with pytest.raises(DeliveryFailed) as failed:
        sms(aliyun, access_key_id="someone-else").send(message())
    assert not failed.value.retryable and "InvalidAccessKeyId" in failed.value.reason


def test_timeout_is_retryable_and_bounded(aliyun: FakeAliyun) -> None:
    aliyun.plan["SendSms"] = ["hang"]
    started = time.monotonic()
    with pytest.raises(DeliveryFailed) as failed:
        sms(aliyun, timeout_s=0.3).send(message())
    assert failed.value.retryable and "timed out" in failed.value.reason
    assert time.monotonic() - started < 2.0


def test_connection_refused_is_retryable() -> None:
    url = f"http://127.0.0.1:{free_port()}/"
    channel = AliyunSms(AliyunConfig(access_key_id=KEY_ID, access_key_secret=SECRET,
                                     sign_name="s", sms_templates={"default": "SMS_1"},
                                     sms_endpoint=url), clock=FixedClock(NOON_ISH))
    with pytest.raises(DeliveryFailed) as failed:
        channel.send(message())
    channel.close()
    assert failed.value.retryable


# --- retries: QuerySendDetails before sending again -------------------------------------------

def test_retry_after_unknown_outcome_does_not_send_twice(aliyun: FakeAliyun) -> None:
    aliyun.plan["SendSms"] = ["accept_then_hang"]  # Aliyun took it, the reply never came
    with pytest.raises(DeliveryFailed) as failed:
        sms(aliyun, timeout_s=0.3).send(message(attempt=1))
    assert failed.value.retryable
    receipt = sms(aliyun).send(message(attempt=2))
    assert len(aliyun.sms) == 1 and len(aliyun.calls("SendSms")) == 1
    assert receipt.detail["deduplicated"] is True and receipt.detail["send_date"] == "20260302"
    (query,) = aliyun.calls("QuerySendDetails")
    assert query["PhoneNumber"] == "13900000000" and query["SendDate"] == "20260302"
    assert query["CurrentPage"] == "1" and query["PageSize"] == "50"


def test_retry_sends_when_the_earlier_attempt_never_arrived(aliyun: FakeAliyun) -> None:
    aliyun.plan["SendSms"] = ["hang"]  # lost before Aliyun recorded it
    with pytest.raises(DeliveryFailed):
        sms(aliyun, timeout_s=0.3).send(message(attempt=1))
    aliyun.add_sms("13900000000", "some-other-message", NOON_ISH.astimezone(BEIJING))
    receipt = sms(aliyun).send(message(attempt=2))
    assert len(aliyun.calls("QuerySendDetails")) == 1 and len(aliyun.calls("SendSms")) == 2
    assert receipt.provider_id is not None and "deduplicated" not in receipt.detail
    assert [r["OutId"] for r in aliyun.sms] == ["some-other-message", "alert-7:sms:family:1"]


def test_retry_sends_anyway_when_the_query_fails(aliyun: FakeAliyun) -> None:
    aliyun.plan["QuerySendDetails"] = ["500"]
    receipt = sms(aliyun).send(message(attempt=3))
    assert len(aliyun.calls("QuerySendDetails")) == 1 and len(aliyun.sms) == 1
    assert receipt.provider_id == "9006191^0"


def test_retry_finds_the_earlier_send_on_a_later_page(aliyun: FakeAliyun) -> None:
    when = NOON_ISH.astimezone(BEIJING)
    for i in range(60):
        aliyun.add_sms("13900000000", f"other-{i}", when)
    aliyun.add_sms("13900000000", "alert-7:sms:family:1", when)
    receipt = sms(aliyun).send(message(attempt=2))
    assert receipt.detail["deduplicated"] is True and aliyun.calls("SendSms") == []
    assert [q["CurrentPage"] for q in aliyun.calls("QuerySendDetails")] == ["1", "2"]


def test_retry_just_after_midnight_also_checks_yesterday(aliyun: FakeAliyun) -> None:
    after_midnight = datetime(2026, 3, 3, 0, 20, tzinfo=BEIJING)
    aliyun.add_sms("13900000000", "alert-7:sms:family:1", after_midnight - timedelta(minutes=30))
    receipt = sms(aliyun, when=after_midnight).send(message(attempt=2))
    assert [q["SendDate"] for q in aliyun.calls("QuerySendDetails")] == ["20260303", "20260302"]
    assert receipt.detail["send_date"] == "20260302" and aliyun.calls("SendSms") == []


def test_long_idempotency_keys_become_stable_short_out_ids(aliyun: FakeAliyun) -> None:
    key = "alert-7:voice:" + "x" * 300
    assert out_id(key, 15) == out_id(key, 15) and len(out_id(key, 15)) == 15
    assert len(out_id(key, 255)) <= 255 and out_id("短", 255) != "短"  # ASCII only
    assert out_id("alert-7:sms:1", 255) == "alert-7:sms:1"
    sms(aliyun).send(message(key=key))
    assert aliyun.calls("SendSms")[0]["OutId"] == out_id(key, 255)


# --- phone numbers ---------------------------------------------------------------------------

@pytest.mark.parametrize(("address", "sent"), [
    ("+8613900000000", "13900000000"), ("13900000000", "13900000000"),
    ("+86 139-0000-0000", "13900000000"), ("008613900000000", "13900000000"),
    ("+861065529988", "01065529988"),   # Beijing fixed line keeps its trunk 0
    ("+85291234567", "85291234567"),    # Hong Kong: country code + number, no +
    ("+12025550123", "12025550123"),
])
def test_numbers_are_normalised_for_aliyun(address: str, sent: str) -> None:
    assert provider_number(address) == sent


@pytest.mark.parametrize("address", ["12345", "not a number", "+86139000000001", ""])
def test_invalid_numbers_are_permanent_and_not_sent(aliyun: FakeAliyun, address: str) -> None:
    with pytest.raises(DeliveryFailed) as failed:
        sms(aliyun).send(message(address=address))
    assert not failed.value.retryable and aliyun.requests == []
    assert address not in failed.value.reason or not address


def test_sms_to_hong_kong_uses_country_code(aliyun: FakeAliyun) -> None:
    sms(aliyun).send(message(address="+85291234567"))
    assert aliyun.calls("SendSms")[0]["PhoneNumbers"] == "85291234567"


# --- voice -----------------------------------------------------------------------------------

def test_voice_call(aliyun: FakeAliyun) -> None:
    channel: Channel = voice(aliyun)
    assert channel.name == "voice"
    receipt = channel.send(message(address="+86 139 0000 0000", key="k" * 40))
    (call,) = aliyun.calls("SingleCallByTts")
    assert aliyun.rejected == []
    assert receipt.provider_id == "116012354148^102814" and receipt.detail["code"] == "OK"
    assert call["CalledNumber"] == "13900000000" and call["TtsCode"] == "TTS_ALARM"
    assert call["CalledShowNumber"] == "057112345678"
    assert json.loads(call["TtsParam"]) == {"name": "张秀英", "type": "SOS求助",
                                            "time": "03-02 09:58"}  # no link read aloud
    assert len(call["OutId"].encode()) <= 15


def test_voice_to_a_fixed_line_and_without_caller_number(aliyun: FakeAliyun) -> None:
    voice(aliyun, called_show_number=None).send(message(address="+861065529988"))
    (call,) = aliyun.calls("SingleCallByTts")
    assert call["CalledNumber"] == "01065529988" and "CalledShowNumber" not in call


def test_voice_outside_mainland_is_permanent(aliyun: FakeAliyun) -> None:
    with pytest.raises(DeliveryFailed) as failed:
        voice(aliyun).send(message(address="+85291234567"))
    assert not failed.value.retryable and aliyun.requests == []


@pytest.mark.parametrize(("behaviour", "retryable"), [("throttle", True), ("500", True),
                                                      ("invalid_number", False)])
def test_voice_failures(aliyun: FakeAliyun, behaviour: str, retryable: bool) -> None:
    aliyun.plan["SingleCallByTts"] = [behaviour]
    with pytest.raises(DeliveryFailed) as failed:
        voice(aliyun).send(message())
    assert failed.value.retryable is retryable


# --- configuration ---------------------------------------------------------------------------

def test_config_is_decoded_strictly_and_hides_its_secret() -> None:
    raw = {"access_key_id": "id", "access_key_secret": "s3cret", "sign_name": "颐养平安",
           "sms_templates": {"default": "SMS_1"}}
    cfg = msgspec.convert(raw, AliyunConfig)
    assert cfg.region_id == "cn-hangzhou" and cfg.timeout_s == 5.0
    assert cfg.sms_endpoint == "https://dysmsapi.aliyuncs.com/"
    assert cfg.voice_endpoint == "https://dyvmsapi.aliyuncs.com/"
    assert "s3cret" not in repr(cfg)
    with pytest.raises(msgspec.ValidationError, match="unknown field"):
        msgspec.convert({**raw, "acess_key": "typo"}, AliyunConfig)
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({**raw, "timeout_s": 0}, AliyunConfig)
    with pytest.raises(msgspec.ValidationError, match="http"):
        msgspec.convert({**raw, "sms_endpoint": "dysmsapi.aliyuncs.com"}, AliyunConfig)
