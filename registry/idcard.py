"""Resident ID-card numbers (居民身份证号码, GB 11643-1999): validated, never stored in clear.

A wearer's ID-card number is how civil-affairs lists identify people, so import matches and
refuses duplicates by it. The database keeps three derived values instead of the number:

- ``id_card_hmac``: HMAC-SHA256 under the registry secret, for exact lookup and the uniqueness
  check (a bare SHA-256 of an 18-character number with a checksum and a birth date is trivially
  reversed by enumeration; a keyed hash is not without the key);
- ``id_card_cipher``: Fernet ciphertext (AES-128-CBC + HMAC, ``cryptography``), for the
  authorised export of a person's own data (docs/privacy.md);
- ``id_card_masked``: ``371002**********1234``-style, what pages and lists show.

Both keys are derived from one 32-byte secret (HKDF-SHA256, distinct ``info``), read once.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from foundation.errors import ConfigError, ValidationError

_PATTERN: Final = re.compile(r"[0-9]{17}[0-9X]")
_WEIGHTS: Final = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK: Final = "10X98765432"
SECRET_BYTES: Final = 32


def normalize(number: str) -> str:
    """The canonical form: spaces removed, a lowercase ``x`` upper-cased."""
    return number.replace(" ", "").upper()


def check(number: str) -> str:
    """The canonical number, or ValidationError saying what is wrong (length/characters, or the
    check digit of GB 11643)."""
    n = normalize(number)
    if not _PATTERN.fullmatch(n):
        raise ValidationError("ID-card number must be 17 digits and a check digit (0-9 or X)")
    total = sum(int(d) * w for d, w in zip(n[:17], _WEIGHTS, strict=True))
    if _CHECK[total % 11] != n[17]:
        raise ValidationError("ID-card number's check digit is wrong (GB 11643)")
    return n


def mask(number: str) -> str:
    """Region prefix and last four shown, the birth date hidden: ``3710**********1234``."""
    n = normalize(number)
    return n[:4] + "*" * (len(n) - 8) + n[-4:]


@dataclass(frozen=True, slots=True)
class StoredIdCard:
    """What the database keeps of one number."""

    hmac: str
    cipher: str
    masked: str


class IdCardVault:
    """Keyed lookup hash and encryption of ID-card numbers under one secret."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) != SECRET_BYTES:
            raise ConfigError(f"the registry secret must be {SECRET_BYTES} bytes, got {len(secret)}")
        self._mac_key = _derive(secret, b"eldercare id-card lookup")
        self._fernet = Fernet(base64.urlsafe_b64encode(_derive(secret, b"eldercare id-card cipher")))

    def lookup(self, number: str) -> str:
        """The HMAC of a (valid) number: what ``id_card_hmac`` holds and searches compare."""
        return hmac.new(self._mac_key, check(number).encode(), hashlib.sha256).hexdigest()

    def protect(self, number: str) -> StoredIdCard:
        """Validate and derive the three stored values."""
        n = check(number)
        return StoredIdCard(hmac=self.lookup(n), cipher=self._fernet.encrypt(n.encode()).decode(),
                            masked=mask(n))

    def reveal(self, cipher: str) -> str:
        """The number back from its ciphertext (the person's own data export only)."""
        try:
            return self._fernet.decrypt(cipher.encode()).decode()
        except InvalidToken as exc:
            raise ConfigError("an ID-card number cannot be decrypted with this registry secret"
                              " (was the secret file replaced?)") from exc


def _derive(secret: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(secret)


def default_secret_path() -> Path:
    """``$XDG_STATE_HOME/eldercare/registry.key`` (``~/.local/state`` when unset)."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "eldercare" / "registry.key"


def load_vault(path: str | Path | None) -> IdCardVault:
    """The vault of the secret in ``path`` (the default path when None). A missing file is
    created with a fresh random secret, readable by its owner only; an unreadable or malformed
    one is a ConfigError (never silently replaced: that would orphan every stored number)."""
    p = Path(path) if path is not None else default_secret_path()
    if not p.exists():
        p.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process made it meanwhile: read theirs
        else:
            with os.fdopen(fd, "wb") as f:
                f.write(os.urandom(SECRET_BYTES))
    try:
        secret = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the registry secret {p}: {exc}") from exc
    return IdCardVault(secret)
