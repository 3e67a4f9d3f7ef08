"""What one update costs the client: a delta of 30 changed values (of 30 subscribed), from the
JSON text to the rebuilt state and the Update. Prints µs per delta (median of 7 runs).

    python3 clients/python/bench/update.py
"""

import json
import pathlib
import statistics
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).parents[1]))
from aerobridge_client._protocol import Session  # noqa: E402

N = 30
names = [f"Aircraft.Value{i}" for i in range(N)]
s = Session()
s.types = {n: "number" for n in names}
s.subscribed({"op": "ack", "profile": 1, "every": 5, "vars": names})
key = json.dumps({"op": "key", "p": 1, "seq": 0, "t": 0, "valid": 1, "v": [i * 1.5 for i in range(N)]})
s.data(json.loads(key))
deltas = [
    json.dumps({"op": "delta", "p": 1, "seq": 5 * (k + 1), "base": 0, "t": k, "valid": 1,
                "c": [[i, 309.123456789 + i + k * 0.01] for i in range(N)]})
    for k in range(20000)
]


def run() -> float:
    s.profiles[1].seq = 0
    start = time.perf_counter()
    for text in deltas:
        s.data(json.loads(text))
    return (time.perf_counter() - start) / len(deltas) * 1e6


times = sorted(run() for _ in range(7))
print(f"python: {statistics.median(times):.1f} µs per delta of {N} values (min {times[0]:.1f}), Python {sys.version.split()[0]}")
