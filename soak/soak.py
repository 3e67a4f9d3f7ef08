#!/usr/bin/env python3
"""Fault soak: today's features under churn and injected faults, for a chosen time.

    cargo build --release --workspace && python3 soak/soak.py --minutes 60   # the README figure
    python3 soak/soak.py --minutes 2                                         # CI's version

Three release servers:
- an origin (the built-in flight model) publishing on NATS;
- a relay of the origin's data port through a proxy this script bounces;
- an edge following the origin over NATS, with TLS on its WebSocket port.

Healthy clients, in one asyncio loop:
- v1 over TCP, and over WebSocket with permessage-deflate (wss on the edge);
- v2 through the Python client library over WebSocket and TCP;
- commands every second on each server: v1 on the command port, and v2 `set` through a client.

Churn, in threads: telemetry clients that connect, read a frame and leave; one-shot commands;
bad handshakes; resets mid-handshake; clients that read slowly or never (cut off as slow
consumers).

Faults, in turn:
- the relay's source is cut for 2 s;
- nats-server is killed and restarted 2 s later;
- the edge is sent SIGHUP, reloading its certificate (nothing may notice).

The verdict fails on any of:
- RSS or open fds of any server not back within 5 % of their level after the warm-up (both
  sampled with the churn paused);
- a healthy client's gap (a missed update_counter, or 1 s without a message) outside an injected
  outage of the server it reads;
- a torn or unparsable message;
- a command without a reply;
- a panic, or an ERROR line that is not an expected outcome of an injected fault.

Writes target/soak.json.
"""
import argparse
import asyncio
import json
import os
import random
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release")
sys.path.insert(0, os.path.join(ROOT, "clients", "python"))
import aerobridge_client  # noqa: E402

stop = threading.Event()
churn_paused = threading.Event()
errors_seen = {}
churned = {"tcp": 0, "ws": 0, "command": 0, "bad": 0, "reset": 0, "stalled": 0, "slow": 0, "errors": 0}
# Injected outages: (server, start, end) in time.monotonic(); a gap of a client of `server`
# overlapping [start - 1 s, end + RECOVERY] is an expected outcome.
outages = []
RECOVERY_S = 8.0
problems = []  # (what, detail)
T0 = time.monotonic()


def problem(what, detail):
    problems.append({"t": round(time.monotonic() - T0, 1), "what": what, "detail": detail})
    print(f"PROBLEM {what}: {detail}", flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- servers -------------------------------------------------------------------------------

class Server:
    """A release aerobridge on free ports; its log goes to a file scanned at the end."""

    def __init__(self, name, args, log_dir):
        self.name = name
        self.log_path = os.path.join(log_dir, f"{name}.log")
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [os.path.join(BIN, "aerobridge"), "--data-port", "0", "--command-port", "0", "--ws-port", "0",
             "--max-lag", "2s", "--log", "info", *args],
            stderr=subprocess.PIPE, text=True)
        self.addrs = {}
        while len(self.addrs) < 3:
            line = self.proc.stderr.readline()
            if not line:
                sys.exit(f"{name} exited at startup: see {self.log_path}")
            self.log.write(line)
            if "listening on " in line:
                addr, kind = line.split("listening on ")[1].split()[:2]
                host, port = addr.rsplit(":", 1)
                self.addrs[kind.strip("()")] = (host, int(port))
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self):
        for line in self.proc.stderr:
            self.log.write(line)
            self.log.flush()

    def sample(self):
        pid = self.proc.pid
        fds = len(os.listdir(f"/proc/{pid}/fd"))
        with open(f"/proc/{pid}/status") as f:
            rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) * 1024
        return {"rss": rss, "fds": fds}

    def stop(self):
        self.proc.terminate()
        try:
            return self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return "killed"


