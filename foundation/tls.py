"""TLS for eldercare's own MQTT connections: the one place an :class:`ssl.SSLContext` is made.

The ingest source, the MQTT alert channel and the device simulator all get their context from
:func:`client_context` (through ``foundation.broker.BrokerAddress``), so they trust and present the
same things. Verification is always on: the broker's certificate must chain to ``ca_file`` (the
system's CA certificates when unset) and name the host dialled in its subjectAltName. There is
deliberately no switch to turn either off: a service that accepts any certificate would hand the
SOS stream, and the ingest password, to whoever answers on the broker's address. TLS 1.2 is the
floor, as on the broker (deploy/mosquitto/production.conf).

A client certificate (``cert_file`` with ``key_file``) is optional; both or neither. The key must
not be encrypted: a service cannot answer OpenSSL's passphrase prompt, which would otherwise wait
on the terminal forever. Every problem with the files is a :class:`~foundation.errors.ConfigError`
naming the option and the file, raised when the configuration is read, not at the first
reconnect. When dialling, :func:`final_failure` tells a refused certificate, which no retry cures
and which must be reported with its reason, from a network failure worth retrying.
"""

from __future__ import annotations

import ssl

from foundation.errors import BrokerError, ConfigError


class _ClosingSSLSocket(ssl.SSLSocket):
    """Closes itself when its handshake fails: paho (2.2) drops the socket of a failed
    handshake without closing it, leaking the descriptor until the garbage collector finds it."""

    def do_handshake(self, block: bool = False) -> None:
        try:
            super().do_handshake(block)
        except BaseException:
            self.close()
            raise


class _EncryptedKey(Exception):
    """Raised from the passphrase callback: OpenSSL asks for one only for an encrypted key."""


def _no_passphrase() -> str:
    raise _EncryptedKey


def client_context(*, ca_file: str | None = None, cert_file: str | None = None,
                   key_file: str | None = None, section: str = "mqtt") -> ssl.SSLContext:
    """A verifying client context; ``section`` names the config table in error messages.

    Raises
    ------
    ConfigError
        A file cannot be read or holds no usable certificate or key, the key is encrypted or does
        not match the certificate, or only one of ``cert_file`` and ``key_file`` is given.
    """
    if (cert_file is None) != (key_file is None):
        given, missing = ("cert_file", "key_file") if key_file is None else ("key_file",
                                                                              "cert_file")
        raise ConfigError(f"[{section}] {given} is set but {missing} is not: a client "
                          "certificate needs both its certificate and its private key")
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"[{section}] ca_file {ca_file}: {_why(exc)}") from exc
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # create_default_context sets both; restated so that no later edit can drop them quietly.
    context.verify_mode = ssl.CERT_REQUIRED
    context.check_hostname = True
    context.sslsocket_class = _ClosingSSLSocket
    if cert_file is not None and key_file is not None:
        try:
            context.load_cert_chain(cert_file, key_file, password=_no_passphrase)
        except _EncryptedKey:
            raise ConfigError(f"[{section}] key_file {key_file} is encrypted; give the service "
                              "an unencrypted key readable by its user only") from None
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"[{section}] cert_file {cert_file} / key_file {key_file}: "
                              f"{_why(exc)}") from exc
    return context


def _why(exc: OSError) -> str:
    """The reason without the ``(_ssl.c:1234)`` suffix, which means nothing to an operator."""
    if isinstance(exc, ssl.SSLError):
        reason = {"KEY_VALUES_MISMATCH": "the key does not belong to the certificate",
                  "NO_CERTIFICATE_OR_CRL_FOUND": "no PEM certificate in the file"}
        return reason.get(exc.reason or "", f"not a usable PEM file ({exc.reason or exc})")
    return exc.strerror or str(exc)


def final_failure(exc: OSError, *, where: str) -> BrokerError | None:
    """The error to report at once when dialling ``where`` failed with ``exc``, or None when
    ``exc`` is a network failure that trying again may cure (refused, unreachable, cut short).

    A certificate the context refuses (unknown CA, wrong host name, expired) or a handshake the
    broker refuses (TLS version, a client certificate it does not accept) stays so until someone
    changes a certificate or the configuration: retrying would only turn it into a time-out
    that no longer says why.
    """
    if isinstance(exc, ssl.SSLCertVerificationError):
        return BrokerError(
            f"TLS to MQTT broker {where}: its certificate was refused ({exc.verify_message}); "
            "check that ca_file holds the CA that signed it and that it names the host in the url")
    if isinstance(exc, ssl.SSLError) and not isinstance(exc, ssl.SSLEOFError | ssl.SSLZeroReturnError):
        return BrokerError(f"TLS handshake with MQTT broker {where} failed: {exc.reason or exc}")
    return None
