"""Alert message texts: what happened, to whom, when (local time), where and what to do, per
language; grouped notices in one message; and a renderer that never raises on odd bodies."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from alerts.templates import Rendered, local_time, render

LINK = "https://uri.amap.com/marker?position=122.1,37.5"


def alert(**overrides: Any) -> dict[str, Any]:
    """An alert object as the outbox stores it (2026-03-02 02:00 UTC = 10:00 in Shanghai)."""
    doc: dict[str, Any] = {
        "id": 7, "type": "sos", "priority": 1, "severity": "critical", "status": "open",
        "region": "371002", "wearer": {"id": "W-1", "name": "张秀英"}, "device_id": "WT-1",
        "first_ts": "2026-03-02T02:00:00Z", "last_ts": "2026-03-02T02:03:00Z",
        "position": {"lat": 37.5, "lon": 122.1}, "map_link": LINK, "event_count": 1,
    }
    doc.update(overrides)
    return doc


def opened(**overrides: Any) -> dict[str, Any]:
    return {"event": "alert.opened", "alert": alert(**overrides)}


# The words the brief asks for, written out here rather than read from the module.
ZH_WORDS = {
    "sos": "SOS求助", "fall": "跌倒", "geofence_exit": "走失/离开安全区域",
    "home_alarm": "烟雾/燃气报警", "offline": "设备离线", "low_battery": "电量低",
    "device_removed": "手环被摘下", "heart_rate": "心率异常", "inactivity": "长时间无活动",
}


def test_opened_sos_in_chinese_says_what_who_when_where_and_what_to_do() -> None:
    r = render(opened(), language="zh")
    assert r.params == {"name": "张秀英", "type": "SOS求助", "time": "03-02 10:00", "link": LINK}
    for part in ("SOS求助", "张秀英", "03-02 10:00", LINK, "12349"):
        assert part in r.text
    assert r.text.endswith(LINK)  # nothing glued to the URL
    assert "张秀英" in r.subject and "SOS求助" in r.subject and "紧急" in r.subject


@pytest.mark.parametrize("kind", sorted(ZH_WORDS))
def test_every_alert_type_has_its_words_and_a_short_sms_text(kind: str) -> None:
    r = render(opened(type=kind), language="zh")
    assert r.params["type"] == ZH_WORDS[kind]
    assert ZH_WORDS[kind] in r.text
    # One SMS segment is 70 characters: the text without the link must fit in it.
    assert len(r.text.replace(LINK, "")) <= 70, r.text


def test_english_texts() -> None:
    r = render(opened(type="fall"), language="en")
    assert r.params["type"] == "Fall"
    assert r.text.startswith("Fall: 张秀英 (03-02 10:00).")
    assert "dial 120 or 12349" in r.text and r.text.endswith(LINK)
    assert r.subject.startswith("[URGENT]")


def test_unknown_language_falls_back_to_chinese() -> None:
    assert render(opened(), language="fr").params["type"] == "SOS求助"
    assert render(opened(), language="en-GB").params["type"] == "SOS call"


def test_unknown_type_shows_its_raw_name() -> None:
    r = render(opened(type="water_leak", priority=3), language="zh")
    assert r.params["type"] == "water_leak"
    assert "water_leak" in r.text and "12349" in r.text
    assert r.subject.startswith("[提醒]")


def test_time_is_local_to_the_alert_timezone() -> None:
    assert render(opened(), language="zh").params["time"] == "03-02 10:00"
    assert render(opened(timezone="Europe/London"), language="zh").params["time"] == "03-02 02:00"
    for bad in ("Mars/Olympus", "Asia", "", "x" * 300):  # unknown, a directory, too long
        assert render(opened(timezone=bad), language="zh").params["time"] == "03-02 10:00"
    assert local_time("2026-03-02T23:30:00+00:00") == "03-03 07:30"  # across midnight
    assert local_time("2026-03-02T02:00:00") == "03-02 10:00"  # naive: UTC
    assert local_time("yesterday") == "yesterday" and local_time(None) == ""
    assert local_time("0001-01-01T00:00:00+00:00", "Pacific/Kiritimati") != ""  # no overflow


def test_without_a_link_the_location_is_unknown_and_link_empty() -> None:
    r = render(opened(map_link=None, position=None), language="zh")
    assert r.params["link"] == "" and "位置：未知" in r.text


def test_alert_about_a_device_without_wearer_names_the_device() -> None:
    r = render(opened(wearer=None, device_id="WT-9"), language="zh")
    assert r.params["name"] == "设备WT-9"


def test_long_names_are_cut_in_params_but_not_in_text() -> None:
    name = "名" * 30
    r = render(opened(wearer={"id": "W-1", "name": name}), language="zh")
    assert r.params["name"] == "名" * 20 and name in r.text


def test_repeated_events_are_counted() -> None:
    assert "共3次" in render(opened(event_count=3), language="zh").text
    assert "共" not in render(opened(event_count=1), language="zh").text


@pytest.mark.parametrize(("event", "expected", "has_action"), [
    ("alert.escalated", "已升级至第2级", True),
    ("alert.acknowledged", "已有人认领处理", False),
    ("alert.claim_expired", "认领超时", True),
    ("alert.resolved", "已解除", False),
])
def test_lifecycle_steps(event: str, expected: str, has_action: bool) -> None:
    body = {"event": event, "alert": alert(), "escalation": {"step": 2, "cycle": 1,
                                                               "action": "notify"}}
    r = render(body, language="zh")
    assert expected in r.text and "张秀英" in r.text
    assert ("12349" in r.text) is has_action
    assert r.subject.split()[0] != "[紧急]"


def test_grouped_lists_every_alert_in_one_message() -> None:
    body = {"event": "alert.grouped", "alerts": [
        alert(id=1, type="low_battery", priority=4, map_link=None),
        alert(id=2, type="offline", priority=4, first_ts="2026-03-02T03:15:00Z"),
        alert(id=3, type="low_battery", priority=4, first_ts="2026-03-02T05:00:00Z",
              map_link=None),
    ]}
    r = render(body, language="zh")
    lines = r.text.splitlines()
    assert lines[0] == "张秀英有3条提醒："
    assert lines[1] == "1. 电量低 03-02 10:00"
    assert lines[2] == f"2. 设备离线 03-02 11:15 {LINK}"
    assert lines[3] == "3. 电量低 03-02 13:00"
    assert r.params["type"] == "电量低/设备离线" and r.params["name"] == "张秀英"
    assert "3" in r.subject and "张秀英" in r.subject


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                max_size=3),
    max_leaves=10,
)
bodies = st.fixed_dictionaries({}, optional={
    "event": st.sampled_from(["alert.opened", "alert.grouped", "alert.resolved", "bogus"]),
    "alert": json_values | st.builds(alert), "alerts": json_values | st.lists(st.builds(alert)),
    "escalation": json_values,
})
timezones = st.sampled_from(["Asia/Shanghai", "Asia", "", "UTC", "Nowhere/Else"]) | st.text()


@settings(max_examples=200, deadline=None)
@given(ts=st.text(max_size=40) | st.datetimes().map(lambda d: d.isoformat()), zone=timezones)
def test_local_time_never_raises(ts: str, zone: str) -> None:
    assert isinstance(local_time(ts, zone), str)


@settings(max_examples=300, deadline=None)
@given(body=bodies, language=st.sampled_from(["zh", "en", "", "xx"]))
@example(body={"event": "alert.grouped", "alerts": 1}, language="zh")  # found by CI
def test_render_never_raises(body: dict[str, Any], language: str) -> None:
    r = render(body, language=language)
    assert isinstance(r, Rendered) and r.text and r.subject
    assert set(r.params) == {"name", "type", "time", "link"}
    assert all(isinstance(v, str) for v in r.params.values())
