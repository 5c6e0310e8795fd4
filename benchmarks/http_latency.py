"""HTTP request latency on a kept-alive connection: the server with and without Nagle.

Every API request used to take 40 ms more than its work: the listening socket was created
without naming ``IPPROTO_TCP``, so asyncio did not set ``TCP_NODELAY`` on accepted
connections, and the kernel held each response's body (a second small write) until the client
ACKed the headers, which Linux clients delay by 40 ms. Method: one trivial JSON endpoint served
twice by :class:`foundation.http_server.HttpServer` in the same run: as shipped, and a baseline
whose listening socket leaves the protocol 0 (the old behaviour); ``--requests`` GETs each on
one httpx connection, after a warm-up; the same with a POST of a 2 KiB JSON body.

Usage: python -m benchmarks.http_latency [--requests N]
"""

from __future__ import annotations

import argparse
import platform
import socket
import statistics
import time

import httpx
from fastapi import FastAPI

from foundation.http_server import HttpServer


class _NagleServer(HttpServer):
    """The old listening socket (protocol 0): asyncio leaves Nagle on."""

    def _bind(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind((self.host, self.port))
        return sock


def _app() -> FastAPI:
    app = FastAPI()

    @app.get("/ping")
    def ping() -> dict[str, int]:
        return {"ok": 1}

    @app.post("/echo")
    def echo(body: dict[str, str]) -> dict[str, int]:
        return {"keys": len(body)}

    return app


def _measure(server: HttpServer, requests: int) -> dict[str, list[float]]:
    server.start()
    out: dict[str, list[float]] = {"GET": [], "POST": []}
    body = {f"k{i}": "x" * 20 for i in range(64)}
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{server.port}") as client:
            for _ in range(5):
                client.get("/ping").raise_for_status()
            for _ in range(requests):
                started = time.perf_counter()
                client.get("/ping").raise_for_status()
                out["GET"].append((time.perf_counter() - started) * 1000)
                started = time.perf_counter()
                client.post("/echo", json=body).raise_for_status()
                out["POST"].append((time.perf_counter() - started) * 1000)
    finally:
        server.stop()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    print(f"# {platform.node()} {platform.python_version()}, {args.requests} requests per case")
    base = _measure(_NagleServer(_app(), host="127.0.0.1", port=0), args.requests)
    now = _measure(HttpServer(_app(), host="127.0.0.1", port=0), args.requests)
    print("| request | baseline p50 ms | p95 | TCP_NODELAY p50 ms | p95 | p50 ratio |")
    print("|---|---:|---:|---:|---:|---:|")
    for kind in ("GET", "POST"):
        b, n = sorted(base[kind]), sorted(now[kind])
        p95 = int(len(b) * 0.95)
        print(f"| {kind} | {statistics.median(b):.2f} | {b[p95]:.2f} | {statistics.median(n):.2f}"
              f" | {n[p95]:.2f} | {statistics.median(b) / statistics.median(n):.0f}x |")


if __name__ == "__main__":
    main()
