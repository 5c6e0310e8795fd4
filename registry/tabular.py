"""Tables in files: the CSV and Excel lists staff import and export (docs/registry-database.md,
"Import and export").

Reading gives the cells as the file holds them (text, numbers, dates), numbered as the
spreadsheet shows them, so an error can say "row 7"; what a cell *means* is the importer's
business (:mod:`registry.importer`). Writing takes rows of text and dates.

- CSV: UTF-8 (a byte-order mark, as Excel writes "CSV UTF-8", is dropped) or GB18030, what
  Chinese Excel writes as plain "CSV". UTF-8 is tried first: GB18030 decodes almost any byte
  string, so trying it first would turn a UTF-8 file into nonsense without an error, while a
  real GB18030 file of Chinese text is practically never valid UTF-8.
- Workbooks (XLSX, and XLS/ODS, which calamine reads the same way): the first sheet, every
  row kept (empty leading rows too) so row numbers match Excel's.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final, cast

import python_calamine
import xlsxwriter  # type: ignore[import-untyped]

from foundation.errors import ValidationError

#: What a cell may hold once read: calamine gives numbers as float (int for some formats),
#: dates and datetimes for date cells, bool for logical cells; CSV gives text.
Cell = str | int | float | bool | dt.date | dt.datetime | dt.time | dt.timedelta | None

#: A workbook is a ZIP (XLSX, ODS) or an OLE compound file (XLS); anything else is read as CSV.
_ZIP_MAGIC: Final = b"PK\x03\x04"
_OLE_MAGIC: Final = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_UTF8_BOM: Final = b"\xef\xbb\xbf"


class UnreadableFile(ValidationError):
    """The file cannot be read as a table at all (not CSV, XLSX, XLS or ODS; no header)."""


@dataclass(frozen=True, slots=True)
class Table:
    """A file's first sheet: the header row and the non-empty rows below it.

    ``header_row`` and each row's number are 1-based, as the spreadsheet shows them; rows whose
    cells are all empty are left out (they are not records and not errors).
    """

    format: str  # "csv" or "workbook"
    header_row: int
    header: list[str]
    rows: list[tuple[int, Sequence[Cell]]]


def is_workbook(data: bytes) -> bool:
    """Whether ``data`` is a workbook (XLSX/ODS ZIP or XLS OLE file), by its first bytes."""
    return data.startswith((_ZIP_MAGIC, _OLE_MAGIC))


def read_table(data: bytes, *, max_rows: int) -> Table:
    """The table in ``data`` (a workbook by its magic bytes, else CSV). Raises
    :class:`UnreadableFile` naming the problem; more than ``max_rows`` data rows is one too."""
    if is_workbook(data):
        fmt, cells = "workbook", _workbook_rows(data)
    else:
        fmt, cells = "csv", _csv_rows(data)
    header_at: int | None = None
    rows: list[tuple[int, Sequence[Cell]]] = []
    header: list[str] = []
    for number, row in enumerate(cells, start=1):
        if _empty(row):
            continue
        if header_at is None:
            header_at = number
            header = [_header_text(c) for c in row]
            continue
        rows.append((number, row))
        if len(rows) > max_rows:
            raise UnreadableFile(f"more than {max_rows} rows: split the list into several files")
    if header_at is None:
        raise UnreadableFile("the file is empty: the first row must name the columns")
    return Table(format=fmt, header_row=header_at, header=header, rows=rows)


def _empty(row: Sequence[Cell]) -> bool:
    return all(c is None or (isinstance(c, str) and not c.strip()) for c in row)


def _header_text(cell: Cell) -> str:
    if cell is None:
        return ""
    if isinstance(cell, float) and cell.is_integer():
        return str(int(cell))
    return str(cell).strip()


def _csv_rows(data: bytes) -> list[list[Cell]]:
    data = data.removeprefix(_UTF8_BOM)
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise UnreadableFile("the file is UTF-16 (Excel's \"Unicode text\"): save it as"
                             " \"CSV UTF-8\" or as an Excel workbook (.xlsx)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        try:
            text = data.decode("gb18030")
        except UnicodeDecodeError as exc:
            raise UnreadableFile("the file is neither an Excel workbook nor CSV in UTF-8 or"
                                 f" GB18030 (undecodable bytes at offset {exc.start})") from None
    if "\x00" in text:
        raise UnreadableFile("the file is not text (it holds NUL characters): upload the"
                             " .xlsx or a CSV")
    try:
        return [list(r) for r in csv.reader(io.StringIO(text, newline=""), strict=True)]
    except csv.Error as exc:
        raise UnreadableFile(f"not valid CSV: {exc}") from None


def _workbook_rows(data: bytes) -> list[list[Cell]]:
    try:
        book = python_calamine.CalamineWorkbook.from_filelike(io.BytesIO(data))
        if not book.sheet_names:
            raise UnreadableFile("the workbook has no sheet")
        sheet = book.get_sheet_by_index(0)
        # skip_empty_area=False: keep the empty rows above the first filled one, so row
        # numbers are Excel's.
        rows = cast("list[list[Cell]]", sheet.to_python(skip_empty_area=False))
    except UnreadableFile:
        raise
    except Exception as exc:  # noqa: BLE001 - calamine's own errors, ValueError, OSError...
        raise UnreadableFile(f"the workbook cannot be read: {exc}") from None
    return rows


# --- Writing -------------------------------------------------------------------------------

#: What a written cell may hold: text, a date, or nothing.
OutCell = str | dt.date | None

CSV_MEDIA_TYPE: Final = "text/csv; charset=utf-8"
XLSX_MEDIA_TYPE: Final = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def write_csv(header: Sequence[str], rows: Iterable[Sequence[OutCell]]) -> bytes:
    """CSV in UTF-8 *with* a byte-order mark: without it Excel opens UTF-8 as the local code
    page and shows Chinese as mojibake. Dates as ``YYYY-MM-DD``."""
    out = io.StringIO(newline="")
    w = csv.writer(out, lineterminator="\r\n")
    w.writerow(header)
    for row in rows:
        w.writerow(["" if c is None else c.isoformat() if isinstance(c, dt.date) else c
                    for c in row])
    return _UTF8_BOM + out.getvalue().encode("utf-8")


def write_xlsx(header: Sequence[str], rows: Iterable[Sequence[OutCell]], *,
               sheet_name: str = "wearers") -> bytes:
    """An XLSX workbook: every text as a *text* cell (an ID-card or phone number must not
    become a rounded number in Excel), dates as date cells shown ``yyyy-mm-dd``."""
    buf = io.BytesIO()
    # constant_memory: rows are flushed as written, so 100,000 rows do not sit in memory twice.
    book = xlsxwriter.Workbook(buf, {"in_memory": True, "constant_memory": True})
    try:
        sheet = book.add_worksheet(sheet_name)
        bold = book.add_format({"bold": True})
        text = book.add_format({"num_format": "@"})
        date = book.add_format({"num_format": "yyyy-mm-dd"})
        sheet.set_column(0, max(len(header) - 1, 0), 16, text)
        for col, name in enumerate(header):
            sheet.write_string(0, col, name, bold)
        sheet.freeze_panes(1, 0)
        for r, row in enumerate(rows, start=1):
            for col, c in enumerate(row):
                if c is None:
                    continue
                if isinstance(c, dt.date):
                    sheet.write_datetime(r, col, dt.datetime(c.year, c.month, c.day), date)
                else:
                    sheet.write_string(r, col, c)
    finally:
        book.close()
    return buf.getvalue()
