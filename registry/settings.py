"""The ``[enrolment]`` section: the live registry staff work in (issue #12)."""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta


class EnrolmentConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The elderly information database (docs/registry-database.md).

    The top-level ``registry`` option (a file) still loads a registry at start; this section is
    about the database copy staff edit live.
    """

    #: Registry admission (docs/registry.md): ``None`` = on when a registry file is configured
    #: (the behaviour before the database existed); ``true`` = on, the database alone being the
    #: registry (a platform that enrols through the console only); ``false`` = off.
    admission: bool | None = None
    #: How often the running service checks the registry's version for changes (live effect).
    reload_interval_s: Annotated[float, Meta(gt=0, le=60)] = 1.0
    #: The 32-byte secret behind ID-card lookups (HMAC) and their encryption (Fernet), a file
    #: readable by the service only. None: ``$XDG_STATE_HOME/eldercare/registry.key`` (made, mode
    #: 0600, on first use). Losing it makes stored ID-card numbers unreadable and unsearchable.
    secret_file: str | None = None
    #: A region tree file (docs/registry-database.md, "Regions") loaded at start; None keeps
    #: the tree in the database as it is.
    regions: str | None = None
