"""Components that start and stop: ``with component:`` runs it for the block.

The service's long-lived parts (the application, ingest, the HTTP server, each polling worker)
have explicit ``start()`` and ``stop()``; :class:`StartStop` gives them the context-manager
form once, so a test or a tool that runs one for a block cannot forget the stop, whatever
the block raises.
"""

from __future__ import annotations

from types import TracebackType
from typing import Self


class StartStop:
    """Mixin: ``__enter__`` calls :meth:`start` and returns the object; ``__exit__`` calls
    :meth:`stop` (with its defaults), also when the block raised."""

    def start(self) -> object:
        raise NotImplementedError

    def stop(self) -> object:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
