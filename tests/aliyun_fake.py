"""A local stand-in for Aliyun's SMS and voice APIs (dysmsapi/dyvmsapi), speaking their protocol.

:class:`FakeAliyun` is a real HTTP server in a thread. It recomputes every request's signature
itself, from the received parameters and the secret, with its own implementation of the
documented algorithm (the "Java URLEncoder, then + -> %20, * -> %2A, %7E -> ~" recipe of
Aliyun's signing guide), and refuses anything that does not verify, as Aliyun does. It answers
with the documented JSON, keeps a record of the messages it "sent" for QuerySendDetails, and can
be told to fail: HTTP 500, a hang longer than the client's timeout (with or without the message
going out), throttling, an invalid number, a bad template, unknown credentials. The channel
tests (tests/test_channel_aliyun.py) and the provider fault tests (tests/faults/) share it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import threading
import urllib.parse
from datetime import UTC, datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from alerts.channels.base import Channel

KEY_ID = "testKeyId"
SECRET = "testSecret-不要泄露"
BEIJING = timezone(timedelta(hours=8))


def java_style_encode(value: str) -> str:
    """The signing guide's recipe: form-urlencode, then + -> %20, * -> %2A, %7E -> ~."""
    encoded = urllib.parse.quote_plus(value, safe="", encoding="utf-8")
    return encoded.replace("+", "%20").replace("*", "%2A").replace("%7E", "~")


def expected_signature(method: str, params: dict[str, str], secret: str) -> str:
    """An independent implementation of signature version 1.0, for the server side."""
    pairs = sorted((k, v) for k, v in params.items() if k != "Signature")
    query = "&".join(java_style_encode(k) + "=" + java_style_encode(v) for k, v in pairs)
    to_sign = method + "&" + java_style_encode("/") + "&" + java_style_encode(query)
    mac = hmac.new((secret + "&").encode("utf-8"), to_sign.encode("utf-8"), hashlib.sha1)
    return base64.b64encode(mac.digest()).decode("ascii")


