"""The region hierarchy (issue #12): what a region covers, in Python and in SQL on the real
PostgreSQL, one table of cases for both; the tree file format and each of its errors with its
line; loading (the shipped tree, upserts, the audit entry, parents in the database); the
lookups behind ``GET /api/v1/regions``; the ``eldercare regions`` and ``user add --role clerk``
commands; ``[enrolment] regions`` at start."""

from __future__ import annotations

import io
import random
import sys
import time
from importlib import resources
from pathlib import Path
from typing import Any

import psycopg
import pytest

from alerts.auth import Principal
from console.accounts import AccountStore
from eldercare.app import prepare_database
from eldercare.cli import main
from eldercare.config import load_config
from registry.regions import (
    RegionTreeError,
    load_regions,
    parse_region_tree,
    read_region_tree,
    regions_in_scope,
    unknown_regions,
)
from schemas.regions import (
    ancestors_of,
    covers,
    covers_any,
    level_of,
    narrow,
    parent_of,
    sql_in_scope,
)

SHIPPED = Path(str(resources.files("registry").joinpath(
    "data", "regions-weihai-zaozhuang-rizhao.csv")))

#: (scope, region, covered): the one table both definitions must agree on.
CASES: list[tuple[str, str, bool]] = [
    ("*", "371002001", True), ("*", "hz-west", True),
    ("37", "37", True), ("37", "3710", True), ("37", "371002", True),
    ("37", "371002001", True), ("37", "371002001001", True), ("37", "3810", False),
    ("3710", "371002001", True), ("3710", "371002", True), ("3710", "3711", False),
    ("3710", "37", False), ("3710", "3704", False), ("3710", "371102", False),
    ("371002", "371002001", True), ("371002", "371003001", False),
    ("371002001", "371002001", True), ("371002001", "371002001001", True),
    ("371002001", "371002002", False), ("371002001", "371002002001", False),
    ("371002001", "371002", False), ("371002001", "3710", False),
    ("371002001001", "371002001001", True), ("371002001001", "371002001002", False),
    # Not division codes: a prefix that is no code covers nothing but itself.
    ("37100", "371002", False), ("37100", "37100", True), ("3710", "37100", False),
    ("3710", "3710-west", False), ("3710", "37101", False), ("3710", "3710020010", False),
    # Legacy region names match only themselves.
    ("hz-west", "hz-west", True), ("hz-west", "hz-west-2", False), ("hz", "hz-west", False),
    ("t1234abcd", "t1234abcd", True), ("t1234abcd", "t1234abcde", False),
    ("3710", "t3710", False), ("hz-west", "371002", False),
    # A LIKE wildcard in the region must not match anything by accident.
    ("37", "37%", False), ("37", "37_0", False), ("3710", "3710__", False),
    ("37", "37a0", False), ("371002001", "371002001abc", False), ("3710", "371002 ", False),
    ("37%", "3710", False), ("3_", "3710", False),
]


@pytest.mark.parametrize(("scope", "region", "expected"), CASES)
def test_covers_follows_the_table(scope: str, region: str, expected: bool) -> None:
    assert covers(scope, region) is expected


def test_sql_in_scope_agrees_with_covers_on_every_case(migrated_db: str) -> None:
    query = ("SELECT r.region FROM unnest(%(regions)s::text[]) AS r(region) WHERE "
             + sql_in_scope("r.region", "scope"))
    regions = sorted({r for _, r, _ in CASES})
    with psycopg.connect(migrated_db) as conn:
        for scope in sorted({s for s, _, _ in CASES}):
            param = None if scope == "*" else [scope]
            got = {row[0] for row in conn.execute(query, {"regions": regions, "scope": param})}
            want = {r for r in regions if covers(scope, r)}
            assert got == want, scope
            # The table's own verdicts are among them.
            for s, r, expected in CASES:
                if s == scope:
                    assert (r in got) is expected, (s, r)
        # Several scopes at once: the union; an empty list: nothing.
        got = {row[0] for row in conn.execute(query, {"regions": regions,
                                                      "scope": ["371002001", "hz-west"]})}
        assert got == {r for r in regions if covers_any(["371002001", "hz-west"], r)}
        assert got == {"371002001", "371002001001", "371002001002", "hz-west"}
        assert not conn.execute(query, {"regions": regions, "scope": []}).fetchall()


