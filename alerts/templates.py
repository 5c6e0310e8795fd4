"""Message texts for alert notifications, per alert type and language (pure).

:func:`render` turns one alert document (the ``Message.body`` of ``alerts/channels/base.py``)
into a :class:`Rendered`: a subject line, a short plain text that says what happened, to whom,
when, where (the map link) and what to do, and ``params``, the four short template variables
(``name``, ``type``, ``time``, ``link``) that SMS and voice providers fill into their own
pre-approved templates (Aliyun sends no free text, only template codes plus variables).

Design:

* Pure and total: no I/O, no clock, no logging, and it never raises. The body comes from the
  outbox and is trusted to be JSON, but a missing or oddly typed field must still give a
  message, because an alarm text with a blank in it is better than no alarm at all. Unknown
  alert types show their raw type name; unknown languages fall back to Chinese.
* Times are shown in the wearer's time zone (``alert.timezone``, default Asia/Shanghai) as
  ``MM-DD HH:MM``: what a family member or the duty officer reads on a phone.
* Texts stay short (SMS length) and name no coordinates, only the map link the alert carries.
* ``alert.grouped`` bodies (low-priority alerts batched per wearer) list every alert in one
  message, so ten low-battery reminders make one text, not ten.
"""

from __future__ import annotations

import zoneinfo
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Any, Final

DEFAULT_TIMEZONE: Final = "Asia/Shanghai"
#: Longest wearer name and type words put into ``params``: provider template variables are
#: short (Aliyun notification templates allow 1-35 characters per variable).
MAX_PARAM_NAME: Final = 20
MAX_PARAM_TYPE: Final = 35

#: Alert type -> the words for it, per language.
TYPE_WORDS: Final[dict[str, dict[str, str]]] = {
    "zh": {
        "sos": "SOS求助", "fall": "跌倒", "geofence_exit": "走失/离开安全区域",
        "home_alarm": "烟雾/燃气报警", "offline": "设备离线", "low_battery": "电量低",
        "device_removed": "手环被摘下", "heart_rate": "心率异常", "inactivity": "长时间无活动",
        "device_alarm": "设备报警",
    },
    "en": {
        "sos": "SOS call", "fall": "Fall", "geofence_exit": "Wandering / left safe zone",
        "home_alarm": "Smoke/gas alarm", "offline": "Device offline", "low_battery": "Low battery",
        "device_removed": "Wristband removed", "heart_rate": "Abnormal heart rate",
        "inactivity": "Prolonged inactivity", "device_alarm": "Device alarm",
    },
}

#: Alert type -> what the reader should do, per language ("" key: unknown types).
ACTIONS: Final[dict[str, dict[str, str]]] = {
    "zh": {
        "sos": "请立即联系老人或拨打12349",
        "fall": "请立即联系老人确认是否受伤，必要时拨打120或12349",
        "home_alarm": "请立即联系老人确认安全，如有火情拨打119",
        "geofence_exit": "请尽快联系老人确认位置，必要时拨打12349",
        "heart_rate": "请尽快联系老人确认身体状况，必要时拨打120",
        "inactivity": "请尽快联系老人或上门查看",
        "device_removed": "请联系老人并提醒其佩戴手环",
        "low_battery": "请提醒老人为设备充电",
        "offline": "请检查设备电源和网络，并联系老人确认安全",
        "device_alarm": "请尽快联系老人确认安全，并检查设备",
        "": "请尽快联系老人确认情况，必要时拨打12349",
    },
    "en": {
        "sos": "Call the elder now or dial 12349",
        "fall": "Call the elder now to check for injury; dial 120 or 12349 if needed",
        "home_alarm": "Call the elder now to check they are safe; dial 119 if there is a fire",
        "geofence_exit": "Call the elder soon to find where they are; dial 12349 if needed",
        "heart_rate": "Call the elder soon to check on them; dial 120 if needed",
        "inactivity": "Call or visit the elder soon",
        "device_removed": "Call the elder and remind them to wear the wristband",
        "low_battery": "Remind the elder to charge the device",
        "offline": "Check the device's power and network, and call the elder",
        "device_alarm": "Call the elder soon to check they are safe, and check the device",
        "": "Contact the elder soon; dial 12349 if needed",
    },
}

