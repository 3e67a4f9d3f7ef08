#!/usr/bin/env python3
"""Measures what relaying adds to fan-out latency: server A (built-in model) and server B
(`--source relay:tcp://A`); the same loadtest clients measure A directly, then B. B passes A's
wall-clock timestamp through, so B's latency is end to end from A's build. Medians of N runs.

    cargo build --release --workspace && python3 loadtest/relay_chain.py [--runs 3]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release")


def start(args):
    p = subprocess.Popen([os.path.join(BIN, "aerobridge"), "--data-port", "0", "--command-port", "0", "--ws-port", "0"] + args,
                         stderr=subprocess.PIPE, text=True)
    addrs = {}
    while len(addrs) < 3:
        line = p.stderr.readline()
        if not line:
            sys.exit("server exited")
        for kind in ("tcp-data", "tcp-command", "websocket"):
            if f"({kind})" in line:
                addrs[kind] = line.split("listening on ")[1].split()[0]
    # Keep reading its log, so a full pipe never blocks the server.
    threading.Thread(target=lambda: [None for _ in p.stderr], daemon=True).start()
    return p, addrs


def launch(addrs, pid, clients, duration="8s", extra=()):
    """Starts loadtest against a running server (half TCP, half WebSocket); returns (process, report path)."""
    out = tempfile.mktemp(suffix=".json")
    port = lambda k: addrs[k].rsplit(":", 1)[1]
    p = subprocess.Popen([os.path.join(BIN, "loadtest"), "--tcp-port", port("tcp-data"), "--ws-port", port("websocket"),
                          "--command-port", port("tcp-command"), "--tcp", str(clients // 2), "--ws", str(clients // 2),
                          "--duration", duration, "--validate-rate", "0.1", "--server-pid", str(pid), "--quiet",
                          "--json", out, *extra], stdout=subprocess.DEVNULL)
    return p, out


def result(launched):
    """Waits for a launched loadtest; returns its report's run section."""
    p, out = launched
    if p.wait() != 0:
        sys.exit("loadtest failed")
    return json.load(open(out))["run"]


def measure(addrs, pid, clients):
    run = result(launch(addrs, pid, clients))
    return run["latency_us"]["all"]["p50"] / 1000, run["latency_us"]["all"]["p99"] / 1000, run["healthy"]["gaps"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--clients", type=int, default=200)
    a = ap.parse_args()
    upstream, ua = start([])
    relay, ra = start(["--source", f"relay:tcp://{ua['tcp-data']}"])
    try:
        direct = [measure(ua, upstream.pid, a.clients) for _ in range(a.runs)]
        chained = [measure(ra, relay.pid, a.clients) for _ in range(a.runs)]
    finally:
        relay.terminate()
        upstream.terminate()
    d50, c50 = statistics.median(r[0] for r in direct), statistics.median(r[0] for r in chained)
    d99, c99 = statistics.median(r[1] for r in direct), statistics.median(r[1] for r in chained)
    print(f"direct:  p50 {d50:.2f} ms  p99 {d99:.2f} ms  gaps {sum(r[2] for r in direct)}")
    print(f"relayed: p50 {c50:.2f} ms  p99 {c99:.2f} ms  gaps {sum(r[2] for r in chained)}")
    print(f"relay adds {c50 - d50:+.2f} ms at the median ({a.clients} clients, medians of {a.runs} runs)")


if __name__ == "__main__":
    main()
