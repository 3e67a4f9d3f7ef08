#!/usr/bin/env python3
"""A CSV flight logger: what upstream's flight_logger.py does, in protocol v2 — ten values at
5 Hz as deltas (a few hundred bytes a second instead of 50 full frames), resumed by itself
after a dropped connection, with a `stale` column when the simulator stops delivering.

    pip install ./clients/python
    python3 clients/examples/flight_logger.py flight.csv                # until Ctrl-C
    python3 clients/examples/flight_logger.py flight.csv --duration 60  # one minute
"""

import argparse
import asyncio
import csv
import math
import sys
import time

import aerobridge_client

VARS = [
    "Aircraft.Latitude", "Aircraft.Longitude", "Aircraft.Altitude", "Aircraft.Height",
    "Aircraft.IndicatedAirspeed", "Aircraft.GroundSpeed", "Aircraft.MagneticHeading",
    "Aircraft.VerticalSpeed", "Aircraft.Pitch", "Aircraft.Bank",
]
# Radians on the wire; degrees in the log, as upstream's logger writes them.
DEGREES = {"Aircraft.Latitude", "Aircraft.Longitude", "Aircraft.MagneticHeading", "Aircraft.Pitch", "Aircraft.Bank"}


async def log(path: str, url: str, duration: float, token: str) -> int:
    rows = 0
    deadline = time.monotonic() + duration if duration else math.inf
    async with await aerobridge_client.connect(url, vars=VARS, hz=5, mode="delta", token=token or None) as client:
        with open(path, "w", newline="") if path != "-" else sys.stdout as out:
            writer = csv.writer(out)
            writer.writerow(["update_counter", "timestamp_us", "stale", *VARS])
            async for update in client:
                row = []
                for name in VARS:
                    x = client.state.get(name)
                    row.append("" if x is None else f"{math.degrees(x):.6f}" if name in DEGREES else f"{x:.3f}")
                writer.writerow([update.update_counter, update.timestamp, int(not update.valid), *row])
                rows += 1
                if time.monotonic() >= deadline:
                    break
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("csv", help="output file ('-' for stdout)")
    p.add_argument("--url", default="ws://127.0.0.1:8765/", help="ws://HOST:PORT/ or tcp://HOST:PORT")
    p.add_argument("--duration", type=float, default=0, help="seconds (default: until Ctrl-C)")
    p.add_argument("--token", default="", help="the bridge's --command-token (not needed to read)")
    a = p.parse_args()
    try:
        rows = asyncio.run(log(a.csv, a.url, a.duration, a.token))
    except KeyboardInterrupt:
        return
    except aerobridge_client.ClientError as e:
        sys.exit(f"flight_logger: {e}")
    print(f"flight_logger: {rows} rows to {a.csv}", file=sys.stderr)


if __name__ == "__main__":
    main()
