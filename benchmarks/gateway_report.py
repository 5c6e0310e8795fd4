"""Prints the figures of ``benchmarks.gateway`` and judges its functional checks.

Speed is reported, never judged here: :func:`failures` lists only what must hold at any speed
(every connection held, every alarm answered, every frame decoded, published and delivered, a
clean stop). Rates are also given as ratios against the same run's baselines, because this shared
machine's speed moves from run to run and the ratios move less.
"""

from __future__ import annotations

import math
from typing import Any


def failures(r: dict[str, Any]) -> list[str]:
    """The functional checks that failed, in words (empty: all held)."""
    n = r["connections_target"]
    if "held" not in r:
        return ["the run did not finish (see the error above)"]
    bad: list[str] = []
    c, h, d = r["connect"], r["held"], r["drain"]
    if c["open"] != n or c["failed"]:
        bad.append(f"{c['open']} of {n} connections logged in ({c['failed']} failed)")
    if h["open_at_watches"] != n or h["lost_at_watches"] or h["open_at_gateway"] != n:
        bad.append(f"connections not held: {h['open_at_watches']} open at the watches,"
                   f" {h['open_at_gateway']:.0f} at the gateway, {h['lost_at_watches']} lost")
    closed = {k: v for k, v in h["closed_by_gateway"].items() if v}
    if closed:
        bad.append(f"the gateway closed connections: {closed}")
    if d["al_outstanding"] or d["al_answers"] != d["sent"]["AL"]:
        bad.append(f"{d['al_answers']} of {d['sent']['AL']} alarms answered")
    if not d["frames_sent"] == d["frames_decoded"] == d["published"]:
        bad.append(f"frames sent {d['frames_sent']}, decoded {d['frames_decoded']:.0f},"
                   f" published {d['published']:.0f}")
    if d["delivered"] < d["readings"]:
        bad.append(f"lost at the broker: {d['delivered']} readings delivered of"
                   f" {d['readings']:.0f} published")
    if d["sos_delivered"] < d["sent"]["AL"]:
        bad.append(f"SOS delivered {d['sos_delivered']} of {d['sent']['AL']} alarms sent")
    if d["decode_errors"]:
        bad.append(f"{d['decode_errors']:.0f} frames did not decode")
    if r.get("gateway_exit") != 0:
        bad.append(f"the gateway exited with status {r.get('gateway_exit')} on SIGTERM")
    return bad


def print_report(r: dict[str, Any]) -> None:
    n = r["connections_target"]
    print(f"\n## One gateway process: {n:,} watch connections\n")
    base = r.get("baseline", [])
    if base:
        print("| baseline, same run | messages/s acknowledged | publisher CPU | delivered |")
        print("|---|---:|---:|---:|")
        for b in base:
            print(f"| {b['name']} | {b['per_s']:,.0f} | {b['cpu_pct']:.0f}% |"
                  f" {b['delivered']:,} of {b['messages']:,} |")
    if "connect" in r:
        c = r["connect"]
        print(f"\nConnections: {c['open']:,} of {n:,} logged in ({c['failed']} failed) in"
              f" {c['seconds']:.1f} s ({c['open'] / max(c['seconds'], 1e-9):,.0f}/s); their"
              f" keepalives (answered at once) were all published and delivered"
              f" {r['login_drain']['seconds']:.1f} s after the last login.")
    if "held" in r:
        h = r["held"]
        closed = sum(h["closed_by_gateway"].values())
        print(f"Held to the end: {h['open_at_watches']:,} open at the watches,"
              f" {h['open_at_gateway']:,.0f} at the gateway, {closed:.0f} closed by the gateway;"
              f" gateway RSS {h['gateway_rss_mb']:,.0f} MB.")
    if r.get("phases"):
        _phases(r["phases"])
        _ratios(r["phases"], base)
    if "drain" in r:
        _delivery(r["drain"])
    if "gateway_log" in r:
        g = r["gateway_log"]
        print(f"Gateway log: {g['lines']:,} lines ({g['bytes'] / 1e6:,.1f} MB): aiomqtt's"
              f" 'pending publish calls' warnings {g['pending_calls_warnings']:,}, publishes"
              f" resent after aiomqtt's timeout {g['publish_resent']:,}, tracebacks"
              f" {g['tracebacks']:,}.")
    print(f"Gateway exit status on SIGTERM: {r.get('gateway_exit')}")
    for p in r.get("phases", []):
        if "profile" in p:
            _profile(p["name"], p["profile"])


