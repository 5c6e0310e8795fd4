"""Where the broker is and as whom to log in: :class:`BrokerAddress`.

Shared by ingest, the alert channel and the simulator: ``mqtt://`` or ``mqtts://`` (TLS from
:mod:`eldercare.tls`, always verified), the login from the URL or from the config section's
``username``/``password_file``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt

from eldercare import tls
from eldercare.errors import ConfigError

if TYPE_CHECKING:
    from eldercare.config import MqttConfig

#: URL scheme -> TLS. ``tcp`` and ``ssl`` are the spellings other MQTT tools accept.
_SCHEMES = {"mqtt": False, "tcp": False, "mqtts": True, "ssl": True}


@dataclass(frozen=True, kw_only=True, slots=True)
class BrokerAddress:
    """Where the broker is, who we are to it and whom we trust; shared by every MQTT client of
    eldercare (ingest, the alert channel, the simulator), so all connect the same way.

    ``tls`` comes from the URL scheme: ``mqtts://`` (default port 8883) or ``mqtt://`` (1883).
    ``ca_file``, ``cert_file`` and ``key_file`` go to :func:`eldercare.tls.client_context`; the
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
    def from_config(cls, config: MqttConfig, *, section: str = "mqtt") -> BrokerAddress:
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
