"""A hypothesis state machine that spawns, crashes, stops and floods actors.

It drives a real tree on each backend (through an anyio blocking portal, so the tree
outlives single steps) and checks the kernel's invariants after every step: under
one_for_one a crash restarts only that child; past the intensity the failure escalates
to the parent, which restarts the failed subtree; no system frame is dropped or
reordered and all of them are served before queued data; after the tree stops no task
of it is left running.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import pytest
from anyio.from_thread import start_blocking_portal
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from actors import (
    ActorState,
    ActorStoppedError,
    Backoff,
    ChildSpec,
    MailboxSpec,
    Overflow,
    RestartIntensity,
    RestartIntensityError,
    StartChildFrame,
    StopChildFrame,
    Supervisor,
    WhichChildrenFrame,
    open_actor,
)
from actors.ref import ActorRef
from tests.helpers.probes import (
    Crash,
    Hold,
    Journal,
    Note,
    Urgent,
    probe_spec,
    running_tasks,
    wait_until,
)

CAPACITY = 8
MAX_RESTARTS = 3
QUICK = Backoff(initial=0.0, jitter=0.0)


class KernelMachine(RuleBasedStateMachine):
    backend = "asyncio"

    def __init__(self) -> None:
        super().__init__()
        self.journal = Journal()
        self._portal_cm = start_blocking_portal(self.backend)
        self.portal = self._portal_cm.__enter__()
        self.baseline_tasks = self.portal.call(running_tasks)
        under_test = ChildSpec(
            "sup",
            lambda: Supervisor(intensity=RestartIntensity(MAX_RESTARTS, 3600), backoff=QUICK),
            shutdown_timeout=None,
        )
        top = ChildSpec(
            "top",
            lambda: Supervisor([under_test], intensity=RestartIntensity(1000, 3600), backoff=QUICK),
            shutdown_timeout=None,
        )
        self._root_cm = self.portal.wrap_async_context_manager(open_actor(top))
        self.top: ActorRef = self._root_cm.__enter__()
        self.sup = self.children(self.top)["sup"].ref
        self.expected: dict[str, int] = {}  # child name -> incarnation
        self.refs: dict[str, ActorRef] = {}
        self.crashes = 0
        self.sup_incarnation = 1
        self.spawned = 0

    def children(self, sup: ActorRef) -> dict[str, Any]:
        return {i.name: i for i in self.portal.call(sup.ask, WhichChildrenFrame())}

    def wait(self, predicate: Any) -> None:
        self.portal.call(wait_until, predicate)

    @precondition(lambda self: len(self.expected) < 6)
    @rule()
    def spawn(self) -> None:
        self.spawned += 1
        name = f"p{self.spawned}"
        spec = probe_spec(self.journal, name, mailbox=MailboxSpec(CAPACITY, Overflow.DROP_OLDEST))
        self.refs[name] = self.portal.call(self.sup.ask, StartChildFrame(spec))
        self.expected[name] = 1

    @precondition(lambda self: self.expected)
    @rule(data=st.data())
    def crash(self, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from(sorted(self.expected)))
        ref = self.refs[name]
        self.portal.call(ref.tell, Crash())
        self.crashes += 1
        if self.crashes <= MAX_RESTARTS:
            incarnation = self.expected[name] + 1
            self.wait(lambda: ref.incarnation == incarnation and ref.state is ActorState.RUNNING)
            self.expected[name] = incarnation
            return
        # escalation: the supervisor under test dies, its parent restarts it empty
        self.sup_incarnation += 1
        self.wait(
            lambda: self.sup.incarnation == self.sup_incarnation
            and self.sup.state is ActorState.RUNNING
        )
        assert isinstance(self.children(self.top)["sup"].last_error, RestartIntensityError)
        for old in self.refs.values():
            with pytest.raises(ActorStoppedError):
                self.portal.call(old.ask, Note("late"))
        self.expected.clear()
        self.refs.clear()
        self.crashes = 0

    @precondition(lambda self: self.expected)
    @rule(data=st.data())
    def stop(self, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from(sorted(self.expected)))
        self.portal.call(self.sup.ask, StopChildFrame(name))
        assert self.journal.events[-1] == ("stop", name)
        with pytest.raises(ActorStoppedError):
            self.portal.call(self.refs[name].ask, Note("late"))
        del self.expected[name], self.refs[name]

    @precondition(lambda self: self.expected)
    @rule(data=st.data(), lanes=st.lists(st.sampled_from("sd"), max_size=40))
    def flood(self, data: st.DataObject, lanes: list[str]) -> None:
        name = data.draw(st.sampled_from(sorted(self.expected)))
        ref = self.refs[name]
        seen_before = len(self.journal.frames[name])
        dropped_before = ref.stats.dropped

        async def flood_while_held() -> None:
            hold = Hold()
            await ref.tell(hold)
            await hold.held.wait()
            for i, lane in enumerate(lanes):
                ref.tell_nowait(Urgent(("s", i)) if lane == "s" else Note(("d", i)))
            hold.release.set()
            await ref.ask(Note(("sync",)))

        self.portal.call(flood_while_held)
        seen = self.journal.frames[name][seen_before:]
        system = [("s", i) for i, lane in enumerate(lanes) if lane == "s"]
        data_lane = deque(maxlen=CAPACITY)
        data_lane.extend([("d", i) for i, lane in enumerate(lanes) if lane == "d"] + [("sync",)])
        data_sent = lanes.count("d") + 1
        assert seen == system + list(data_lane)
        assert ref.stats.dropped - dropped_before == data_sent - len(data_lane)

    @invariant()
    def tree_matches_the_model(self) -> None:
        info = self.children(self.sup)
        assert {n: i.incarnation for n, i in info.items()} == self.expected
        assert all(i.state is ActorState.RUNNING for i in info.values())
        assert self.sup.incarnation == self.sup_incarnation
        assert self.top.incarnation == 1

    def teardown(self) -> None:
        try:
            self._root_cm.__exit__(None, None, None)
            assert self.top.state is ActorState.STOPPED
            assert self.portal.call(running_tasks) == self.baseline_tasks
        finally:
            self._portal_cm.__exit__(None, None, None)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_kernel_invariants_hold_under_random_spawns_crashes_stops_and_floods(backend: str) -> None:
    machine = type(f"KernelMachine_{backend}", (KernelMachine,), {"backend": backend})
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=25,
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
