"""An asyncio coroutine run in its own event loop, in a named thread, stoppable from any thread.

The embedded broker and the demo fleet are asyncio code driven from the synchronous demo. Each
runs ``main(stop)`` here: ``start()`` returns once the loop and its ``stop`` event exist, so a
``stop()`` that comes right after can never be lost.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Coroutine
from typing import Any, Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class LoopThread(Generic[T]):
    """Owns one thread, one event loop and one stop event; ``result`` holds what main returned."""

    def __init__(self, name: str, main: Callable[[asyncio.Event], Coroutine[Any, Any, T]]) -> None:
        self.name = name
        self.result: T | None = None
        self.error: BaseException | None = None
        self._main = main
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        async def body() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            self._started.set()
            self.result = await self._main(self._stop)

        try:
            asyncio.run(body())
        except Exception as exc:  # reported to the owner through .error
            self.error = exc
            log.exception("%s failed", self.name)
        finally:
            self._started.set()

    def start(self) -> None:
        """Start the thread; return once its loop runs (or it already failed)."""
        self._thread.start()
        self._started.wait()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Set the stop event from any thread, then wait for main to return."""
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(stop.set)
            except RuntimeError:  # the loop closed between the check and the call
                pass
        self._thread.join(timeout_s)