class FakeAliyun:
    """See the module docstring. ``plan[action]`` is a queue of behaviours ("ok" when empty)."""

    def __init__(self, *, port: int = 0) -> None:
        self.plan: dict[str, list[str]] = {}
        self.requests: list[dict[str, str]] = []   # every request that verified
        self.rejected: list[str] = []              # why requests were refused
        self.sms: list[dict[str, Any]] = []        # what "reached phones": QuerySendDetails data
        self.release = threading.Event()           # ends simulated hangs at teardown
        self._nonces: set[str] = set()
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length).decode("utf-8")
                fake.handle(self, "POST", body)

            def do_GET(self) -> None:
                fake.handle(self, "GET", "")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        self.channels: list[Channel] = []          # closed at teardown
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.02,),
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        for channel in self.channels:
            channel.close()
        self.release.set()
        self.server.shutdown()
        self.server.server_close()

    def fail(self, action: str, *behaviours: str, times: int = 10_000) -> None:
        """Answer the next ``times`` requests of ``action`` with ``behaviours`` in turn."""
        with self._lock:
            self.plan[action] = [behaviours[i % len(behaviours)] for i in range(times)]

    def recover(self) -> None:
        """Answer every request normally from now on."""
        with self._lock:
            self.plan.clear()

    def calls(self, action: str) -> list[dict[str, str]]:
        return [r for r in self.requests if r["Action"] == action]

    def handle(self, req: BaseHTTPRequestHandler, method: str, body: str) -> None:
        query = urllib.parse.urlsplit(req.path).query
        pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
        pairs += urllib.parse.parse_qsl(body, keep_blank_values=True)
        params = dict(pairs)
        problem = self.verify(method, params, duplicated=len(params) != len(pairs))
        if problem is not None:
            self.rejected.append(problem)
            code = "SignatureDoesNotMatch" if problem == "signature" else problem
            self.reply(req, 400 if problem != "InvalidAccessKeyId.NotFound" else 404,
                       {"Code": code, "Message": problem})
            return
        with self._lock:
            self.requests.append(params)
            queue = self.plan.get(params["Action"], [])
            behaviour = queue.pop(0) if queue else "ok"
        self.act(req, params, behaviour)

    def verify(self, method: str, params: dict[str, str], *, duplicated: bool) -> str | None:
        if duplicated:
            return "DuplicateParameter"
        if params.get("AccessKeyId") != KEY_ID:
            return "InvalidAccessKeyId.NotFound"
        fixed = {"Format": "JSON", "SignatureMethod": "HMAC-SHA1", "SignatureVersion": "1.0",
                 "Version": "2017-05-25", "RegionId": "cn-hangzhou"}
        if any(params.get(k) != v for k, v in fixed.items()):
            return "InvalidParameter"
        if not re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", params.get("Timestamp", "")):
            return "InvalidTimeStamp.Format"
        got = params.get("Signature", "")
        if not hmac.compare_digest(got, expected_signature(method, params, SECRET)):
            return "signature"
        with self._lock:
            if params["SignatureNonce"] in self._nonces:
                return "SignatureNonceUsed"
            self._nonces.add(params["SignatureNonce"])
        return None

    def act(self, req: BaseHTTPRequestHandler, params: dict[str, str], behaviour: str) -> None:
        failures = {
            "500": (500, {"Code": "InternalError", "Message": "The request processing has failed"}),
            "throttle": (200, {"Code": "isv.BUSINESS_LIMIT_CONTROL", "Message": "触发分钟级流控"}),
            "throttling_user": (400, {"Code": "Throttling.User", "Message": "Request was denied"}),
            "invalid_number": (200, {"Code": "isv.MOBILE_NUMBER_ILLEGAL", "Message": "非法手机号"}),
            "bad_template": (200, {"Code": "isv.SMS_TEMPLATE_ILLEGAL", "Message": "模板不合法"}),
            "html_502": (502, None),
        }
        if behaviour in failures:
            status, doc = failures[behaviour]
            self.reply(req, status, doc)
            return
        if behaviour in ("hang", "accept_then_hang"):
            if behaviour == "accept_then_hang":
                self.record(params)
            self.release.wait(10)  # longer than any client timeout; released at teardown
            return
        self.reply(req, 200, self.answer(params))

    def answer(self, params: dict[str, str]) -> dict[str, Any]:
        action = params["Action"]
        ok: dict[str, Any] = {"Code": "OK", "Message": "OK", "RequestId": "F655A8D5-B967-440B"}
        if action == "SendSms":
            return {**ok, "BizId": self.record(params)}
        if action == "SingleCallByTts":
            return {**ok, "CallId": "116012354148^102814"}
        if action == "QuerySendDetails":
            rows = [r for r in self.sms if r["PhoneNum"] == params["PhoneNumber"]
                    and r["SendDate"][:10].replace("-", "") == params["SendDate"]]
            size, page = int(params["PageSize"]), int(params["CurrentPage"])
            return {**ok, "TotalCount": len(rows), "SmsSendDetailDTOs": {
                "SmsSendDetailDTO": rows[(page - 1) * size:page * size]}}
        return {"Code": "InvalidAction.NotFound", "Message": action}

    def record(self, params: dict[str, str]) -> str:
        sent = datetime.strptime(params["Timestamp"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        self.add_sms(params["PhoneNumbers"], params.get("OutId", ""), sent.astimezone(BEIJING))
        return f"900619{len(self.sms)}^0"

    def add_sms(self, phone: str, oid: str, when: datetime) -> None:
        with self._lock:
            self.sms.append({"PhoneNum": phone, "OutId": oid, "SendStatus": 3,
                             "ErrCode": "DELIVERED", "TemplateCode": "SMS_1",
                             "Content": "【养老服务】...", "SendDate": when.strftime("%Y-%m-%d %H:%M:%S"),
                             "ReceiveDate": when.strftime("%Y-%m-%d %H:%M:%S")})

    @staticmethod
    def reply(req: BaseHTTPRequestHandler, status: int, doc: dict[str, Any] | None) -> None:
        payload = json.dumps(doc).encode() if doc is not None else b"<html>Bad Gateway</html>"
        req.send_response(status)
        req.send_header("Content-Type", "application/json;charset=utf-8")
        req.send_header("Content-Length", str(len(payload)))
        req.end_headers()
        req.wfile.write(payload)
