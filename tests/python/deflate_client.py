"""permessage-deflate with an independent client (the `websockets` package, which offers it by
default and keeps its context). The client reads slowly at times, so the server skips frames
(latest wins) and must fall back to standalone messages: every message must still inflate and
parse. Then a command goes out compressed (client_no_context_takeover) and its reply comes back.
Prints one JSON line the Rust test asserts on.

Usage: python3 deflate_client.py ws://HOST:PORT/ [MESSAGES]   (default 150; pauses every 50)
"""
import asyncio
import json
import socket
import sys
import urllib.parse

import websockets


async def main(url: str, want: int) -> None:
    u = urllib.parse.urlparse(url)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)  # falls behind quickly
    sock.connect((u.hostname, u.port))
    # A short receive queue: the library stops reading soon after the app does.
    async with websockets.connect(url, sock=sock, max_size=1 << 20, max_queue=2) as ws:
        extensions = [type(e).__name__ for e in ws.protocol.extensions]
        counters, pauses = [], 0
        while len(counters) < want:
            msg = await asyncio.wait_for(ws.recv(), 5)
            frame = json.loads(msg)
            counters.append(frame["update_counter"])
            if len(counters) % 50 == 0 and len(counters) < want:
                pauses += 1
                await asyncio.sleep(2.5)  # under --max-lag: the server skips, never drops us
        backwards = sum(1 for a, b in zip(counters, counters[1:]) if b <= a)
        skipped = sum(b - a - 1 for a, b in zip(counters, counters[1:]) if b > a + 1)
        await ws.send(json.dumps({"variable": "Controls.Flaps", "value": 0.25, "id": "z-1"}))
        reply = None
        for _ in range(500):
            msg = json.loads(await asyncio.wait_for(ws.recv(), 5))
            if "schema" not in msg:
                reply = msg
                break
        print(json.dumps({"extensions": extensions, "messages": len(counters),
                          "backwards": backwards, "skipped": skipped, "reply": reply}))


asyncio.run(main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 150))