def test_scoping_100000_rows_stays_fast(migrated_db: str) -> None:
    """The filter behind every scoped list (wearers, devices, alerts) on a table the size of a
    city's register: half street-level, half community-level codes, two cities."""
    rng = random.Random(12)
    print("seed 12")
    streets = [f"3710020{i:02d}" for i in range(1, 12)] + [f"3704020{i:02d}" for i in range(1, 12)]
    query = "SELECT count(*) FROM scoped s WHERE " + sql_in_scope("s.region", "scope")
    with psycopg.connect(migrated_db, autocommit=True) as conn:
        conn.execute("CREATE TEMP TABLE scoped (region text NOT NULL)")
        with conn.cursor() as cur, cur.copy("COPY scoped (region) FROM STDIN") as copy:
            for _ in range(100_000):
                street = rng.choice(streets)
                copy.write_row((street + f"{rng.randint(1, 20):03d}" if rng.random() < 0.5
                                else street,))
        conn.execute("ANALYZE scoped")
        timings = {}
        for scope in (["371002001"], ["3710"], ["37"], ["hz-west"]):
            conn.execute(query, {"scope": scope})       # warm
            started = time.perf_counter()
            row = conn.execute(query, {"scope": scope}).fetchone()
            timings[scope[0]] = (time.perf_counter() - started) * 1000
            assert row is not None
            if scope == ["37"]:
                assert row[0] == 100_000
            if scope == ["hz-west"]:
                assert row[0] == 0
    print("count(*) of 100,000 rows by scope: "
          + ", ".join(f"{k} {v:.0f} ms" for k, v in timings.items()))
    # The figures are printed (typically 10-60 ms on two cores); the test asserts the counts,
    # speed is the benchmark's to judge (benchmarks/registry_api.py).


def test_parents_levels_and_ancestors() -> None:
    assert parent_of("371002001001") == "371002001"
    assert parent_of("371002001") == "371002"
    assert parent_of("371002") == "3710"
    assert parent_of("3710") == "37"
    assert parent_of("37") is None and parent_of("hz-west") is None
    assert ancestors_of("371002001") == ["371002", "3710", "37"]
    assert ancestors_of("37") == [] and ancestors_of("t1234") == []
    assert [level_of(c) for c in ("37", "3710", "371002", "371002001", "371002001001")] == [
        "province", "city", "district", "street", "community"]
    assert level_of("37100") is None


def test_narrowing_never_widens_a_scope() -> None:
    street = ["371002001"]
    assert narrow(street, ["3710"]) == ["371002001"]          # the city, cut to the street
    assert narrow(street, ["371002001001"]) == ["371002001001"]  # a community of it
    assert narrow(street, ["371002002"]) == []                 # the next street: nothing
    assert narrow(["3710"], ["371002002", "3711"]) == ["371002002"]
    assert narrow(["hz-west"], ["hz-west", "hz"]) == ["hz-west"]
    assert narrow(None, ["3711"]) == ["3711"] and narrow(["*"], ["hz"]) == ["hz"]
    officer = Principal("o", "officer", ("371002001",))
    assert officer.narrowed(None) == ["371002001"]
    assert officer.narrowed(["37"]) == ["371002001"]
    assert Principal("d", "dispatch", ("*",)).narrowed(None) is None
    assert officer.can_see("371002001001") and not officer.can_see("371002002")
    assert officer.may_act() and not Principal("c", "clerk", ("371002001",)).may_act()


# --- The file format ------------------------------------------------------------------------

def problems_of(text: str, fmt: str = "csv") -> list[tuple[int | None, str]]:
    with pytest.raises(RegionTreeError) as info:
        parse_region_tree(text.encode(), fmt=fmt, source="test.csv")  # type: ignore[arg-type]
    assert "invalid region tree test.csv" in str(info.value)
    return [(p.line, p.message) for p in info.value.problems]


