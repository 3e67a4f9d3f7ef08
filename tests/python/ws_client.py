"""Interop check with an independent WebSocket implementation (the `websockets` package).

Reads 50 telemetry frames and checks their counters, then sends a command with an id and waits
for its reply and for the value to show in telemetry. Prints a summary the Rust test asserts on.
"""
import asyncio
import json
import sys

import websockets


async def main(url: str) -> None:
    async with websockets.connect(url, max_size=1 << 20) as ws:
        counters = []
        for _ in range(50):
            msg = await asyncio.wait_for(ws.recv(), 5)
            assert isinstance(msg, str) and msg.endswith("\n"), "text message ending in a newline"
            frame = json.loads(msg)
            counters.append(frame["update_counter"])
        gaps = sum(1 for a, b in zip(counters, counters[1:]) if b != a + 1)
        print(f"frames={len(counters)} gaps={gaps}")

        await ws.send(json.dumps({"variable": "Controls.Flaps", "value": 0.25, "id": "py-1"}))
        reply, applied = None, False
        for _ in range(200):
            msg = json.loads(await asyncio.wait_for(ws.recv(), 5))
            if "schema" not in msg:
                reply = msg
            elif reply is not None and msg["update_counter"] >= reply["frame"]:
                applied = msg["variables"]["Controls.Flaps"] == 0.25
                break
        print(f"reply ok={reply and reply['ok'] and reply['id'] == 'py-1'} applied={applied}")


asyncio.run(main(sys.argv[1]))
