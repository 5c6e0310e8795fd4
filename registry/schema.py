"""The registry's schema: the tables this component owns, as a migration source.

``registry/sql/``: the region tree, the wearer and device columns staff edit, the binding history,
the append-only ``registry_audit`` and the ``registry_version`` counter behind live reload (0011),
the change log that lets a reload re-read only the wearers that changed (0014).
The tables themselves were created by ingest's 0002 (when a file was their only source).
"""

from __future__ import annotations

from typing import Final

from foundation.migrations import MigrationSource

#: The migration files of the registry (``registry/sql/NNNN_name.sql``).
MIGRATIONS: Final = MigrationSource(package="registry")
