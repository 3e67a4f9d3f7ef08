#!/usr/bin/env python3
"""How soon a resumed v2 session gets its first keyframe.

Subscribes on the TCP data port, reads a keyframe, drops the connection, reconnects with
{"op":"hello","resume":SESSION} and times hello -> first keyframe, N times. The contract's target:
within one broadcast period (20 ms at 50 Hz). Standard library only.

Usage: python3 loadtest/v2_resume.py [HOST:PORT] [N]      (default 127.0.0.1:12345, 50)
"""
import json
import socket
import statistics
import sys
import time

host, port = (sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:12345").rsplit(":", 1)
runs = int(sys.argv[2]) if len(sys.argv) > 2 else 50


def connect():
    s = socket.create_connection((host, int(port)), timeout=5)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s, s.makefile("r", encoding="utf-8")


def until(lines, op):
    for line in lines:
        msg = json.loads(line)
        if msg.get("op") == op:
            return msg
    raise SystemExit("connection closed")


sock, lines = connect()
sock.sendall(b'{"op":"hello","protocol":2,"client":"resume-bench"}\n')
session = until(lines, "welcome")["session"]
# 1 Hz: without resume's immediate keyframe the next one would be up to a second away.
sock.sendall(b'{"op":"sub","id":1,"vars":["Aircraft.*"],"hz":1,"mode":"delta"}\n')
until(lines, "key")
waits = []
for _ in range(runs):
    lines.close()
    sock.close()
    time.sleep(0.05)  # let the server see the connection end and park the session
    sock, lines = connect()
    start = time.perf_counter()
    sock.sendall(json.dumps({"op": "hello", "protocol": 2, "resume": session}).encode() + b"\n")
    welcome = until(lines, "welcome")
    assert welcome.get("resumed") is True, welcome
    until(lines, "key")
    waits.append((time.perf_counter() - start) * 1000)
waits.sort()
print(json.dumps({
    "runs": runs,
    "hello_to_keyframe_ms": {
        "p50": round(statistics.median(waits), 3),
        "p99": round(waits[min(len(waits) - 1, int(len(waits) * 0.99))], 3),
        "max": round(waits[-1], 3),
    },
}))
