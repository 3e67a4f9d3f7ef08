"""Session protocol v2 without I/O: requests, and the state rebuilt from what the server sends.

A keyframe carries every subscribed value; a delta carries what differs from the keyframe it
names (``base``), never from the previous delta, so any one delta rebuilds the state as long as
its keyframe came (the server sends the keyframe first to a client that lacks it). Kept apart
from the transports so the benchmark and the unit tests drive it with plain strings.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple

#: Keyframes kept per profile: a delta names a keyframe at most a second old.
KEYS_KEPT = 4


@dataclass(frozen=True)
class Variable:
    """One catalog entry: a variable the server publishes, in wire order."""

    name: str
    type: str
    unit: str
    writable: bool


@dataclass(frozen=True)
class Update:
    """One data message, applied: the frame it reflects and the values that changed.

    ``values`` holds the subscribed values that differ from the state before this update (all
    of them after a keyframe that follows a gap). ``client.state`` is the full view after it.
    """

    update_counter: int
    timestamp: int
    """Microseconds since the UNIX epoch (the server's build time of the frame)."""
    values: Dict[str, Any]
    valid: bool
    """The source's ``data_valid``: false while the simulator is not delivering."""
    keyframe: bool


def number(x: Any) -> Any:
    """A catalog ``number`` as Python sees it: ``float``, or ``None`` for ``null``."""
    return None if x is None else float(x)


def text(x: Any) -> Any:
    """A catalog ``string``: ``str``, or ``None`` for ``null``."""
    return None if x is None else str(x)


def converter(kind: Optional[str]) -> Callable[[Any], Any]:
    """How a catalog type's values are typed."""
    return text if kind == "string" else number


@dataclass
class Profile:
    """One subscription's profile: its names (wire order), converters and recent keyframes."""

    names: List[str]
    convert: List[Callable[[Any], Any]]
    every: int
    keys: Dict[int, List[Any]] = field(default_factory=dict)
    # The keyframe the state was last rebuilt from, and the positions the last delta changed
    # from it: the next delta against the same keyframe can only change those and its own.
    base: Optional[int] = None
    seq: Optional[int] = None
    dirty: List[int] = field(default_factory=list)


class Session:
    """The state of one v2 session, rebuilt message by message (no I/O)."""

    def __init__(self) -> None:
        self.profiles: Dict[int, Profile] = {}
        self.state: Dict[str, Any] = {}
        self.update_counter: Optional[int] = None
        self.timestamp: Optional[int] = None
        self.valid = True
        self.types: Dict[str, str] = {}

    def subscribed(self, ack: Mapping[str, Any]) -> Profile:
        """A ``sub`` ack (first or resumed): its profile's names are known now."""
        names = list(ack["vars"])
        profile = Profile(
            names=names,
            convert=[converter(self.types.get(n)) for n in names],
            every=max(1, int(ack.get("every", 1))),
        )
        old = self.profiles.get(ack["profile"])
        if old is not None and old.names == names:
            profile.keys, profile.seq = old.keys, old.seq
        self.profiles[int(ack["profile"])] = profile
        return profile

    def data(self, m: Mapping[str, Any]) -> Optional[Update]:
        """A keyframe or delta. Returns the update, or ``None`` for a frame already shown (a
        resumed session's first keyframe may repeat one) or a delta whose keyframe never came."""
        profile = self.profiles.get(m["p"])
        if profile is None:
            return None
        seq = int(m["seq"])
        if profile.seq is not None and seq <= profile.seq:
            if m["op"] == "key":
                self._keep(profile, seq, [c(x) for c, x in zip(profile.convert, m["v"])])
            return None
        names = profile.names
        positions: Iterable[int]
        if m["op"] == "key":
            values = [c(x) for c, x in zip(profile.convert, m["v"])]
            self._keep(profile, seq, values)
            positions = range(len(names))
            profile.base, profile.dirty = seq, []
        else:
            base = profile.keys.get(m["base"])
            if base is None:
                return None
            convert = profile.convert
            delta = {pos: convert[pos](x) for pos, x in m["c"]}
            # Against the keyframe the state was last rebuilt from, only what the previous delta
            # changed and what this one changes can differ.
            same_base = profile.base == m["base"]
            positions = set(profile.dirty).union(delta) if same_base else range(len(names))
            values = list(base)
            for pos, x in delta.items():
                values[pos] = x
            profile.base, profile.dirty = m["base"], list(delta)
        state = self.state
        changed: Dict[str, Any] = {}
        for pos in positions:
            name, x = names[pos], values[pos]
            if name not in state or state[name] != x:
                changed[name] = x
                state[name] = x
        profile.seq = seq
        if self.update_counter is None or seq > self.update_counter:
            self.update_counter = seq
            self.timestamp = int(m.get("t", 0))
        self.valid = m.get("valid", 1) != 0
        return Update(seq, int(m.get("t", 0)), changed, self.valid, m["op"] == "key")

    @staticmethod
    def _keep(profile: Profile, seq: int, values: List[Any]) -> None:
        profile.keys[seq] = values
        if len(profile.keys) > KEYS_KEPT:
            del profile.keys[min(profile.keys)]

    def v1_frame(self, frame: Mapping[str, Any], wanted: Optional[List[str]]) -> Optional[Update]:
        """A v1 frame (a plain bridge, no v2): the subscribed subset of its variables."""
        variables = frame.get("variables") or {}
        seq = int(frame.get("update_counter", 0))
        if self.update_counter is not None and seq <= self.update_counter:
            return None
        changed: Dict[str, Any] = {}
        for name in wanted if wanted else variables:
            if name in variables:
                x = converter(self.types.get(name, "string" if isinstance(variables[name], str) else "number"))(variables[name])
                if self.state.get(name, changed) != x:
                    changed[name] = x
                    self.state[name] = x
        self.update_counter = seq
        self.timestamp = int(frame.get("timestamp", 0) or 0)
        self.valid = frame.get("data_valid", 1) not in (0, False)
        return Update(seq, self.timestamp, changed, self.valid, True)


def request(op: str, **fields: Any) -> str:
    """One client message."""
    return json.dumps({"op": op, **{k: v for k, v in fields.items() if v is not None}}, separators=(",", ":"))


def matches(patterns: List[str], name: str) -> bool:
    """Whether a subscription's names or prefixes (``Controls.*``) cover ``name``."""
    return any(name.startswith(p[:-1]) if p.endswith("*") else name == p for p in patterns)


def split_url(url: str) -> Tuple[str, str, int, str]:
    """``ws://HOST:PORT/PATH``, ``wss://…`` or ``tcp://HOST:PORT`` → (scheme, host, port, path).
    Raises ``ValueError`` with the reason."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise ValueError(f"{url!r}: {e}") from None
    if parts.scheme not in ("ws", "wss", "tcp"):
        raise ValueError(f"{url!r}: expected ws://HOST:PORT/, wss://HOST:PORT/ or tcp://HOST:PORT")
    if not parts.hostname:
        raise ValueError(f"{url!r}: no host")
    default = {"ws": 8765, "wss": 8765, "tcp": 12345}[parts.scheme]
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return parts.scheme, parts.hostname, port or default, path