def test_each_kind_of_error_is_reported_with_its_line() -> None:
    text = ("# a comment line\n"
            "code,name,parent\n"          # line 2
            "37,山东省,\n"
            "3710,威海市,37\n"
            "37100,某地,3710\n"           # 5: five digits
            "371002,,3710\n"              # 6: empty name
            "371003,文登区,37\n"          # 7: parent not the prefix one level up
            "3710,威海,37\n"              # 8: duplicate of line 4
            "371000,市辖区,3710\n"        # 9: zero-padded (GB/T 2260 form of the city)
            "\n"
            "37a0,x,37\n"                 # 11: not digits
            f"371082,{'名' * 101},3710\n"  # 12: name too long
            "371083,乳山市\n"             # 13: a column short
            "37,山东,99\n")               # 14: a province has no parent (and a duplicate)
    found = problems_of(text)
    lines = [line for line, _ in found]
    assert lines == [5, 6, 7, 8, 9, 11, 12, 13, 14], found
    by_line = dict(found)
    assert by_line[5] == ("the code is not a division code (2, 4, 6, 9 or 12 digits;"
                          " found 5 characters)")
    assert "the name is empty" in by_line[6]
    assert "parent 37 is wrong: the parent of 371003 is 3710" in by_line[7]
    assert "duplicate code 3710 (first on line 4)" in by_line[8]
    assert "zero-padded" in by_line[9] and "form of 3710" in by_line[9]
    assert "not a division code" in by_line[11]
    assert "longer than 100 characters" in by_line[12]
    assert "2 columns where the header has 3" in by_line[13]
    assert "37 is a province and has no parent" in by_line[14]


def test_header_encoding_and_emptiness_errors() -> None:
    assert problems_of("37,山东省\n3710,威海市\n") == [
        (1, "the first line must be the header code,name or code,name,parent (found 2 columns)")]
    # A list of elders uploaded by mistake: nothing of its text is quoted back.
    found = problems_of("code,name\n王秀英,13800000001\n")
    assert found == [(2, ("the code is not a division code (2, 4, 6, 9 or 12 digits; found 3"
                         " characters)"))]
    assert "13800000001" not in str(found) and "王秀英" not in str(found)
    assert problems_of("# only a comment\ncode,name\n") == [(None, "no regions in the file")]
    with pytest.raises(RegionTreeError) as info:
        parse_region_tree("code,name\n37,山东省\n".encode("gbk"), fmt="csv", source="gbk.csv")
    assert [(p.line, p.message) for p in info.value.problems] == [
        (2, "not valid UTF-8 (save the file as UTF-8, not GBK)")]
    found = problems_of('code,name\n"37,山东省\n')
    assert found and found[0][0] == 2 and "CSV" in found[0][1]


def test_a_byte_order_mark_and_a_two_column_header_are_accepted() -> None:
    data = "\ufeffCode, Name\r\n37 , 山东省\r\n3710,威海市\r\n".encode()
    tree = parse_region_tree(data, fmt="csv", source="excel.csv")
    assert [(n.code, n.name, n.parent, n.level) for n in tree.nodes] == [
        ("37", "山东省", None, "province"), ("3710", "威海市", "37", "city")]
    assert tree.lines == {"37": 2, "3710": 3}


def test_yaml_trees_keep_codes_as_written_and_name_lines() -> None:
    text = ("- {code: 37, name: 山东省}\n"
            "- code: 3710\n"
            "  name: 威海市\n"
            "  parent: '37'\n"
            "- {code: '371002', name: 环翠区, parent: ~}\n")
    tree = parse_region_tree(text.encode(), fmt="yaml", source="t.yaml")
    assert [(n.code, n.parent) for n in tree.nodes] == [
        ("37", None), ("3710", "37"), ("371002", "3710")]
    assert tree.lines == {"37": 1, "3710": 2, "371002": 5}
    bad = ("- {code: 37, name: 山东省}\n"
           "- {code: 3710, name: 威海市, leader: x}\n"    # 2: unknown field
           "- {name: 环翠区}\n"                           # 3: no code
           "- [371002, 环翠区]\n"                         # 4: not a mapping
           "- {code: 3710, name: 威海}\n"                 # 5: duplicate of line 2? no: 2 failed
           "- {code: 371002, name: {a: 1}}\n")            # 6: not a plain value
    found = problems_of(bad, "yaml")
    assert [line for line, _ in found] == [2, 3, 4, 6], found
    assert "unknown field" in found[0][1] and "code is missing" in found[1][1]
    expected = "expected a list of {code, name, parent} entries"
    assert problems_of("code: 37\n", "yaml") == [(1, expected)]
    syntax = problems_of("- {code: 37, name: [\n", "yaml")
    assert syntax[0][0] is not None and "not valid YAML" in syntax[0][1]


# --- Loading --------------------------------------------------------------------------------

