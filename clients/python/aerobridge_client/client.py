"""The client: one session, kept alive across reconnects.

One task reads the connection and applies every message; requests (``catalog``, ``sub``,
``set``) wait on a future the reader resolves. A lost connection is reopened with jittered,
capped exponential backoff and the session is *resumed* (``hello`` with ``resume``): the server
re-acknowledges the same subscriptions and sends current keyframes, so nothing is subscribed
twice. A keyframe the client already showed is not shown again.
"""

from __future__ import annotations

import asyncio
import collections
import json
import random
import ssl as ssl_module
import time
from dataclasses import dataclass
from typing import Any, Deque, Dict, Generator, List, Mapping, Optional

from . import _protocol
from ._protocol import Update, Variable
from ._transport import Tcp, Transport, open_transport
from .errors import ClientError

#: Updates kept for ``async for`` when the caller reads more slowly than they come; beyond it
#: the oldest go (``state`` is always current) and ``updates_dropped`` counts them.
UPDATES_KEPT = 1024
#: Without a ``welcome`` this long while v1 frames arrive, the server is a plain v1 bridge.
V1_PATIENCE_S = 1.5
#: A plain bridge's broadcast rate (upstream's default, 20 ms).
V1_RATE_HZ = 50.0


@dataclass(frozen=True)
class Ack:
    """A command the server accepted."""

    frame: Optional[int]
    """The first ``update_counter`` that shows it (``None`` through a relay)."""
    relayed: bool
    """Delivered to an upstream bridge (a relay source), which will show it later."""
    raw: Mapping[str, Any]


