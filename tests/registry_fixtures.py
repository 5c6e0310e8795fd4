"""Shared pieces of the registry tests: a small region tree, ID-card numbers, a store."""

from __future__ import annotations

import os
from typing import Final

import psycopg

from registry.idcard import IdCardVault

#: Shandong > Weihai > Huancui > two streets; Zaozhuang beside it.
REGIONS: Final = [
    ("37", "山东省", None, "province"),
    ("3710", "威海市", "37", "city"),
    ("371002", "环翠区", "3710", "district"),
    ("371002001", "环翠街道1", "371002", "street"),
    ("371002002", "环翠街道2", "371002", "street"),
    ("3704", "枣庄市", "37", "city"),
]
STREET_A, STREET_B, CITY = "371002001", "371002002", "3710"
_WEIGHTS: Final = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)


def seed_regions(url: str) -> None:
    with psycopg.connect(url) as conn:
        conn.cursor().executemany(
            "INSERT INTO regions (code, name, parent, level) VALUES (%s, %s, %s, %s)"
            " ON CONFLICT DO NOTHING", REGIONS)


def id_card(serial: int, *, region: str = "371002", born: str = "19400101") -> str:
    """A valid GB 11643 number (check digit computed)."""
    body = f"{region}{born}{serial % 1000:03d}"
    total = sum(int(d) * w for d, w in zip(body, _WEIGHTS, strict=True))
    return body + "10X98765432"[total % 11]


def vault() -> IdCardVault:
    return IdCardVault(os.urandom(32))
