"""Bulk import and export of the wearer lists the civil-affairs bureau and the streets keep
(issue #12; the format and the semantics are in docs/registry-database.md, "Import and export").

Three steps, so that a dry run and a real import validate exactly alike:

1. :func:`prepare`: the file's cells as records (pure, no I/O): headers (English or Chinese)
   matched to columns, every cell checked and normalised (phones to E.164, vocabulary labels
   to their codes, ID-card numbers checked and protected), and the checks that need only the
   file (duplicates between rows). Every problem is collected, none stops the others.
2. :func:`import_wearers` checks the records against the database (regions in the tree and in
   the importer's scope, ID-card numbers enrolled for other wearers, devices bound elsewhere,
   IMEIs of other devices) in one transaction; on a real import it then writes everything in
   the same transaction, or nothing when anything is wrong.
3. Writing is ``COPY`` into temporary tables and a few set-based statements (upserts, binding
   history, contacts, audit): 100,000 rows in seconds, and the registry triggers fire per
   statement, so the running service reloads once, after the commit.

:func:`export_wearers` writes the same columns back out (ID-card numbers masked).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import logging
import re
import time
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import msgspec
import phonenumbers
import psycopg
from psycopg import sql

from foundation.errors import StorageError, ValidationError
from registry import idcard
from registry.idcard import IdCardVault
from registry.model import (
    CARE_CATEGORIES,
    COORD_SYSTEMS,
    DEVICE_KINDS,
    LABELS_ZH,
    LIVING_SITUATIONS,
    PROTOCOLS,
    SEXES,
    e164,
)
from registry.tabular import Cell, OutCell, Table, UnreadableFile, read_table, write_csv, write_xlsx
from schemas.regions import covers_any, sql_in_scope

log = logging.getLogger(__name__)

#: The most data rows one file may hold (a city's list is ~100,000).
MAX_ROWS: Final = 200_000
#: The most contacts one row carries.
MAX_CONTACTS: Final = 3

ColumnKind = Literal["id", "text", "idcard", "phone", "date", "year", "region", "imei",
                     "sex", "living", "care", "list", "kind", "protocol", "coord"]


@dataclass(frozen=True, slots=True)
class Column:
    """One column of the list: its key (the English header), the Chinese header written on
    export and the others accepted on import, what it holds and its longest value."""

    key: str
    zh: str
    aliases: tuple[str, ...] = ()
    kind: ColumnKind = "text"
    max_len: int = 100


def _contact_columns(n: int) -> tuple[Column, ...]:
    return (Column(f"contact{n}_name", f"紧急联系人{n}", (f"紧急联系人{n}姓名",)),
            Column(f"contact{n}_relation", f"紧急联系人{n}关系", (), max_len=50),
            Column(f"contact{n}_phone", f"紧急联系人{n}电话", (), "phone"))


#: The columns, in export order.
COLUMNS: Final[tuple[Column, ...]] = (
    Column("wearer_id", "老人编号", ("编号",), "id"),
    Column("name", "姓名"),
    Column("id_card", "身份证号", ("身份证号码", "公民身份号码"), "idcard"),
    Column("sex", "性别", (), "sex"),
    Column("birth_date", "出生日期", (), "date"),
    Column("birth_year", "出生年份", ("出生年",), "year"),
    Column("phone", "联系电话", ("电话", "手机号", "手机号码"), "phone"),
    Column("address", "住址", ("家庭住址", "地址"), max_len=500),
    Column("region", "区划代码", ("行政区划代码",), "region"),
    Column("living_situation", "居住状况", ("居住情况",), "living"),
    Column("care_categories", "照护类别", ("人员类别",), "care"),
    Column("conditions", "健康状况", ("疾病",), "list"),
    Column("guardian_name", "监护人", ("监护人姓名",)),
    Column("guardian_phone", "监护人电话", (), "phone"),
    Column("guardian_relation", "监护人关系", ("与监护人关系",), max_len=50),
    Column("notes", "备注", (), max_len=2000),
    Column("device_id", "设备号", ("设备编号",), "id"),
    Column("device_kind", "设备类型", (), "kind"),
    Column("device_model", "设备型号"),
    Column("protocol", "通信协议", ("协议",), "protocol"),
    Column("imei", "IMEI", (), "imei"),
    Column("sim", "SIM卡号", (), "phone"),
    Column("handed_out_on", "发放日期", (), "date"),
    Column("coord_system", "坐标系", (), "coord"),
    *(c for n in range(1, MAX_CONTACTS + 1) for c in _contact_columns(n)),
)
BY_KEY: Final = {c.key: c for c in COLUMNS}
#: Headers ignored on import (a row serial number is not data).
IGNORED_HEADERS: Final = frozenset({"序号"})
DEVICE_KEYS: Final = ("device_id", "device_kind", "device_model", "protocol", "imei", "sim",
                      "handed_out_on", "coord_system")
CONTACT_KEYS: Final = tuple(c.key for c in COLUMNS if c.key.startswith("contact"))


@functools.lru_cache(maxsize=4096)
def _fold(text: str) -> str:
    """A header or label as compared: full-width folded (NFKC), no spaces, lower case."""
    return re.sub(r"\s+", "", unicodedata.normalize("NFKC", text)).lower()


_HEADERS: Final[dict[str, str]] = {
    _fold(h): c.key for c in COLUMNS for h in (c.key, c.zh, *c.aliases)}


def _vocabulary(codes: Sequence[str], extra: dict[str, str] | None = None) -> dict[str, str]:
    vocab = {_fold(code): code for code in codes}
    vocab.update({_fold(LABELS_ZH[code]): code for code in codes if code in LABELS_ZH})
    vocab.update({_fold(k): v for k, v in (extra or {}).items()})
    return vocab


_VOCABULARIES: Final[dict[ColumnKind, dict[str, str]]] = {
    "sex": _vocabulary(SEXES, {"m": "male", "f": "female"}),
    "living": _vocabulary(LIVING_SITUATIONS),
    "care": _vocabulary(CARE_CATEGORIES, {"低收入": "low_income", "高龄": "over_80"}),
    "kind": _vocabulary(DEVICE_KINDS),
    "protocol": _vocabulary(PROTOCOLS),
    "coord": _vocabulary(COORD_SYSTEMS, {"wgs-84": "wgs84", "gcj-02": "gcj02"}),
}
_SEPARATORS: Final = re.compile(r"[;；、,，]")
_ID: Final = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_REGION: Final = re.compile(r"[a-z0-9-]{1,32}")
_IMEI: Final = re.compile(r"[0-9]{14,16}")
_SCIENTIFIC: Final = re.compile(r"[0-9](\.[0-9]+)?[eE]\+?[0-9]+")
_DATE: Final = re.compile(r"([0-9]{4})\s*[-/.年]\s*([0-9]{1,2})\s*[-/.月]\s*([0-9]{1,2})\s*日?")
#: Doubles hold every integer below 2^53 exactly: an 11-digit phone or a 15-digit IMEI Excel
#: stored as a number is recovered; an 18-digit ID-card number is not (already rounded).
_EXACT_LIMIT: Final = 2**53
#: China's mobile numbers by the phonenumbers metadata itself: the common case (an 11-digit
#: mobile number as written) skips the full parse, which costs ~20 us a number.
def _cn_mobile_pattern() -> str:
    meta = phonenumbers.PhoneMetadata.metadata_for_region("CN")
    pattern = meta.mobile.national_number_pattern if meta and meta.mobile else None
    return pattern or "(?!)"  # no metadata: every number takes the full parse


_CN_MOBILE: Final = re.compile(_cn_mobile_pattern())


#: ``on_progress(stage, done, total)``: stages ``checking`` (cells), ``validating`` (against
#: the database), ``writing``.
ProgressFn = Callable[[str, int, int], None]


# --- The report ----------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Problem:
    """One bad cell (or a problem of the whole file: ``column`` None)."""

    row: int
    column: str | None
    message: str
    value: str | None = None


@dataclass(slots=True)
class ImportReport:
    """What an import found and did (the API's answer; docs/registry-database.md)."""

    rows: int
    valid: int
    errors: list[Problem]
    created: int = 0
    updated: int = 0
    devices_bound: int = 0
    dry_run: bool = True
    #: Seconds spent checking against the database and writing (benchmarks; not in the API).
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Whether the file is valid (and, without dry run, was imported)."""
        return not self.errors


class ImportRejected(Exception):
    """Raised inside the import's transaction to roll it back; carries the report."""

    def __init__(self, report: ImportReport) -> None:
        super().__init__(f"{len(report.errors)} errors")
        self.report = report


# --- Step 1: cells to records --------------------------------------------------------------

@dataclass(slots=True)
class Row:
    """One data row, normalised. ``values`` holds the row's value for every column the file
    has (None = empty cell); derived values beside."""

    number: int
    values: dict[str, Any]
    wearer_id: str | None = None
    id_hmac: str | None = None
    #: The full ID-card number (canonical; in memory only) beside its lookup HMAC. It is
    #: encrypted only when written (Fernet: a random IV, AES and a MAC per number, several
    #: times the HMAC's cost): a dry run need not pay for ciphertext it throws away.
    id_number: str | None = None
    #: A masked ID-card number (as exported): "keep the stored one", checked against it.
    id_masked_keep: str | None = None
    contacts: list[tuple[str, str | None, str]] = field(default_factory=list)
    bad: bool = False


@dataclass(slots=True)
class Prepared:
    """A file read and checked on its own: records and the problems found so far."""

    rows: list[Row]
    present: frozenset[str]
    headers: dict[str, str]  # key -> the header as written
    problems: list[Problem]
    header_row: int
    #: Data rows in the file (also when a header problem left ``rows`` empty).
    count: int
    #: The vault the ID-card numbers are protected with when written.
    vault: IdCardVault


class _CellError(Exception):
    pass


def prepare(table: Table, *, vault: IdCardVault,
            on_progress: ProgressFn | None = None) -> Prepared:
    """Match the header to columns and check every cell (see the module docstring)."""
    problems: list[Problem] = []
    positions: dict[str, int] = {}
    headers: dict[str, str] = {}
    if table.format == "csv" and len(table.header) == 1 and re.search(r"[;\t|]", table.header[0]):
        problems.append(Problem(table.header_row, None, "the columns are separated by"
                                " semicolons or tabs: save the list as CSV with commas"
                                " (逗号分隔) or as an Excel workbook (.xlsx)"))
        return Prepared([], frozenset(), {}, problems, table.header_row, len(table.rows), vault)
    for i, raw in enumerate(table.header):
        if not raw:
            if any(i < len(r) and not _blank(r[i]) for _, r in table.rows):
                problems.append(Problem(table.header_row, None,
                                        f"column {_column_letter(i)} has values but no header"))
            continue
        if _fold(raw) in IGNORED_HEADERS:
            continue
        key = _HEADERS.get(_fold(raw))
        if key is None:
            problems.append(Problem(table.header_row, raw, f"unknown column {raw!r}"
                                    " (docs/registry-database.md lists the columns)"))
        elif key in positions:
            problems.append(Problem(table.header_row, raw,
                                    f"column {key} appears twice ({headers[key]!r} and {raw!r})"))
        else:
            positions[key], headers[key] = i, raw
    for key in ("name", "region"):
        if key not in positions:
            problems.append(Problem(table.header_row, None, f"the required column {key}"
                                    f" ({BY_KEY[key].zh}) is missing"))
    if "wearer_id" not in positions and "id_card" not in positions:
        problems.append(Problem(table.header_row, None, "a column wearer_id (老人编号) or id_card"
                                " (身份证号) is needed to know whom each row is about"))
    present = frozenset(positions)
    rows: list[Row] = []
    total = len(table.rows)
    if problems:
        return Prepared(rows, present, headers, problems, table.header_row, total, vault)
    for i, (number, cells) in enumerate(table.rows, start=1):
        rows.append(_prepare_row(number, cells, positions, headers, vault, problems))
        if on_progress is not None and i % 2000 == 0:
            on_progress("checking", i, total)
    _check_file_duplicates(rows, headers, problems)
    return Prepared(rows, present, headers, problems, table.header_row, total, vault)


def _blank(c: Cell) -> bool:
    return c is None or (isinstance(c, str) and not c.strip())


def _column_letter(i: int) -> str:
    letters = ""
    i += 1
    while i:
        i, r = divmod(i - 1, 26)
        letters = chr(65 + r) + letters
    return letters


def _prepare_row(number: int, cells: Sequence[Cell], positions: dict[str, int],
                 headers: dict[str, str], vault: IdCardVault, problems: list[Problem]) -> Row:
    row = Row(number=number, values={})

    def fail(key: str, message: str, value: Cell = None) -> None:
        shown = None if value is None or key == "id_card" else _shown(value)
        problems.append(Problem(number, headers.get(key, key), message, shown))
        row.bad = True

    for key, i in positions.items():
        cell = cells[i] if i < len(cells) else None
        try:
            row.values[key] = _convert(BY_KEY[key], cell)
        except _CellError as exc:
            fail(key, str(exc), cell)
            row.values[key] = None
    v = row.values
    for key in ("name", "region"):
        if v.get(key) is None and not _failed(problems, number, headers, key):
            fail(key, f"{key} ({BY_KEY[key].zh}) is required")
    # The ID-card number: a full one is protected now; a masked one (an export read back)
    # means "unchanged" and is checked against the stored one later.
    raw_id = v.get("id_card")
    if raw_id is not None:
        if "*" in raw_id:
            if not re.fullmatch(r"[0-9]{4}\*+[0-9]{3}[0-9X]", raw_id.upper()):
                fail("id_card", "a masked ID-card number must look as exported"
                     " (3710**********1234): give the full number")
            else:
                row.id_masked_keep = raw_id.upper()
        else:
            try:
                row.id_hmac = vault.lookup(raw_id)   # checks it (GB 11643)
                row.id_number = idcard.normalize(raw_id)
            except ValidationError as exc:
                fail("id_card", str(exc))
    row.wearer_id = v.get("wearer_id")
    if row.wearer_id is None and row.id_hmac is None:
        if row.id_masked_keep is not None:
            fail("id_card", "a masked ID-card number names nobody: give the wearer_id (老人编号)"
                 " or the full number")
        elif raw_id is None and not _failed(problems, number, headers, "wearer_id"):
            fail("wearer_id" if "wearer_id" in headers else "id_card",
                 "wearer_id (老人编号) or a full ID-card number (身份证号) is required")
    # Birth: the date decides the year; a year given beside it must agree.
    bd, by = v.get("birth_date"), v.get("birth_year")
    if bd is not None and by is not None and bd.year != by:
        fail("birth_year", f"birth year {by} disagrees with the birth date {bd.isoformat()}", by)
    # Guardian: a phone or relation needs a name.
    if v.get("guardian_name") is None and (v.get("guardian_phone") or v.get("guardian_relation")):
        fail("guardian_name", "guardian_name (监护人) is required when a guardian's phone or"
             " relation is given")
    # Device: any device cell needs the device id and kind.
    if any(v.get(k) is not None for k in DEVICE_KEYS if k != "coord_system"):
        if v.get("device_id") is None and not _failed(problems, number, headers, "device_id"):
            fail("device_id", "device_id (设备号) is required when device columns are filled")
        if v.get("device_kind") is None and not _failed(problems, number, headers,
                                                        "device_kind"):
            fail("device_kind", "device_kind (设备类型) is required with a device:"
                 f" one of {', '.join(DEVICE_KINDS)}")
    # Contacts: name and phone together.
    for n in range(1, MAX_CONTACTS + 1):
        name, rel, phone = (v.get(f"contact{n}_{p}") for p in ("name", "relation", "phone"))
        if name is None and rel is None and phone is None:
            continue
        if name is None:
            if not _failed(problems, number, headers, f"contact{n}_name"):
                fail(f"contact{n}_name", f"contact {n}'s name is required with its phone")
        elif phone is None:
            if not _failed(problems, number, headers, f"contact{n}_phone"):
                fail(f"contact{n}_phone", f"contact {n}'s phone is required with its name")
        else:
            row.contacts.append((name, rel, phone))
    return row


def _failed(problems: list[Problem], number: int, headers: dict[str, str], key: str) -> bool:
    """Whether this row's cell of ``key`` was already reported (one message per cell)."""
    col = headers.get(key, key)
    for p in reversed(problems):
        if p.row != number:
            return False
        if p.column == col:
            return True
    return False


def _shown(value: Cell) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e21:
        return f"{value:.15g}" if abs(value) >= _EXACT_LIMIT else str(int(value))
    return str(value)[:200]


def _convert(col: Column, cell: Cell) -> Any:
    """A cell's value for ``col`` (None when empty), or _CellError saying what is wrong."""
    if cell is None or (type(cell) is str and (not cell or cell.isspace())):
        return None   # (only None and blank text are empty cells)
    kind = col.kind
    if kind == "date":
        return _date(cell)
    if kind == "year":
        return _year(cell)
    text = _exact_text(col, cell) if kind in ("id", "idcard", "phone", "imei", "region") \
        else _plain_text(cell)
    if kind == "text":
        if len(text) > col.max_len:
            raise _CellError(f"longer than {col.max_len} characters")
        return text
    if kind == "id":
        if not _ID.fullmatch(text):
            raise _CellError("an id is 1-64 letters, digits and _ . : -")
        return text
    if kind == "region":
        if not _REGION.fullmatch(text):
            raise _CellError("a region is a division code (371002001) or a name of 1-32"
                             " lower-case letters, digits and -")
        return text
    if kind == "idcard":
        return idcard.normalize(text)
    if kind == "phone":
        return _phone_e164(text)
    if kind == "imei":
        if not _IMEI.fullmatch(text):
            raise _CellError("an IMEI is 14-16 digits")
        return text
    if kind == "list":
        items = [s.strip() for s in _SEPARATORS.split(text) if s.strip()]
        for s in items:
            if len(s) > 100:
                raise _CellError("an item is longer than 100 characters")
        return list(dict.fromkeys(items))
    vocab = _VOCABULARIES[kind]
    if kind == "care":
        out: list[str] = []
        for s in _SEPARATORS.split(text):
            if s.strip():
                code = vocab.get(s) or vocab.get(_fold(s))
                if code is None:
                    raise _CellError(f"unknown care category {s.strip()!r}: "
                                     + _choices(CARE_CATEGORIES))
                if code not in out:
                    out.append(code)
        return out
    code = vocab.get(text) or vocab.get(_fold(text))
    if code is None:
        codes = sorted(set(vocab.values()), key=list(vocab.values()).index)
        raise _CellError(f"unknown value {text!r}: {_choices(codes)}")
    return code


def _choices(codes: Sequence[str]) -> str:
    return "one of " + ", ".join(f"{c} ({LABELS_ZH[c]})" if c in LABELS_ZH else c
                                 for c in codes)


def _plain_text(cell: Cell) -> str:
    if type(cell) is str:
        return cell.strip()
    if isinstance(cell, bool):
        return "TRUE" if cell else "FALSE"
    if isinstance(cell, float) and cell.is_integer():
        return str(int(cell))
    if isinstance(cell, dt.datetime | dt.date):
        return cell.isoformat()
    return str(cell).strip()


def _exact_text(col: Column, cell: Cell) -> str:
    """Text meant as digits (ids, ID-card and phone numbers, IMEIs): a number Excel stored is
    taken only when exact, never guessed back from a rounded or scientific form."""
    if type(cell) is str:
        text = cell.strip()
        if not (text[:1].isdigit() and "e" in text.lower() and _SCIENTIFIC.fullmatch(text)):
            return text
    fix = (f"Excel stored the {col.key} column as numbers and rounded it: format the column as"
           " text (设置单元格格式 → 文本) and enter the values again")
    if isinstance(cell, bool | dt.date | dt.time | dt.timedelta):
        raise _CellError(f"expected text, found {type(cell).__name__} {cell}")
    if isinstance(cell, int | float):
        if col.kind == "idcard" or not float(cell).is_integer() or abs(cell) >= _EXACT_LIMIT:
            raise _CellError(fix)
        return str(int(cell))
    text = str(cell).strip()
    if _SCIENTIFIC.fullmatch(text):
        raise _CellError(fix + f" (found {text!r}, scientific notation)")
    return text


def _phone_e164(text: str) -> str:
    """A phone number as people write it, in E.164; Chinese when it has no country code.
    Raises _CellError when ``phonenumbers`` does not take it as a valid number."""
    if len(text) == 11 and _CN_MOBILE.fullmatch(text):
        return "+86" + text
    if len(text) > 32:
        raise _CellError("not a phone number")
    try:
        return e164(text, field=())  # the API's own reading, one definition
    except ValidationError as exc:
        raise _CellError(exc.reason) from None


def _date(cell: Cell) -> dt.date:
    if isinstance(cell, dt.datetime):
        if cell.time() != dt.time():
            raise _CellError("a date without time of day is expected")
        return cell.date()
    if isinstance(cell, dt.date):
        return cell
    if isinstance(cell, int | float) and not isinstance(cell, bool):
        raise _CellError("a number where a date is expected: format the cell as a date, or"
                         " write it as text YYYY-MM-DD")
    text = str(cell).strip()
    m = _DATE.fullmatch(text)
    if m is None:
        raise _CellError("not a date: write YYYY-MM-DD (or a date cell)")
    try:
        d = dt.date(int(m[1]), int(m[2]), int(m[3]))
    except ValueError as exc:
        raise _CellError(f"not a date: {exc}") from None
    if not 1900 <= d.year <= 2100:
        raise _CellError("a date between 1900 and 2100 is expected")
    return d


def _year(cell: Cell) -> int:
    if isinstance(cell, bool | dt.date | dt.time | dt.timedelta):
        raise _CellError("a year (1900-2100) is expected")
    if isinstance(cell, float):
        if not cell.is_integer():
            raise _CellError("a year (1900-2100) is expected")
        year = int(cell)
    elif isinstance(cell, int):
        year = cell
    else:
        text = str(cell).strip().removesuffix("年")
        if not re.fullmatch(r"[0-9]{4}", text):
            raise _CellError("a year (1900-2100) is expected")
        year = int(text)
    if not 1900 <= year <= 2100:
        raise _CellError("a year (1900-2100) is expected")
    return year


def derived_wearer_id(id_hmac: str) -> str:
    """The id of a new wearer a list names by ID-card number only: the same on every import
    of the list, revealing nothing of the number without the registry secret."""
    return "w" + id_hmac[:15]


def _check_file_duplicates(rows: list[Row], headers: dict[str, str],
                           problems: list[Problem]) -> None:
    """Rows of one file naming the same person or device (the later rows are reported)."""
    firsts: dict[tuple[str, str], int] = {}

    def seen(kind: str, key: str | None, row: Row, column: str, what: str) -> None:
        if key is None:
            return
        first = firsts.setdefault((kind, key), row.number)
        if first != row.number:
            problems.append(Problem(row.number, headers.get(column, column),
                                    f"{what} is also on row {first}",
                                    None if column == "id_card" else key))
            row.bad = True

    for row in rows:
        seen("wearer", row.wearer_id, row, "wearer_id", "the same wearer id")
        seen("idcard", row.id_hmac, row, "id_card", "the same ID-card number")
        seen("device", row.values.get("device_id"), row, "device_id", "the same device")
        seen("imei", row.values.get("imei"), row, "imei", "the same IMEI")


# --- Step 2: against the database ----------------------------------------------------------

@dataclass(slots=True)
class _Known:
    regions: set[str]
    wearers: dict[str, tuple[str, bool, str | None]]  # id -> region, active, masked id card
    id_cards: dict[str, str]  # hmac -> id of the active wearer holding it
    devices: dict[str, tuple[str | None, str | None, str, bool]]  # id -> wearer, imei,
    #                                                                region, retired
    imeis: dict[str, str]  # imei -> device id


def _known(conn: psycopg.Connection[Any], rows: list[Row], *, lock: bool) -> _Known:
    """What the database holds about the file's records (rows it writes locked when ``lock``:
    a concurrent edit waits for the import instead of being overwritten or overwriting)."""
    hmacs = [r.id_hmac for r in rows if r.id_hmac]
    regions = list({r.values["region"] for r in rows if r.values.get("region")})
    device_ids = list({r.values["device_id"] for r in rows if r.values.get("device_id")})
    imeis = list({r.values["imei"] for r in rows if r.values.get("imei")})
    for_update = " FOR UPDATE" if lock else ""
    k = _Known(set(), {}, {}, {}, {})
    with conn.cursor() as cur:
        cur.execute("SELECT code FROM regions WHERE code = ANY(%s)", (regions,))
        k.regions = {c for (c,) in cur}
        # Ids derived from ID-card numbers are resolved after the ID-card lookup.
        cur.execute("SELECT id_card_hmac, wearer_id FROM wearers"
                    " WHERE active AND id_card_hmac = ANY(%s)", (hmacs,))
        k.id_cards = dict(cur.fetchall())
        for r in rows:
            if r.wearer_id is None and r.id_hmac is not None:
                r.wearer_id = k.id_cards.get(r.id_hmac) or derived_wearer_id(r.id_hmac)
        wearer_ids = list({r.wearer_id for r in rows if r.wearer_id})
        cur.execute("SELECT wearer_id, region, active, id_card_masked FROM wearers"
                    f" WHERE wearer_id = ANY(%s){for_update}", (wearer_ids,))
        k.wearers = {w: (reg, act, m) for w, reg, act, m in cur}
        cur.execute("SELECT device_id, wearer_id, imei, region, retired_at IS NOT NULL"
                    f" FROM devices WHERE device_id = ANY(%s) OR imei = ANY(%s){for_update}",
                    (device_ids, imeis))
        for d, w, imei, reg, retired in cur:
            k.devices[d] = (w, imei, reg, retired)
            if imei is not None:
                k.imeis[imei] = d
    return k


def _check_known(rows: list[Row], k: _Known, headers: dict[str, str], scopes: Sequence[str],
                 problems: list[Problem]) -> None:
    first_row: dict[str, Row] = {}
    for row in rows:
        def fail(key: str, message: str, value: str | None = None, row: Row = row) -> None:
            problems.append(Problem(row.number, headers.get(key, key), message, value))
            row.bad = True

        v = row.values
        region = v.get("region")
        if region is not None:
            if region not in k.regions:
                fail("region", f"unknown region {region}: not in the region tree", region)
            elif not covers_any(scopes, region):
                fail("region", f"region {region} is outside your regions", region)
        existing = k.wearers.get(row.wearer_id) if row.wearer_id else None
        who = "wearer_id" if "wearer_id" in headers else "id_card"
        if row.wearer_id is not None:
            first = first_row.setdefault(row.wearer_id, row)
            # Ids resolved from ID-card numbers may meet a wearer id given on another row.
            if first is not row and (v.get("wearer_id") is None
                                     or first.values.get("wearer_id") is None):
                fail(who, f"the same wearer ({row.wearer_id}) is also on row {first.number}")
        if existing is not None and not covers_any(scopes, existing[0]):
            fail(who, f"wearer {row.wearer_id} is in region {existing[0]}, outside your regions",
                 v.get("wearer_id"))
        elif existing is not None and not existing[1]:
            fail(who, f"wearer {row.wearer_id} is deactivated: an import does not bring a"
                 " deactivated record back (enrol them anew under another id)",
                 v.get("wearer_id"))
        if row.id_hmac is not None:
            holder = k.id_cards.get(row.id_hmac)
            if holder is not None and holder != row.wearer_id:
                fail("id_card", f"this ID-card number is already enrolled for wearer {holder}")
        if row.id_masked_keep is not None:
            stored = existing[2] if existing is not None else None
            if stored is None or stored.upper() != row.id_masked_keep:
                fail("id_card", "a masked ID-card number keeps the stored one, but "
                     + ("this wearer has none" if existing is None or stored is None
                        else "it does not match the stored one") + ": give the full number")
        device_id = v.get("device_id")
        if device_id is not None:
            dev = k.devices.get(device_id)
            if dev is not None:
                if dev[0] is not None and dev[0] != row.wearer_id:
                    fail("device_id", f"device {device_id} is bound to another wearer"
                         f" ({dev[0]}): unbind it first", device_id)
                elif not covers_any(scopes, dev[2]):
                    fail("device_id", f"device {device_id} is in region {dev[2]}, outside your"
                         " regions", device_id)
                elif dev[3] and dev[0] is None:
                    fail("device_id", f"device {device_id} is retired", device_id)
            imei = v.get("imei")
            other = k.imeis.get(imei) if imei is not None else None
            if other is not None and other != device_id:
                fail("imei", f"IMEI {imei} is registered to device {other}", imei)


# --- Step 3: writing -----------------------------------------------------------------------

#: Wearer columns the file may set, by the keys that carry them.
_WEARER_FIELDS: Final = ("name", "region", "sex", "address", "phone", "living_situation",
                         "care_categories", "conditions", "guardian_name", "guardian_phone",
                         "guardian_relation", "notes")
_LIST_FIELDS: Final = frozenset({"care_categories", "conditions"})
_DEVICE_FIELDS: Final = {"device_model": "model", "protocol": "protocol", "imei": "imei",
                         "sim": "sim", "handed_out_on": "handed_out_on",
                         "coord_system": "coord_system"}

# The record as it was, for the audit's `before` (the shape of `after`, built below).
_BEFORE_JSON: Final = """CASE WHEN w.wearer_id IS NULL THEN NULL ELSE jsonb_build_object(
    'id', w.wearer_id, 'name', w.name, 'region', w.region, 'sex', w.sex,
    'birth_year', w.birth_year, 'birth_date', w.birth_date, 'address', w.address,
    'phone', w.phone, 'living_situation', w.living_situation,
    'care_categories', to_jsonb(w.care_categories), 'conditions', to_jsonb(w.conditions),
    'guardian', CASE WHEN w.guardian_name IS NULL THEN NULL ELSE jsonb_build_object(
        'name', w.guardian_name, 'phone', w.guardian_phone, 'relation', w.guardian_relation) END,
    'notes', w.notes, 'id_card_masked', w.id_card_masked, 'active', w.active,
    'devices', (SELECT coalesce(jsonb_agg(d.device_id ORDER BY d.device_id), '[]')
                FROM devices d WHERE d.wearer_id = w.wearer_id),
    'contacts', (SELECT coalesce(jsonb_agg(jsonb_build_object('name', c.name, 'relation',
                 c.relation, 'phone', c.phone) ORDER BY c.priority), '[]')
                 FROM contacts c WHERE c.wearer_id = w.wearer_id)) END"""


def _after(row: Row, present: frozenset[str]) -> dict[str, Any]:
    """The row as stored, for the audit's ``after`` (ID-card number masked)."""
    v = row.values
    out: dict[str, Any] = {"id": row.wearer_id}
    for key in _WEARER_FIELDS:
        if key in present and not key.startswith("guardian_"):
            out[key] = v.get(key) or ([] if key in _LIST_FIELDS else None)
    if present & {"guardian_name", "guardian_phone", "guardian_relation"}:
        out["guardian"] = None if v.get("guardian_name") is None else {
            "name": v.get("guardian_name"), "phone": v.get("guardian_phone"),
            "relation": v.get("guardian_relation")}
    if "birth_date" in present or "birth_year" in present:
        bd = v.get("birth_date")
        out["birth_year"] = bd.year if bd is not None else v.get("birth_year")
        if "birth_date" in present:
            out["birth_date"] = bd
    if "id_card" in present:
        out["id_card_masked"] = (idcard.mask(row.id_number) if row.id_number is not None
                                 else row.id_masked_keep)
    if v.get("device_id") is not None:
        out["device"] = {"id": v["device_id"], "kind": v.get("device_kind"),
                         **{col: v.get(key) for key, col in _DEVICE_FIELDS.items()
                            if key in present}}
    if present & set(CONTACT_KEYS):
        out["contacts"] = [{"name": n, "relation": r, "phone": p} for n, r, p in row.contacts]
    return out


def _write(conn: psycopg.Connection[Any], prepared: Prepared, k: _Known, *,
           vault: IdCardVault, actor: str,
           filename: str | None, progress: ProgressFn) -> tuple[int, int, int]:
    """Write the (valid) rows; returns (created, updated, devices bound)."""
    rows, present = prepared.rows, prepared.present
    total = len(rows)
    has_birth = bool(present & {"birth_date", "birth_year"})
    has_contacts = bool(present & set(CONTACT_KEYS))
    wearer_cols: list[str] = [c for c in _WEARER_FIELDS if c in present]
    if has_birth:
        wearer_cols += ["birth_year", "birth_date"]
    id_cols = ["id_card_hmac", "id_card_cipher", "id_card_masked"] if "id_card" in present else []
    dev_cols = [col for key, col in _DEVICE_FIELDS.items() if key in present]
    encoder = msgspec.json.Encoder()
    created = sum(1 for r in rows if r.wearer_id not in k.wearers)
    bound = 0
    with conn.cursor() as cur:
        cur.execute("CREATE TEMP TABLE imp_w (wearer_id text, name text, region text,"
                    " sex text, address text, phone text, living_situation text,"
                    " care_categories text[], conditions text[], guardian_name text,"
                    " guardian_phone text, guardian_relation text, notes text,"
                    " birth_year integer, birth_date date, id_card_hmac text,"
                    " id_card_cipher text, id_card_masked text, device_id text, after jsonb)"
                    " ON COMMIT DROP")
        cur.execute("CREATE TEMP TABLE imp_d (device_id text, wearer_id text, kind text,"
                    " region text, model text, protocol text, imei text, sim text,"
                    " handed_out_on date, coord_system text, new_binding boolean)"
                    " ON COMMIT DROP")
        cur.execute("CREATE TEMP TABLE imp_c (wearer_id text, priority integer, name text,"
                    " relation text, phone text) ON COMMIT DROP")
        w_names = ["wearer_id", *_WEARER_FIELDS, "birth_year", "birth_date", "id_card_hmac",
                   "id_card_cipher", "id_card_masked", "device_id", "after"]
        d_rows: list[tuple[Any, ...]] = []
        c_rows: list[tuple[Any, ...]] = []
        with cur.copy(sql.SQL("COPY imp_w ({}) FROM STDIN").format(
                sql.SQL(", ").join(map(sql.Identifier, w_names)))) as copy:
            for i, r in enumerate(rows, start=1):
                v = r.values
                bd = v.get("birth_date")
                sid = vault.protect(r.id_number) if r.id_number is not None else None
                copy.write_row((
                    r.wearer_id,
                    *(v.get(c) or ([] if c in _LIST_FIELDS else None) for c in _WEARER_FIELDS),
                    bd.year if bd is not None else v.get("birth_year"), bd,
                    sid.hmac if sid else None, sid.cipher if sid else None,
                    sid.masked if sid else r.id_masked_keep, v.get("device_id"),
                    encoder.encode(_after(r, present)).decode()))
                device_id = v.get("device_id")
                if device_id is not None:
                    dev = k.devices.get(device_id)
                    new_binding = dev is None or dev[0] != r.wearer_id
                    bound += new_binding
                    d_rows.append((device_id, r.wearer_id, v.get("device_kind"), v["region"],
                                   v.get("device_model"), v.get("protocol"), v.get("imei"),
                                   v.get("sim"), v.get("handed_out_on"),
                                   v.get("coord_system") or "wgs84", new_binding))
                for prio, (name, rel, phone) in enumerate(r.contacts, start=1):
                    c_rows.append((r.wearer_id, prio, name, rel, phone))
                if i % 5000 == 0:
                    progress("writing", i // 2, total)
        if d_rows:
            with cur.copy("COPY imp_d FROM STDIN") as copy:
                for d in d_rows:
                    copy.write_row(d)
        if c_rows:
            with cur.copy("COPY imp_c FROM STDIN") as copy:
                for contact in c_rows:
                    copy.write_row(contact)
        progress("writing", total // 2, total)
        cur.execute("ANALYZE imp_w")
        params = {"actor": actor}
        # The audit's `before` is read before anything changes.
        cur.execute("INSERT INTO registry_audit (actor, action, wearer_id, device_id, region,"
                    " before, after) SELECT %(actor)s, 'wearer_imported', i.wearer_id,"
                    f" i.device_id, i.region, {_BEFORE_JSON}, i.after"
                    " FROM imp_w i LEFT JOIN wearers w ON w.wearer_id = i.wearer_id", params)
        set_cols = wearer_cols + id_cols
        updates: list[sql.Composable] = [
            sql.SQL("{c} = excluded.{c}").format(c=sql.Identifier(c)) for c in set_cols if c not in ("id_card_hmac", "id_card_cipher")
                   and not (c == "birth_date" and "birth_date" not in present)]
        if "birth_year" in present and "birth_date" not in present:
            # Only the year given: a stored date of another year cannot stand beside it.
            updates.append(sql.SQL(
                "birth_date = CASE WHEN extract(year FROM wearers.birth_date)"
                " = excluded.birth_year THEN wearers.birth_date END"))
        for col in ("id_card_hmac", "id_card_cipher"):
            if col in id_cols:
                # A masked number (no hmac, a masked form) keeps the stored one.
                updates.append(sql.SQL(
                    "{c} = CASE WHEN excluded.id_card_hmac IS NULL AND excluded.id_card_masked"
                    " IS NOT NULL THEN wearers.{c} ELSE excluded.{c} END").format(
                        c=sql.Identifier(col)))
        updates += [sql.SQL("updated_at = now()"), sql.SQL("version = wearers.version + 1")]
        insert_cols = ["wearer_id", *set_cols]
        cur.execute(sql.SQL(
            "INSERT INTO wearers ({cols}) SELECT {cols} FROM imp_w"
            " ON CONFLICT (wearer_id) DO UPDATE SET {updates}").format(
                cols=sql.SQL(", ").join(map(sql.Identifier, insert_cols)),
                updates=sql.SQL(", ").join(updates)))
        progress("writing", total * 3 // 5, total)
        if d_rows:
            # A device with no current wearer should have no open binding; close any left
            # over (older data) so the new one can open.
            cur.execute("UPDATE device_bindings b SET unbound_at = now(), unbound_by = %(actor)s,"
                        " unbind_reason = 'rebound by import' FROM imp_d d"
                        " WHERE d.new_binding AND b.device_id = d.device_id"
                        " AND b.unbound_at IS NULL", params)
            dcols = ["device_id", "wearer_id", "kind", "region", *dev_cols]
            dupd: list[sql.Composable] = [
                sql.SQL("{c} = excluded.{c}").format(c=sql.Identifier(c)) for c in dcols[1:]]
            dupd += [sql.SQL("updated_at = now()"), sql.SQL("version = devices.version + 1")]
            cur.execute(sql.SQL(
                "INSERT INTO devices ({cols}) SELECT {cols} FROM imp_d"
                " ON CONFLICT (device_id) DO UPDATE SET {updates}").format(
                    cols=sql.SQL(", ").join(map(sql.Identifier, dcols)),
                    updates=sql.SQL(", ").join(dupd)))
            cur.execute("INSERT INTO device_bindings (device_id, wearer_id, bound_by)"
                        " SELECT device_id, wearer_id, %(actor)s FROM imp_d WHERE new_binding",
                        params)
            cur.execute("INSERT INTO registry_audit (actor, action, wearer_id, device_id,"
                        " region, after) SELECT %(actor)s, 'device_bound', wearer_id, device_id,"
                        " region, jsonb_build_object('device_id', device_id, 'wearer_id',"
                        " wearer_id, 'via', 'import') FROM imp_d WHERE new_binding", params)
        # A wearer's other devices follow them to a new region, as an edit through the API
        # does (registry/store.py): a device's region is what scopes it.
        cur.execute("INSERT INTO registry_audit (actor, action, wearer_id, device_id, region,"
                    " before, after) SELECT %(actor)s, 'device_updated', d.wearer_id, d.device_id,"
                    " i.region, jsonb_build_object('id', d.device_id, 'region', d.region),"
                    " jsonb_build_object('id', d.device_id, 'region', i.region)"
                    " FROM devices d JOIN imp_w i ON i.wearer_id = d.wearer_id"
                    " WHERE d.region <> i.region", params)
        if cur.rowcount:
            cur.execute("UPDATE devices d SET region = i.region, updated_at = now(),"
                        " version = d.version + 1 FROM imp_w i"
                        " WHERE i.wearer_id = d.wearer_id AND d.region <> i.region")
        progress("writing", total * 4 // 5, total)
        if has_contacts:
            # A listed contact the wearer already had (same phone) keeps its email, language
            # and channels, which the list does not carry.
            cur.execute("CREATE TEMP TABLE imp_old_c ON COMMIT DROP AS SELECT c.* FROM contacts c"
                        " JOIN imp_w i ON i.wearer_id = c.wearer_id")
            cur.execute("DELETE FROM contacts c USING imp_w i WHERE c.wearer_id = i.wearer_id")
            cur.execute("INSERT INTO contacts (wearer_id, priority, name, relation, phone, email,"
                        " language, channels) SELECT n.wearer_id, n.priority, n.name,"
                        " n.relation, n.phone, o.email, coalesce(o.language, 'zh'),"
                        " coalesce(o.channels, '{sms}') FROM imp_c n LEFT JOIN"
                        # A join, not a LATERAL probe: temp tables have no index, and one
                        # scan per contact would be quadratic.
                        " (SELECT DISTINCT ON (wearer_id, phone) * FROM imp_old_c"
                        "  ORDER BY wearer_id, phone, priority) o"
                        " ON o.wearer_id = n.wearer_id AND o.phone = n.phone")
        summary = {"rows": total, "created": created, "updated": total - created,
                   "devices_bound": bound, "file": filename}
        cur.execute("INSERT INTO registry_audit (actor, action, after)"
                    " VALUES (%s, 'import', %s::jsonb)",
                    (actor, encoder.encode(summary).decode()))
        progress("writing", total, total)
    return created, total - created, bound


# --- The import ----------------------------------------------------------------------------

def read_and_prepare(data: bytes, *, vault: IdCardVault,
                     on_progress: ProgressFn | None = None) -> Prepared:
    """:func:`registry.tabular.read_table` then :func:`prepare`; an unreadable file is a
    prepared file with one problem (row 0) and no rows."""
    try:
        table = read_table(data, max_rows=MAX_ROWS)
    except UnreadableFile as exc:
        return Prepared([], frozenset(), {}, [Problem(0, None, str(exc))], 0, 0, vault)
    return prepare(table, vault=vault, on_progress=on_progress)


def import_wearers(url_or_conn: str | psycopg.Connection[Any], prepared: Prepared, *,
                   scopes: Sequence[str], actor: str, dry_run: bool,
                   filename: str | None = None,
                   on_progress: ProgressFn | None = None) -> ImportReport:
    """Check ``prepared`` against the database and, unless ``dry_run``, write it: all of it in
    one transaction, or nothing when any row is bad. ``scopes``: the importer's regions (``*``
    = all). Raises StorageError when the database fails."""
    progress = on_progress or (lambda _stage, _done, _total: None)
    rows = prepared.rows
    report = ImportReport(rows=prepared.count, valid=0, errors=list(prepared.problems),
                          dry_run=dry_run)
    if prepared.problems and not rows:
        report.errors.sort(key=_order)
        return report
    t0 = time.perf_counter()
    try:
        with _connection(url_or_conn) as conn:
            try:
                with conn.transaction():
                    if dry_run:
                        conn.execute("SET TRANSACTION READ ONLY")
                    k = _known(conn, rows, lock=not dry_run)
                    _check_known(rows, k, prepared.headers, scopes, report.errors)
                    progress("validating", len(rows), len(rows))
                    report.timings["validate_s"] = time.perf_counter() - t0
                    report.created = sum(1 for r in rows if r.wearer_id not in k.wearers)
                    report.updated = len(rows) - report.created
                    report.devices_bound = sum(
                        1 for r in rows if r.values.get("device_id") is not None
                        and (k.devices.get(r.values["device_id"]) or (None,))[0] != r.wearer_id)
                    if report.errors:
                        report.created = report.updated = report.devices_bound = 0
                        raise ImportRejected(report)
                    if not dry_run:
                        t1 = time.perf_counter()
                        _write(conn, prepared, k, vault=prepared.vault, actor=actor,
                               filename=filename,
                               progress=progress)
                        report.timings["write_s"] = time.perf_counter() - t1
                        # Counts and the actor only: logs carry no personal data.
                        log.info("wearer list imported by %s: %d rows, %d created, %d updated,"
                                 " %d devices bound", actor, report.rows, report.created,
                                 report.updated, report.devices_bound)
            except ImportRejected:
                pass
    except psycopg.errors.UniqueViolation as exc:
        # Someone enrolled the same ID-card number or IMEI while the import ran.
        report.errors.append(Problem(0, None, "a record of the file was enrolled by someone"
                                     f" else meanwhile; nothing was written: run it again"
                                     f" ({exc.diag.constraint_name})"))
        report.created = report.updated = report.devices_bound = 0
    except psycopg.Error as exc:
        raise StorageError(f"import failed, nothing written: {exc}") from exc
    report.errors.sort(key=_order)
    report.valid = len(rows) - sum(1 for r in rows if r.bad)
    return report


def _order(p: Problem) -> tuple[int, int]:
    return p.row, _COLUMN_ORDER.get(p.column or "", -1)


_COLUMN_ORDER: Final = {c.key: i for i, c in enumerate(COLUMNS)}


class _connection:
    """A connection from a URL (closed after), or the caller's (left open)."""

    def __init__(self, url_or_conn: str | psycopg.Connection[Any]) -> None:
        self._given = url_or_conn if isinstance(url_or_conn, psycopg.Connection) else None
        self._url = url_or_conn if isinstance(url_or_conn, str) else None
        self._conn: psycopg.Connection[Any] | None = None

    def __enter__(self) -> psycopg.Connection[Any]:
        if self._given is not None:
            return self._given
        assert self._url is not None
        self._conn = psycopg.connect(self._url, autocommit=True)
        return self._conn

    def __exit__(self, *exc: object) -> None:
        if self._conn is not None:
            self._conn.close()


def import_file(url_or_conn: str | psycopg.Connection[Any], data: bytes, *,
                vault: IdCardVault, scopes: Sequence[str], actor: str, dry_run: bool,
                filename: str | None = None,
                on_progress: ProgressFn | None = None) -> ImportReport:
    """Read, check and (unless ``dry_run``) import one file; see :func:`import_wearers`."""
    t0 = time.perf_counter()
    prepared = read_and_prepare(data, vault=vault, on_progress=on_progress)
    parse_s = time.perf_counter() - t0
    if on_progress is not None:
        on_progress("reading", len(prepared.rows), len(prepared.rows))
    report = import_wearers(url_or_conn, prepared, scopes=scopes, actor=actor, dry_run=dry_run,
                            filename=filename, on_progress=on_progress)
    report.timings["parse_s"] = parse_s
    return report


# --- Export --------------------------------------------------------------------------------

ExportFormat = Literal["csv", "xlsx"]


def export_rows(conn: psycopg.Connection[Any], *, regions: list[str] | None,
                lang: Literal["en", "zh"] = "en") -> Iterator[list[OutCell]]:
    """The active wearers within ``regions`` (None = all; the covering rules of
    :func:`schemas.regions.sql_in_scope`) as rows of :data:`COLUMNS`, by id."""
    def label(code: str) -> str:
        return LABELS_ZH.get(code, code) if lang == "zh" else code

    query = (
        "SELECT w.wearer_id, w.name, w.id_card_masked, w.sex, w.birth_date, w.birth_year,"
        " w.phone, w.address, w.region, w.living_situation, w.care_categories, w.conditions,"
        " w.guardian_name, w.guardian_phone, w.guardian_relation, w.notes,"
        " d.device_id, d.kind, d.model, d.protocol, d.imei, d.sim, d.handed_out_on,"
        " d.coord_system, c.contacts"
        " FROM wearers w"
        " LEFT JOIN LATERAL (SELECT d.* FROM devices d"
        "   LEFT JOIN device_bindings b ON b.device_id = d.device_id AND b.unbound_at IS NULL"
        "   WHERE d.wearer_id = w.wearer_id"
        "   ORDER BY b.bound_at DESC NULLS LAST, d.device_id LIMIT 1) d ON true"
        " LEFT JOIN LATERAL (SELECT array_agg(ARRAY[x.name, coalesce(x.relation, ''), x.phone]"
        "   ORDER BY x.priority) AS contacts FROM (SELECT * FROM contacts x"
        "   WHERE x.wearer_id = w.wearer_id ORDER BY x.priority LIMIT %(n)s) x) c ON true"
        f" WHERE w.active AND {sql_in_scope('w.region', 'regions')}"
        " ORDER BY w.wearer_id")
    with conn.cursor(name="registry_export") as cur:
        cur.itersize = 2000
        cur.execute(query, {"regions": regions, "n": MAX_CONTACTS})
        for (wid, name, masked, sex, bdate, byear, phone, address, region, living, cats,
             conds, gname, gphone, grel, notes, did, kind, model, proto, imei, sim, handed,
             coord, contacts) in cur:
            out: list[OutCell] = [
                wid, name, masked, label(sex) if sex else None, bdate,
                str(byear) if byear is not None else None, phone, address, region,
                label(living) if living else None,
                ("、" if lang == "zh" else ";").join(label(c) for c in cats) or None,
                ("、" if lang == "zh" else ";").join(conds) or None, gname, gphone, grel, notes,
                did, label(kind) if kind else None, model, proto, imei, sim, handed,
                coord if did else None]
            cs = list(contacts or [])
            for n in range(MAX_CONTACTS):
                if n < len(cs):
                    cname, crel, cphone = cs[n]
                    out += [cname, crel or None, cphone]
                else:
                    out += [None, None, None]
            yield out


def export_header(lang: Literal["en", "zh"]) -> list[str]:
    """The header row of an export."""
    return [c.zh if lang == "zh" else c.key for c in COLUMNS]


def export_wearers(url: str, *, fmt: ExportFormat, regions: list[str] | None,
                   lang: Literal["en", "zh"] = "en") -> bytes:
    """The export file (``fmt``) of the active wearers within ``regions`` (None = all)."""
    try:
        with psycopg.connect(url) as conn:
            conn.read_only = True
            rows = list(export_rows(conn, regions=regions, lang=lang))
    except psycopg.Error as exc:
        raise StorageError(f"export failed: {exc}") from exc
    header = export_header(lang)
    return write_csv(header, rows) if fmt == "csv" else write_xlsx(header, rows)


def report_dict(report: ImportReport) -> dict[str, Any]:
    """The report as the API answers it (no timings; ``value`` only where there is one)."""
    d = dataclasses.asdict(report)
    d.pop("timings")
    d["errors"] = [{k: val for k, val in e.items() if k != "value" or val is not None}
                   for e in d["errors"]]
    return d
