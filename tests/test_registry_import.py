"""Bulk import and export of wearer lists (issue #12; registry/importer.py, registry/tabular.py,
console/registry_import_api.py), against a real PostgreSQL.

Every kind of bad cell the dry run must report is put in one file and the report is compared
cell by cell (row as the spreadsheet numbers it, column as the header names it); the real
import is all-or-nothing; CSV in UTF-8 (with and without BOM) and GB18030 and XLSX written by
XlsxWriter read alike; an export imports back without an error; the HTTP API checks roles.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import xlsxwriter  # type: ignore[import-untyped]

from alerts.api import create_app, require_principal
from alerts.auth import TokenEntry, TokenTable, hash_token, new_token
from alerts.store import AlertStore
from console.registry_import_api import BODY_LIMITS, registry_import_router
from eldercare.cli import main as cli_main
from foundation.clock import ManualClock
from foundation.http_server import HttpServer
from registry.idcard import IdCardVault
from registry.importer import (
    ImportReport,
    export_wearers,
    import_file,
)
from registry.tabular import read_table
from tests.http_raw import raw_post

VAULT = IdCardVault(b"k" * 32)
STREET_A, STREET_B = "371002001", "371002002"
REGIONS = [("37", "山东省", None, "province"), ("3710", "威海市", "37", "city"),
           ("371002", "环翠区", "3710", "district"),
           (STREET_A, "环翠楼街道", "371002", "street"), (STREET_B, "鲸园街道", "371002", "street")]
_W = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)


def id_card(seq: int, born: str = "19440312") -> str:
    """A valid ID-card number (GB 11643 check digit) of Huancui district."""
    body = f"371002{born}{seq:03d}"
    return body + "10X98765432"[sum(int(d) * w for d, w in zip(body, _W, strict=True)) % 11]


def bad_checksum(number: str) -> str:
    last = number[-1]
    return number[:-1] + ("0" if last != "0" else "1")


HEADER = ["wearer_id", "name", "id_card", "sex", "birth_date", "phone", "region",
          "living_situation", "care_categories", "guardian_name", "guardian_phone",
          "device_id", "device_kind", "imei", "contact1_name", "contact1_relation",
          "contact1_phone"]


def row(n: int, **over: Any) -> dict[str, Any]:
    """A valid row for wearer W-n (device B-n, IMEI 8612345678900nn)."""
    base = {"wearer_id": f"W-{n}", "name": f"老人{n}", "id_card": id_card(n), "sex": "female",
            "birth_date": "1944-03-12", "phone": f"1386310{n:04d}", "region": STREET_A,
            "living_situation": "alone", "care_categories": "dementia;special_difficulty",
            "guardian_name": "李强", "guardian_phone": "13863100001", "device_id": f"B-{n}",
            "device_kind": "bracelet", "imei": f"8612345678{n:05d}", "contact1_name": "李强",
            "contact1_relation": "儿子", "contact1_phone": f"1396310{n:04d}"}
    base.update(over)
    return base


def csv_bytes(rows: list[dict[str, Any]], header: list[str] = HEADER, *,
              encoding: str = "utf-8", bom: bool = False) -> bytes:
    out = io.StringIO(newline="")
    w = csv.writer(out)
    w.writerow(header)
    for r in rows:
        w.writerow([r.get(h, "") if r.get(h) is not None else "" for h in header])
    data = out.getvalue().encode(encoding)
    return (b"\xef\xbb\xbf" + data) if bom else data


def xlsx_bytes(header: list[str], rows: list[list[Any]], *, skip_rows: int = 0) -> bytes:
    buf = io.BytesIO()
    book = xlsxwriter.Workbook(buf, {"in_memory": True})
    sheet = book.add_worksheet("名单")
    date = book.add_format({"num_format": "yyyy-mm-dd"})
    sheet.write_row(skip_rows, 0, header)
    for r, values in enumerate(rows, start=skip_rows + 1):
        for c, v in enumerate(values):
            if isinstance(v, dt.date):
                sheet.write_datetime(r, c, dt.datetime(v.year, v.month, v.day), date)
            elif isinstance(v, int | float):
                sheet.write_number(r, c, v)
            elif v is not None:
                sheet.write_string(r, c, v)
    book.close()
    return buf.getvalue()


@pytest.fixture
def db(migrated_db: str) -> str:
    with psycopg.connect(migrated_db, autocommit=True) as conn:
        for code, name, parent, level in REGIONS:
            conn.execute("INSERT INTO regions (code, name, parent, level) VALUES (%s, %s, %s, %s)"
                         " ON CONFLICT DO NOTHING", (code, name, parent, level))
    return migrated_db


def run(db: str, data: bytes, *, dry_run: bool = True, scopes: list[str] | None = None,
        actor: str = "clerk1") -> ImportReport:
    return import_file(db, data, vault=VAULT, scopes=scopes or ["*"], actor=actor,
                       dry_run=dry_run, filename="list.csv")


def cells(report: ImportReport) -> set[tuple[int, str | None]]:
    return {(e.row, e.column) for e in report.errors}


def scalar(db: str, query: str, *args: Any) -> Any:
    with psycopg.connect(db) as conn:
        r = conn.execute(query, args).fetchone()
        return None if r is None else r[0]


def enrol(db: str, wearer_id: str, *, card: str | None = None, region: str = STREET_A,
          device: str | None = None, imei: str | None = None) -> None:
    """A wearer (and a device bound to them) as the API would have enrolled them."""
    stored = VAULT.protect(card) if card else None
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("INSERT INTO wearers (wearer_id, name, region, id_card_hmac, id_card_cipher,"
                     " id_card_masked) VALUES (%s, %s, %s, %s, %s, %s)",
                     (wearer_id, "已登记", region, stored and stored.hmac,
                      stored and stored.cipher, stored and stored.masked))
        if device:
            conn.execute("INSERT INTO devices (device_id, wearer_id, kind, region, imei)"
                         " VALUES (%s, %s, 'bracelet', %s, %s)", (device, wearer_id, region, imei))
            conn.execute("INSERT INTO device_bindings (device_id, wearer_id, bound_by)"
                         " VALUES (%s, %s, 'api')", (device, wearer_id))


# --- Dry run: every kind of error, by row and column ---------------------------------------

def test_dry_run_reports_every_bad_cell_by_row_and_column_and_writes_nothing(db: str) -> None:
    enrol(db, "OLD-1", card=id_card(900), device="D-OLD", imei="861234567800999")
    rows = [
        row(1),                                                 # 2: valid
        row(2, id_card=id_card(1)),                             # 3: ID card twice in the file
        row(3, id_card=id_card(900)),                           # 4: ID card of OLD-1
        row(4, device_id="B-1"),                                # 5: device twice in the file
        row(5, imei="861234567800001"),                         # 6: IMEI twice in the file
        row(6, device_id="D-OLD", imei=""),                     # 7: device bound to OLD-1
        row(7, region="371099"),                                # 8: region not in the tree
        row(8, region=STREET_B),                                # 9: outside the scope
        row(9, phone="12345"),                                  # 10: bad phone
        row(10, id_card=bad_checksum(id_card(10))),             # 11: bad check digit
        row(11, sex="X", living_situation="流浪"),               # 12: two bad vocabulary cells
        row(12, name=""),                                       # 13: missing name
        row(13, wearer_id="W-1", id_card=id_card(13)),          # 14: wearer id twice
        row(14, imei="861234567800999"),                        # 15: IMEI of D-OLD
        row(15, care_categories="失智、孤寡"),                    # 16: unknown care category
        row(16, guardian_phone="", guardian_name="", contact1_phone=""),  # 17: contact w/o phone
    ]
    version = scalar(db, "SELECT version FROM registry_version")
    report = run(db, csv_bytes(rows), scopes=[STREET_A])
    assert cells(report) == {
        (3, "id_card"), (4, "id_card"), (5, "device_id"), (6, "imei"), (7, "device_id"),
        (8, "region"), (9, "region"), (10, "phone"), (11, "id_card"), (12, "sex"),
        (12, "living_situation"), (13, "name"), (14, "wearer_id"), (15, "imei"),
        (16, "care_categories"), (17, "contact1_phone")}, report.errors
    by_cell = {(e.row, e.column): e for e in report.errors}
    assert "also on row 2" in by_cell[(3, "id_card")].message
    assert by_cell[(3, "id_card")].value is None            # ID-card numbers never echoed
    assert "already enrolled for wearer OLD-1" in by_cell[(4, "id_card")].message
    assert "bound to another wearer (OLD-1)" in by_cell[(7, "device_id")].message
    assert by_cell[(8, "region")].message.startswith("unknown region 371099")
    assert "outside your regions" in by_cell[(9, "region")].message
    assert by_cell[(10, "phone")].value == "12345"
    assert "check digit" in by_cell[(11, "id_card")].message
    assert "registered to device D-OLD" in by_cell[(15, "imei")].message
    assert report.rows == 16 and report.valid == 1 and report.dry_run
    assert (report.created, report.updated, report.devices_bound) == (0, 0, 0)
    # Nothing written: no wearer, no audit, no version bump.
    assert scalar(db, "SELECT count(*) FROM wearers") == 1
    assert scalar(db, "SELECT count(*) FROM registry_audit") == 0
    assert scalar(db, "SELECT version FROM registry_version") == version


def test_records_outside_the_scope_deactivated_wearers_and_retired_devices(db: str) -> None:
    enrol(db, "W-1", region=STREET_B)                         # someone else's street
    enrol(db, "W-2")
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("UPDATE wearers SET active = false, deactivated_at = now(),"
                     " deactivation_reason = 'moved_away' WHERE wearer_id = 'W-2'")
        conn.execute("INSERT INTO devices (device_id, kind, region, retired_at)"
                     " VALUES ('B-3', 'bracelet', %s, now())", (STREET_A,))
    report = run(db, csv_bytes([row(1), row(2), row(3)]), scopes=[STREET_A])
    assert cells(report) == {(2, "wearer_id"), (3, "wearer_id"), (4, "device_id")}
    messages = [e.message for e in report.errors]
    assert "wearer W-1 is in region 371002002, outside your regions" in messages
    assert any("W-2 is deactivated" in m for m in messages)
    assert "device B-3 is retired" in messages


def test_file_level_problems_unknown_and_missing_columns(db: str) -> None:
    report = run(db, csv_bytes([row(1)], header=["wearer_id", "姓名", "电话号码x", "sex"]))
    assert cells(report) == {(1, "电话号码x"), (1, None)}
    assert any("required column region" in e.message for e in report.errors)
    semicolons = run(db, b"wearer_id;name;region\nW-1;A;371002001\n")
    assert [(e.row, e.column) for e in semicolons.errors] == [(1, None)]
    assert "semicolons or tabs" in semicolons.errors[0].message and semicolons.rows == 1
    empty = run(db, b"")
    assert [(e.row, e.column) for e in empty.errors] == [(0, None)] and empty.rows == 0


def test_a_valid_dry_run_counts_what_it_would_do_and_writes_nothing(db: str) -> None:
    report = run(db, csv_bytes([row(1), row(2)]))
    assert report.ok and (report.created, report.updated, report.devices_bound) == (2, 0, 2)
    assert scalar(db, "SELECT count(*) FROM wearers") == 0


# --- The real import -----------------------------------------------------------------------

def test_real_import_is_all_or_nothing_then_writes_rows_bindings_contacts_and_audit(
        db: str) -> None:
    good = [row(n) for n in range(1, 6)]
    version = scalar(db, "SELECT version FROM registry_version")
    failed = run(db, csv_bytes([*good, row(6, phone="110")]), dry_run=False)
    assert cells(failed) == {(7, "phone")} and not failed.dry_run and failed.created == 0
    assert scalar(db, "SELECT count(*) FROM wearers") == 0
    assert scalar(db, "SELECT count(*) FROM devices") == 0
    assert scalar(db, "SELECT count(*) FROM registry_audit") == 0
    assert scalar(db, "SELECT version FROM registry_version") == version

    report = run(db, csv_bytes(good), dry_run=False)
    assert report.ok and (report.created, report.updated, report.devices_bound) == (5, 0, 5)
    with psycopg.connect(db) as conn:
        w = conn.execute(
            "SELECT name, sex, birth_year, birth_date, phone, living_situation, care_categories,"
            " guardian_phone, id_card_masked, id_card_hmac, id_card_cipher, version, active"
            " FROM wearers WHERE wearer_id = 'W-1'").fetchone()
        assert w is not None
        assert w[:9] == ("老人1", "female", 1944, dt.date(1944, 3, 12), "+8613863100001",
                         "alone", ["dementia", "special_difficulty"], "+8613863100001",
                         "3710**********" + id_card(1)[-4:])
        assert w[9] == VAULT.lookup(id_card(1)) and VAULT.reveal(w[10]) == id_card(1)
        assert w[11:] == (1, True)
        assert conn.execute("SELECT wearer_id, kind, region, imei FROM devices"
                            " WHERE device_id = 'B-1'").fetchone() == (
            "W-1", "bracelet", STREET_A, "861234567800001")
        assert conn.execute("SELECT wearer_id, bound_by, unbound_at FROM device_bindings"
                            " WHERE device_id = 'B-1'").fetchall() == [("W-1", "clerk1", None)]
        assert conn.execute("SELECT priority, name, relation, phone, language, channels"
                            " FROM contacts WHERE wearer_id = 'W-1'").fetchall() == [
            (1, "李强", "儿子", "+8613963100001", "zh", ["sms"])]
        audit = conn.execute("SELECT action, actor, wearer_id, device_id, region, before, after"
                             " FROM registry_audit ORDER BY id").fetchall()
    actions = [a[0] for a in audit]
    assert actions.count("wearer_imported") == 5 and actions.count("device_bound") == 5
    assert actions[-1] == "import" and all(a[1] == "clerk1" for a in audit)
    imported = next(a for a in audit if a[0] == "wearer_imported" and a[2] == "W-1")
    assert imported[3] == "B-1" and imported[4] == STREET_A and imported[5] is None
    after = imported[6]
    assert after["id_card_masked"] == "3710**********" + id_card(1)[-4:]
    assert id_card(1) not in json.dumps(audit, default=str, ensure_ascii=False)
    assert after["device"]["id"] == "B-1" and after["contacts"][0]["phone"] == "+8613963100001"
    assert audit[-1][6] == {"rows": 5, "created": 5, "updated": 0, "devices_bound": 5,
                            "file": "list.csv"}
    # Per-statement triggers: the version moved, by a handful, not per row.
    moved = scalar(db, "SELECT version FROM registry_version") - version
    assert 1 <= moved <= 10


def test_reimport_updates_replaces_contacts_keeps_other_devices_and_absent_columns(
        db: str) -> None:
    assert run(db, csv_bytes([row(1, notes=None)], header=[*HEADER, "notes"]),
               dry_run=False).ok
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("UPDATE wearers SET address = '海港路8号' WHERE wearer_id = 'W-1'")
        conn.execute("UPDATE contacts SET email = 'li@example.com', channels = '{sms,email}'")
        conn.execute("INSERT INTO devices (device_id, wearer_id, kind, region)"
                     " VALUES ('EXTRA', 'W-1', 'pendant', %s)", (STREET_A,))
    again = row(1, name="老人一", contact1_name="李强", contact1_phone="13963100001")
    again.update({"contact2_name": "李娜", "contact2_phone": "13863100002"})
    header = [*HEADER, "contact2_name", "contact2_phone"]
    report = run(db, csv_bytes([again, row(2)], header=header), dry_run=False)
    assert report.ok and (report.created, report.updated, report.devices_bound) == (1, 1, 1)
    with psycopg.connect(db) as conn:
        assert conn.execute("SELECT name, address, version FROM wearers"
                            " WHERE wearer_id = 'W-1'").fetchone() == ("老人一", "海港路8号", 2)
        assert conn.execute("SELECT priority, name, email, channels FROM contacts"
                            " WHERE wearer_id = 'W-1' ORDER BY priority").fetchall() == [
            (1, "李强", "li@example.com", ["sms", "email"]), (2, "李娜", None, ["sms"])]
        assert conn.execute("SELECT device_id FROM devices WHERE wearer_id = 'W-1'"
                            " ORDER BY device_id").fetchall() == [("B-1",), ("EXTRA",)]
        assert conn.execute("SELECT count(*) FROM device_bindings"
                            " WHERE device_id = 'B-1'").fetchone() == (1,)
        before = conn.execute("SELECT before FROM registry_audit WHERE action = 'wearer_imported'"
                              " AND wearer_id = 'W-1' ORDER BY id DESC LIMIT 1").fetchone()
    assert before is not None and before[0]["name"] == "老人1"
    assert before[0]["devices"] == ["B-1", "EXTRA"]
    # Moving the wearer to another street moves all their devices (the listed and the others).
    moved = run(db, csv_bytes([row(1, region=STREET_B)]), dry_run=False)
    assert moved.ok and moved.updated == 1
    with psycopg.connect(db) as conn:
        assert conn.execute("SELECT device_id, region FROM devices WHERE wearer_id = 'W-1'"
                            " ORDER BY device_id").fetchall() == [("B-1", STREET_B),
                                                                   ("EXTRA", STREET_B)]
        assert conn.execute("SELECT after->>'region' FROM registry_audit WHERE action ="
                            " 'device_updated' AND device_id = 'EXTRA'").fetchone() == (STREET_B,)
    assert run(db, csv_bytes([again, row(2)], header=header), dry_run=False).ok
    # A file without contact columns leaves the contacts alone.
    slim = ["wearer_id", "name", "region"]
    assert run(db, csv_bytes([{"wearer_id": "W-1", "name": "老人一", "region": STREET_A}],
                             header=slim), dry_run=False).ok
    assert scalar(db, "SELECT count(*) FROM contacts WHERE wearer_id = 'W-1'") == 2
    # A masked ID-card number keeps the stored one; a wrong mask is an error.
    masked = "3710**********" + id_card(1)[-4:]
    keep = run(db, csv_bytes([{"wearer_id": "W-1", "name": "老人一", "region": STREET_A,
                               "id_card": masked}], header=[*slim, "id_card"]), dry_run=False)
    assert keep.ok
    assert scalar(db, "SELECT id_card_hmac FROM wearers WHERE wearer_id = 'W-1'") \
        == VAULT.lookup(id_card(1))
    wrong = run(db, csv_bytes([{"wearer_id": "W-1", "name": "老人一", "region": STREET_A,
                                "id_card": "3710**********0000"}], header=[*slim, "id_card"]))
    assert cells(wrong) == {(2, "id_card")}


def test_rows_without_wearer_id_are_matched_by_id_card(db: str) -> None:
    enrol(db, "API-7", card=id_card(7))
    header = ["name", "id_card", "region"]
    rows = [{"name": "王七", "id_card": id_card(7), "region": STREET_A},
            {"name": "新人", "id_card": id_card(8), "region": STREET_A}]
    report = run(db, csv_bytes(rows, header=header), dry_run=False)
    assert report.ok and (report.created, report.updated) == (1, 1)
    assert scalar(db, "SELECT name FROM wearers WHERE wearer_id = 'API-7'") == "王七"
    new_id = scalar(db, "SELECT wearer_id FROM wearers WHERE name = '新人'")
    assert new_id.startswith("w") and len(new_id) == 16
    # The same list again: the same two wearers, updated.
    assert run(db, csv_bytes(rows, header=header), dry_run=False).updated == 2


# --- Encodings, Chinese headers and values, XLSX -------------------------------------------

ZH_HEADER = ["老人编号", "姓名", "身份证号", "性别", "出生日期", "联系电话", "区划代码", "居住状况",
             "照护类别", "监护人", "监护人电话", "设备号", "设备类型", "IMEI", "紧急联系人1",
             "紧急联系人1关系", "紧急联系人1电话"]
ZH_ROW = ["W-9", "王秀英", id_card(9), "女", "1944/3/12", "0631-5212345", STREET_A, "空巢",
          "失智、低保", "李强", "13863100001", "B-9", "手环", "861234567800009", "李强", "儿子",
          "13963100009"]


@pytest.mark.parametrize("encoding,bom", [("utf-8", False), ("utf-8", True),
                                          ("gb18030", False)])
def test_csv_in_utf8_bom_and_gb18030_with_chinese_headers_and_values(
        db: str, encoding: str, bom: bool) -> None:
    data = csv_bytes([dict(zip(ZH_HEADER, ZH_ROW, strict=True))], ZH_HEADER, encoding=encoding,
                     bom=bom)
    report = run(db, data, dry_run=False)
    assert report.ok, report.errors
    with psycopg.connect(db) as conn:
        assert conn.execute("SELECT name, sex, birth_date, phone, living_situation,"
                            " care_categories FROM wearers").fetchone() == (
            "王秀英", "female", dt.date(1944, 3, 12), "+866315212345", "empty_nest",
            ["dementia", "low_income"])


def test_xlsx_dates_numbers_and_row_numbers_as_excel_shows_them(db: str) -> None:
    phone_number = 13863100009                           # an exact integer: recovered
    rows = [
        ["W-1", "甲", id_card(1), "男", dt.date(1947, 8, 5), phone_number, STREET_A],
        ["W-2", "乙", float(id_card(2)[:17] + "1"), "男", "1947-08-05", "13863100002", STREET_A],
        ["W-3", "丙", id_card(3), "男", 17384.0, "13863100003", STREET_A],
        ["W-4", "丁", id_card(4), "男", "1947-08-05", 1.3863100004e10 + 0.5, STREET_A],
    ]
    data = xlsx_bytes(ZH_HEADER[:7], rows, skip_rows=2)  # the header on Excel's row 3
    assert read_table(data, max_rows=10).header_row == 3
    report = run(db, data)
    assert cells(report) == {(5, "身份证号"), (6, "出生日期"), (7, "联系电话")}
    by_cell = {(e.row, e.column): e.message for e in report.errors}
    assert "format the column as text" in by_cell[(5, "身份证号")]
    assert "a number where a date is expected" in by_cell[(6, "出生日期")]
    ok = run(db, xlsx_bytes(ZH_HEADER[:7], rows[:1]), dry_run=False)
    assert ok.ok
    assert scalar(db, "SELECT phone FROM wearers WHERE wearer_id = 'W-1'") == "+8613863100009"
    assert scalar(db, "SELECT birth_date FROM wearers WHERE wearer_id = 'W-1'") \
        == dt.date(1947, 8, 5)


def test_scientific_notation_in_csv_is_an_error_not_a_guess(db: str) -> None:
    report = run(db, csv_bytes([row(1, id_card="3.71002E+17", imei="8.61235E+14")]))
    assert cells(report) == {(2, "id_card"), (2, "imei")}
    assert all("scientific notation" in e.message for e in report.errors)


# --- Export --------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt,lang", [("csv", "en"), ("xlsx", "zh"), ("csv", "zh")])
def test_export_imports_back_without_errors(db: str, fmt: str, lang: str) -> None:
    second = row(2, contact1_relation="")
    assert run(db, csv_bytes([row(1), second, row(3, region=STREET_B)]), dry_run=False).ok
    data = export_wearers(db, fmt=fmt, regions=[STREET_A], lang=lang)  # type: ignore[arg-type]
    if fmt == "csv":
        assert data.startswith(b"\xef\xbb\xbf")
    table = read_table(data, max_rows=10)
    assert [r[1][0] for r in table.rows] == ["W-1", "W-2"]          # only the caller's street
    assert (table.header[1] == "姓名") == (lang == "zh")
    assert id_card(1) not in data.decode("latin-1")
    masked = "3710**********" + id_card(1)[-4:]
    assert masked in [str(c) for c in table.rows[0][1]]
    back = run(db, data, scopes=[STREET_A])
    assert back.ok, back.errors
    assert (back.rows, back.updated, back.created, back.devices_bound) == (2, 2, 0, 0)


# --- The command ---------------------------------------------------------------------------

def test_cli_import_dry_run_then_import_then_export(db: str, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "list.csv"
    path.write_bytes(csv_bytes([row(1), row(2, phone="12")]))
    base = ["--database-url", db]
    assert cli_main(["registry", "import", str(path), "--dry-run", *base]) == 1
    out = capsys.readouterr().out
    assert "row 3, phone: not a valid phone number" in out and "[12]" in out and "nothing written" in out
    path.write_bytes(csv_bytes([row(1), row(2)]))
    assert cli_main(["registry", "import", str(path), "--actor", "bureau", *base]) == 0
    assert "created 2" in capsys.readouterr().out
    assert scalar(db, "SELECT actor FROM registry_audit WHERE action = 'import'") == "bureau"
    xlsx = tmp_path / "out.xlsx"
    assert cli_main(["registry", "export", str(xlsx), "--lang", "zh", *base]) == 0
    assert len(read_table(xlsx.read_bytes(), max_rows=10).rows) == 2


def test_the_example_list_imports(db: str) -> None:
    with psycopg.connect(db, autocommit=True) as conn:
        for code, name, parent in (("371002001001", "东北村社区", STREET_A),
                                   ("371002003", "竹岛街道", "371002")):
            conn.execute("INSERT INTO regions (code, name, parent, level) VALUES (%s, %s, %s,"
                         " %s)", (code, name, parent, "community" if len(code) == 12
                                  else "street"))
    example = Path(__file__).parent.parent / "deploy" / "wearers.example.csv"
    report = run(db, example.read_bytes(), dry_run=False)
    assert report.ok, report.errors
    assert (report.created, report.devices_bound) == (3, 2)


# --- HTTP API ------------------------------------------------------------------------------

CALLERS = {"clerk": ("clerk", [STREET_A]), "admin": ("admin", ["*"]),
           "officer": ("officer", ["*"]), "supervisor": ("supervisor", ["3710"])}


@pytest.fixture
def api(db: str) -> Iterator[tuple[httpx.Client, dict[str, str]]]:
    tokens = {name: new_token()[0] for name in CALLERS}
    table = TokenTable([TokenEntry(name=n, token_sha256=hash_token(tokens[n]),
                                   role=role,  # type: ignore[arg-type]
                                   regions=regions) for n, (role, regions) in CALLERS.items()])
    with AlertStore(db) as store:
        app = create_app(store=store, database_url=db, tokens=table, clock=ManualClock(0),
                         body_limits=BODY_LIMITS)
        app.include_router(registry_import_router(db, require_principal, vault=VAULT))
        server = HttpServer(app, host="127.0.0.1", port=0)
        server.start()
        client = httpx.Client(base_url=f"http://127.0.0.1:{server.port}/api/v1", timeout=30)
        try:
            yield client, {n: f"Bearer {t}" for n, t in tokens.items()}
        finally:
            client.close()
            server.stop()


def test_api_import_dry_run_422_real_import_and_roles(
        api: tuple[httpx.Client, dict[str, str]], db: str) -> None:
    client, auth = api
    csv_type = {"Content-Type": "text/csv"}
    data = csv_bytes([row(1), row(2)])
    r = client.post("/imports/wearers", content=data, headers={**csv_type,
                                                               "Authorization": auth["officer"]})
    assert r.status_code == 403
    r = client.post("/imports/wearers", content=data, headers=csv_type)
    assert r.status_code == 401
    r = client.post("/imports/wearers", content=b"{}", headers={
        "Content-Type": "application/json", "Authorization": auth["clerk"]})
    assert r.status_code == 415
    bad = csv_bytes([row(1), row(2, region=STREET_B)])
    r = client.post("/imports/wearers", content=bad, headers={**csv_type,
                                                              "Authorization": auth["clerk"]})
    assert r.status_code == 422
    assert r.json() == {"rows": 2, "valid": 1, "created": 0, "updated": 0, "devices_bound": 0,
                        "dry_run": True, "errors": [{
                            "row": 3, "column": "region", "value": STREET_B,
                            "message": f"region {STREET_B} is outside your regions"}]}
    r = client.post("/imports/wearers?dry_run=true", content=data,
                    headers={**csv_type, "Authorization": auth["clerk"]})
    assert r.status_code == 200 and r.json()["created"] == 2
    assert scalar(db, "SELECT count(*) FROM wearers") == 0
    xlsx = xlsx_bytes(HEADER, [[row(n)[h] for h in HEADER] for n in (1, 2)])
    r = client.post("/imports/wearers?dry_run=false&filename=list.xlsx", content=xlsx,
                    headers={"Content-Type": "application/octet-stream",
                             "Authorization": auth["admin"]})
    assert r.status_code == 200, r.text
    assert r.json() == {"rows": 2, "valid": 2, "errors": [], "created": 2, "updated": 0,
                        "devices_bound": 2, "dry_run": False}
    assert scalar(db, "SELECT after->>'file' FROM registry_audit WHERE action = 'import'") \
        == "list.xlsx"
    assert scalar(db, "SELECT actor FROM registry_audit WHERE action = 'import'") == "admin"


def test_api_export_roles_formats_and_scope(api: tuple[httpx.Client, dict[str, str]],
                                            db: str) -> None:
    client, auth = api
    assert run(db, csv_bytes([row(1), row(2, region=STREET_B)]), dry_run=False).ok
    r = client.get("/exports/wearers.csv", headers={"Authorization": auth["officer"]})
    assert r.status_code == 403
    r = client.get("/exports/wearers.csv", headers={"Authorization": auth["clerk"]})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert "attachment" in r.headers["content-disposition"]
    assert [row_[1][0] for row_ in read_table(r.content, max_rows=10).rows] == ["W-1"]
    r = client.get("/exports/wearers.xlsx?lang=zh", headers={"Authorization": auth["supervisor"]})
    assert r.status_code == 200 and r.content.startswith(b"PK")
    table = read_table(r.content, max_rows=10)
    assert table.header[0] == "老人编号" and [x[1][0] for x in table.rows] == ["W-1", "W-2"]
    assert table.rows[0][1][3] == "女"


def test_api_import_body_limit_is_50_mib(api: tuple[httpx.Client, dict[str, str]]) -> None:
    client, auth = api
    headers = {"Content-Type": "text/csv", "Authorization": auth["clerk"]}
    # Refused from its Content-Length, before it is read (written by hand: an HTTP client still
    # writing 50 MB when the answer comes may see a reset instead, as it did once in CI).
    answer, sent = raw_post(client.base_url.port or 80, "/api/v1/imports/wearers",
                            f"Authorization: {auth['clerk']}\r\n", 50 * 1024 * 1024 + 1,
                            content_type="text/csv")
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
    assert sent < 50 * 1024 * 1024
    # Just under the limit the file is read (and is no list: the report says so).
    body = b"name,region\n" + (b"x" * 1000 + b",y\n") * 51_000       # 49 MiB
    r = client.post("/imports/wearers", content=body, headers=headers)
    assert r.status_code == 422 and r.json()["rows"] == 51_000


def test_cli_progress_is_a_bar_on_a_terminal_and_lines_otherwise() -> None:
    from eldercare.registry_io_cli import StageProgress

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    lines = io.StringIO()
    plain = StageProgress(stream=lines, every_s=3600)
    plain("checking", 2000, 10_000)
    plain("writing", 10_000, 10_000)                 # within every_s: not printed
    plain.close()
    assert lines.getvalue() == "eldercare registry:   6% checking (2,000 of 10,000 rows)\n"
    tty = Tty()
    bar = StageProgress(stream=tty)
    bar("writing", 10_000, 10_000)
    bar.close()
    assert tty.getvalue().startswith("\r[" + "#" * 30 + "] 100% writing")
    assert tty.getvalue().endswith("\n")
