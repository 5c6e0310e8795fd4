"""Free TCP ports, for servers told to listen "anywhere free" (tests, the demo's stand-ins)."""

from __future__ import annotations

import socket


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (another process may take it before we bind:
    callers that can, bind port 0 instead)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])
