"""Registry API reads at a city's size: list and search latency with 100,000 wearers.

Issue #12 asks list and search pages to answer in under 200 ms with 100,000 elders enrolled.
Method: a fresh PostgreSQL database with every migration, a region tree of one city (Weihai:
3 districts, 30 streets), and ``--wearers`` wearers written with one ``COPY`` each for wearers,
devices (one bound bracelet per wearer, with an IMEI) and bindings; names drawn from common
Chinese surnames and given-name characters, phones unique, a third with an ID-card number
(HMAC, ciphertext and mask from the real vault), care categories and living situations mixed.
Then the real HTTP app (the alerts API's app with the registry router, bearer tokens, a real
server on localhost) is asked ``--requests`` times per case, by an admin (all regions) and by
a street clerk (one street of 30), each request with a fresh random key that exists.
Latency is the client's: request sent to response parsed (HTTP, auth, SQL, JSON).

Cases: a baseline (``GET /health``: the HTTP stack alone), the first page of the list (50), a street clerk's list, the list filtered by care
category, search by name prefix (a surname and a given-name character), by name substring (a
given-name character), by phone, by device id, by ID-card number, and one wearer's page
(``GET /wearers/{id}`` with devices, contacts, zones, bindings).

The ID-card numbers searched for belong to 50 more wearers enrolled through the API first
(the seeded ones' numbers are not kept). Import speed is the importer's benchmark, not this one.

Usage: python -m benchmarks.registry_api [--wearers N] [--requests N] [--seed S]
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psycopg

from alerts.api import create_app, require_principal
from alerts.auth import TokenEntry, TokenTable, hash_token, new_token
from alerts.store import AlertStore
from console.registry_api import registry_router
from eldercare.schema import migrate
from foundation.clock import SystemClock
from foundation.http_server import HttpServer
from registry.idcard import IdCardVault
from registry.store import RegistryStore

SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈姚卢"
GIVEN = "秀英桂兰玉凤建国明华芳丽娟敏静强军平刚志红梅淑珍文荣德福海林春霞云"
CITY = "3710"
DISTRICTS = ["371002", "371003", "371082"]
STREETS = [f"{d}{s:03d}" for d in DISTRICTS for s in range(1, 11)]
_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)


def id_card(rng: random.Random, region: str) -> str:
    """A valid GB 11643 number born 1930-1955 in ``region``'s district."""
    body = f"{region[:6]}{rng.randint(1930, 1955)}{rng.randint(1, 12):02d}" \
           f"{rng.randint(1, 28):02d}{rng.randint(0, 999):03d}"
    total = sum(int(d) * w for d, w in zip(body, _WEIGHTS, strict=True))
    return body + "10X98765432"[total % 11]


def seed(url: str, n: int, rng: random.Random, vault: IdCardVault) -> dict[str, list[str]]:
    """Regions, ``n`` wearers, their bracelets and bindings, by COPY; returns keys to look up."""
    keys: dict[str, list[str]] = {"id": [], "name": [], "phone": [], "device": []}
    cards: set[str] = set()
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        cur.executemany("INSERT INTO regions (code, name, parent, level) VALUES (%s, %s, %s, %s)",
                        [("37", "山东省", None, "province"), (CITY, "威海市", "37", "city")]
                        + [(d, f"区{d}", CITY, "district") for d in DISTRICTS]
                        + [(s, f"街道{s}", s[:6], "street") for s in STREETS])
        with cur.copy("COPY wearers (wearer_id, name, region, sex, birth_year, phone,"
                      " living_situation, care_categories, id_card_hmac, id_card_cipher,"
                      " id_card_masked) FROM STDIN") as copy:
            for i in range(n):
                wid, region = f"W{i:07d}", STREETS[i % len(STREETS)]
                name = rng.choice(SURNAMES) + "".join(rng.choices(GIVEN, k=rng.choice((1, 2))))
                phone = f"+86139{i:08d}"
                card = None
                if i % 3 == 0:
                    number = id_card(rng, region)
                    while number in cards:   # random numbers collide now and then
                        number = id_card(rng, region)
                    cards.add(number)
                    card = vault.protect(number)
                cats = rng.sample(["special_difficulty", "low_income", "disabled", "dementia",
                                   "over_80"], k=rng.randint(0, 2))
                copy.write_row((wid, name, region, rng.choice(("female", "male")),
                                rng.randint(1930, 1955), phone,
                                rng.choice(("alone", "empty_nest", "with_family", "care_home")),
                                "{" + ",".join(cats) + "}",
                                card.hmac if card else None, card.cipher if card else None,
                                card.masked if card else None))
                if i % 97 == 0:
                    keys["id"].append(wid)
                    keys["name"].append(name)
                    keys["phone"].append(phone)
                    keys["device"].append(f"BR{i:07d}")
        with cur.copy("COPY devices (device_id, wearer_id, kind, region, imei) FROM STDIN") as copy:
            for i in range(n):
                copy.write_row((f"BR{i:07d}", f"W{i:07d}", "bracelet", STREETS[i % len(STREETS)],
                                f"86{i:013d}"))
        cur.execute("INSERT INTO device_bindings (device_id, wearer_id, bound_by)"
                    " SELECT device_id, wearer_id, 'bench' FROM devices")
        cur.execute("ANALYZE")
    return keys


