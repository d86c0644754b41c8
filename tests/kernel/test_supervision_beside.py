"""`StartChildFrame(wait=False)` and `StopChildFrame(wait=False)`: children started and
stopped beside the supervisor's other work.

How dispatched rooms join together rather than one after another: the reply comes at
once, at most `concurrency` children are in their start at a time, and a child stopped
before its turn never starts. How they leave together: the reply comes once the child
is gone, at most `concurrency` stop at a time, and the supervisor answers meanwhile.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import pytest

from actors import (
    Actor,
    ActorState,
    ChildSpec,
    Refused,
    StartChildFrame,
    StopChildFrame,
    Supervisor,
    WhichChildrenFrame,
    open_actor,
)
from tests.helpers.probes import Crash, Journal, probe_spec, running_tasks, wait_until


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
    assert peak == 2
    assert sorted(started) == ["a", "b", "c"]
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


class SlowStop(Actor):
    """An actor whose stop (its lifespan's exit) waits for `go`, as a room's leave does."""

    def __init__(self, name: str, go: anyio.Event, stopping: set[str]) -> None:
        self.name, self.go, self.stopping = name, go, stopping

    @asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        yield
        self.stopping.add(self.name)
        try:
            await self.go.wait()
        finally:
            self.stopping.discard(self.name)


@pytest.mark.anyio
async def test_children_stopped_without_waiting_stop_together_while_the_supervisor_serves() -> None:
    go, stopping = anyio.Event(), set[str]()
    before = running_tasks()
    spec = ChildSpec("sup", lambda: Supervisor(concurrency=2), shutdown_timeout=None)

    def slow(name: str) -> ChildSpec:
        return ChildSpec(name, lambda: SlowStop(name, go, stopping), shutdown_timeout=None)

    async with open_actor(spec) as sup:
        for name in ("a", "b", "c"):
            await sup.ask(StartChildFrame(slow(name)), timeout=1)
        stopped: list[str] = []

        async def stop(name: str) -> None:
            assert await sup.ask(StopChildFrame(name, wait=False), timeout=5) is None
            stopped.append(name)

        async with anyio.create_task_group() as tg:
            for name in ("a", "b", "c"):
                tg.start_soon(stop, name)
            await wait_until(lambda: len(stopping) == 2)
            # the supervisor answers while two children stop, and their names stay taken
            children = await sup.ask(WhichChildrenFrame(), timeout=1)
            assert sorted(child.name for child in children) == ["a", "b", "c"]
            assert stopped == []
            with pytest.raises(Refused, match="exists"):
                await sup.ask(StartChildFrame(slow("a")), timeout=1)
            with pytest.raises(Refused, match="no child named 'a'"):
                await sup.ask(StopChildFrame("a", wait=False), timeout=1)
            await anyio.sleep(0.05)  # the third must not stop while two are stopping
            assert len(stopping) == 2
            go.set()
        assert sorted(stopped) == ["a", "b", "c"]
        assert await sup.ask(WhichChildrenFrame(), timeout=1) == ()
        await sup.ask(StartChildFrame(slow("a")), timeout=1)  # the name is free again
    await wait_until(lambda: running_tasks() == before)


@pytest.mark.anyio
async def test_a_child_that_crashes_while_its_stop_waits_is_not_restarted() -> None:
    go, stopping = anyio.Event(), set[str]()
    spec = ChildSpec("sup", lambda: Supervisor(concurrency=1), shutdown_timeout=None)
    async with open_actor(spec) as sup:
        slow = ChildSpec("slow", lambda: SlowStop("slow", go, stopping), shutdown_timeout=None)
        await sup.ask(StartChildFrame(slow), timeout=1)
        crashing = await sup.ask(StartChildFrame(probe_spec(Journal(), "crashing")), timeout=1)
        async with anyio.create_task_group() as tg:
            tg.start_soon(sup.ask, StopChildFrame("slow", wait=False), 5)
            await wait_until(lambda: stopping == {"slow"})
            # `crashing` waits for the only stop place; it ends on its own meanwhile
            tg.start_soon(sup.ask, StopChildFrame("crashing", wait=False), 5)
            try:
                crashing.tell_nowait(Crash())
                await wait_until(lambda: crashing.state is ActorState.STOPPED)
            finally:
                go.set()
        assert await sup.ask(WhichChildrenFrame(), timeout=1) == ()
        assert crashing.incarnation == 1
