"""The elderly information database (issue #12): wearers, devices, contacts, zones, regions.

Staff enrol and edit records live (API and console); every change is audited and reaches the
running service within seconds (``ingest`` watches ``registry_version``). The registry file
(``schemas.registry``) stays the import/export format. Layer: on ``foundation`` and ``schemas``;
``ingest``, ``alerts`` and ``console`` read it (docs/registry-database.md).
"""