def measure(name: str, requests: int, call: Callable[[], httpx.Response]) -> tuple[str, Any]:
    times = []
    for _ in range(requests):
        t0 = time.perf_counter()
        r = call()
        r.json()
        times.append(1000 * (time.perf_counter() - t0))
        assert r.status_code == 200, (name, r.status_code, r.text[:200])
    times.sort()
    return name, (statistics.median(times), times[int(0.95 * (len(times) - 1))], times[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--wearers", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--seed", type=int, default=int.from_bytes(os.urandom(4), "big"))
    args = parser.parse_args()
    print(f"seed {args.seed}; {args.wearers:,} wearers; {args.requests} requests per case;"
          f" {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs")
    from tests.services import Postgres

    rng = random.Random(args.seed)
    vault = IdCardVault(os.urandom(32))
    pg = Postgres(Path(tempfile.mkdtemp(prefix="eldercare-registry-bench-")))
    try:
        with pg.database() as url:
            with psycopg.connect(url, autocommit=True) as conn:
                migrate(conn, timescale="off")
            t0 = time.perf_counter()
            keys = seed(url, args.wearers, rng, vault)
            print(f"seeded in {time.perf_counter() - t0:.1f} s (COPY)")
            rows = run(url, keys, vault, rng, args.requests)
    finally:
        pg.close()
    print("\n| case | p50 ms | p95 ms | max ms |")
    print("|---|---:|---:|---:|")
    for name, (p50, p95, worst) in rows:
        print(f"| {name} | {p50:.1f} | {p95:.1f} | {worst:.1f} |")


def run(url: str, keys: dict[str, list[str]], vault: IdCardVault, rng: random.Random,
        requests: int) -> list[tuple[str, Any]]:
    tokens = {"admin": new_token()[0], "clerk": new_token()[0]}
    table = TokenTable([
        TokenEntry(name="admin", token_sha256=hash_token(tokens["admin"]), role="admin",
                   regions=["*"]),
        TokenEntry(name="clerk", token_sha256=hash_token(tokens["clerk"]), role="clerk",
                   regions=[STREETS[4]])])
    clock = SystemClock()
    with AlertStore(url) as alerts, RegistryStore(url, vault=vault, clock=clock) as reg:
        app = create_app(store=alerts, database_url=url, tokens=table, clock=clock)
        app.include_router(registry_router(reg, require_principal, alerts=alerts, clock=clock))
        server = HttpServer(app, host="127.0.0.1", port=0)
        server.start()
        admin = {"Authorization": f"Bearer {tokens['admin']}"}
        clerk = {"Authorization": f"Bearer {tokens['clerk']}"}
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{server.port}/api/v1",
                              timeout=30) as c:
                cards = []
                for k in range(50):   # enrolled through the API: numbers known to search for
                    number = id_card(rng, STREETS[k % len(STREETS)])
                    r = c.post("/wearers", headers=admin, json={
                        "id": f"X{k:04d}", "name": "测试", "region": STREETS[k % len(STREETS)],
                        "id_card": number})
                    if r.status_code == 201:
                        cards.append(number)

                def get(path: str, headers: dict[str, str], **params: Any
                        ) -> Callable[[], httpx.Response]:
                    return lambda: c.get(path, headers=headers, params=params)

                def search(key: str, transform: Callable[[str], str] = lambda s: s
                           ) -> Callable[[], httpx.Response]:
                    return lambda: c.get("/wearers", headers=admin,
                                         params={"q": transform(rng.choice(keys[key]))})

                return [
                    # What the HTTP stack costs alone on this machine (no database, no auth).
                    measure("baseline: GET /health", requests, get("/health", {})),
                    measure("list, first page of 50 (admin, all regions)", requests,
                            get("/wearers", admin)),
                    measure("list, a street clerk (1 street of 30)", requests,
                            get("/wearers", clerk)),
                    measure("list, care_category=dementia, region=district", requests,
                            get("/wearers", admin, care_category="dementia",
                                region=DISTRICTS[1])),
                    measure("search by name prefix (surname + 1 character)", requests,
                            search("name", lambda s: s[:2])),
                    measure("search by full name", requests, search("name")),
                    measure("search by phone (as typed: 139 xxxx xxxx)", requests,
                            search("phone", lambda p: f"{p[3:6]} {p[6:10]} {p[10:]}")),
                    measure("search by device id", requests, search("device")),
                    measure("search by ID-card number", requests,
                            lambda: c.get("/wearers", headers=admin,
                                          params={"q": rng.choice(cards)})),
                    measure("one wearer (GET /wearers/{id})", requests,
                            lambda: c.get(f"/wearers/{rng.choice(keys['id'])}",
                                          headers=admin)),
                ]
        finally:
            server.stop()


if __name__ == "__main__":
    main()
