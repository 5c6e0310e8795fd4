"""Wearer list import benchmark (issue #12: "import of 100,000 elders from XLSX in under a
minute").

Method (one run, one machine, a PostgreSQL started here as the tests do): N elders, each with
an ID-card number, a phone, a guardian, a bracelet (IMEI, SIM) and two contacts, are written
as one XLSX by XlsxWriter (Chinese headers and labels, dates as date cells). The file is then
read (calamine), checked cell by cell (:func:`registry.importer.prepare`), dry-run against an
empty migrated database, and imported for real; then imported again (every row an update) and
exported (XLSX and CSV, Chinese headers), each export read back and checked.
Printed: seconds per stage, the total of the real import (read + check + validate + write, the
figure the target is about) and rows/s.

Usage: python -m benchmarks.registry_import [--rows N]
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import tempfile
import time
from pathlib import Path

import psycopg
import xlsxwriter  # type: ignore[import-untyped]

from registry.idcard import IdCardVault
from registry.importer import export_wearers, import_wearers, prepare
from registry.tabular import read_table

_W = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
STREETS = [f"371002{n:03d}" for n in range(1, 9)]
HEADER = ["老人编号", "姓名", "身份证号", "性别", "出生日期", "联系电话", "住址", "区划代码",
          "居住状况", "照护类别", "健康状况", "监护人", "监护人电话", "监护人关系", "设备号",
          "设备类型", "设备型号", "通信协议", "IMEI", "SIM卡号", "发放日期", "紧急联系人1",
          "紧急联系人1关系", "紧急联系人1电话", "紧急联系人2", "紧急联系人2关系", "紧急联系人2电话"]


def make_xlsx(n: int) -> bytes:
    buf = io.BytesIO()
    book = xlsxwriter.Workbook(buf, {"in_memory": True, "constant_memory": True})
    sheet = book.add_worksheet("名单")
    date = book.add_format({"num_format": "yyyy-mm-dd"})
    sheet.write_row(0, 0, HEADER)
    for i in range(n):
        r = i + 1
        born = _born(i)
        card = _card(i)
        values = [
            f"WH-{i:06d}", f"老人{i}", card, "女" if i % 2 else "男",
            born, f"138{i:08d}",
            f"环翠区某街道{i}号", STREETS[i % len(STREETS)], ("独居", "空巢", "与家人同住")[i % 3],
            "失智、低保" if i % 5 == 0 else "80岁以上", "高血压", f"子女{i}", f"139{i:08d}", "儿子",
            f"BR-{i:06d}", "手环", "EC-B2", "mqtt", f"86{i:013d}", f"147{i:08d}",
            dt.date(2024, 5, 20), f"子女{i}", "儿子", f"139{i:08d}", f"亲属{i}", "女儿",
            f"137{i:08d}"]
        for c, v in enumerate(values):
            if isinstance(v, dt.date):
                sheet.write_datetime(r, c, dt.datetime(v.year, v.month, v.day), date)
            else:
                sheet.write_string(r, c, v)
    book.close()
    return buf.getvalue()


def _born(i: int) -> dt.date:
    return dt.date(1925, 1, 1) + dt.timedelta(days=i % 14_600)


def _card(i: int) -> str:
    """A valid, unique ID-card number: 14,600 birth dates (40 years) x 1000 sequences."""
    body = f"371002{_born(i).strftime('%Y%m%d')}{i // 14_600:03d}"
    return body + "10X98765432"[sum(int(d) * w for d, w in zip(body, _W, strict=True)) % 11]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()
    from eldercare.schema import migrate
    from tests.services import Postgres

    vault = IdCardVault(b"b" * 32)
    t = time.perf_counter()
    data = make_xlsx(args.rows)
    print(f"generated {args.rows:,} rows as XLSX: {len(data) / 1e6:.1f} MB in"
          f" {time.perf_counter() - t:.1f} s")
    tmp = Path(tempfile.mkdtemp(prefix="eldercare-bench-"))
    pg = Postgres(tmp)
    try:
        with pg.database() as url:
            with psycopg.connect(url, autocommit=True) as conn:
                migrate(conn, timescale="off")
                conn.execute("INSERT INTO regions (code, name, parent, level) VALUES"
                             " ('37', '山东省', NULL, 'province'), ('3710', '威海市', '37', 'city'),"
                             " ('371002', '环翠区', '3710', 'district')")
                for s in STREETS:
                    conn.execute("INSERT INTO regions (code, name, parent, level)"
                                 " VALUES (%s, %s, '371002', 'street')", (s, f"街道{s[-3:]}"))
            figures: list[tuple[str, float]] = []
            for label, dry in (("dry run", True), ("import", False), ("re-import", False)):
                t0 = time.perf_counter()
                table = read_table(data, max_rows=200_000)
                t1 = time.perf_counter()
                prepared = prepare(table, vault=vault)
                t2 = time.perf_counter()
                report = import_wearers(url, prepared, scopes=["*"], actor="bench",
                                        dry_run=dry)
                t3 = time.perf_counter()
                assert report.ok, report.errors[:5]
                total = t3 - t0
                print(f"\n{label}: read {t1 - t0:.1f} s, check cells {t2 - t1:.1f} s,"
                      f" validate against the database {report.timings['validate_s']:.1f} s,"
                      f" write {report.timings.get('write_s', 0.0):.1f} s;"
                      f" total {total:.1f} s, {args.rows / total:,.0f} rows/s"
                      f" (created {report.created:,}, updated {report.updated:,},"
                      f" devices bound {report.devices_bound:,})")
                figures.append((label, total))
            for fmt in ("xlsx", "csv"):
                t0 = time.perf_counter()
                out = export_wearers(url, fmt=fmt, regions=["3710"], lang="zh")
                t1 = time.perf_counter()
                back = prepare(read_table(out, max_rows=200_000), vault=vault)
                assert not back.problems, back.problems[:5]
                print(f"\nexport {fmt}: {len(out) / 1e6:.1f} MB in {t1 - t0:.1f} s"
                      f" ({args.rows / (t1 - t0):,.0f} rows/s); reads back without a problem")
            with psycopg.connect(url) as conn:
                counts = conn.execute(
                    "SELECT (SELECT count(*) FROM wearers), (SELECT count(*) FROM devices),"
                    " (SELECT count(*) FROM contacts), (SELECT count(*) FROM registry_audit)"
                    ).fetchone()
            print(f"\nrows in the database: wearers, devices, contacts, audit = {counts}")
            real = dict(figures)["import"]
            print(f"target: import of {args.rows:,} in < 60 s: {real:.1f} s"
                  f" ({'met' if real < 60 else 'NOT met'})")
    finally:
        pg.close()


if __name__ == "__main__":
    main()