# Per-language phrases; {name} {type} {time} {where} {action} {n} {step} are filled in. The map
# link comes last, so no punctuation after it can be taken for part of the URL.
_PHRASES: Final[dict[str, dict[str, str]]] = {
    "zh": {
        "urgent": "[紧急]", "notice": "[提醒]", "escalated": "[升级]", "acknowledged": "[已认领]",
        "claim_expired": "[认领超时]", "resolved": "[已解除]",
        "opened": "{type}：{name}（{time}）。{action}。位置：{where}",
        "escalated_text": "{type}：{name}（{time}）仍未处理，已升级至第{step}级。{action}。"
                          "位置：{where}",
        "acknowledged_text": "{type}：{name}（{time}）已有人认领处理。",
        "claim_expired_text": "{type}：{name}（{time}）认领超时，仍未处理。{action}。位置：{where}",
        "resolved_text": "{type}：{name}（{time}）已解除。",
        "grouped_subject": "{name}有{n}条提醒", "grouped_head": "{name}有{n}条提醒：",
        "grouped_tail": "请及时处理。", "no_location": "未知", "device": "设备{id}",
        "elder": "老人", "repeat": "，共{n}次", "no_time": "时间未知",
    },
    "en": {
        "urgent": "[URGENT]", "notice": "[Notice]", "escalated": "[ESCALATED]",
        "acknowledged": "[Claimed]", "claim_expired": "[Claim expired]",
        "resolved": "[Resolved]",
        "opened": "{type}: {name} ({time}). {action}. Location: {where}",
        "escalated_text": "{type}: {name} ({time}) is still open, escalated to step {step}. "
                          "{action}. Location: {where}",
        "acknowledged_text": "{type}: {name} ({time}) has been claimed by a responder.",
        "claim_expired_text": "{type}: {name} ({time}): the claim expired and it is still "
                              "open. {action}. Location: {where}",
        "resolved_text": "{type}: {name} ({time}) is resolved.",
        "grouped_subject": "{n} notices for {name}", "grouped_head": "{n} notices for {name}:",
        "grouped_tail": "Please follow up.", "no_location": "unknown", "device": "device {id}",
        "elder": "the elder", "repeat": ", {n} times", "no_time": "time unknown",
    },
}


@dataclass(frozen=True, slots=True)
class Rendered:
    """One rendered notification.

    ``params`` are the provider template variables: ``name`` (wearer), ``type`` (alert type
    in words), ``time`` (local ``MM-DD HH:MM``) and ``link`` (map link, or "").
    """

    subject: str
    text: str
    params: dict[str, str]


def render(body: dict[str, Any], *, language: str) -> Rendered:
    """Render the alert document ``body`` in ``language`` ("zh" default, "en"); never raises."""
    lang = "en" if str(language).lower().startswith("en") else "zh"
    if body.get("event") == "alert.grouped":
        return _render_grouped(body, lang)
    alert = _dict(body.get("alert"))
    event = str(body.get("event") or "alert.opened").removeprefix("alert.")
    ph = _PHRASES[lang]
    kind = _str(alert.get("type"))
    fields = _fields(alert, lang)
    step = _dict(body.get("escalation")).get("step", "?")
    template = {"escalated": "escalated_text", "acknowledged": "acknowledged_text",
                "claim_expired": "claim_expired_text", "resolved": "resolved_text"}
    shown = dict(fields, time=fields["time"] or ph["no_time"])
    count = alert.get("event_count")
    if isinstance(count, int) and count > 1 and event in ("opened", "escalated"):
        shown["time"] += ph["repeat"].format(n=count)
    text = ph[template.get(event, "opened")].format(
        action=ACTIONS[lang].get(kind, ACTIONS[lang][""]), step=step, **shown)
    return Rendered(subject=f"{_subject_tag(event, alert, lang)} {fields['type']} - "
                            f"{fields['name']}",
                    text=text, params=_params(fields))


