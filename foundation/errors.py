"""The one exception tree of eldercare.

Every error the service raises on purpose derives from :class:`EldercareError`; third-party
errors (psycopg, paho, msgspec) are translated at the edge that calls them, so callers never
have to know which library sits underneath::

    EldercareError
    ├── ConfigError            bad configuration file, URL or option (fix and restart)
    ├── RegistryError          the device registry file is invalid (names the bad entry)
    ├── ValidationError        one message or reading broke the wire contract; carries
    │   │                      ``reason`` (names the field) and is dead-lettered, never fatal
    │   ├── FrameError         (gateway.codec) a device's byte stream cannot be framed: the
    │   │                      gateway closes that connection
    │   └── UnsupportedCommand (gateway.codec) the device's protocol has no word for a command
    ├── StorageError           the database refused or is unreachable (retryable)
    │   └── MigrationError     a schema migration failed (fatal at start-up)
    ├── BrokerError            the MQTT broker refused us or is unreachable
    ├── WorkerError            a long-lived worker stopped unexpectedly (``worker``): fatal,
    │                          the process stops in order and exits non-zero
    ├── AlertConflict          (alerts.store) the alert's state forbids the action: claimed by
    │                          someone else (``owner``), resolved, or missing (HTTP 409/404)
    ├── DeliveryFailed         (alerts.channels.base) a channel could not deliver a message;
    │                          ``retryable`` says whether trying again can help
    ├── SignatureError         (alerts.channels.webhook) a webhook signature is malformed,
    │                          wrong or outside the replay window (``problem``)
    ├── AccountError           (console.accounts) a console account request is invalid
    ├── UnknownWearer          (eldercare.privacy) no such wearer (export, delete)
    ├── DeletionRefused        (eldercare.privacy) erasure refused: an alert is still unresolved
    └── GeolocationError       (gateway.geolocate) a cell/Wi-Fi lookup failed; the reading is
                               published without a position
"""

from __future__ import annotations


class EldercareError(Exception):
    """Root of every error eldercare raises on purpose."""


class ConfigError(EldercareError):
    """Configuration is invalid; the message names the option."""


class RegistryError(EldercareError):
    """The device registry file is invalid; the message gives the path of the bad entry."""


class ValidationError(EldercareError):
    """A message or reading broke the wire contract.

    ``reason`` is the human-readable cause naming the bad field (stored with the dead letter).
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class StorageError(EldercareError):
    """The database failed; the operation may be retried."""


class MigrationError(StorageError):
    """A schema migration failed; ``version`` names it."""

    def __init__(self, message: str, *, version: str) -> None:
        super().__init__(f"migration {version}: {message}")
        self.version = version


class BrokerError(EldercareError):
    """The MQTT broker refused the connection or could not be reached."""


class WorkerError(EldercareError):
    """A long-lived worker (``worker``) stopped unexpectedly; the service cannot go on."""

    def __init__(self, worker: str, reason: str) -> None:
        super().__init__(f"{worker}: {reason}")
        self.worker = worker
        self.reason = reason
