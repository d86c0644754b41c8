"""`StartChildFrame(wait=False)`: children started beside the supervisor's other work.

How dispatched rooms join together rather than one after another: the reply comes at
once, at most `concurrency` children are in their start at a time, and a child stopped
before its turn never starts.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import pytest

from actors import Actor, ActorState, ChildSpec, StartChildFrame, StopChildFrame, Supervisor, open_actor
from tests.probes import running_tasks, wait_until


class SlowStart(Actor):
    """An actor whose start (its lifespan's entry) waits for `go`, as a room's join does."""

    def __init__(self, name: str, go: anyio.Event, starting: set[str], started: list[str]) -> None:
        self.name, self.go, self.starting, self.started = name, go, starting, started

    @asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        self.starting.add(self.name)
        try:
            await self.go.wait()
        finally:
            self.starting.discard(self.name)
        self.started.append(self.name)
        yield


@pytest.mark.anyio
async def test_children_started_without_waiting_start_together_up_to_the_concurrency() -> None:
    go, starting, started = anyio.Event(), set[str](), list[str]()
    peak = 0
    before = running_tasks()
    spec = ChildSpec("sup", lambda: Supervisor(concurrency=2), shutdown_timeout=None)
    async with open_actor(spec) as sup:
        refs = []
        for name in ("a", "b", "c"):
            child = ChildSpec(name, lambda name=name: SlowStart(name, go, starting, started))
            refs.append(await sup.ask(StartChildFrame(child, wait=False), timeout=1))
        assert all(ref.state is ActorState.STARTING for ref in refs)  # answered before any start
        await wait_until(lambda: len(starting) == 2)
        await anyio.sleep(0.05)  # the third must not start while two are starting
        peak = len(starting)
        go.set()
        await wait_until(lambda: all(ref.state is ActorState.RUNNING for ref in refs))
    assert peak == 2 and sorted(started) == ["a", "b", "c"]
    await wait_until(lambda: running_tasks() == before)


@pytest.mark.anyio
async def test_a_child_stopped_before_its_turn_never_starts() -> None:
    go, starting, started = anyio.Event(), set[str](), list[str]()
    spec = ChildSpec("sup", lambda: Supervisor(concurrency=1), shutdown_timeout=None)
    async with open_actor(spec) as sup:
        first = ChildSpec("first", lambda: SlowStart("first", go, starting, started))
        waiting = ChildSpec("waiting", lambda: SlowStart("waiting", go, starting, started))
        await sup.ask(StartChildFrame(first, wait=False), timeout=1)
        await sup.ask(StartChildFrame(waiting, wait=False), timeout=1)
        await wait_until(lambda: starting == {"first"})
        await sup.ask(StopChildFrame("waiting"), timeout=1)
        go.set()
        await wait_until(lambda: started == ["first"])
        await anyio.sleep(0.05)
    assert started == ["first"]
