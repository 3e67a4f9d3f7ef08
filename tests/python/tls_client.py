"""Independent TLS clients (Python's ssl module and the `websockets` package) against aerobridge.

Usage: tls_client.py CA_PEM DATA_ADDR COMMAND_ADDR WS_ADDR

Reads telemetry over TLS on the data port and over wss://, sends a command over TLS on the
command port and over wss://, and fetches /metrics over https. Prints one JSON line the Rust test
asserts on. Every check verifies the server's certificate against CA_PEM (no `verify=False`).
"""
import asyncio
import json
import socket
import ssl
import sys
import urllib.request

import websockets


def split(addr):
    host, port = addr.rsplit(":", 1)
    return host, int(port)


def data_port(ctx, addr):
    with socket.create_connection(split(addr), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            f = s.makefile("rb")
            counters = [json.loads(f.readline())["update_counter"] for _ in range(30)]
            gaps = sum(1 for a, b in zip(counters, counters[1:]) if b != a + 1)
            return {"version": s.version(), "frames": len(counters), "gaps": gaps}


def command_port(ctx, addr):
    with socket.create_connection(split(addr), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            s.sendall(b'{"variable": "Controls.Throttle", "value": 0.75, "id": "tls-1"}\n')
            reply = json.loads(s.makefile("rb").readline())
            return {"ok": reply.get("ok"), "id": reply.get("id")}


async def websocket(ctx, addr):
    async with websockets.connect(f"wss://localhost:{split(addr)[1]}/", ssl=ctx, max_size=1 << 20) as ws:
        counters = []
        for _ in range(30):
            msg = await asyncio.wait_for(ws.recv(), 5)
            counters.append(json.loads(msg)["update_counter"])
        gaps = sum(1 for a, b in zip(counters, counters[1:]) if b != a + 1)
        await ws.send(json.dumps({"variable": "Controls.Flaps", "value": 0.5, "id": "wss-1"}))
        reply, applied = None, False
        for _ in range(300):
            msg = json.loads(await asyncio.wait_for(ws.recv(), 5))
            if "schema" not in msg:
                reply = msg
            elif reply is not None and msg["update_counter"] >= reply["frame"]:
                applied = msg["variables"]["Controls.Flaps"] == 0.5
                break
        return {
            "frames": len(counters),
            "gaps": gaps,
            "reply_ok": bool(reply and reply["ok"] and reply["id"] == "wss-1"),
            "applied": applied,
        }


def main():
    ca, data, command, ws = sys.argv[1:5]
    ctx = ssl.create_default_context(cafile=ca)
    result = {
        "data": data_port(ctx, data),
        "command": command_port(ctx, command),
        "ws": asyncio.run(websocket(ctx, ws)),
    }
    with urllib.request.urlopen(f"https://localhost:{split(ws)[1]}/metrics", context=ctx, timeout=10) as r:
        page = r.read().decode()
    result["metrics_handshakes"] = sum(
        float(l.split()[-1]) for l in page.splitlines() if l.startswith("aerobridge_tls_handshakes_total{")
    )
    print(json.dumps(result))


main()
