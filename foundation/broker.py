"""How eldercare's MQTT clients reach the broker: where it is and as whom to log in
(:class:`BrokerAddress`), and how soon to try again when it is gone (:class:`Backoff`,
:class:`ReconnectPacer`).

Shared by ingest, the alert channel and the simulator: ``mqtt://`` or ``mqtts://`` (TLS from
:mod:`foundation.tls`, always verified), the login from the URL or from the config section's
``username``/``password_file``.

Reconnects: paho-mqtt reconnects by itself, but its backoff doubles without jitter up to a
ceiling meant for fleets of devices (the service used 30 s): after a broker restart an SOS
waited 11 s for the service to come back. The service's clients are a handful of connections,
not a fleet, so their ceiling is a couple of seconds (``DEFAULT_RECONNECT_MAX_S``), jittered so
that they do not return in lockstep.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Final, Literal, Protocol
from urllib.parse import unquote, urlsplit

import msgspec
import paho.mqtt.client as mqtt
from msgspec import Meta

from foundation import tls
from foundation.errors import ConfigError


class BrokerSettings(Protocol):
    """The broker options of a configuration section (the shell's ``[mqtt]``, read-only)."""

    @property
    def url(self) -> str: ...
    @property
    def username(self) -> str | None: ...
    @property
    def password_file(self) -> str | None: ...
    @property
    def ca_file(self) -> str | None: ...
    @property
    def cert_file(self) -> str | None: ...
    @property
    def key_file(self) -> str | None: ...

class MqttConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Broker connection. ``client_id`` must be stable: it names the persistent session.

    The login and TLS files are checked by ``foundation.broker.BrokerAddress.from_config``
    (deploy/mosquitto/README.md, "Connecting the service").
    """

    #: ``mqtt://host[:1883]`` (plain) or ``mqtts://host[:8883]`` (TLS, always verified).
    url: str = "mqtt://127.0.0.1:1883"
    #: The login, instead of a user in ``url``; its password is the one line of
    #: ``password_file``, so no password has to sit in this file or in a URL.
    username: str | None = None
    password_file: str | None = None
    #: ``mqtts://`` only: the CA certificates (PEM) that may sign the broker's certificate;
    #: unset, the system's. A client certificate and its unencrypted key: both or neither.
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    client_id: str = "eldercare-ingest"
    protocol: Literal["auto", "5", "3.1.1"] = "auto"
    session_expiry_s: Annotated[int, Meta(ge=1)] = 7 * 24 * 3600
    keepalive_s: Annotated[int, Meta(ge=5, le=3600)] = 30
    connect_timeout_s: Annotated[float, Meta(gt=0)] = 30.0
    #: Ceiling of the jittered reconnect backoff: after a broker restart an SOS waits at most
    #: about this long for us to come back (paho's own ceiling, 30 s, cost one 11 s).
    reconnect_max_s: Annotated[float, Meta(gt=0, le=60)] = 2.0


#: URL scheme -> TLS. ``tcp`` and ``ssl`` are the spellings other MQTT tools accept.
_SCHEMES = {"mqtt": False, "tcp": False, "mqtts": True, "ssl": True}
#: Ceiling of the reconnect backoff: once the broker is back, the service is back within this
#: (plus one connection set-up), and so is the SOS waiting in the broker.
DEFAULT_RECONNECT_MAX_S: Final = 2.0


@dataclass(frozen=True, kw_only=True, slots=True)
class BrokerAddress:
    """Where the broker is, who we are to it and whom we trust; shared by every MQTT client of
    eldercare (ingest, the alert channel, the simulator), so all connect the same way.

    ``tls`` comes from the URL scheme: ``mqtts://`` (default port 8883) or ``mqtt://`` (1883).
    ``ca_file``, ``cert_file`` and ``key_file`` go to :func:`foundation.tls.client_context`; the
    broker's certificate is always verified, against ``ca_file`` or the system's CAs.
    """

    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None

    @classmethod
    def from_url(cls, url: str) -> BrokerAddress:
        """Parse ``mqtt[s]://[user[:password]@]host[:port]``; raises ConfigError naming it."""
        parts = urlsplit(url)
        if parts.scheme not in _SCHEMES or not parts.hostname:
            raise ConfigError("MQTT URL must look like mqtt://host:1883 or mqtts://host:8883,"
                              f" got {url!r}")
        tls = _SCHEMES[parts.scheme]
        try:
            port = parts.port or (8883 if tls else 1883)
        except ValueError as exc:
            raise ConfigError(f"MQTT URL has a bad port: {url!r}") from exc
        return cls(
            host=parts.hostname, port=port, tls=tls,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
        )

    @classmethod
    def from_config(cls, config: BrokerSettings, *, section: str = "mqtt") -> BrokerAddress:
        """The [mqtt] section, checked: the password file is read and the TLS files are loaded
        now, so a mistake stops the start with a ConfigError naming the option."""
        address = cls.from_url(config.url)
        if config.username is not None and address.username is not None:
            raise ConfigError(f"[{section}] username is set and url holds a user too: give the"
                              " login once")
        if config.password_file is not None and address.password is not None:
            raise ConfigError(f"[{section}] password_file is set and url holds a password too")
        address = replace(
            address, username=config.username or address.username,
            password=(_read_password(config.password_file, section)
                      if config.password_file is not None else address.password),
            ca_file=config.ca_file, cert_file=config.cert_file, key_file=config.key_file)
        return address.checked(section)

    def with_identity(self, *, username: str | None, password_file: str | None,
                      cert_file: str | None, key_file: str | None,
                      section: str) -> BrokerAddress:
        """This broker under another login and/or client certificate (each replaced only when
        given: a login is a username with its password, a certificate goes with its key)."""
        address = self
        if username is not None:
            password = (_read_password(password_file, section)
                        if password_file is not None else None)
            address = replace(address, username=username, password=password)
        elif password_file is not None:
            raise ConfigError(f"[{section}] password_file is set without username")
        if cert_file is not None or key_file is not None:
            address = replace(address, cert_file=cert_file, key_file=key_file)
        return address.checked(section)

    def checked(self, section: str = "mqtt") -> BrokerAddress:
        """Self, once its options fit together and its TLS files load; else ConfigError."""
        if self.password is not None and self.username is None:
            raise ConfigError(f"[{section}] a password needs a username")
        files = [n for n in ("ca_file", "cert_file", "key_file") if getattr(self, n) is not None]
        if files and not self.tls:
            raise ConfigError(f"[{section}] {', '.join(files)} set, but the url is not"
                              " mqtts://: the connection would not be encrypted")
        if self.tls:
            tls.client_context(ca_file=self.ca_file, cert_file=self.cert_file,
                               key_file=self.key_file, section=section)
        return self

    def configure(self, client: mqtt.Client, *, login: bool = True) -> None:
        """Give a new paho client our TLS settings and, with ``login``, our username and
        password: the one place every eldercare MQTT client gets them from."""
        if login and self.username is not None:
            client.username_pw_set(self.username, self.password)
        if self.tls:
            client.tls_set_context(tls.client_context(
                ca_file=self.ca_file, cert_file=self.cert_file, key_file=self.key_file))

    def __str__(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


def _read_password(path: str, section: str) -> str:
    """The password in ``path``: its one line, without the line end."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError(f"[{section}] password_file {path}: {why}") from exc
    password = text.removesuffix("\n").removesuffix("\r")
    if not password or "\n" in password:
        raise ConfigError(f"[{section}] password_file {path} must hold the password on one line")
    return password


@dataclass(frozen=True, kw_only=True, slots=True)
class Backoff:
    """Jittered exponential backoff: attempt ``n`` (counted from 0) waits a uniformly random
    50-100% of ``min(first_s * 2**n, max_s)`` seconds.

    Half the delay is kept rather than drawn from zero ("full jitter"): a broker that is still
    starting is not worth a burst of immediate retries, and the ceiling stays what it says.
    Raises ConfigError (naming ``reconnect_max_s``) unless ``0 < first_s`` and ``0 < max_s``.
    """

    first_s: float = 0.1
    max_s: float = DEFAULT_RECONNECT_MAX_S

    def __post_init__(self) -> None:
        if not (self.first_s > 0 and self.max_s > 0):  # also refuses NaN
            raise ConfigError(f"reconnect_max_s must be a positive number of seconds, got"
                              f" {self.max_s!r} (first delay {self.first_s!r})")

    def delay_s(self, attempt: int) -> float:
        """How long to wait before attempt ``attempt + 1``."""
        ceiling = min(self.first_s * 2.0 ** min(attempt, 32), self.max_s)
        return ceiling * random.uniform(0.5, 1.0)


class ReconnectPacer:
    """Paces one paho client's automatic reconnects with a :class:`Backoff`.

    paho waits before each reconnect attempt by itself, and calls ``on_disconnect`` (a lost
    connection) or ``on_connect_fail`` (a failed attempt) just before it waits. Those callbacks
    call :meth:`next_wait`, which sets that wait through ``reconnect_delay_set`` with minimum =
    maximum = our jittered delay (the call also restarts paho's own doubling, so ours is the
    only one). The attempt count restarts only after a connection that stayed up ``stable_s``:
    a broker that accepts us and drops us at once (another process taking over our session
    with our client id) is retried ever more slowly, up to the ceiling, not ten times a second.
    Every method runs on the client's network thread (or before it starts).
    """

    def __init__(self, backoff: Backoff, *, stable_s: float = 10.0) -> None:
        self.backoff = backoff
        self.stable_s = stable_s
        self._attempt = 0
        self._up_since: float | None = None

    def attach(self, client: mqtt.Client) -> None:
        """Set ``client``'s first wait (a later wait without a callback before it keeps the
        last delay set: min = max stops paho's doubling)."""
        self._set(client, self.backoff.delay_s(0))

    def connected(self) -> None:
        """A successful CONNACK: the connection counts as stable after ``stable_s``."""
        self._up_since = time.monotonic()

    def next_wait(self, client: mqtt.Client) -> float:
        """Set and return the wait before ``client``'s next reconnect attempt."""
        if self._up_since is not None and time.monotonic() - self._up_since >= self.stable_s:
            self._attempt = 0
        self._up_since = None
        delay = self.backoff.delay_s(self._attempt)
        self._attempt += 1
        self._set(client, delay)
        return delay

    @staticmethod
    def _set(client: mqtt.Client, delay_s: float) -> None:
        # paho annotates the delays as int, but only adds, doubles and compares them and
        # sleeps on the result: fractions of a second work (tests/test_broker_reconnect.py
        # measures it against a real broker).
        client.reconnect_delay_set(min_delay=delay_s, max_delay=delay_s)  # type: ignore[arg-type]


def stop_client(client: mqtt.Client) -> None:
    """Disconnect ``client``, stop its network thread and close the wake-up socket pair that
    ``loop_start`` opened. paho (2.1) never closes that pair itself: each stopped client leaked
    two sockets to the garbage collector (the MQTT alert channel's fall-back to 3.1.1 made one
    per broker that speaks only 3.1.1)."""
    client.disconnect()
    client.loop_stop()
    if getattr(client, "_thread", None) is None:  # not from its own thread: the loop is over
        client._reset_sockets(sockpair_only=True)  # paho has no public way

