"""E-mail channel: one alert notification per message over plain SMTP (stdlib ``smtplib``).

Each :meth:`EmailChannel.send` opens its own connection (implicit TLS when ``ssl``, STARTTLS
when ``starttls``, AUTH when a username is set), sends one UTF-8 ``EmailMessage`` whose
subject and body come from :func:`alerts.templates.render`, and closes it. Alert mail is rare
and a fresh connection per message never trips over a server's idle timeout, so there is no
pool to keep healthy. The envelope is driven step by step (MAIL, RCPT, DATA) rather than with
``send_message`` because only the DATA reply carries the server's queue id ("250 2.0.0 Ok:
queued as 4Xy7"), which becomes the receipt's ``provider_id``.

Duplicates: the Message-ID is derived from the idempotency key, so a message sent again after
an unknown outcome carries the same Message-ID and mail clients that deduplicate show it once.

Failures: 4xx replies (greylisting, "try again later"), connection errors and timeouts are
retryable; 5xx replies (unknown mailbox, rejected sender or credentials), a server without
STARTTLS when we require it and a certificate we cannot verify are permanent. Logs name the
delivery id, never the address.
"""

from __future__ import annotations

import email.policy
import hashlib
import logging
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate
from typing import Annotated

import msgspec

from alerts.channels.base import DeliveryFailed, Message, Receipt
from alerts.templates import render

log = logging.getLogger(__name__)


class SmtpConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Configuration of the e-mail channel: the SMTP relay and the From address."""

    host: Annotated[str, msgspec.Meta(min_length=1)]
    port: Annotated[int, msgspec.Meta(ge=1, le=65535)] = 25
    starttls: bool = False
    ssl: bool = False
    username: str | None = None
    password: str | None = None
    sender: Annotated[str, msgspec.Meta(min_length=3)]
    timeout_s: Annotated[float, msgspec.Meta(gt=0, le=120)] = 10.0

    def __post_init__(self) -> None:
        if self.ssl and self.starttls:
            raise ValueError("choose one of ssl (implicit TLS) and starttls")

    def __repr__(self) -> str:  # the password must never reach a log line
        return (f"SmtpConfig(host={self.host!r}, port={self.port}, starttls={self.starttls}, "
                f"ssl={self.ssl}, username={self.username!r}, sender={self.sender!r})")


class EmailChannel:
    """Alert notifications by e-mail; see the module docstring."""

    name = "email"

    def __init__(self, config: SmtpConfig) -> None:
        self._config = config

    def send(self, message: Message) -> Receipt:
        """Send ``message`` to ``message.address``; raises :class:`DeliveryFailed`."""
        try:
            mail = self._compose(message)
        except (ValueError, TypeError) as exc:  # an address the e-mail library refuses
            raise DeliveryFailed(f"cannot compose the message: {exc}", retryable=False) from exc
        try:
            smtp = self._connect()
            try:
                code, reply = self._transmit(smtp, mail, message.address)
            finally:
                _quit(smtp)
        except smtplib.SMTPException as exc:
            raise _smtp_failure(exc) from exc
        except ssl.SSLCertVerificationError as exc:  # before ValueError: it is one too
            raise DeliveryFailed(f"TLS certificate not trusted: {exc}", retryable=False) from exc
        except ValueError as exc:  # e.g. a non-ASCII address the server cannot take
            raise DeliveryFailed(f"cannot send to this address: {type(exc).__name__}",
                                 retryable=False) from exc
        except OSError as exc:  # refused, unreachable, timed out, TLS handshake failed
            raise DeliveryFailed(f"SMTP connection failed: {type(exc).__name__}: {exc}",
                                 retryable=True) from exc
        text = reply.decode("utf-8", "replace")
        log.debug("delivery %d: e-mail accepted (%d %s)", message.delivery_id, code, text)
        return Receipt(provider_id=_queue_id(text),
                       detail={"code": code, "reply": text[:200],
                               "message_id": mail["Message-ID"]})

    def _compose(self, message: Message) -> EmailMessage:
        rendered = render(message.body, language=message.language)
        mail = EmailMessage()
        mail["From"] = self._config.sender
        mail["To"] = message.address
        mail["Subject"] = rendered.subject
        mail["Date"] = formatdate(localtime=False, usegmt=True)
        mail["Message-ID"] = _message_id(message.idempotency_key, self._config.sender)
        mail.set_content(rendered.text, charset="utf-8")
        return mail

    def _connect(self) -> smtplib.SMTP:
        """An open (and, as configured, encrypted and authenticated) SMTP connection."""
        cfg = self._config
        smtp: smtplib.SMTP
        if cfg.ssl:
            smtp = smtplib.SMTP_SSL(cfg.host, cfg.port, timeout=cfg.timeout_s,
                                    context=ssl.create_default_context())
        else:
            smtp = smtplib.SMTP(cfg.host, cfg.port, timeout=cfg.timeout_s)
        try:
            if cfg.starttls:
                smtp.starttls(context=ssl.create_default_context())
            if cfg.username:
                smtp.login(cfg.username, cfg.password or "")
        except BaseException:
            smtp.close()
            raise
        return smtp

    def _transmit(self, smtp: smtplib.SMTP, mail: EmailMessage,
                  address: str) -> tuple[int, bytes]:
        """MAIL, RCPT, DATA; returns the DATA reply (it names the queue id)."""
        sender = self._config.sender
        smtp.ehlo_or_helo_if_needed()
        code, reply = smtp.mail(sender)
        if code != 250:
            raise smtplib.SMTPSenderRefused(code, reply, sender)
        code, reply = smtp.rcpt(address)
        if code not in (250, 251):
            raise smtplib.SMTPRecipientsRefused({address: (code, reply)})
        # smtp.data raises for a refused DATA command but returns the final reply as it is.
        code, reply = smtp.data(mail.as_bytes(policy=email.policy.SMTP))
        if code != 250:
            raise smtplib.SMTPDataError(code, reply)
        return code, reply

    def close(self) -> None:
        """Nothing to release: connections live for one message."""


def _quit(smtp: smtplib.SMTP) -> None:
    """Say goodbye; once DATA was accepted the message is the relay's, so a failed QUIT
    (smtplib raises for any reply but 221) must not turn a delivery into a failure."""
    try:
        smtp.quit()
    except (smtplib.SMTPException, OSError):
        smtp.close()


def _smtp_failure(exc: smtplib.SMTPException) -> DeliveryFailed:
    """Translate an smtplib error: 4xx retryable, 5xx permanent (see the module docstring)."""
    code: int | None = None
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        code = next(iter(exc.recipients.values()))[0] if exc.recipients else None
    elif isinstance(exc, smtplib.SMTPResponseException):
        code = exc.smtp_code
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        return DeliveryFailed(f"SMTP server lacks a required extension: {exc}", retryable=False)
    if code is None or code < 0:  # disconnected, or no reply at all: try again later
        return DeliveryFailed(f"SMTP error: {type(exc).__name__}: {exc}", retryable=True)
    return DeliveryFailed(f"SMTP {code}: {type(exc).__name__}", retryable=400 <= code < 500)


def _message_id(idempotency_key: str, sender: str) -> str:
    """A Message-ID stable across attempts, in the sender's domain."""
    domain = sender.rpartition("@")[2].strip("> ") or "eldercare.invalid"
    return f"<{hashlib.sha256(idempotency_key.encode()).hexdigest()[:32]}@{domain}>"


def _queue_id(reply: str) -> str | None:
    """The queue id in a DATA reply such as "2.0.0 Ok: queued as 4Xy7", if it names one."""
    marker = "queued as "
    at = reply.find(marker)
    if at < 0:
        return None
    rest = reply[at + len(marker):].split()
    return rest[0].strip("<>") if rest else None