class Nats:
    def __init__(self):
        self.port = free_port()
        self.proc = None
        self.start()

    def start(self):
        self.proc = subprocess.Popen(["nats-server", "-a", "127.0.0.1", "-p", str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    sys.exit("nats-server did not start")
                time.sleep(0.05)

    def kill(self):
        self.proc.kill()
        self.proc.wait()


class Proxy:
    """A TCP proxy that can cut its connections and refuse new ones for a while."""

    def __init__(self, target):
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.paused = False
        self.conns = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            client, _ = self.listener.accept()
            if self.paused:
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a, b):
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def pause(self):
        self.paused = True
        with self.lock:
            conns, self.conns = self.conns, []
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def resume(self):
        self.paused = False


def make_certificate(directory):
    cert, key = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True)
    return cert, key


# -- healthy clients -----------------------------------------------------------------------

class Track:
    """One healthy stream: counts frames and records gaps with their time."""

    def __init__(self, server, kind, step=1):
        self.server, self.kind, self.step = server, kind, step
        self.frames = 0
        self.last = None
        self.last_at = time.monotonic()
        self.gaps = []

    def see(self, counter, step=None):
        now = time.monotonic()
        step = step or self.step
        if self.last is not None and counter != self.last + step:
            self.gaps.append({"at": now, "from": self.last, "to": counter, "silence": now - self.last_at})
        elif now - self.last_at > 1.0 and self.last is not None:
            self.gaps.append({"at": now, "from": self.last, "to": counter, "silence": now - self.last_at})
        self.last, self.last_at = counter, now
        self.frames += 1


def expected(gap, server):
    start = gap["at"] - gap["silence"]
    return any(s == server and start <= end + RECOVERY_S and gap["at"] >= begin - 1.0
               for s, begin, end in outages)


async def v1_tcp(track, addr):
    reader, writer = await asyncio.open_connection(*addr, limit=16 << 20)
    try:
        while not stop.is_set():
            line = await reader.readline()
            if not line:
                if not stop.is_set():
                    problem("disconnected", f"{track.server} v1 tcp: the server closed the connection")
                return
            try:
                frame = json.loads(line)
            except ValueError:
                problem("torn", f"{track.server} v1 tcp: {line[:80]!r}")
                continue
            track.see(frame["update_counter"])
    finally:
        writer.close()


async def v1_ws(track, url, ssl_context):
    from websockets.asyncio.client import connect
    async with connect(url, ssl=ssl_context, max_size=16 << 20, compression="deflate") as ws:
        if not (ws.response.headers.get("Sec-WebSocket-Extensions") or "").startswith("permessage-deflate"):
            problem("deflate", f"{track.server}: permessage-deflate was not agreed")
        async for message in ws:
            if stop.is_set():
                return
            try:
                track.see(json.loads(message)["update_counter"])
            except (ValueError, KeyError):
                problem("torn", f"{track.server} v1 ws: {str(message)[:80]!r}")


async def v2_client(track, url, ssl_context, hz, sets):
    vars_ = ["Aircraft.Altitude", "Aircraft.IndicatedAirspeed", "Controls.*"]
    client = await aerobridge_client.connect(url, vars=vars_, hz=hz, mode="delta", ssl=ssl_context, timeout=10)
    track.step = int(client.subscription["every"])
    reconnects = 0
    sets_task = asyncio.ensure_future(v2_sets(client, track.server, sets)) if sets else None
    try:
        async for update in client:
            if stop.is_set():
                return
            if client.reconnects != reconnects:
                reconnects = client.reconnects
                problem_if_unexpected("reconnected", track.server, f"v2 {url}: {client.last_error}")
                track.last = None  # a connection's first keyframe may be older: restart the chain
            track.see(update.update_counter)
    finally:
        if sets_task:
            sets_task.cancel()
        await client.close()


def problem_if_unexpected(what, server, detail):
    now = time.monotonic()
    if not any(s == server and begin - 1.0 <= now <= end + RECOVERY_S for s, begin, end in outages):
        problem(what, f"{server}: {detail}")


commands = {"sent": 0, "answered": 0, "refused": 0}


async def v2_sets(client, server, sets):
    while not stop.is_set():
        await asyncio.sleep(1)
        commands["sent"] += 1
        try:
            await client.set("Controls.Flaps", round(random.random(), 2))
            commands["answered"] += 1
        except aerobridge_client.ClientError as e:
            if e.code in ("disconnected", "timeout", "closed"):
                problem_if_unexpected("no reply", server, f"v2 set: {e}")
            else:
                commands["answered"] += 1
                commands["refused"] += 1


