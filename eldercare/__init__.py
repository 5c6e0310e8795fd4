"""eldercare: telemetry ingest, detection and alerting for elderly-care safety devices.

The application shell (command line, configuration, embedded demo) lives here; the domain packages
sit beside it as the design card asks: ``schemas`` (wire contract), ``ingest`` (MQTT to database),
``detectors``, ``alerts`` and ``device_sim``.
"""

__version__ = "0.1.0"