class Client:
    """One aerobridge session. Create it with :func:`connect`."""

    def __init__(
        self,
        url: str,
        vars: Optional[List[str]],
        hz: Optional[float],
        mode: str,
        token: Optional[str],
        ssl: Optional[ssl_module.SSLContext],
        timeout: float,
        backoff: "tuple[float, float]",
        client_name: str,
    ) -> None:
        try:
            _protocol.split_url(url)  # a bad URL fails here, before any connection
        except ValueError as e:
            raise ClientError("bad_url", str(e)) from None
        if mode not in ("delta", "full"):
            raise ValueError(f"mode must be 'delta' or 'full', not {mode!r}")
        self.url = url
        self.vars = list(vars) if vars else None
        self.hz = hz
        self.mode = mode
        self.token = token
        self.ssl = ssl
        self.timeout = timeout
        self.backoff = backoff
        self.client_name = client_name
        #: Every variable the server publishes, in wire order (name → :class:`Variable`).
        self.catalog: Dict[str, Variable] = {}
        #: The session id (resumed after a reconnect).
        self.session: Optional[str] = None
        #: 2, or 1 when the server is a plain bridge (v1 frames, read-only).
        self.protocol = 2
        #: The server's ``welcome``.
        self.welcome: Mapping[str, Any] = {}
        #: The subscription's ack: ``vars`` (wire order), ``every``, ``hz``, ``profile``, ``sub``.
        self.subscription: Mapping[str, Any] = {}
        #: Connections reopened after a loss.
        self.reconnects = 0
        #: Whether the last reconnect resumed the session (``False``: subscribed afresh).
        self.resumed: Optional[bool] = None
        #: Updates the caller did not read in time (see ``UPDATES_KEPT``).
        self.updates_dropped = 0
        #: Why the last connection ended, or the last reconnect failed.
        self.last_error: Optional[str] = None
        self._session = _protocol.Session()
        self._transport: Optional[Transport] = None
        self._reader: Optional["asyncio.Task[None]"] = None
        self._background: List["asyncio.Task[None]"] = []
        self._pending: Dict[int, "asyncio.Future[Mapping[str, Any]]"] = {}
        self._next_id = 1
        self._welcomes: "asyncio.Queue[Mapping[str, Any]]" = asyncio.Queue()
        self._v1_frames = 0
        self._updates: Deque[Update] = collections.deque()
        self._ready = asyncio.Event()
        self._closing = False
        self._connected = False
        self._last_received = self._last_sent = self._last_update = time.monotonic()

    # -- what the caller reads ------------------------------------------------------------

    @property
    def state(self) -> Dict[str, Any]:
        """Every subscribed variable's current value (float, str or None as the catalog says):
        the full view rebuilt from keyframes and deltas."""
        return self._session.state

    @property
    def update_counter(self) -> Optional[int]:
        """The ``update_counter`` of the frame ``state`` reflects."""
        return self._session.update_counter

    @property
    def timestamp(self) -> Optional[int]:
        """That frame's timestamp (µs since the UNIX epoch)."""
        return self._session.timestamp

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def period(self) -> float:
        """Seconds between updates: the subscription's ``every`` frames at the server's rate."""
        rate = float(self.welcome.get("rate_hz") or 50.0)
        if self.protocol == 1:
            return max(1, round(V1_RATE_HZ / self.hz)) / V1_RATE_HZ if self.hz else 1 / V1_RATE_HZ
        return max(1, int(self.subscription.get("every", 1))) / rate

    @property
    def stale(self) -> bool:
        """True when the data cannot be trusted: the source says it is not live
        (``data_valid`` 0), no update came within two periods, or the connection is down."""
        return (
            not self._connected
            or not self._session.valid
            or time.monotonic() - self._last_update > 2 * self.period
        )

    def __aiter__(self) -> "Client":
        return self

    async def __anext__(self) -> Update:
        while not self._updates:
            if self._closing:
                raise StopAsyncIteration
            self._ready.clear()
            await self._ready.wait()
        return self._updates.popleft()

    async def __aenter__(self) -> "Client":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- commands -------------------------------------------------------------------------

    async def set(self, name: Optional[str] = None, value: Any = None, *, values: Optional[Mapping[str, Any]] = None) -> Ack:
        """Sets one variable (``set("Controls.Throttle", 0.75)``) or several together
        (``set(values={...})``, applied together or not at all). Returns the server's ack;
        raises :class:`ClientError` with the server's code and words when it refuses, or
        ``disconnected`` / ``timeout`` when no answer came (the command may or may not have
        been applied)."""
        if self.protocol == 1:
            raise ClientError("not_v2", f"{self.url} is a v1 bridge: send commands to its command port")
        if (name is None) == (values is None):
            raise ValueError("set(name, value) or set(values={...})")
        reply = await self._call("set", variable=name, value=value if name else None, values=values)
        if reply.get("ok"):
            return Ack(frame=reply.get("frame"), relayed=bool(reply.get("relayed")), raw=reply)
        raise _refusal(reply)

    async def ping(self) -> float:
        """Round trip to the server, in seconds."""
        start = time.monotonic()
        await self._call("ping")
        return time.monotonic() - start

    async def close(self) -> None:
        """Closes the connection and stops reconnecting; ``async for`` ends."""
        if self._closing:
            return
        self._closing = True
        self._connected = False
        tasks = [t for t in [self._reader, *self._background] if t is not None and t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._fail_pending(ClientError("closed", "the client was closed"))
        if self._transport is not None:
            await self._transport.close()
        self._ready.set()

    # -- the connection -------------------------------------------------------------------

    async def _start(self) -> None:
        await self._open()
        self._background.append(asyncio.create_task(self._keepalive()))

    async def _open(self) -> None:
        transport = await open_transport(self.url, self.token, self.ssl, self.timeout)
        self._transport = transport
        self._welcomes = asyncio.Queue()
        self._v1_frames = 0
        self._last_received = time.monotonic()
        reader = asyncio.create_task(self._read(transport))
        try:
            await asyncio.wait_for(self._greet(transport), self.timeout)
        except BaseException as e:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
            await transport.close()
            self._fail_pending(ClientError("disconnected", "the connection ended"))
            if isinstance(e, asyncio.TimeoutError):
                raise ClientError("timeout", f"{self.url}: no v2 session within {self.timeout} s") from None
            raise
        self._reader = reader
        self._connected = True
        self._last_update = time.monotonic()

    async def _greet(self, t: Transport) -> None:
        resume = self.session if self.protocol == 2 else None
        if t.v2_selected:
            welcome = await self._welcomes.get()
            if resume:
                await self._send(t, _protocol.request("hello", protocol=2, client=self.client_name, resume=resume))
                welcome = await self._welcomes.get()
        else:
            framing = "length" if isinstance(t, Tcp) else None
            await self._send(
                t, _protocol.request("hello", protocol=2, client=self.client_name, framing=framing, resume=resume)
            )
            if self.token and isinstance(t, Tcp):
                await self._send(t, json.dumps({"auth": self.token}))
            while True:
                try:
                    welcome = await asyncio.wait_for(self._welcomes.get(), V1_PATIENCE_S)
                    break
                except asyncio.TimeoutError:
                    if self._v1_frames:
                        self.protocol = 1
                        return
        self.protocol = 2
        self.welcome = welcome
        if welcome.get("op") == "error":
            raise _refusal(welcome)
        resumed = bool(resume) and welcome.get("resumed") is True
        self.session = welcome.get("session")
        if welcome.get("catalog") != getattr(self, "_catalog_hash", None) or not self.catalog:
            reply = await self._call("catalog", transport=t)
            self.catalog = {
                v["name"]: Variable(v["name"], v.get("type", "number"), v.get("unit", ""), bool(v.get("writable")))
                for v in reply.get("variables", [])
            }
            self._session.types = {name: v.type for name, v in self.catalog.items()}
            self._catalog_hash = welcome.get("catalog")
        if resume:
            self.resumed = resumed
        if not resumed:
            self._session.profiles.clear()
            ack = await self._call(
                "sub", transport=t, vars=self.vars, hz=self.hz, mode=self.mode
            )
            if not ack.get("ok"):
                raise _refusal(ack)
            self._session.subscribed(ack)
            self.subscription = ack

    async def _read(self, t: Transport) -> None:
        try:
            while True:
                text = await t.recv()
                self._last_received = time.monotonic()
                try:
                    m = json.loads(text)
                    self._dispatch(m)
                except (ValueError, KeyError, TypeError, IndexError) as e:
                    self.last_error = f"protocol: {e} in {text[:200]!r}"
        except ConnectionError as e:
            self.last_error = f"connection lost: {e}"
        if not self._connected:
            # Still greeting: the greeting fails at once instead of waiting for its timeout.
            self._welcomes.put_nowait({"op": "error", "code": "disconnected", "message": self.last_error})
        if t is self._transport and self._connected and not self._closing:
            self._connected = False
            self._fail_pending(ClientError("disconnected", f"the connection ended ({self.last_error})"))
            self._background.append(asyncio.create_task(self._reconnect()))

    def _dispatch(self, m: Mapping[str, Any]) -> None:
        op = m.get("op")
        if op in ("key", "delta"):
            self._emit(self._session.data(m))
        elif op == "ack":
            if m.get("vars") is not None and m.get("ok"):
                self._session.subscribed(m)
                self.subscription = m
                if m.get("resumed"):
                    return  # a resumed subscription: its id is the sub's, not a request's
            self._resolve(m)
        elif op == "welcome":
            self._welcomes.put_nowait(m)
        elif op in ("catalog", "pong"):
            self._resolve(m)
        elif op == "error":
            if m.get("id") in self._pending:
                self._resolve(m)
            elif m.get("code") == "unsupported_protocol" and not self._connected:
                self._welcomes.put_nowait(m)
            else:
                self.last_error = f"{m.get('code')}: {m.get('message')}"
        elif op is None and "schema" in m:
            self._v1_frames += 1
            # A plain bridge sends every frame (upstream: 50 Hz): `hz` keeps every n-th, as v2 would.
            every = max(1, round(V1_RATE_HZ / self.hz)) if self.hz else 1
            if self.protocol == 1 and int(m.get("update_counter", 0)) % every == 0:
                self._emit(self._session.v1_frame(m, self._v1_names(m)))

    def _v1_names(self, frame: Mapping[str, Any]) -> Optional[List[str]]:
        if not self.vars:
            return None
        return [n for n in frame.get("variables", {}) if _protocol.matches(self.vars, n)]

    def _emit(self, update: Optional[Update]) -> None:
        if update is None:
            return
        self._last_update = time.monotonic()
        if len(self._updates) >= UPDATES_KEPT:
            self._updates.popleft()
            self.updates_dropped += 1
        self._updates.append(update)
        self._ready.set()

    async def _reconnect(self) -> None:
        attempt = 0
        if self._transport is not None:
            await self._transport.close()
        while not self._closing:
            base, cap = self.backoff
            await asyncio.sleep(min(cap, base * 2**attempt) * random.uniform(0.5, 1.0))
            try:
                await self._open()
                self.reconnects += 1
                return
            except ClientError as e:
                self.last_error = str(e)
                attempt = min(attempt + 1, 16)

    async def _keepalive(self) -> None:
        """Heartbeats (the server drops a v2 client silent for ``idle_timeout_ms``), and a
        connection that has said nothing for three heartbeat periods is presumed dead."""
        while not self._closing:
            await asyncio.sleep(0.1)
            t = self._transport
            if not self._connected or t is None or self.protocol == 1:
                continue
            now = time.monotonic()
            idle_s = float(self.welcome.get("idle_timeout_ms", 90000)) / 1000
            if now - self._last_sent > min(idle_s / 3, 20.0):
                try:
                    await self._send(t, '{"op":"hb"}')
                except ConnectionError:
                    pass
            heartbeat_s = float(self.welcome.get("heartbeat_ms", 1000)) / 1000
            if now - self._last_received > max(3 * heartbeat_s, 3.0):
                self.last_error = "the server went silent"
                await t.close()

    # -- requests -------------------------------------------------------------------------

    async def _send(self, t: Transport, text: str) -> None:
        await t.send(text)
        self._last_sent = time.monotonic()

    async def _call(self, op: str, transport: Optional[Transport] = None, **fields: Any) -> Mapping[str, Any]:
        t = transport or (self._transport if self._connected else None)
        if t is None:
            code = "closed" if self._closing else "disconnected"
            raise ClientError(code, f"not connected to {self.url} (reconnecting)" if code == "disconnected" else "the client was closed")
        id = self._next_id
        self._next_id += 1
        future: "asyncio.Future[Mapping[str, Any]]" = asyncio.get_running_loop().create_future()
        self._pending[id] = future
        try:
            try:
                await self._send(t, _protocol.request(op, id=id, **fields))
            except ConnectionError as e:
                raise ClientError("disconnected", str(e)) from None
            return await asyncio.wait_for(future, self.timeout)
        except asyncio.TimeoutError:
            raise ClientError("timeout", f"no reply to {op} within {self.timeout} s") from None
        finally:
            self._pending.pop(id, None)

    def _resolve(self, m: Mapping[str, Any]) -> None:
        future = self._pending.get(m.get("id"))  # type: ignore[arg-type]
        if future is not None and not future.done():
            future.set_result(m)

    def _fail_pending(self, error: ClientError) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_exception(error)


def _refusal(reply: Mapping[str, Any]) -> ClientError:
    error = reply.get("error") if isinstance(reply.get("error"), Mapping) else reply
    assert isinstance(error, Mapping)
    return ClientError(str(error.get("code", "refused")), str(error.get("message", "")), error)


class _Connecting:
    """What :func:`connect` returns: await it for the client, or ``async with`` it."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def __await__(self) -> Generator[Any, None, Client]:
        return self._go().__await__()

    async def _go(self) -> Client:
        try:
            await self._client._start()
        except BaseException:
            await self._client.close()
            raise
        return self._client

    async def __aenter__(self) -> Client:
        return await self._go()

    async def __aexit__(self, *exc: object) -> None:
        await self._client.close()


def connect(
    url: str,
    vars: Optional[List[str]] = None,
    hz: Optional[float] = None,
    mode: str = "delta",
    token: Optional[str] = None,
    ssl: Optional[ssl_module.SSLContext] = None,
    *,
    timeout: float = 10.0,
    backoff: "tuple[float, float]" = (0.25, 5.0),
    client_name: str = "aerobridge-client-py/0.1",
) -> _Connecting:
    """Connects to an aerobridge (or a plain v1 bridge) and subscribes.

    - ``url``: ``ws://HOST:PORT/``, ``wss://HOST:PORT/`` or ``tcp://HOST:PORT`` (the data port,
      length-prefixed v2 messages).
    - ``vars``: names, or prefixes ending in ``*``; ``None`` for every variable.
    - ``hz``: updates per second (at most the server's rate); ``None`` for every frame.
    - ``mode``: ``"delta"`` (keyframes and deltas, fewer bytes) or ``"full"``.
    - ``token``: the server's ``--command-token``, needed for ``set``.
    - ``ssl``: an ``ssl.SSLContext`` for ``wss://`` or TLS on the data port.

    ``await connect(...)`` returns the :class:`Client` once subscribed, or raises
    :class:`ClientError` (``bad_url`` at once, before any connection; ``connect_failed``,
    ``timeout``, or the server's refusal such as ``unknown_variable``). Once connected, a lost
    connection is reopened and the session resumed until :meth:`Client.close`.
    """
    return _Connecting(Client(url, vars, hz, mode, token, ssl, timeout, backoff, client_name))
