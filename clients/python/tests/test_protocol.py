"""The I/O-free session state: keyframes and deltas rebuild the view; repeats are not shown."""

from aerobridge_client._protocol import Session, split_url

import pytest


def session() -> Session:
    s = Session()
    s.types = {"A": "number", "B": "string", "C": "number"}
    s.subscribed({"op": "ack", "id": 1, "ok": True, "sub": 1, "profile": 3, "every": 5, "vars": ["A", "B", "C"]})
    return s


def test_keyframes_and_deltas_rebuild_the_state_against_the_keyframe() -> None:
    s = session()
    u = s.data({"op": "key", "p": 3, "seq": 10, "t": 1, "valid": 1, "v": [1, "x", None]})
    assert u is not None and u.keyframe and u.values == {"A": 1.0, "B": "x", "C": None}
    assert isinstance(s.state["A"], float)
    u = s.data({"op": "delta", "p": 3, "seq": 15, "base": 10, "t": 2, "valid": 1, "c": [[0, 2.5]]})
    assert u is not None and u.values == {"A": 2.5} and s.state == {"A": 2.5, "B": "x", "C": None}
    # Against the keyframe, not the previous delta: A goes back to the keyframe's 1.0.
    u = s.data({"op": "delta", "p": 3, "seq": 20, "base": 10, "t": 3, "valid": 0, "c": [[1, "y"]]})
    assert u is not None and u.values == {"A": 1.0, "B": "y"} and not u.valid
    assert s.state == {"A": 1.0, "B": "y", "C": None} and s.update_counter == 20


def test_a_repeated_keyframe_is_not_shown_and_a_missing_base_is_skipped() -> None:
    s = session()
    s.data({"op": "key", "p": 3, "seq": 10, "t": 1, "valid": 1, "v": [1, "x", 2]})
    s.data({"op": "delta", "p": 3, "seq": 15, "base": 10, "t": 2, "valid": 1, "c": [[0, 5]]})
    # A resumed session's first keyframe may be one already shown.
    assert s.data({"op": "key", "p": 3, "seq": 10, "t": 1, "valid": 1, "v": [1, "x", 2]}) is None
    assert s.state["A"] == 5.0
    assert s.data({"op": "delta", "p": 3, "seq": 25, "base": 7, "t": 4, "valid": 1, "c": []}) is None
    # A new keyframe after a gap: every value that differs is in the update.
    u = s.data({"op": "key", "p": 3, "seq": 30, "t": 5, "valid": 1, "v": [1, "z", 2]})
    assert u is not None and u.values == {"A": 1.0, "B": "z"}


@pytest.mark.parametrize(
    "url,parts",
    [
        ("ws://127.0.0.1:8765/", ("ws", "127.0.0.1", 8765, "/")),
        ("wss://bridge.local/x?token=1", ("wss", "bridge.local", 8765, "/x?token=1")),
        ("tcp://[::1]:12345", ("tcp", "::1", 12345, "/")),
    ],
)
def test_urls(url: str, parts: tuple) -> None:
    assert split_url(url) == parts


@pytest.mark.parametrize("url", ["http://127.0.0.1/", "ws://", "tcp://h:notaport", "127.0.0.1:8765"])
def test_bad_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError):
        split_url(url)
