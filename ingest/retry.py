"""Retrying storage writes: jittered exponential backoff until the write succeeds, or until a
shutdown grace period has run out.

Both writers of the service use it: the pipeline (one batch's readings) and the detection stage
(that batch's events). Neither may give up while running, because giving up would mean dropping
data; at shutdown each retries for ``shutdown_grace_s`` and then raises the last
:class:`~foundation.errors.StorageError`, so its messages stay unacknowledged and come back.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

from foundation.errors import StorageError

log = logging.getLogger(__name__)

T = TypeVar("T")


class StorageRetry:
    """The backoff policy and the shutdown clock of one writer."""

    def __init__(self, *, initial_s: float = 0.1, max_s: float = 5.0,
                 shutdown_grace_s: float = 10.0, on_error: Callable[[], object]) -> None:
        self.initial_s = initial_s
        self.max_s = max_s
        self.shutdown_grace_s = shutdown_grace_s
        self.on_error = on_error
        self._stopped_at: float | None = None

    def request_stop(self) -> None:
        """From now on, retry for ``shutdown_grace_s`` at most."""
        self._stopped_at = time.monotonic()

    def run(self, write: Callable[[], T], what: str) -> T:
        """Call ``write`` until it returns; ``on_error`` is called for every StorageError."""
        delay = self.initial_s
        while True:
            try:
                return write()
            except StorageError as exc:
                self.on_error()
                if self._stopped_at is not None and (
                        time.monotonic() - self._stopped_at > self.shutdown_grace_s):
                    raise
                log.warning("%s failed, retrying in %.1f s: %s", what, delay, exc)
                time.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, self.max_s)
