"""Registry admission (issue #7): only devices registered in a topic's region are stored.

The decoder (:class:`schemas.decode.MessageDecoder`) looks every reading's device up in
:attr:`RegistryAdmission.regions`, a plain dict built from the registry (the database's, rebuilt
in the registry watcher's thread at every reload and swapped in between batches,
``ingest/registry_watch.py``), and calls
:meth:`RegistryAdmission.refused` only for a device that is not registered in the region of the
topic it arrived on: that call counts it and words the dead-letter reason. Alarms of such a device
are stored, detected and alerted all the same (routed by the topic's region) and dead-lettered as
a sighting as well; everything else is only dead-lettered. Without a registry there is no
admission: every device id is stored (``docs/registry.md``; production should configure one).
Whether admission is on: :func:`admission_enabled` (``[enrolment] admission``).

The reasons are part of the contract: the duty console reads them back out of ``dead_letters``
(``console/unregistered.py``), so their wording, :func:`schemas.admission.refusal_reason`, and
the pattern that parses them, :data:`schemas.admission.REASON_SQL_PATTERN`, live in ``schemas``,
below both components, and change together (``tests/test_admission.py`` checks both).
"""

from __future__ import annotations

import logging
from typing import Final, Literal

from prometheus_client import Counter

from schemas.admission import refusal_reason
from schemas.registry import Registry

log = logging.getLogger(__name__)

RefusalKind = Literal["unknown_device", "wrong_region"]

#: Metric label for a topic region where no wearer is registered: a publisher that invents
#: regions must not be able to create unbounded series.
OTHER_REGION: Final = "other"


class RegistryAdmission:
    """The registry as the decoder's :class:`~schemas.decode.Admission`, with its counter.

    ``counter``: a Prometheus counter labelled (region, reason, admitted), see
    :class:`ingest.metrics.IngestMetrics`; None counts nothing (tests, tools).
    """

    def __init__(self, registry: Registry, *, counter: Counter | None = None) -> None:
        #: Device id → the region its wearer is registered in.
        self.regions: dict[str, str] = {
            d.id: w.region for w in registry.wearers for d in w.devices}
        self.known_regions = frozenset(w.region for w in registry.wearers)
        self._counter = counter

    def refused(self, *, device_id: str, topic_region: str, type_name: str, alarm: bool) -> str:
        """Count one reading refused by the registry; returns its dead-letter reason."""
        registered = self.regions.get(device_id)
        kind: RefusalKind = "unknown_device" if registered is None else "wrong_region"
        if self._counter is not None:
            label = topic_region if topic_region in self.known_regions else OTHER_REGION
            self._counter.labels(label, kind, "true" if alarm else "false").inc()
        log.debug("refused %s reading of device %s on region %s (%s)", type_name, device_id,
                  topic_region, kind)
        return refusal_reason(device_id, topic_region=topic_region, registered=registered,
                              type_name=type_name, alarm=alarm)


def admission_enabled(setting: bool | None, *, registry_file: bool) -> bool:
    """Whether registry admission is on: ``[enrolment] admission`` when set, otherwise on
    exactly when a registry file is configured (the behaviour before the database existed:
    a service started without a file admits every device, ``docs/registry.md``)."""
    return registry_file if setting is None else setting
