"""The duty console's schema: its tables, as a migration source.

``console/sql/``: staff accounts and sessions (0007) and the login-unlock time (0008). The
application shell applies them with the other components' files (``eldercare.schema``).
"""

from __future__ import annotations

from typing import Final

from foundation.migrations import MigrationSource

#: The migration files of the console (``console/sql/NNNN_name.sql``).
MIGRATIONS: Final = MigrationSource(package="console")
