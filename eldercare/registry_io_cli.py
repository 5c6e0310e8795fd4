"""``eldercare registry import FILE [--dry-run] [--actor NAME]`` and ``eldercare registry export
FILE [--lang zh]``: the wearer lists of docs/registry-database.md ("Import and export") from
the command line, acting for every region.

A list of 100,000 elders takes tens of seconds: progress goes to stderr as a bar redrawn in
place on a terminal, a line every 10 s otherwise (as ``eldercare sim``), so logs and CI keep
every line.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING, Literal

from foundation.errors import EldercareError
from schemas.regions import ALL_REGIONS

if TYPE_CHECKING:
    from eldercare.config import Config

_STAGES = {"checking": (0.0, 0.3), "validating": (0.3, 0.4), "writing": (0.4, 1.0)}


class StageProgress:
    """Progress of an import's stages on ``stream``: a bar on a terminal, else a line every
    ``every_s`` seconds."""

    def __init__(self, *, stream: IO[str] | None = None, every_s: float = 10.0) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.every_s = every_s
        self._last: float | None = None
        self._drawn = False

    def __call__(self, stage: str, done: int, total: int) -> None:
        lo, hi = _STAGES.get(stage, (0.0, 1.0))
        part = done / total if total else 1.0
        overall = lo + (hi - lo) * min(max(part, 0.0), 1.0)
        text = f"{overall:4.0%} {stage} ({done:,} of {total:,} rows)"
        now = time.monotonic()
        if self.tty:
            bar = "#" * round(overall * 30)
            self.stream.write(f"\r[{bar:<30}] {text}\x1b[K")
            self.stream.flush()
            self._drawn = True
        elif self._last is None or now - self._last >= self.every_s:
            print(f"eldercare registry: {text}", file=self.stream, flush=True)
            self._last = now

    def close(self) -> None:
        """End the bar's line (a terminal)."""
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False


def run_import(config: Config, path: str, *, dry_run: bool, actor: str,
               out: IO[str] | None = None) -> int:
    """Import (or check) one file; prints every error and the counts. 0 when valid."""
    # Imported here: the parser is built for every command, the spreadsheet readers are not.
    from registry.idcard import load_vault
    from registry.importer import import_file

    out = out or sys.stdout
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise EldercareError(f"cannot read {path}: {exc}") from exc
    vault = load_vault(config.enrolment.secret_file)
    progress = StageProgress()
    try:
        report = import_file(config.database.url, data, vault=vault, scopes=[ALL_REGIONS],
                             actor=actor, dry_run=dry_run, filename=Path(path).name,
                             on_progress=progress)
    finally:
        progress.close()
    for e in report.errors:
        where = f"row {e.row}" + (f", {e.column}" if e.column else "")
        value = f" [{e.value}]" if e.value is not None else ""
        print(f"{path}: {where}: {e.message}{value}", file=out)
    if not report.ok:
        print(f"{path}: {len(report.errors)} errors in {report.rows - report.valid} of"
              f" {report.rows} rows; nothing written", file=out)
        return 1
    verb = "would create" if dry_run else "created"
    print(f"{path}: {report.rows} rows valid; {verb} {report.created}, "
          f"{'would update' if dry_run else 'updated'} {report.updated} wearers,"
          f" {'would bind' if dry_run else 'bound'} {report.devices_bound} devices", file=out)
    return 0


def run_export(config: Config, path: str, *, lang: Literal["en", "zh"],
               out: IO[str] | None = None) -> int:
    """Export every active wearer to ``path`` (.xlsx: a workbook; anything else CSV)."""
    from registry.importer import export_wearers

    fmt: Literal["csv", "xlsx"] = "xlsx" if path.lower().endswith(".xlsx") else "csv"
    data = export_wearers(config.database.url, fmt=fmt, regions=None, lang=lang)
    try:
        Path(path).write_bytes(data)
    except OSError as exc:
        raise EldercareError(f"cannot write {path}: {exc}") from exc
    print(f"{path}: exported ({len(data):,} bytes, {fmt})", file=out or sys.stdout)
    return 0


def add_registry_io_options(p: argparse.ArgumentParser) -> None:
    """The options of ``registry import|export`` (beside ``check|load``)."""
    p.add_argument("--dry-run", action="store_true",
                   help="import: check the file against the database, write nothing")
    p.add_argument("--actor", default="cli", help="import: who imports (the audit's actor)")
    p.add_argument("--lang", choices=["en", "zh"], default="en",
                   help="export: English or Chinese headers and labels")