def _render_grouped(body: dict[str, Any], lang: str) -> Rendered:
    """One message listing every alert of a grouped (per-wearer) notification."""
    ph = _PHRASES[lang]
    listed = body.get("alerts")
    alerts = [_dict(a) for a in listed if isinstance(a, dict)] if isinstance(listed, list) else []
    if not alerts:  # a grouped body without its list still says who it is about
        alerts = [_dict(body.get("alert"))]
    rows = [_fields(a, lang) for a in alerts]
    first = rows[0]
    lines = [ph["grouped_head"].format(name=first["name"], n=len(rows))]
    for i, row in enumerate(rows, 1):
        where = f" {row['link']}" if row["link"] else ""
        lines.append(f"{i}. {row['type']} {row['time']}{where}")
    lines.append(ph["grouped_tail"])
    kinds = dict.fromkeys(row["type"] for row in rows)  # distinct, in order
    return Rendered(
        subject=f"{ph['notice']} " + ph["grouped_subject"].format(name=first["name"], n=len(rows)),
        text="\n".join(lines),
        params=_params({**first, "type": "/".join(kinds)}),
    )


def _fields(alert: dict[str, Any], lang: str) -> dict[str, str]:
    """The displayed values of one alert: name, type, time, link and where."""
    ph = _PHRASES[lang]
    kind = _str(alert.get("type"))
    wearer = _dict(alert.get("wearer"))
    name = _str(wearer.get("name"))
    if not name:
        device = _str(alert.get("device_id"))
        name = ph["device"].format(id=device) if device else ph["elder"]
    link = _str(alert.get("map_link"))
    return {
        "name": name,
        "type": TYPE_WORDS[lang].get(kind, kind or "?"),
        "time": local_time(alert.get("first_ts") or alert.get("last_ts"),
                           _str(alert.get("timezone")) or DEFAULT_TIMEZONE),
        "link": link,
        "where": link or ph["no_location"],
    }


def _params(fields: dict[str, str]) -> dict[str, str]:
    return {"name": fields["name"][:MAX_PARAM_NAME], "type": fields["type"][:MAX_PARAM_TYPE],
            "time": fields["time"], "link": fields["link"]}


def _subject_tag(event: str, alert: dict[str, Any], lang: str) -> str:
    """Subject prefix: lifecycle steps name the step, new alerts say how urgent they are."""
    ph = _PHRASES[lang]
    if event in ("escalated", "acknowledged", "claim_expired", "resolved"):
        return ph[event]
    priority = alert.get("priority")
    return ph["urgent"] if isinstance(priority, int) and priority <= 2 else ph["notice"]


def local_time(ts: Any, timezone: str = DEFAULT_TIMEZONE) -> str:
    """ISO 8601 ``ts`` as ``MM-DD HH:MM`` in ``timezone``; naive times are taken as UTC.

    An unknown zone falls back to Asia/Shanghai; an unreadable ``ts`` is shown as given.
    """
    if not isinstance(ts, str) or not ts:
        return ""
    try:
        when = datetime.fromisoformat(ts)
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return when.astimezone(_zone(timezone)).strftime("%m-%d %H:%M")
    except (ValueError, OverflowError):  # not ISO 8601, or out of datetime's range
        return ts


def _zone(name: str) -> tzinfo:
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        # OSError: names that are tzdata directories ("Asia") or too long for a file name.
        return zoneinfo.ZoneInfo(DEFAULT_TIMEZONE)


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _str(value: Any) -> str:
    return value if isinstance(value, str) else "" if value is None else str(value)
