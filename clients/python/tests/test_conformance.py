"""The conformance scenario (clients/conformance/scenario.json) against the real server.

Needs the fixture in AEROBRIDGE_CONFORMANCE: ``cargo test --test client_conformance`` starts it
and runs this file (see tests/client_conformance.rs). Without it these tests skip, and that run
fails on any skip.
"""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
from typing import Any, Dict, List, Optional

import pytest

import aerobridge_client
from aerobridge_client import ClientError

FIXTURE: Dict[str, Any] = json.loads(os.environ.get("AEROBRIDGE_CONFORMANCE") or "{}")
SCENARIO = json.loads(
    pathlib.Path(FIXTURE.get("scenario") or pathlib.Path(__file__).parents[2] / "conformance" / "scenario.json").read_text()
)
DEADLINE = float(SCENARIO["deadline_s"])

pytestmark = pytest.mark.skipif(not FIXTURE, reason="needs the fixture: cargo test --test client_conformance")


class Reference:
    """v1 frames straight from the edge's data port, by update_counter."""

    def __init__(self) -> None:
        self.frames: Dict[int, Dict[str, Any]] = {}
        self.arrived = asyncio.Event()

    async def start(self) -> None:
        host, port = FIXTURE["reference"].rsplit(":", 1)
        self.reader, self.writer = await asyncio.open_connection(host, int(port), limit=16 << 20)
        self.task = asyncio.create_task(self._read())
        # A new subscriber may get its profile's current keyframe, up to a second old: the
        # reference must reach back that far before the client connects.
        await until("reference frames for 1.5 s", lambda: len(self.frames) >= 75)

    async def _read(self) -> None:
        while True:
            frame = json.loads(await self.reader.readline())
            self.frames[frame["update_counter"]] = frame["variables"]
            if len(self.frames) > 6000:
                del self.frames[min(self.frames)]
            self.arrived.set()

    async def frame(self, counter: int) -> Dict[str, Any]:
        async def wait() -> Dict[str, Any]:
            while counter not in self.frames:
                if self.frames and min(self.frames) > counter:
                    raise AssertionError(f"reference frame {counter} is gone (oldest {min(self.frames)})")
                self.arrived.clear()
                await self.arrived.wait()
            return self.frames[counter]

        return await asyncio.wait_for(wait(), DEADLINE)

    async def stop(self) -> None:
        self.task.cancel()
        self.writer.close()


async def control(request: str) -> int:
    host, port = FIXTURE["control"].rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(request.encode() + b"\n")
    answer = (await asyncio.wait_for(reader.readline(), DEADLINE)).decode().strip()
    writer.close()
    assert answer.startswith("ok "), f"{request}: {answer}"
    return int(answer.split()[1])


class Checker:
    """Reads every update as it comes and checks it against the reference."""

    def __init__(self, client: aerobridge_client.Client, reference: Reference) -> None:
        self.client, self.reference = client, reference
        self.checked = 0
        self.last: Optional[int] = None
        # Steps other than `every`: allowed only where a connection starts (its first keyframe
        # may be up to a second old, then the current frame follows).
        self.gaps: List[Any] = []
        self.rebuilt: Dict[str, Any] = {}
        self.progress = asyncio.Event()
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        client = self.client
        async for update in client:
            every = int(client.subscription["every"])
            n = update.update_counter
            assert n % every == 0, f"update {n} is not on the subscription's frames (every {every})"
            assert self.last is None or n > self.last, f"update {n} after {self.last}: repeated or going back"
            if self.last is not None and n - self.last != every:
                self.gaps.append((self.last, n))
            self.last = n
            self.rebuilt.update(update.values)
            reference = await self.reference.frame(n)
            names: List[str] = list(client.subscription["vars"])
            assert names, "the ack names the subscribed variables"
            for name in names:
                want = reference[name]
                assert self.rebuilt.get(name) == want, f"{name} at {n}: rebuilt {self.rebuilt.get(name)!r}, v1 {want!r}"
                kind = client.catalog[name].type
                assert isinstance(self.rebuilt[name], str if kind == "string" else float), (name, kind)
            if client.update_counter == n:
                assert {k: client.state[k] for k in names} == {k: reference[k] for k in names}
            self.checked += 1
            self.progress.set()

    async def updates(self, count: int) -> None:
        target = self.checked + count

        async def wait() -> None:
            while self.checked < target:
                if self.task.done():
                    self.task.result()
                    raise AssertionError("the client's updates ended")
                self.progress.clear()
                await asyncio.wait([asyncio.ensure_future(self.progress.wait()), self.task], return_when=asyncio.FIRST_COMPLETED)

        await asyncio.wait_for(wait(), DEADLINE)


async def until(what: str, condition: Any) -> None:
    async def wait() -> None:
        while not condition():
            await asyncio.sleep(0.05)

    try:
        await asyncio.wait_for(wait(), DEADLINE)
    except asyncio.TimeoutError:
        raise AssertionError(f"not within {DEADLINE} s: {what}") from None


