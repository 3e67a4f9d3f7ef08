#!/usr/bin/env python3
"""Soak: connect/disconnect churn against a release aerobridge while steady clients measure,
sampling the server's RSS and open file descriptors. Not part of CI.

    cargo build --release --workspace && python3 soak/soak.py --minutes 30

Steady clients: `loadtest` (100 TCP + 100 WS at 50 Hz) for the whole run, so their gaps count.
Churn, in threads: telemetry clients that connect, read a frame and leave (TCP and WebSocket),
one-shot commands, bad handshakes, connections reset mid-handshake, and clients that stall.
Verdict: RSS and fd count flat (last quarter vs the first quarter after warm-up, within 10% /
a few descriptors) and 0 gaps for the steady clients.
"""
import argparse
import json
import os
import random
import socket
import struct
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release")
stop = threading.Event()
churned = {"tcp": 0, "ws": 0, "command": 0, "bad": 0, "reset": 0, "stalled": 0, "errors": 0}


def start_server():
    p = subprocess.Popen([os.path.join(BIN, "aerobridge"), "--data-port", "0", "--command-port", "0", "--ws-port", "0",
                          "--max-lag", "2s"], stderr=subprocess.PIPE, text=True)
    addrs = {}
    while len(addrs) < 3:
        line = p.stderr.readline()
        if not line:
            sys.exit("server exited")
        for kind in ("tcp-data", "tcp-command", "websocket"):
            if f"({kind})" in line:
                host, port = line.split("listening on ")[1].split()[0].rsplit(":", 1)
                addrs[kind] = (host, int(port))
    threading.Thread(target=lambda: [None for _ in p.stderr], daemon=True).start()
    return p, addrs


def ws_request():
    return (b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")


def churn(addrs, kind):
    while not stop.is_set():
        try:
            if kind == "tcp":
                with socket.create_connection(addrs["tcp-data"], timeout=5) as s:
                    s.makefile("rb").readline()
            elif kind == "ws":
                with socket.create_connection(addrs["websocket"], timeout=5) as s:
                    s.sendall(ws_request())
                    assert s.recv(4096).startswith(b"HTTP/1.1 101")
                    s.sendall(bytes([0x88, 0x82, 0, 0, 0, 0, 0x03, 0xe8]))
            elif kind == "command":
                with socket.create_connection(addrs["tcp-command"], timeout=5) as s:
                    s.sendall(json.dumps({"variable": "Controls.Flaps", "value": random.random()}).encode())
                    s.shutdown(socket.SHUT_WR)
                    assert b'"ok":true' in s.recv(4096)
            elif kind == "bad":
                with socket.create_connection(addrs["websocket"], timeout=5) as s:
                    s.sendall(random.choice([b"GET / HTTP/1.0\r\n\r\n", b"\x00\x01garbage\r\n\r\n",
                                             ws_request().replace(b"13", b"8")]))
                    s.recv(4096)
            elif kind == "reset":
                s = socket.create_connection(addrs[random.choice(["websocket", "tcp-data"])], timeout=5)
                s.sendall(ws_request()[:30])
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                s.close()
            elif kind == "stalled":
                s = socket.create_connection(addrs["tcp-data"], timeout=5)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                time.sleep(5)  # never reads: the slow-consumer policy cuts it off
                s.close()
            churned[kind] += 1
        except Exception:
            churned["errors"] += 1
        time.sleep(0.02)


def sample(pid):
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    with open(f"/proc/{pid}/status") as f:
        rss = next(int(l.split()[1]) for l in f if l.startswith("VmRSS:")) * 1024
    return rss, fds


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--report", default=os.path.join(ROOT, "target", "soak.json"))
    a = ap.parse_args()
    seconds = a.minutes * 60
    server, addrs = start_server()
    steady_json = os.path.join(ROOT, "target", "soak-steady.json")
    steady = subprocess.Popen([os.path.join(BIN, "loadtest"), "--host", "127.0.0.1",
                               "--tcp-port", str(addrs["tcp-data"][1]), "--ws-port", str(addrs["websocket"][1]),
                               "--command-port", str(addrs["tcp-command"][1]), "--tcp", "100", "--ws", "100",
                               "--validate-rate", "0.01", "--warmup", "5s", "--duration", f"{int(seconds)}s",
                               "--server-pid", str(server.pid), "--quiet", "--json", steady_json],
                              stdout=subprocess.DEVNULL)
    time.sleep(8)
    threads = [threading.Thread(target=churn, args=(addrs, k), daemon=True)
               for k in ["tcp", "tcp", "ws", "ws", "command", "bad", "reset", "stalled"]]
    for t in threads:
        t.start()
    samples = []
    start = time.time()
    while time.time() - start < seconds:
        time.sleep(10)
        rss, fds = sample(server.pid)
        samples.append({"t": round(time.time() - start), "rss_mb": round(rss / 1e6, 1), "fds": fds, **churned})
        print(json.dumps(samples[-1]), flush=True)
    stop.set()
    steady.wait()
    time.sleep(3)
    rss_end, fds_end = sample(server.pid)
    server.terminate()
    server.wait(5)
    q = max(1, len(samples) // 4)
    early = max(s["rss_mb"] for s in samples[:q])
    late = max(s["rss_mb"] for s in samples[-q:])
    with open(steady_json) as f:
        steady_report = json.load(f)["run"]["healthy"]
    verdict = {
        "minutes": a.minutes, "churned": churned, "rss_mb_first_quarter_max": early, "rss_mb_last_quarter_max": late,
        "fds_first_sample": samples[0]["fds"], "fds_max": max(s["fds"] for s in samples),
        "fds_after_churn": fds_end, "steady_gaps": steady_report["gaps"], "steady_frames": steady_report["frames"],
        "steady_disconnects": steady_report["disconnects"],
        "flat": late <= early * 1.10 + 1 and steady_report["gaps"] == 0,
        "exit_code": server.returncode,
    }
    with open(a.report, "w") as f:
        json.dump({"verdict": verdict, "samples": samples}, f, indent=1)
    print(json.dumps(verdict, indent=1))
    sys.exit(0 if verdict["flat"] else 1)


main()
