#!/usr/bin/env python3
"""Beyond one machine, measured: a nats-server, an origin (`--nats-publish`) and edges
(`--source nats://…`), all on this machine, with loadtest clients.

  hop      what one hop through NATS adds: the same loadtest clients measure the origin directly,
           then an edge (which passes the origin's timestamp through, so its latency is end to end
           from the origin's build). Medians of --runs runs.
  fanout   --edges edges with --clients clients each (one loadtest per edge, at once): gaps and
           latency per edge, and the origin's CPU with and without those clients (it publishes
           each frame once, whatever the number of edges' clients).

    cargo build --release --workspace && python3 loadtest/nats_scaleout.py hop [--runs 3] [--clients 200]
    cargo build --release --workspace && python3 loadtest/nats_scaleout.py fanout [--edges 3] [--clients 1000]

Needs `nats-server` (apt-get install nats-server). Prints a table; --json FILE writes the figures.
"""
import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from relay_chain import launch, measure, result, start  # noqa: E402


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def nats_server():
    port = free_port()
    p = subprocess.Popen(["nats-server", "-a", "127.0.0.1", "-p", str(port)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return p, f"nats://127.0.0.1:{port}"
        except OSError:
            if time.time() > deadline:
                sys.exit("nats-server did not start")
            time.sleep(0.05)


def cpu_seconds(pid):
    """utime + stime of a process, seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_pct_over(pid, seconds):
    before, t0 = cpu_seconds(pid), time.time()
    time.sleep(seconds)
    return 100 * (cpu_seconds(pid) - before) / (time.time() - t0)


def wait_for_feed(addrs, timeout=15):
    """Until the server's TCP telemetry delivers a valid frame."""
    host, port = addrs["tcp-data"].rsplit(":", 1)
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection((host, int(port)), timeout=2) as s:
                f = s.makefile("rb")
                for _ in range(5):
                    if json.loads(f.readline()).get("data_valid") == 1:
                        return
        except OSError:
            pass
        time.sleep(0.1)
    sys.exit("the edge never delivered the feed")


def edge_drops(addrs):
    """An edge's feed frames dropped, by reason (only the non-zero ones), from its /metrics."""
    host, port = addrs["websocket"].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        page = b"".join(iter(lambda: s.recv(65536), b"")).decode()
    drops = {}
    for line in page.splitlines():
        if line.startswith('aerobridge_nats_frames_dropped_total{role="edge"'):
            reason = line.split('reason="')[1].split('"')[0]
            if float(line.rsplit(" ", 1)[1]) > 0:
                drops[reason] = int(float(line.rsplit(" ", 1)[1]))
    return drops


def hop(a, nats_url, processes):
    origin, oa = start(["--nats-publish", nats_url, "--feed", "bench"])
    processes.append(origin)
    edge, ea = start(["--source", f"{nats_url}/bench"])
    processes.append(edge)
    wait_for_feed(ea)
    direct, hopped = [], []
    for _ in range(a.runs):
        direct.append(measure(oa, origin.pid, a.clients))
        hopped.append(measure(ea, edge.pid, a.clients))
    d50, h50 = statistics.median(r[0] for r in direct), statistics.median(r[0] for r in hopped)
    d99, h99 = statistics.median(r[1] for r in direct), statistics.median(r[1] for r in hopped)
    figures = {
        "clients": a.clients, "runs": a.runs,
        "direct": {"p50_ms": d50, "p99_ms": d99, "gaps": sum(r[2] for r in direct)},
        "edge": {"p50_ms": h50, "p99_ms": h99, "gaps": sum(r[2] for r in hopped)},
        "hop_adds_ms": {"p50": h50 - d50, "p99": h99 - d99},
    }
    print(f"direct (origin): p50 {d50:.2f} ms  p99 {d99:.2f} ms  gaps {figures['direct']['gaps']}")
    print(f"through NATS:    p50 {h50:.2f} ms  p99 {h99:.2f} ms  gaps {figures['edge']['gaps']}")
    print(f"one hop adds {h50 - d50:+.2f} ms at p50 and {h99 - d99:+.2f} ms at p99 "
          f"({a.clients} clients, medians of {a.runs} runs)")
    return figures


def fanout(a, nats_url, processes):
    origin, _ = start(["--nats-publish", nats_url, "--feed", "bench"])
    processes.append(origin)
    edges = []
    for _ in range(a.edges):
        p, addrs = start(["--source", f"{nats_url}/bench"])
        processes.append(p)
        edges.append((p, addrs))
    for _, addrs in edges:
        wait_for_feed(addrs)
    idle = cpu_pct_over(origin.pid, 5)
    window = 10
    running = [launch(addrs, p.pid, a.clients, f"{window}s", ("--threads", "1")) for p, addrs in edges]
    # The origin's CPU over the loadtests' measurement window (connection and warm-up come first).
    time.sleep(min(8, a.clients / 300 + 3))
    busy = cpu_pct_over(origin.pid, window - 2)
    runs = [result(r) for r in running]
    dropped = [edge_drops(addrs) for _, addrs in edges]
    figures = {"edges": a.edges, "clients_per_edge": a.clients,
               "origin_cpu_pct": {"edges_without_clients": idle, "with_clients": busy}, "per_edge": []}
    print(f"origin CPU: {idle:.1f}% with {a.edges} edges and no clients, "
          f"{busy:.1f}% with {a.edges} x {a.clients} clients")
    for i, run in enumerate(runs):
        h, lat = run["healthy"], run["latency_us"]["all"]
        row = {"clients": h["clients"], "still_connected": h["still_connected"], "frames": h["frames"],
               "gaps": h["gaps"], "missing_frames": h["missing_frames"], "torn": h["torn"],
               "p50_ms": lat["p50"] / 1000, "p99_ms": lat["p99"] / 1000,
               "edge_cpu_pct": run["server"]["cpu_pct"], "edge_dropped": dropped[i]}
        figures["per_edge"].append(row)
        print(f"edge {i}: {row['still_connected']}/{row['clients']} clients, {row['frames']} frames, "
              f"gaps {row['gaps']} (missing {row['missing_frames']}), torn {row['torn']}, "
              f"p50 {row['p50_ms']:.2f} ms, p99 {row['p99_ms']:.2f} ms, edge CPU {row['edge_cpu_pct']:.0f}%, "
              f"feed frames dropped by the edge {row['edge_dropped'] or 'none'}")
    return figures


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["hop", "fanout"])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--clients", type=int, help="per server (hop: 200, fanout: 1000)")
    ap.add_argument("--edges", type=int, default=3)
    ap.add_argument("--json", help="write the figures here")
    a = ap.parse_args()
    a.clients = a.clients or (200 if a.what == "hop" else 1000)
    nats, url = nats_server()
    processes = [nats]
    try:
        figures = (hop if a.what == "hop" else fanout)(a, url, processes)
    finally:
        for p in reversed(processes):
            p.terminate()
            p.wait()
    if a.json:
        with open(a.json, "w") as f:
            json.dump(figures, f, indent=2)


if __name__ == "__main__":
    main()