async def v1_commands(server, addr):
    while not stop.is_set():
        await asyncio.sleep(1)
        commands["sent"] += 1
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(*addr), 5)
            writer.write(json.dumps({"variable": "Controls.Flaps", "value": round(random.random(), 2)}).encode() + b"\n")
            await writer.drain()
            reply = await asyncio.wait_for(reader.readline(), 5)
            writer.close()
            json.loads(reply)
            commands["answered"] += 1
        except (OSError, asyncio.TimeoutError, ValueError) as e:
            problem_if_unexpected("no reply", server, f"v1 command: {e!r}")


# -- churn ---------------------------------------------------------------------------------

def ws_request():
    return (b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")


def churn(server, kind, tls):
    """`tls`: a client context when the server's WebSocket port speaks TLS."""
    addrs = server.addrs

    def ws_socket():
        s = socket.create_connection(addrs["websocket"], timeout=5)
        return tls.wrap_socket(s, server_hostname="localhost") if tls else s

    while not stop.is_set():
        if churn_paused.is_set():
            time.sleep(0.1)
            continue
        try:
            if kind == "tcp":
                with socket.create_connection(addrs["tcp-data"], timeout=5) as s:
                    s.makefile("rb").readline()
            elif kind == "ws":
                with ws_socket() as s:
                    s.sendall(ws_request())
                    assert s.recv(4096).startswith(b"HTTP/1.1 101")
                    s.sendall(bytes([0x88, 0x82, 0, 0, 0, 0, 0x03, 0xe8]))
            elif kind == "command":
                with socket.create_connection(addrs["tcp-command"], timeout=5) as s:
                    s.sendall(json.dumps({"variable": "Controls.Flaps", "value": random.random()}).encode())
                    s.shutdown(socket.SHUT_WR)
                    assert s.recv(4096).startswith(b"{")
            elif kind == "bad":
                with ws_socket() as s:
                    s.sendall(random.choice([b"GET / HTTP/1.0\r\n\r\n", b"\x00\x01garbage\r\n\r\n",
                                             ws_request().replace(b"13", b"8")]))
                    s.recv(4096)
            elif kind == "reset":
                s = socket.create_connection(addrs["tcp-data"], timeout=5)
                s.sendall(b"GET / HT")
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                s.close()
            elif kind == "stalled":
                s = socket.create_connection(addrs["tcp-data"], timeout=5)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                stop.wait(4)  # never reads: the slow-consumer policy cuts it off
                s.close()
            elif kind == "slow":
                with socket.create_connection(addrs["tcp-data"], timeout=5) as s:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                    end = time.monotonic() + 4
                    while time.monotonic() < end and not stop.is_set():
                        if not s.recv(512):
                            break
                        time.sleep(0.05)  # ~10 KB/s: a fraction of the stream
            churned[kind] += 1
        except (OSError, AssertionError) as e:
            churned["errors"] += 1
            errors_seen[f"{server.name} {kind}: {type(e).__name__}"] = errors_seen.get(f"{server.name} {kind}: {type(e).__name__}", 0) + 1
        time.sleep(0.02)


# -- faults --------------------------------------------------------------------------------

def faults(relay_proxy, nats, edge, period):
    """One fault every `period` seconds, in turn."""
    cycle = ["relay", "nats", "sighup"]
    i = 0
    while not stop.wait(period):
        if churn_paused.is_set():
            continue
        fault = cycle[i % len(cycle)]
        i += 1
        start = time.monotonic()
        if fault == "relay":
            outages.append(["relay", start, start + 1e9])
            relay_proxy.pause()
            stop.wait(2)
            relay_proxy.resume()
            outages[-1][2] = time.monotonic()
        elif fault == "nats":
            outages.append(["edge", start, start + 1e9])
            outages.append(["nats", start, start + 1e9])
            nats.kill()
            stop.wait(2)
            nats.start()
            outages[-2][2] = outages[-1][2] = time.monotonic()
        else:
            edge.proc.send_signal(1)  # SIGHUP: reload the certificate; nothing may notice
        print(f"fault {fault} at {start - T0:.0f} s", flush=True)


# -- the run -------------------------------------------------------------------------------

def scan_log(server):
    """Panics always fail; ERROR lines only when no injected fault explains them."""
    nats_faults = any(s == "nats" for s, _, _ in outages)
    found = []
    with open(server.log_path) as f:
        for line in f:
            if "panicked" in line:
                found.append(line.strip())
            elif " ERROR " in line and not (nats_faults and "NATS" in line):
                found.append(line.strip())
    return found


async def healthy(origin, relay, edge, ca):
    tls = ssl.create_default_context(cafile=ca)
    host = lambda s, kind: f"{s.addrs[kind][0]}:{s.addrs[kind][1]}"
    tracks = []
    tasks = []

    def add(track, coro):
        tracks.append(track)
        tasks.append(asyncio.ensure_future(coro))

    for server, name in ((origin, "origin"), (relay, "relay"), (edge, "edge")):
        scheme, context = ("wss", tls) if server is edge else ("ws", None)
        ws_url = f"{scheme}://{'localhost' if server is edge else '127.0.0.1'}:{server.addrs['websocket'][1]}/"
        t = Track(name, "v1 tcp")
        add(t, v1_tcp(t, server.addrs["tcp-data"]))
        t = Track(name, "v1 ws deflate")
        add(t, v1_ws(t, ws_url, context))
        t = Track(name, "v2 ws 10 Hz")
        add(t, v2_client(t, ws_url, context, 10, sets=True))
        t = Track(name, "v2 tcp 25 Hz")
        add(t, v2_client(t, f"tcp://{host(server, 'tcp-data')}", None, 25, sets=False))
        tasks.append(asyncio.ensure_future(v1_commands(name, server.addrs["tcp-command"])))
    return tracks, tasks


def main():
    ap = argparse.ArgumentParser(description="fault soak (see the module's docstring)")
    ap.add_argument("--minutes", type=float, default=60)
    ap.add_argument("--report", default=os.path.join(ROOT, "target", "soak.json"))
    a = ap.parse_args()
    seconds = a.minutes * 60
    warmup = min(30.0, max(10.0, seconds * 0.15))
    fault_period = max(8.0, min(30.0, seconds / 12))
    work = tempfile.mkdtemp(prefix="aerobridge-soak-")
    cert, key = make_certificate(work)
    nats = Nats()
    nats_url = f"nats://127.0.0.1:{nats.port}"
    origin = Server("origin", ["--nats-publish", nats_url, "--feed", "soak"], work)
    relay_proxy = Proxy(origin.addrs["tcp-data"])
    relay = Server("relay", ["--source", f"relay:tcp://127.0.0.1:{relay_proxy.port}",
                             "--relay-commands", "tcp://%s:%d" % origin.addrs["tcp-command"]], work)
    edge = Server("edge", ["--source", f"{nats_url}/soak", "--tls-cert", cert, "--tls-key", key], work)
    servers = [origin, relay, edge]
    print(f"soak: {a.minutes} min; warm-up {warmup:.0f} s; a fault every {fault_period:.0f} s; logs in {work}", flush=True)

    loop = asyncio.new_event_loop()
    tracks, tasks = loop.run_until_complete(healthy(origin, relay, edge, cert))
    threading.Thread(target=loop.run_forever, daemon=True).start()
    churn_tls = ssl.create_default_context(cafile=cert)
    churners = [threading.Thread(target=churn, args=(s, k, churn_tls if s is edge else None), daemon=True)
                for s in servers for k in ["tcp", "ws", "command", "bad", "reset", "stalled", "slow"]]
    for t in churners:
        t.start()
    time.sleep(warmup)  # the warm-up's length: the load under test, not a wait for an event

    def quiet_sample():
        churn_paused.set()
        time.sleep(5)  # churn clients finish; stalled ones are cut off after --max-lag (2 s)
        s = {srv.name: srv.sample() for srv in servers}
        churn_paused.clear()
        return s

    base = quiet_sample()
    print(f"after warm-up: {json.dumps(base)}", flush=True)
    threading.Thread(target=faults, args=(relay_proxy, nats, edge, fault_period), daemon=True).start()
    samples = []
    end = time.monotonic() + seconds - warmup
    while time.monotonic() < end:
        time.sleep(min(10, max(0.1, end - time.monotonic())))
        s = {srv.name: srv.sample() for srv in servers}
        samples.append({"t": round(time.monotonic() - T0), **{k: v for k, v in s.items()}, "churned": dict(churned)})
        print(json.dumps(samples[-1]), flush=True)
    # Let the last fault's outage end before the final quiet sample.
    while any(e > time.monotonic() + 1e8 for _, _, e in outages):
        time.sleep(0.1)
    final = quiet_sample()
    stop.set()
    for server in servers:
        for key_, limit in (("rss", 0.05), ("fds", 0.05)):
            before, after = base[server.name][key_], final[server.name][key_]
            if after > before * (1 + limit) + (1 if key_ == "fds" else 0):
                problem("growth", f"{server.name} {key_}: {before} after the warm-up, {after} at the end (more than {limit:.0%})")
    gaps = []
    for t in tracks:
        for g in t.gaps:
            ok = expected(g, t.server)
            gaps.append({"server": t.server, "client": t.kind, "from": g["from"], "to": g["to"],
                         "silence_s": round(g["silence"], 2), "t": round(g["at"] - T0, 1), "expected": ok})
            if not ok:
                problem("gap", f"{t.server} {t.kind}: {g['from']} -> {g['to']} after {g['silence']:.2f} s")
        if t.frames < 10:
            problem("starved", f"{t.server} {t.kind}: {t.frames} messages")
    if commands["sent"] == 0 or commands["answered"] < commands["sent"] * 0.9:
        problem("commands", f"{commands}")
    exits = {s.name: s.stop() for s in servers}
    nats.kill()
    for server in servers:
        for line in scan_log(server):
            problem("log", f"{server.name}: {line[:300]}")
        if exits[server.name] != 0:
            problem("exit", f"{server.name} exited with {exits[server.name]}")
    report = {
        "minutes": a.minutes, "ok": not problems, "problems": problems, "after_warmup": base, "at_end": final,
        "churned": churned, "churn_errors": errors_seen, "commands": commands,
        "healthy": [{"server": t.server, "client": t.kind, "messages": t.frames, "gaps": len(t.gaps)} for t in tracks],
        "gaps": gaps, "faults": [{"server": s, "from_s": round(b - T0, 1), "to_s": round(e - T0, 1)} for s, b, e in outages],
        "samples": samples,
    }
    os.makedirs(os.path.dirname(a.report), exist_ok=True)
    with open(a.report, "w") as f:
        json.dump(report, f, indent=1)
    summary = {k: report[k] for k in ("minutes", "ok", "churned", "churn_errors", "commands", "after_warmup", "at_end")}
    summary["healthy messages"] = sum(t.frames for t in tracks)
    summary["gaps (expected, in injected outages)"] = sum(g["expected"] for g in gaps)
    summary["problems"] = problems[:20]
    print(json.dumps(summary, indent=1))
    levels = ", ".join(
        f"{n} RSS {base[n]['rss'] / 1e6:.1f}→{final[n]['rss'] / 1e6:.1f} MB fds {base[n]['fds']}→{final[n]['fds']}"
        for n in base)
    print(f"soak {'ok' if not problems else 'FAILED'}: {a.minutes:g} min, {summary['healthy messages']} healthy messages, "
          f"{summary['gaps (expected, in injected outages)']} gaps inside injected outages, "
          f"{sum(v for k, v in churned.items() if k != 'errors')} churned connections, "
          f"{commands['answered']}/{commands['sent']} commands answered, {len(outages)} outages injected; {levels}"
          + (f"; {len(problems)} problems" if problems else ""))
    sys.exit(0 if not problems else 1)


main()