def _delivery(d: dict[str, Any]) -> None:
    kinds = ", ".join(f"{k} {v:,}" for k, v in d["sent"].items())
    print(f"\nDelivery, whole run: frames sent {d['frames_sent']:,} ({kinds}), decoded"
          f" {d['frames_decoded']:,.0f}, published {d['published']:,.0f}, delivered"
          f" {d['delivered']:,} readings of {d['readings']:,.0f} published"
          f" ({d['delivered'] - d['readings']:,.0f} duplicates); SOS"
          f" delivered {d['sos_delivered']:,} for {d['sent']['AL']:,} alarms; alarms answered"
          f" {d['al_answers']:,}; readings {d['readings']:,.0f}; decode errors"
          f" {d['decode_errors']:.0f}.")


def _phases(phases: list[dict[str, Any]]) -> None:
    print("\n| phase | offered/s | decoded/s | delivered/s | not decoded at end | drain s |"
          " gateway CPU | CPU us/frame | publish p50 / p99 ms | AL round trip p50 / p99 / max"
          " ms (n) | AL answered late |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for p in phases:
        rtt = (f"{p['al_rtt_p50_ms']:,.1f} / {p['al_rtt_p99_ms']:,.1f} /"
               f" {p['al_rtt_max_ms']:,.0f} ({p['al_rtt_samples']:,})"
               if "al_rtt_p50_ms" in p else "-")
        print(f"| {p['name']} | {p['offered_per_s']:,.0f} | {p['decoded_per_s']:,.0f} |"
              f" {p['delivered_per_s']:,.0f} | {p['undecoded_at_end']:,.0f} |"
              f" {p['drain']['seconds']:,.1f} | {p['gateway_cpu_pct']:.0f}% |"
              f" {p['cpu_us_per_frame']:,.0f} | {_ms(p['publish_p50_ms'])} /"
              f" {_ms(p['publish_p99_ms'])} | {rtt} | {p['al_answered_late']:,} |")
    print("\n(publish p50/p99: the gateway's histogram, frame decoded -> PUBACK, interpolated in"
          " its buckets, 30 s the top; AL round trip: at the watch, alarm written -> its answer;"
          " 'late': answered after the phase's settle time, during the drain.)")


def _ms(v: float) -> str:
    return "-" if math.isnan(v) else f"{v:,.1f}"


def _ratios(phases: list[dict[str, Any]], base: list[dict[str, Any]]) -> None:
    rated, low = phases[1:], phases[0]
    if not rated:
        return
    kept = [p for p in rated if p["delivered_per_s"] >= 0.95 * p["offered_per_s"]]
    top = rated[-1]
    print("\nSummary and ratios (same run):")
    if kept:
        best = max(kept, key=lambda p: p["delivered_per_s"])
        print(f"- sustained: {best['delivered_per_s']:,.0f} frames/s delivered while"
              f" {best['offered_per_s']:,.0f}/s were offered ({best['name']})")
    else:
        print("- sustained: the gateway kept up with none of the rates offered")
    for p in rated:
        if p not in kept:
            print(f"- fell behind at {p['name']}: decoded {p['decoded_per_s'] / p['offered_per_s']:.0%}"
                  f" and delivered {p['delivered_per_s'] / p['offered_per_s']:.0%} of the offered"
                  f" frames while offered")
    ref = max(kept, key=lambda p: p["delivered_per_s"]) if kept else top
    for b in base:
        print(f"- delivered/s at {ref['name']} / baseline '{b['name']}':"
              f" {ref['delivered_per_s'] / b['per_s']:.0%}")
    if "al_rtt_p50_ms" in low and "al_rtt_p50_ms" in ref:
        print(f"- AL round trip at {ref['name']} / at {low['name']}: p50"
              f" x{ref['al_rtt_p50_ms'] / low['al_rtt_p50_ms']:,.1f}, p99"
              f" x{ref['al_rtt_p99_ms'] / low['al_rtt_p99_ms']:,.1f}")


def _profile(name: str, p: dict[str, Any]) -> None:
    if "error" in p:
        print(f"\nprofile of {name} failed: {p['error']}")
        return
    print(f"\n### Where the gateway's time goes at {name} (py-spy, main thread,"
          f" {p['samples']:,} busy samples at 100/s: busy {p['busy_pct']:.0f}% of the time)\n")
    for title, rows in (("component of the innermost frame", p["components"]),
                        ("function, self", p["self"]), ("function, inclusive", p["inclusive"])):
        print(f"| {title} | % of busy samples |")
        print("|---|---:|")
        for fn, pct in rows:
            print(f"| `{fn}` | {pct:.1f} |")
        print()
