"""``python -m tests.faults.inject FAULT DEVICE -- run --config FILE``: the real service with one
injected bug.

The dead-worker tests need a worker that raises something other than a database error, inside
the real ``eldercare run`` process (real broker, real database, real signal handling and exit
status). No configuration can make production code do that, so this launcher patches one method
to raise when a reading of ``DEVICE`` passes through it, then runs the ordinary entry point:

- ``writer``: the commit writer's ``PostgresStore.write`` raises ``RuntimeError`` (a driver bug);
- ``network``: the MQTT source's message callback raises ``RuntimeError`` in paho's network
  thread, a thread eldercare does not start itself (``threading.excepthook`` must catch it);
- ``decoder``: the pipeline thread's decoder raises ``RuntimeError`` (a bug in the hot path).

(The alert folder, escalator, delivery workers and detection timer are not among them: they
catch ``Exception`` per round, log it and retry, as STYLE.md habit 7 asks of loops over items;
what escapes them is a death all the same, through the supervisor's wrapper.)
"""

from __future__ import annotations

import sys
from typing import Any


def _inject(fault: str, device: str) -> None:
    if fault == "writer":
        from ingest.storage import PostgresStore

        write = PostgresStore.write

        def failing_write(self: PostgresStore, batch: Any) -> Any:
            if any(r.device_id == device for r in batch.readings):
                raise RuntimeError(f"injected writer fault on {device}")
            return write(self, batch)

        PostgresStore.write = failing_write  # type: ignore[method-assign]
    elif fault == "network":
        from ingest.source import MqttSource

        on_message = MqttSource._on_message

        def failing_on_message(self: MqttSource, client: Any, userdata: Any, msg: Any) -> None:
            if msg.topic.endswith(f"/{device}"):
                raise RuntimeError(f"injected network-thread fault on {device}")
            on_message(self, client, userdata, msg)

        MqttSource._on_message = failing_on_message  # type: ignore[method-assign]
    elif fault == "decoder":
        from schemas import MessageDecoder

        decode = MessageDecoder.decode

        def failing_decode(self: MessageDecoder, topic: str, payload: bytes,
                           **kwargs: Any) -> Any:
            if topic.endswith(f"/{device}"):
                raise RuntimeError(f"injected decoder fault on {device}")
            return decode(self, topic, payload, **kwargs)

        MessageDecoder.decode = failing_decode  # type: ignore[method-assign]
    else:
        raise SystemExit(f"unknown fault {fault!r}")


def main(argv: list[str]) -> int:
    fault, device, sep, *rest = argv
    assert sep == "--", "usage: python -m tests.faults.inject FAULT DEVICE -- ARGS"
    _inject(fault, device)
    from eldercare.cli import main as eldercare_main

    return eldercare_main(rest)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
