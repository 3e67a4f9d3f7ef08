#!/usr/bin/env python3
"""Runs kosoku's CLI with one fix for its permessage-deflate cases (Autobahn sections 12 and 13).

kosoku 0.1.0 hands the py2-era case code a `str` for a received text message, where the case
expects bytes (it hashes them with `hashlib.sha1` and then decodes them), so every 12.x/13.x
case ends in "Strings must be encoded before hashing" whatever the server does. This wrapper
encodes the message back to the bytes that were on the wire before the case sees it. Everything
else is kosoku unchanged. Usage: the same arguments as `kosoku`.
"""
import importlib
import sys

from kosoku import _caseindex

_caseindex.initialize_shims()
cases = importlib.import_module("case12_x_x")
original = cases.onMessage


def on_message(self, msg, binary):
    if isinstance(msg, str):
        # Text arrives decoded (UTF-8 on the wire); binary, if ever a str, byte for byte.
        msg = msg.encode("latin-1" if binary else "utf-8")
    return original(self, msg, binary)


for case in list(cases.Case12_X_X) + list(cases.Case13_X_X):
    case.onMessage = on_message

from kosoku._cli import main  # noqa: E402

sys.argv = ["kosoku"] + sys.argv[1:]
main()
