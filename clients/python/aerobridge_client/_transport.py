"""The two transports: WebSocket (``ws://``, ``wss://``) and the TCP data port (``tcp://``).

Both hand the client whole JSON texts and take JSON texts; the session logic does not know which
one it speaks through.
"""

from __future__ import annotations

import asyncio
import ssl as ssl_module
import struct
from typing import Optional

from . import _protocol
from .errors import ClientError

SUBPROTOCOL = "aerobridge.v2"


class Transport:
    """One connection: whole messages in and out."""

    #: Whether the server selected v2 at once (WebSocket subprotocol); otherwise a ``hello`` is
    #: sent in band and a plain bridge answers with v1 frames.
    v2_selected = False

    async def send(self, text: str) -> None:
        raise NotImplementedError

    async def recv(self) -> str:
        """The next message; raises ``ConnectionError`` when the connection is gone."""
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


class WebSocket(Transport):
    def __init__(self, ws: "object") -> None:
        self.ws = ws
        self.v2_selected = getattr(ws, "subprotocol", None) == SUBPROTOCOL

    @classmethod
    async def open(cls, url: str, token: Optional[str], ssl: Optional[ssl_module.SSLContext], timeout: float) -> "WebSocket":
        from websockets.asyncio.client import connect
        from websockets.exceptions import InvalidHandshake, InvalidURI

        headers = {"Authorization": f"Bearer {token}"} if token else None
        try:
            ws = await connect(
                url,
                subprotocols=[SUBPROTOCOL],  # type: ignore[list-item]
                additional_headers=headers,
                ssl=ssl if url.startswith("wss://") else None,
                open_timeout=timeout,
                max_size=64 << 20,
                ping_interval=None,  # v2 heartbeats replace pings (the server answers ours anyway)
            )
        except InvalidURI as e:
            raise ClientError("bad_url", str(e)) from None
        except InvalidHandshake as e:
            raise ClientError("handshake_failed", f"{url}: {e}") from None
        except (OSError, asyncio.TimeoutError) as e:
            raise ClientError("connect_failed", f"{url}: {e or 'timed out'}") from None
        return cls(ws)

    async def send(self, text: str) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            await self.ws.send(text)  # type: ignore[attr-defined]
        except ConnectionClosed as e:
            raise ConnectionError(str(e)) from None

    async def recv(self) -> str:
        from websockets.exceptions import ConnectionClosed

        try:
            m = await self.ws.recv()  # type: ignore[attr-defined]
        except ConnectionClosed as e:
            raise ConnectionError(str(e)) from None
        return m if isinstance(m, str) else m.decode()

    async def close(self) -> None:
        await self.ws.close()  # type: ignore[attr-defined]


class Tcp(Transport):
    """The data port: v1 lines until the ``welcome``, then length-prefixed messages
    (``"framing":"length"``: a 4-byte big-endian length, then the JSON)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.length = False

    @classmethod
    async def open(cls, host: str, port: int, ssl: Optional[ssl_module.SSLContext], timeout: float) -> "Tcp":
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port, ssl=ssl, limit=64 << 20), timeout
            )
        except (OSError, asyncio.TimeoutError) as e:
            raise ClientError("connect_failed", f"tcp://{host}:{port}: {e or 'timed out'}") from None
        return cls(reader, writer)

    async def send(self, text: str) -> None:
        try:
            self.writer.write(text.encode() + b"\n")
            await self.writer.drain()
        except OSError as e:
            raise ConnectionError(str(e)) from None

    async def recv(self) -> str:
        try:
            if not self.length:
                first = await self.reader.readexactly(1)
                if first == b"{":
                    return (first + await self.reader.readuntil(b"\n")).decode()
                # The first message after the switch: a length prefix, never a `{`.
                self.length = True
                head = first + await self.reader.readexactly(3)
            else:
                head = await self.reader.readexactly(4)
            (n,) = struct.unpack(">I", head)
            return (await self.reader.readexactly(n)).decode()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError) as e:
            raise ConnectionError(str(e) or "connection closed") from None

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except OSError:
            pass


async def open_transport(url: str, token: Optional[str], ssl: Optional[ssl_module.SSLContext], timeout: float) -> Transport:
    """Connects to ``url`` (already checked by :func:`_protocol.split_url`)."""
    scheme, host, port, _ = _protocol.split_url(url)
    if scheme == "tcp":
        return await Tcp.open(host, port, ssl, timeout)
    return await WebSocket.open(url, token, ssl, timeout)
