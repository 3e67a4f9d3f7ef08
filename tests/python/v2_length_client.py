"""A plain-socket v2 client on the TCP data port with length-prefixed framing: hello, subscribe,
rebuild the state from keyframes and deltas. Prints one JSON line with what it saw.

Usage: python3 v2_length_client.py HOST:PORT
"""
import json
import socket
import struct
import sys

host, port = sys.argv[1].rsplit(":", 1)
sock = socket.create_connection((host, int(port)), timeout=5)
sock.sendall(b'{"op":"hello","protocol":2,"client":"py-length","framing":"length"}\n')
buf = b""


def read_exact(n):
    global buf
    while len(buf) < n:
        chunk = sock.recv(65536)
        if not chunk:
            raise SystemExit("connection closed")
        buf += chunk
    out, buf = buf[:n], buf[n:]
    return out


def next_line_or_message(framed):
    """Before the welcome, v1 lines may still arrive (the switch is at a frame boundary)."""
    global buf
    if framed:
        (length,) = struct.unpack(">I", read_exact(4))
        return json.loads(read_exact(length))
    while b"\n" not in buf:
        buf += sock.recv(65536)
    line, buf = buf.split(b"\n", 1)
    return json.loads(line)


# v1 lines end with "\n" and start with "{"; the length prefix of a v2 message starts with 0x00.
while True:
    while not buf:
        buf += sock.recv(65536)
    if buf[0:1] == b"{":
        msg = next_line_or_message(False)
        assert msg.get("schema") == "aerofly-bridge-telemetry", msg
        continue
    welcome = next_line_or_message(True)
    break
assert welcome["op"] == "welcome", welcome
sock.sendall(b'{"op":"sub","id":1,"vars":["Aircraft.*"],"hz":25,"mode":"delta"}\n')
ack = next_line_or_message(True)
assert ack["op"] == "ack" and ack["ok"], ack
names = ack["vars"]
keys, state, deltas, keyframes = {}, None, 0, 0
while deltas < 8:
    msg = next_line_or_message(True)
    if msg["op"] == "key":
        keys[msg["seq"]] = msg["v"]
        state = list(msg["v"])
        keyframes += 1
    elif msg["op"] == "delta":
        state = list(keys[msg["base"]])
        for pos, value in msg["c"]:
            state[pos] = value
        deltas += 1
values = dict(zip(names, state))
print(json.dumps({"welcome": welcome["op"], "keyframes": keyframes, "deltas": deltas,
                  "altitude": values["Aircraft.Altitude"]}))