def rows(url: str, query: str, *args: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(query, args).fetchall()


def test_the_shipped_tree_loads_and_a_second_load_changes_nothing(migrated_db: str) -> None:
    tree = read_region_tree(SHIPPED)
    assert tree.external_parents() == []
    codes = {n.code for n in tree.nodes}
    assert {"37", "3710", "3704", "3711", "371002", "371003", "371082", "371083", "370402",
            "370403", "370404", "370405", "370406", "370481", "371102", "371103", "371121",
            "371122"} <= codes
    assert sum(1 for n in tree.nodes if n.level == "street") >= 9
    assert any(n.level == "community" for n in tree.nodes)
    with psycopg.connect(migrated_db, autocommit=True) as conn:
        first = load_regions(conn, tree, actor="tester")
        assert (first.inserted, first.updated, first.unchanged) == (len(tree.nodes), 0, 0)
        again = load_regions(conn, tree, actor="tester")
        assert (again.inserted, again.updated, again.unchanged) == (0, 0, len(tree.nodes))
    assert rows(migrated_db, "SELECT name, parent, level FROM regions WHERE code = '371002'") == [
        ("环翠区", "3710", "district")]
    assert rows(migrated_db, "SELECT count(*) FROM regions")[0][0] == len(tree.nodes)
    audit = rows(migrated_db, "SELECT actor, action, after FROM registry_audit")
    assert len(audit) == 1                     # the unchanged second load wrote no entry
    actor, action, after = audit[0]
    assert (actor, action, after["inserted"], after["updated"]) == (
        "tester", "regions_loaded", len(tree.nodes), 0)
    assert "371002001" in after["codes_inserted"]


def test_a_rename_is_updated_and_audited_before_and_after(migrated_db: str) -> None:
    base = "code,name\n37,山东省\n3710,威海市\n371002,环翠区\n"
    with psycopg.connect(migrated_db, autocommit=True) as conn:
        load_regions(conn, parse_region_tree(base.encode(), fmt="csv", source="a.csv"),
                     actor="a")
        report = load_regions(conn, parse_region_tree(
            base.replace("环翠区", "环翠区(新)").encode(), fmt="csv", source="b.csv"), actor="b")
    assert (report.inserted, report.updated, report.unchanged) == (0, 1, 2)
    before, after = rows(migrated_db, "SELECT before, after FROM registry_audit WHERE actor = 'b'")[0]
    assert before == {"names": {"371002": "环翠区"}}
    assert after["names"] == {"371002": "环翠区(新)"} and after["source"] == "b.csv"


def test_a_file_may_extend_the_tree_in_the_database_but_not_invent_parents(
        migrated_db: str) -> None:
    with psycopg.connect(migrated_db, autocommit=True) as conn:
        load_regions(conn, read_region_tree(SHIPPED), actor="t")
        more = parse_region_tree("code,name\n371002003003,新社区\n".encode(), fmt="csv",
                                 source="more.csv")
        assert more.external_parents() == ["371002003"]
        assert load_regions(conn, more, actor="t").inserted == 1
        orphan = parse_region_tree(
            "code,name\n371002099,某街道\n371002099001,某社区\n371099001,别处\n".encode(),
            fmt="csv", source="orphan.csv")
        with pytest.raises(RegionTreeError) as info:
            load_regions(conn, orphan, actor="t")
    # 371002099 is in the file: only the line whose parent is nowhere is named.
    assert [(p.line, p.message) for p in info.value.problems] == [
        (4, "parent 371099 of 371099001 is neither in the file nor in the database")]
    assert rows(migrated_db, "SELECT count(*) FROM regions WHERE code LIKE '3710020990%%'"
                " OR code = '371002099'")[0][0] == 0          # nothing of it written


def test_regions_in_scope_gives_the_subtree_and_its_breadcrumbs(migrated_db: str) -> None:
    with psycopg.connect(migrated_db, autocommit=True) as conn:
        load_regions(conn, read_region_tree(SHIPPED), actor="t")
        street = regions_in_scope(conn, ["371002001"])
        city = regions_in_scope(conn, ["3710"], under="371002", depth=1)
        legacy = regions_in_scope(conn, ["hz-west"])
        everything = regions_in_scope(conn, None)
        above = regions_in_scope(conn, ["371002001"], under="3710")
        elsewhere = regions_in_scope(conn, ["371002001"], under="371002002")
        assert unknown_regions(conn, ["3710", "3799", "hz-west"]) == {"3799", "hz-west"}
    assert [(n.code, seen) for n, seen in street.nodes] == [
        ("37", False), ("3710", False), ("371002", False), ("371002001", True),
        ("371002001001", True), ("371002001002", True), ("371002001003", True)]
    codes = [n.code for n, _ in city.nodes]
    assert codes[:3] == ["37", "3710", "371002"] and "371002001" in codes
    assert not any(len(c) == 12 for c in codes) and "371003" not in codes
    assert [seen for _, seen in city.nodes][:3] == [False, True, True]
    assert legacy.nodes == [] and not legacy.truncated
    assert len(everything.nodes) == len(read_region_tree(SHIPPED).nodes)
    assert [n.code for n, _ in above.nodes] == [n.code for n, _ in street.nodes]
    assert elsewhere.nodes == []


# --- Commands and start-up ------------------------------------------------------------------

def test_the_regions_commands_check_and_load(migrated_db: str, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    extension = tmp_path / "more.csv"
    extension.write_text("code,name\n371002003009,海滨社区\n", encoding="utf-8")
    assert main(["regions", "check", str(SHIPPED)]) == 0
    assert "valid: 36 regions" in capsys.readouterr().out
    assert main(["regions", "check", str(extension)]) == 0
    assert "needs in the database: 371002003" in capsys.readouterr().out
    assert main(["regions", "load", str(extension), "--database-url", migrated_db]) == 2
    assert "neither in the file nor in the database" in capsys.readouterr().err
    assert main(["regions", "load", str(SHIPPED), "--database-url", migrated_db]) == 0
    assert "36 regions inserted, 0 updated, 0 unchanged" in capsys.readouterr().out
    assert main(["regions", "load", str(extension), "--database-url", migrated_db]) == 0
    bad = tmp_path / "bad.csv"
    bad.write_text("code,name\n37,\n", encoding="utf-8")
    assert main(["regions", "check", str(bad)]) == 2
    assert "line 2: code 37: the name is empty" in capsys.readouterr().err
    actor = rows(migrated_db, "SELECT DISTINCT actor FROM registry_audit")
    assert len(actor) == 1 and actor[0][0].startswith("cli:")


def test_user_add_takes_the_clerk_role(migrated_db: str, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("correct horse battery\n"))
    assert main(["user", "add", "clerk-1", "--role", "clerk", "--regions", "371002001",
                 "--database-url", migrated_db]) == 0
    assert "clerk-1 added: clerk, regions 371002001" in capsys.readouterr().out
    with AccountStore(migrated_db) as accounts:
        session = accounts.login("clerk-1", "correct horse battery", now_ms=1_000_000)
    assert session is not None
    assert session.principal == Principal("clerk-1", "clerk", ("371002001",))


def test_the_configured_tree_is_loaded_at_start(migrated_db: str, tmp_path: Path) -> None:
    config = load_config(path=None, env={}, overrides={
        "database.url": migrated_db, "enrolment.regions": str(SHIPPED)})
    prepare_database(config, wait_s=5)
    prepare_database(config, wait_s=5)             # every start: an unchanged tree, no entry
    assert rows(migrated_db, "SELECT count(*) FROM regions")[0][0] == 36
    assert rows(migrated_db, "SELECT actor, count(*) FROM registry_audit GROUP BY 1") == [
        ("system", 1)]
    broken = tmp_path / "broken.csv"
    broken.write_text("code,name\n3710,威海市,extra\n", encoding="utf-8")
    with pytest.raises(RegionTreeError, match="line 2"):
        prepare_database(load_config(path=None, env={}, overrides={
            "database.url": migrated_db, "enrolment.regions": str(broken)}), wait_s=5)


def test_the_docs_describe_the_format_the_parser_reads() -> None:
    docs = (Path(__file__).parent.parent / "docs" / "registry-database.md").read_text()
    section = docs.split("## Regions", 1)[1]
    example = section.split("```csv\n", 1)[1].split("```", 1)[0]
    tree = parse_region_tree(example.encode(), fmt="csv", source="docs")
    assert [n.code for n in tree.nodes] == ["37", "3710", "371002", "371002001"]
    yaml_example = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    assert [n.code for n in parse_region_tree(yaml_example.encode(), fmt="yaml",
                                              source="docs").nodes] == ["37", "3710"]
