"""eldercare: telemetry ingest, detection and alerting for elderly-care safety devices.

The application shell (command line, configuration, embedded demo) lives here; the components sit
below it as the design card asks: ``schemas`` (wire contract), ``detectors``, ``ingest`` (MQTT to
database), ``alerts``, ``console`` and ``device_sim``, all on ``foundation`` (docs/architecture.md).
"""

from foundation import __version__

__all__ = ["__version__"]
