"""Supervisors: strategies, restart types, intensity and escalation, backoff, shutdown."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors import (
    Actor,
    ActorState,
    ActorStoppedError,
    Backoff,
    ChildInfo,
    ChildSpec,
    Refused,
    Restart,
    RestartIntensity,
    RestartIntensityError,
    StartChildFrame,
    StopChildFrame,
    Strategy,
    Supervisor,
    WhichChildrenFrame,
    open_actor,
)
from actors.ref import ActorRef
from tests.helpers.probes import Crash, Exit, Journal, Note, probe_spec, running_tasks, wait_until

pytestmark = pytest.mark.anyio

QUICK = Backoff(initial=0.0, jitter=0.0)


def supervisor(
    children: Sequence[ChildSpec],
    *,
    name: str = "sup",
    strategy: Strategy = Strategy.ONE_FOR_ONE,
    intensity: RestartIntensity = RestartIntensity(10, 60),
    backoff: Backoff = QUICK,
    restart: Restart = Restart.PERMANENT,
) -> ChildSpec:
    return ChildSpec(
        name,
        lambda: Supervisor(
            children, strategy=strategy, intensity=intensity, backoff=backoff, seed=1
        ),
        restart=restart,
        shutdown_timeout=None,
    )


async def children(sup: ActorRef) -> dict[str, ChildInfo]:
    return {info.name: info for info in await sup.ask(WhichChildrenFrame())}


async def crash_and_wait(sup: ActorRef, name: str, incarnation: int) -> None:
    """Crash a child and wait until the supervisor has it running again."""
    ref = (await children(sup))[name].ref
    await ref.tell(Crash())
    await wait_until(lambda: ref.incarnation == incarnation and ref.state is ActorState.RUNNING)


def trio_of(journal: Journal) -> list[ChildSpec]:
    return [probe_spec(journal, name) for name in ("a", "b", "c")]


async def test_children_start_in_order_and_stop_in_reverse() -> None:
    journal = Journal()
    before = running_tasks()
    async with open_actor(supervisor(trio_of(journal))) as sup:
        assert journal.events == [("start", "a"), ("start", "b"), ("start", "c")]
        assert [i.state for i in (await children(sup)).values()] == [ActorState.RUNNING] * 3
    assert journal.events[3:] == [("stop", "c"), ("stop", "b"), ("stop", "a")]
    assert running_tasks() == before


async def test_one_for_one_restarts_only_the_failed_child() -> None:
    journal = Journal()
    async with open_actor(supervisor(trio_of(journal))) as sup:
        await crash_and_wait(sup, "b", 2)
        info = await children(sup)
        assert [info[n].incarnation for n in "abc"] == [1, 2, 1]
        assert info["b"].restarts == 1
        assert isinstance(info["b"].last_error, RuntimeError)
    assert journal.events[3:6] == [("stop", "b"), ("start", "b"), ("stop", "c")]


async def test_one_for_all_restarts_every_child_in_order() -> None:
    journal = Journal()
    spec = supervisor(trio_of(journal), strategy=Strategy.ONE_FOR_ALL)
    async with open_actor(spec) as sup:
        await crash_and_wait(sup, "b", 2)
        await wait_until(lambda: journal.starts("c") == 2)
        info = await children(sup)
        assert [info[n].incarnation for n in "abc"] == [2, 2, 2]
    # b died first; the survivors stop in reverse start order; all restart in order
    assert journal.events[3:11] == [
        ("stop", "b"),
        ("stop", "c"),
        ("stop", "a"),
        ("start", "a"),
        ("start", "b"),
        ("start", "c"),
        ("stop", "c"),
        ("stop", "b"),
    ]


async def test_rest_for_one_restarts_the_failed_child_and_those_after_it() -> None:
    journal = Journal()
    spec = supervisor(trio_of(journal), strategy=Strategy.REST_FOR_ONE)
    async with open_actor(spec) as sup:
        await crash_and_wait(sup, "b", 2)
        await wait_until(lambda: journal.starts("c") == 2)
        info = await children(sup)
        assert [info[n].incarnation for n in "abc"] == [1, 2, 2]
    assert journal.events[3:7] == [("stop", "b"), ("stop", "c"), ("start", "b"), ("start", "c")]


@pytest.mark.parametrize(
    ("restart", "frame", "restarted"),
    [
        (Restart.PERMANENT, Exit(), True),
        (Restart.PERMANENT, Crash(), True),
        (Restart.TRANSIENT, Exit(), False),
        (Restart.TRANSIENT, Crash(), True),
        (Restart.TEMPORARY, Exit(), False),
        (Restart.TEMPORARY, Crash(), False),
    ],
)
async def test_restart_types(restart: Restart, frame: object, restarted: bool) -> None:
    journal = Journal()
    spec = supervisor([probe_spec(journal, "x", restart=restart)])
    async with open_actor(spec) as sup:
        ref = (await children(sup))["x"].ref
        await ref.tell(frame)
        if restarted:
            await wait_until(lambda: ref.incarnation == 2 and ref.state is ActorState.RUNNING)
            assert "x" in await children(sup)
        else:
            await wait_until(lambda: ref.state is ActorState.STOPPED)
            await wait_until(lambda: ref._cell.mailbox.closed)
            assert "x" not in await children(sup)
            with pytest.raises(ActorStoppedError):
                await ref.ask(Note(1))


async def test_past_the_intensity_the_supervisor_stops_its_children_and_escalates() -> None:
    journal = Journal()
    spec = supervisor(trio_of(journal), intensity=RestartIntensity(2, 60))
    # the escalation leaves through the actor block's exit, after every statement in it
    with pytest.raises(RestartIntensityError, match="3 restarts within 60 s"):  # noqa: PT012
        async with open_actor(spec) as sup:
            await crash_and_wait(sup, "a", 2)
            await crash_and_wait(sup, "a", 3)
            ref = (await children(sup))["a"].ref
            await ref.tell(Crash())
            await anyio.sleep(5)  # the escalation cancels this block
    assert journal.events[-3:] == [("stop", "a"), ("stop", "c"), ("stop", "b")]


async def test_restarts_outside_the_window_do_not_count() -> None:
    journal = Journal()
    spec = supervisor([probe_spec(journal, "x")], intensity=RestartIntensity(1, 0.05))
    async with open_actor(spec) as sup:
        for incarnation in range(2, 6):
            await crash_and_wait(sup, "x", incarnation)
            await anyio.sleep(0.1)
        assert (await children(sup))["x"].restarts == 4


async def test_escalation_restarts_the_failing_subtree_only() -> None:
    journal = Journal()
    inner = supervisor(
        [probe_spec(journal, "leaf")], name="inner", intensity=RestartIntensity(0, 60)
    )
    outer = supervisor([probe_spec(journal, "sibling"), inner], name="outer")
    async with open_actor(outer) as top:
        inner_ref = (await children(top))["inner"].ref
        leaf = (await children(inner_ref))["leaf"].ref
        await leaf.tell(Crash())
        await wait_until(
            lambda: inner_ref.incarnation == 2 and inner_ref.state is ActorState.RUNNING
        )
        info = await children(top)
        assert isinstance(info["inner"].last_error, RestartIntensityError)
        assert info["sibling"].incarnation == 1
        # the old leaf's slot is gone; the new inner supervisor built a fresh one
        new_leaf = (await children(inner_ref))["leaf"].ref
        assert new_leaf is not leaf
        with pytest.raises(ActorStoppedError):
            await leaf.ask(Note(1))
        assert await new_leaf.ask(Note(2)) == 2


async def test_backoff_delays_restarts_exponentially() -> None:
    journal = Journal()
    backoff = Backoff(initial=0.1, multiplier=2.0, jitter=0.0, maximum=10)
    spec = supervisor([probe_spec(journal, "x")], backoff=backoff)
    async with open_actor(spec) as sup:
        ref = (await children(sup))["x"].ref
        for incarnation, delay in ((2, 0.1), (3, 0.2)):
            crashed_at = anyio.current_time()
            await ref.tell(Crash())
            await wait_until(lambda: ref.state is ActorState.BACKOFF)
            await wait_until(
                lambda n=incarnation: ref.incarnation == n and ref.state is ActorState.RUNNING
            )
            assert anyio.current_time() - crashed_at >= delay


async def test_frames_sent_during_backoff_reach_the_next_incarnation() -> None:
    journal = Journal()
    spec = supervisor([probe_spec(journal, "x")], backoff=Backoff(initial=0.1, jitter=0.0))
    async with open_actor(spec) as sup:
        ref = (await children(sup))["x"].ref
        await ref.tell(Crash())
        await wait_until(lambda: ref.state is ActorState.BACKOFF)
        await ref.tell(Note("during"))
        assert await ref.ask(Note("after")) == "after"
        assert ref.incarnation == 2
    assert journal.frames["x"] == ["during", "after"]


async def test_a_child_failing_in_its_lifespan_is_restarted_then_escalates() -> None:
    attempts = []

    class Flaky(Actor):
        @asynccontextmanager
        async def lifespan(self) -> AsyncIterator[None]:
            attempts.append(anyio.current_time())
            raise ConnectionRefusedError("server not up")
            yield

    spec = supervisor([ChildSpec("flaky", Flaky)], intensity=RestartIntensity(3, 60))
    with pytest.raises(RestartIntensityError) as caught:
        async with open_actor(spec):
            await anyio.sleep(5)
    assert len(attempts) == 4
    assert isinstance(caught.value.__cause__, ConnectionRefusedError)


async def test_each_child_is_stopped_within_its_own_shutdown_timeout() -> None:
    journal = Journal()
    specs = [
        probe_spec(journal, "polite", stop_delay=0.01, shutdown_timeout=5),
        probe_spec(journal, "stubborn", stop_delay=60, shutdown_timeout=0.05),
        probe_spec(journal, "brutal", stop_delay=60, shutdown_timeout=0),
    ]
    with anyio.fail_after(5):
        async with open_actor(supervisor(specs)):
            pass
    assert [e for e in journal.events if e[0] != "start"] == [
        ("stop", "brutal"),
        ("stop", "stubborn"),
        ("stop", "polite"),
        ("stopped", "polite"),
    ]


async def test_dynamic_children() -> None:
    journal = Journal()
    async with open_actor(supervisor([])) as sup:
        ref = await sup.ask(StartChildFrame(probe_spec(journal, "late")))
        assert await ref.ask(Note(1)) == 1
        with pytest.raises(Refused, match="exists"):
            await sup.ask(StartChildFrame(probe_spec(journal, "late")))
        await sup.ask(StopChildFrame("late"))
        assert await children(sup) == {}
        with pytest.raises(ActorStoppedError):
            await ref.ask(Note(2))
        with pytest.raises(Refused, match="no child"):
            await sup.ask(StopChildFrame("late"))
        again = await sup.ask(StartChildFrame(probe_spec(journal, "late")))
        assert again is not ref
        assert again.incarnation == 1
    assert journal.events == [("start", "late"), ("stop", "late")] * 2


async def test_stopping_a_child_in_backoff_cancels_its_restart() -> None:
    journal = Journal()
    spec = supervisor([probe_spec(journal, "x")], backoff=Backoff(initial=0.05, jitter=0))
    async with open_actor(spec) as sup:
        ref = (await children(sup))["x"].ref
        await ref.tell(Crash())
        await wait_until(lambda: ref.state is ActorState.BACKOFF)
        await sup.ask(StopChildFrame("x"))
        await anyio.sleep(0.15)
        assert journal.starts("x") == 1
        assert await children(sup) == {}


def test_specs_validate() -> None:
    with pytest.raises(ValueError, match="name must be a non-empty string without '/'"):
        ChildSpec("a/b", Actor)
    with pytest.raises(ValueError, match="name must be a non-empty string"):
        ChildSpec("", Actor)
    with pytest.raises(ValueError, match="shutdown_timeout must be a number >= 0"):
        ChildSpec("a", Actor, shutdown_timeout=-1)
    with pytest.raises(TypeError):
        ChildSpec("a", "not callable")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="'max_restarts' must be >= 0"):
        RestartIntensity(-1, 5)
    with pytest.raises(ValueError, match="'within_seconds' must be > 0"):
        RestartIntensity(1, 0)
    with pytest.raises(ValueError, match="'multiplier' must be >= 1"):
        Backoff(multiplier=0.5)
    with pytest.raises(ValueError, match="duplicate child names: a"):
        Supervisor([ChildSpec("a", Actor), ChildSpec("a", Actor)])


@given(
    initial=st.floats(0, 5),
    maximum=st.floats(0, 60),
    multiplier=st.floats(1, 4),
    jitter=st.floats(0, 1),
    attempt=st.integers(1, 60),
    uniform=st.floats(0, 1),
)
def test_backoff_stays_within_its_jittered_cap(
    initial: float, maximum: float, multiplier: float, jitter: float, attempt: int, uniform: float
) -> None:
    backoff = Backoff(initial=initial, maximum=maximum, multiplier=multiplier, jitter=jitter)
    base = min(maximum, initial * multiplier ** (attempt - 1))
    delay = backoff.delay(attempt, lambda: uniform)
    assert base * (1 - jitter) - 1e-9 <= delay <= base * (1 + jitter) + 1e-9
    assert delay <= maximum * (1 + jitter) + 1e-9


async def test_siblings_reach_each_other_before_and_across_restarts() -> None:
    journal = Journal()
    seen: list[ActorRef] = []

    class Early(Actor):
        @asynccontextmanager
        async def lifespan(self) -> AsyncIterator[None]:
            later = self.sibling("later")
            seen.append(later)
            await later.tell(Note("sent before later started"))
            yield

    spec = supervisor([ChildSpec("early", Early), probe_spec(journal, "later")])
    async with open_actor(spec) as sup:
        later = (await children(sup))["later"].ref
        assert seen == [later]
        await crash_and_wait(sup, "later", 2)
        assert await later.ask(Note("after restart")) == "after restart"
    assert journal.frames["later"] == ["sent before later started", "after restart"]
    with pytest.raises(LookupError):
        Actor().sibling("x")


async def test_unlimited_intensity_never_gives_up() -> None:
    journal = Journal()
    spec = supervisor([probe_spec(journal, "x")], intensity=RestartIntensity(None, 60))
    async with open_actor(spec) as sup:
        for incarnation in range(2, 22):
            await crash_and_wait(sup, "x", incarnation)
        assert sup.incarnation == 1


async def test_backoff_grows_per_child_not_per_supervisor() -> None:
    journal = Journal()
    backoff = Backoff(initial=0.05, multiplier=4.0, jitter=0.0, maximum=10)
    spec = supervisor(
        [probe_spec(journal, "flappy"), probe_spec(journal, "steady")], backoff=backoff
    )
    async with open_actor(spec) as sup:
        for incarnation in (2, 3, 4):  # flappy's next delay would be 0.05 * 4**3 = 3.2 s
            await crash_and_wait(sup, "flappy", incarnation)
        steady = (await children(sup))["steady"].ref
        crashed_at = anyio.current_time()
        await steady.tell(Crash())
        await wait_until(lambda: steady.incarnation == 2 and steady.state is ActorState.RUNNING)
        assert anyio.current_time() - crashed_at < 3.2  # steady's first restart: 0.05 s


async def test_independent_children_start_and_stop_concurrently_within_the_limit() -> None:
    starting = stopping = 0
    most_starting = most_stopping = 0

    class Slow(Actor):
        @asynccontextmanager
        async def lifespan(self) -> AsyncIterator[None]:
            nonlocal starting, most_starting, stopping, most_stopping
            starting += 1
            most_starting = max(most_starting, starting)
            await anyio.sleep(0.05)
            starting -= 1
            try:
                yield
            finally:
                stopping += 1
                most_stopping = max(most_stopping, stopping)
                await anyio.sleep(0.05)
                stopping -= 1

    specs = [ChildSpec(f"c{i}", Slow) for i in range(7)]
    spec = ChildSpec("sup", lambda: Supervisor(specs, concurrency=3), shutdown_timeout=None)
    async with open_actor(spec) as sup:
        infos = await children(sup)
        assert [i.state for i in infos.values()] == [ActorState.RUNNING] * 7
    assert (most_starting, most_stopping) == (3, 3)
    with pytest.raises(ValueError, match="concurrency must be >= 1"):
        Supervisor([], concurrency=0)


async def test_a_stopping_child_can_still_tell_a_sibling_stopped_before_it() -> None:
    journal = Journal()

    class Farewell(Actor):
        @asynccontextmanager
        async def lifespan(self) -> AsyncIterator[None]:
            try:
                yield
            finally:
                await self.sibling("target").tell(Note("goodbye"))

    spec = supervisor([ChildSpec("sender", Farewell), probe_spec(journal, "target")])
    async with open_actor(spec) as sup:
        target = (await children(sup))["target"].ref
    assert target.stats.dead_letters == 1
    assert journal.frames["target"] == []


async def test_children_reads_every_slot_in_place_and_a_rebuilt_subtree_has_new_slots() -> None:
    """`Supervisor.children()`: the whole subtree, synchronously; a restarted child keeps
    its slot (and counts the restart), a subtree rebuilt by its parent gets new slots."""
    journal = Journal()
    built: list[Supervisor] = []
    inner = supervisor(
        [probe_spec(journal, "a"), probe_spec(journal, "b")],
        name="inner", strategy=Strategy.ONE_FOR_ALL, intensity=RestartIntensity(0, 60),
    )  # fmt: skip

    def top() -> Supervisor:
        built.append(Supervisor([inner, probe_spec(journal, "c")], backoff=QUICK, seed=1))
        return built[-1]

    async with open_actor(ChildSpec("top", top, shutdown_timeout=None)) as sup:
        first_inner, first_c = built[0].children()
        assert (first_inner.name, first_c.name) == ("inner", "c")
        assert [grandchild.name for grandchild in first_inner.children] == ["a", "b"]
        assert first_c.children == ()
        assert first_c.mailbox.depth == 0
        states = {s.state for s in (first_inner, first_c, *first_inner.children)}
        assert states == {ActorState.RUNNING}

        await crash_and_wait(sup, "c", 2)
        c = built[0].children()[1]
        assert (c.slot, c.incarnation, c.restarts) == (first_c.slot, 2, 1)

        # a crash in `inner` exceeds its intensity of 0: `top` rebuilds the whole subtree
        a_ref = (await children((await children(sup))["inner"].ref))["a"].ref
        await a_ref.tell(Crash())
        await wait_until(lambda: built[0].children()[0].incarnation == 2
                         and built[0].children()[0].state is ActorState.RUNNING)
        rebuilt = built[0].children()[0]
        assert (rebuilt.slot, rebuilt.restarts) == (first_inner.slot, 1)
        old_slots = {g.slot for g in first_inner.children}
        assert [g.name for g in rebuilt.children] == ["a", "b"]
        assert not old_slots & {g.slot for g in rebuilt.children}
