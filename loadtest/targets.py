#!/usr/bin/env python3
"""Runs the fan-out targets of the performance issue and prints medians of N runs.

    cargo build --release --workspace && python3 loadtest/targets.py [--runs 3] [--quick]

Each target is a `loadtest --spawn-server` invocation (calibrated against the floor where the
target is a ratio). Reports go to target/targets/*.json (+ .svg). Takes about 10 minutes with 3 runs.
Not part of CI: latency on a shared 2-core machine is too noisy to gate on absolute figures.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOADTEST = os.path.join(ROOT, "target", "release", "loadtest")
OUT = os.path.join(ROOT, "target", "targets")


def run(name, args, i):
    path = os.path.join(OUT, f"{name}-{i}.json")
    cmd = [LOADTEST, "--spawn-server", "--quiet", "--json", path] + args
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        print(res.stdout, res.stderr, file=sys.stderr)
        raise SystemExit(f"{name}: loadtest failed")
    with open(path) as f:
        return json.load(f)


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else float("nan")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="shorter windows (5 s)")
    a = ap.parse_args()
    os.makedirs(OUT, exist_ok=True)
    d = ["--duration", "5s"] if a.quick else ["--duration", "10s"]
    v = ["--validate-rate", "0.05"]
    targets = [
        ("ws1000", ["--calibrate", "--tcp", "0", "--ws", "1000"] + d + v),
        ("mix1000", ["--calibrate", "--tcp", "500", "--ws", "500"] + d + v),
        ("ws100", ["--tcp", "0", "--ws", "100"] + d + v),
        ("ws5000-10hz", ["--tcp", "0", "--ws", "5000", "--broadcast-ms", "100", "--connect-rate", "2000"] + d + v),
        ("ws1000-stalled100", ["--tcp", "0", "--ws", "900", "--stalled", "100", "--server-arg=--max-lag", "--server-arg=1s"] + d + v),
        ("ws900", ["--tcp", "0", "--ws", "900"] + d + v),
    ]
    rows = {}
    for name, args in targets:
        reports = [run(name, args, i) for i in range(a.runs)]
        r = [x["run"] for x in reports]
        rows[name] = {
            "p50_ms": med([x["latency_us"]["all"]["p50"] / 1000 for x in r]),
            "p99_ms": med([x["latency_us"]["all"]["p99"] / 1000 for x in r]),
            "cpu_us_per_frame": med([x["server"]["cpu_per_frame_us"] for x in r]),
            "gaps": max(x["healthy"]["gaps"] for x in r),
            "torn": max(x["healthy"]["torn"] for x in r),
            "stalled_disconnects": r[0]["stalled"]["disconnects"],
            "loadtest_cpu_pct": med([x["loadtest_cpu_pct"] for x in r]),
            "p50_ratio": med([x["ratios"]["p50"] if x.get("ratios") else None for x in reports]),
            "p99_ratio": med([x["ratios"]["p99"] if x.get("ratios") else None for x in reports]),
            "cpu_ratio": med([x["ratios"]["cpu_per_frame"] if x.get("ratios") else None for x in reports]),
            "floor_cpu_us": med([x["floor"]["server"]["cpu_per_frame_us"] if x.get("floor") else None for x in reports]),
        }
        print(name, json.dumps(rows[name]), flush=True)
    print()
    print(f"{'target':<20}{'p50 ms':>8}{'p99 ms':>8}{'CPU µs/f':>10}{'p50/fl':>8}{'p99/fl':>8}{'CPU/fl':>8}{'gaps':>6}{'torn':>6}{'lt CPU%':>9}")
    for name, x in rows.items():
        print(f"{name:<20}{x['p50_ms']:>8.2f}{x['p99_ms']:>8.2f}{x['cpu_us_per_frame']:>10.2f}{x['p50_ratio']:>8.2f}{x['p99_ratio']:>8.2f}{x['cpu_ratio']:>8.2f}{x['gaps']:>6}{x['torn']:>6}{x['loadtest_cpu_pct']:>9.0f}")
    flat = [rows[n]["cpu_us_per_frame"] for n in ("ws100", "ws1000", "ws5000-10hz")]
    mid = statistics.median(flat)
    print(f"\nCPU per frame from 100 to 5000 clients: {', '.join(f'{c:.2f}' for c in flat)} µs "
          f"({100 * (min(flat) / mid - 1):+.0f}% .. {100 * (max(flat) / mid - 1):+.0f}% around the median)")
    p99_stalled, p99_clean = rows["ws1000-stalled100"]["p99_ms"], rows["ws900"]["p99_ms"]
    print(f"healthy p99 with 100 stalled: {p99_stalled:.2f} ms vs {p99_clean:.2f} ms without "
          f"({100 * (p99_stalled / p99_clean - 1):+.0f}%); stalled clients: {rows['ws1000-stalled100']['stalled_disconnects']}")
    with open(os.path.join(OUT, "summary.json"), "w") as f:
        json.dump(rows, f, indent=2)


main()
