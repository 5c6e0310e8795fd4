"""``eldercare detect``: the command-line side of offline detection.

The runner, :func:`detectors.replay.run_detect`, reads lines from an iterable and writes events
to a text stream, and opens nothing; this module opens what the command line names. Bad lines are
reported on stderr; ``--strict`` makes any bad line a failure (exit 1), and a detector that fails
on a batch makes the run fail (exit 1) too (``eldercare/cli.py``).
"""

from __future__ import annotations

import sys
from typing import IO


def open_input(path: str) -> IO[bytes]:
    """The input file, or stdin for ``-``."""
    return sys.stdin.buffer if path == "-" else open(path, "rb")