async def run_scenario(transport: str) -> None:
    sub = SCENARIO["subscription"]
    reference = Reference()
    await reference.start()
    client = await asyncio.wait_for(
        aerobridge_client.connect(FIXTURE[transport], vars=sub["vars"], hz=sub["hz"], mode=sub["mode"], token=FIXTURE["token"]),
        DEADLINE,
    )
    checker = Checker(client, reference)
    session = client.session
    try:
        for step in SCENARIO["steps"]:
            kind = step["step"]
            if kind == "updates":
                await checker.updates(step["count"])
            elif kind == "cut":
                assert await control("cut") >= 1, "the proxy had the client's connection"
            elif kind == "resumed":
                assert client.reconnects >= 1 and client.resumed is True, (client.reconnects, client.resumed, client.last_error)
                assert client.session == session
                assert await control(f"subscriptions {client.session}") == step["subscriptions"]
            elif kind == "set":
                if step["ok"]:
                    ack = await client.set(step["variable"], step["value"])
                    assert ack.frame is not None or ack.relayed, ack
                else:
                    with pytest.raises(ClientError) as refused:
                        await client.set(step["variable"], step["value"])
                    assert refused.value.code == step["code"], refused.value
                    assert step.get("message", "") in refused.value.message, refused.value
            elif kind == "source":
                await control(f"source {step['do']}")
            elif kind == "stale":
                await until(f"stale is {step['expect']}", lambda: client.stale == step["expect"])
            else:
                raise AssertionError(f"unknown step {kind}")
        assert not checker.task.done() or checker.task.result() is None
        assert len(checker.gaps) <= 2 * (1 + client.reconnects), f"gaps beyond the server's rules: {checker.gaps}"
    finally:
        await client.close()
        checker.task.cancel()
        await reference.stop()


@pytest.mark.parametrize("transport", SCENARIO["transports"])
def test_scenario(transport: str) -> None:
    asyncio.run(run_scenario(transport))


def error_cases() -> List[Any]:
    cases = []
    for case in SCENARIO["errors"]:
        if "url" in case:
            cases.append(pytest.param(case, case["url"].replace("{refused}", FIXTURE.get("refused", "")), id=case["case"]))
        else:
            for transport in SCENARIO["transports"]:
                cases.append(pytest.param(case, FIXTURE.get(transport, ""), id=f"{case['case']}-{transport}"))
    return cases


@pytest.mark.parametrize("case,url", error_cases())
def test_error(case: Dict[str, Any], url: str) -> None:
    async def run() -> None:
        sub = SCENARIO["subscription"]
        vars = case.get("vars", sub["vars"])
        token = case.get("token", FIXTURE["token"])
        with pytest.raises(ClientError) as error:
            client = await aerobridge_client.connect(url, vars=vars, hz=sub["hz"], token=token)
            async with client:
                await client.set(case["set"]["variable"], case["set"]["value"])
        assert error.value.code == case["code"], error.value
        assert case.get("message_contains", "") in error.value.message, error.value

    asyncio.run(asyncio.wait_for(run(), DEADLINE))


def test_a_plain_v1_bridge_is_read_as_v1() -> None:
    """A bridge that ignores `hello` (upstream's DLL) sends v1 frames only: the client reads them
    (the subscribed subset, typed), and `set` says it cannot."""

    async def run() -> None:
        host, port = FIXTURE["reference"].rsplit(":", 1)

        async def plain_bridge(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            upstream_reader, upstream_writer = await asyncio.open_connection(host, int(port), limit=16 << 20)
            try:
                while True:  # what the client sends (its hello) is ignored, as upstream does
                    writer.write(await upstream_reader.readline())
                    await writer.drain()
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
            finally:
                upstream_writer.close()
                writer.close()

        server = await asyncio.start_server(plain_bridge, "127.0.0.1", 0)
        bridge_port = server.sockets[0].getsockname()[1]
        reference = Reference()
        await reference.start()
        names = ["Aircraft.Altitude", "Aircraft.Name"]
        async with await aerobridge_client.connect(f"tcp://127.0.0.1:{bridge_port}", vars=names, hz=10) as client:
            assert client.protocol == 1
            checked, rebuilt = 0, {}
            async for update in client:
                # 10 Hz of upstream's 50: every 5th frame.
                assert update.update_counter % 5 == 0, update.update_counter
                rebuilt.update(update.values)
                frame = await reference.frame(update.update_counter)
                assert rebuilt == {n: frame[n] for n in names}
                assert isinstance(rebuilt["Aircraft.Altitude"], float)
                checked += 1
                if checked == 5:
                    break
            with pytest.raises(ClientError) as refused:
                await client.set("Controls.Throttle", 0.5)
            assert refused.value.code == "not_v2"
        server.close()
        await reference.stop()

    asyncio.run(asyncio.wait_for(run(), DEADLINE))
