"""The dead-letter reasons of registry admission (issue #7): a contract between two components.

Ingest's registry admission (``ingest/admission.py``, the decoder's
:class:`~schemas.decode.Admission`) dead-letters a reading of a device not registered in its
topic's region with the reason :func:`refusal_reason` words; the duty console
(``console/unregistered.py``) reads those sightings back out of ``dead_letters`` with
:data:`REASON_SQL_PATTERN`. Neither component may import the other, so the wording and its
pattern live here, below both, and change together (``tests/test_admission.py`` checks that the
pattern parses every reason and nothing else).
"""

from __future__ import annotations

from typing import Final

#: PostgreSQL (ARE) pattern of the reasons :func:`refusal_reason` writes, optionally behind the
#: ``reading [i]: `` prefix of a reading in an array. Groups: 1 unknown device id, 2 device id
#: registered elsewhere, 3 the region it is registered in, 4 wire type, 5 ``alarm admitted`` or
#: ``reading not stored``. Anchored, and the ids cannot hold ``"``: a malformed topic quoted in
#: another reason cannot pass for a sighting.
REASON_SQL_PATTERN: Final = (
    r'^(?:reading \[[0-9]+\]: )?(?:unknown device "([^"]+)" \(not in the registry\)'
    r'|device "([^"]+)" is registered in region ([a-z0-9-]+), not [a-z0-9-]+)'
    r': ([a-z_]+) (alarm admitted|reading not stored)')


def refusal_reason(device_id: str, *, topic_region: str, registered: str | None, type_name: str,
                   alarm: bool) -> str:
    """The dead-letter reason of a reading of ``device_id`` arriving on ``topic_region``.

    ``registered``: the region the device is registered in, None if it is in no region.
    ``alarm``: the reading is an alarm, admitted all the same.
    """
    where = (f'unknown device "{device_id}" (not in the registry)' if registered is None else
             f'device "{device_id}" is registered in region {registered}, not {topic_region}')
    what = ("alarm admitted anyway (alarms are never dropped)" if alarm else
            "reading not stored")
    return f"{where}: {type_name} {what}"
