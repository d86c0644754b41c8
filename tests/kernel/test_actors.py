"""One actor under `open_actor`: tell, ask, errors the asker sees, lifespans, stopping."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest

from actors import (
    Actor,
    ActorCrashedError,
    ActorState,
    ActorStoppedError,
    AskTimeoutError,
    ChildSpec,
    MailboxFullError,
    MailboxSpec,
    Overflow,
    Refused,
    ReplyLater,
    open_actor,
)
from tests.helpers.probes import (
    Crash,
    Exit,
    Hold,
    Journal,
    Note,
    Sleep,
    Urgent,
    probe_spec,
    running_tasks,
    wait_until,
)

pytestmark = pytest.mark.anyio


async def test_tell_delivers_in_order_and_ask_answers() -> None:
    journal = Journal()
    async with open_actor(probe_spec(journal, "p")) as ref:
        for i in range(50):
            await ref.tell(Note(i))
        assert await ref.ask(Note("last")) == "last"
        assert journal.frames["p"] == [*range(50), "last"]
        assert ref.state is ActorState.RUNNING
        assert ref.path == "/p"


async def test_tell_nowait_serves_synchronous_callers() -> None:
    journal = Journal()
    async with open_actor(probe_spec(journal, "p")) as ref:
        ref.tell_nowait(Note(1))
        ref.tell_nowait(Urgent(2))
        assert await ref.ask(Note(3)) == 3
    assert journal.frames["p"] == [2, 1, 3]


async def test_ask_times_out_with_a_clear_error() -> None:
    journal = Journal()
    async with open_actor(probe_spec(journal, "p")) as ref:
        with pytest.raises(AskTimeoutError, match="/p"):
            await ref.ask(Sleep(1.0), timeout=0.05)
        assert isinstance(AskTimeoutError("x"), TimeoutError)


async def test_ask_a_crashing_handler_raises_crashed_with_cause() -> None:
    journal = Journal()
    spec = probe_spec(journal, "p")
    # the root's crash leaves through the actor block's exit, after every statement in it
    with pytest.raises(RuntimeError, match="kaput"):  # noqa: PT012
        async with open_actor(spec) as ref:
            with pytest.raises(ActorCrashedError) as caught:
                await ref.ask(Crash("kaput"))
            assert isinstance(caught.value.__cause__, RuntimeError)
            await anyio.sleep(5)  # the root's crash cancels this block
    assert ref.state is ActorState.STOPPED


async def test_ask_a_stopped_actor_fails_at_once() -> None:
    journal = Journal()
    async with open_actor(probe_spec(journal, "p")) as ref:
        pass
    with anyio.fail_after(1):
        with pytest.raises(ActorStoppedError):
            await ref.ask(Note(1))
    await ref.tell(Note(2))
    assert ref.stats.dead_letters == 1


async def test_refused_answers_the_asker_and_the_actor_lives_on() -> None:
    class Picky(Actor):
        async def receive(self, frame: Any) -> Any:
            if frame.tag == "no":
                raise Refused("not that one")
            return frame.tag

    async with open_actor(ChildSpec("picky", Picky)) as ref:
        with pytest.raises(Refused, match="not that one"):
            await ref.ask(Note("no"))
        await ref.tell(Note("no"))  # logged and dropped
        assert await ref.ask(Note("yes")) == "yes"
        assert ref.incarnation == 1


async def test_unhandled_frame_is_refused() -> None:
    async with open_actor(ChildSpec("bare", Actor)) as ref:
        with pytest.raises(Refused, match="does not handle Note"):
            await ref.ask(Note(1))


async def test_asks_queued_when_an_actor_stops_for_good_fail_instead_of_hanging() -> None:
    journal = Journal()
    hold = Hold()
    failures: list[Exception] = []

    async def ask_queued(ref: Any) -> None:
        with pytest.raises(ActorStoppedError) as caught:
            await ref.ask(Note("queued"), timeout=5)
        failures.append(caught.value)

    async with anyio.create_task_group() as tg, open_actor(probe_spec(journal, "p")) as ref:
        await ref.tell(hold)
        await hold.held.wait()
        tg.start_soon(ask_queued, ref)
        await wait_until(lambda: ref.stats.depth == 1)
        hold.release.set()
        # leaving the block stops the actor: the stop is served before queued data
    assert len(failures) == 1
    assert journal.frames["p"] == []


async def test_self_stop_is_a_normal_exit() -> None:
    journal = Journal()
    async with open_actor(probe_spec(journal, "p")) as ref:
        await ref.tell(Exit())
        with anyio.fail_after(5):
            while ref.state is not ActorState.STOPPED:
                await anyio.sleep(0.001)
    assert journal.events == [("start", "p"), ("stop", "p")]


async def test_stop_waits_for_the_lifespan_then_kills_after_the_timeout() -> None:
    journal = Journal()
    fast = probe_spec(journal, "fast", stop_delay=0.01, shutdown_timeout=5)
    async with open_actor(fast):
        pass
    assert journal.events[-1] == ("stopped", "fast")

    slow = probe_spec(journal, "slow", stop_delay=60, shutdown_timeout=0.05)
    with anyio.fail_after(5):
        async with open_actor(slow):
            pass
    assert ("stop", "slow") in journal.events
    assert ("stopped", "slow") not in journal.events  # killed in the middle of its stop


async def test_helper_task_failure_crashes_the_actor() -> None:
    class Reader(Actor):
        @asynccontextmanager
        async def lifespan(self) -> AsyncIterator[None]:
            self.tasks.start_soon(self._read)
            yield

        async def _read(self) -> None:
            await anyio.sleep(0.01)
            raise ConnectionError("stream broke")

    with pytest.raises(ConnectionError, match="stream broke"):
        async with open_actor(ChildSpec("reader", Reader)):
            await anyio.sleep(5)


async def test_helper_tasks_end_with_the_incarnation() -> None:
    class Ticker(Actor):
        @asynccontextmanager
        async def lifespan(self) -> AsyncIterator[None]:
            self.tasks.start_soon(anyio.sleep_forever)
            yield

    before = running_tasks()
    async with open_actor(ChildSpec("ticker", Ticker)):
        assert running_tasks() > before
    assert running_tasks() == before


async def test_slow_consumer_drops_oldest_audio_while_control_keeps_order() -> None:
    journal = Journal()
    spec = probe_spec(journal, "audio", mailbox=MailboxSpec(8, Overflow.DROP_OLDEST))
    async with open_actor(spec) as ref:
        hold = Hold()
        await ref.tell(hold)
        await hold.held.wait()
        for i in range(100):
            await ref.tell(Note(i))
            if i % 10 == 0:
                await ref.tell(Urgent(f"ctl{i}"))
        hold.release.set()
        await ref.ask(Note("end"))
    seen = journal.frames["audio"]
    assert seen[:10] == [f"ctl{i}" for i in range(0, 100, 10)]
    assert seen[10:] == [*range(93, 100), "end"]
    assert ref.stats.dropped == 93


async def test_blocking_lane_pushes_back_on_a_slow_consumer() -> None:
    journal = Journal()
    spec = probe_spec(journal, "ordered", mailbox=MailboxSpec(2, Overflow.BLOCK, send_timeout=0.05))
    async with open_actor(spec) as ref:
        hold = Hold()
        await ref.tell(hold)
        await hold.held.wait()
        await ref.tell(Note(1))
        await ref.tell(Note(2))
        with pytest.raises(MailboxFullError):
            await ref.tell(Note(3))
        with pytest.raises(MailboxFullError):  # an ask waits for room the same way
            await ref.ask(Note("asked"), timeout=5.0)
        hold.release.set()
        await ref.tell(Note(4))
        assert await ref.ask(Note("end")) == "end"
    assert journal.frames["ordered"] == [1, 2, 4, "end"]
    assert ref.stats.dropped == 0


def test_raw_media_travels_in_the_data_lane_other_system_frames_in_the_system_lane() -> None:
    from pipecat.frames.frames import (
        CancelFrame,
        InputAudioRawFrame,
        InputTransportMessageFrame,
        OutputAudioRawFrame,
        UserAudioRawFrame,
    )

    from actors.ref import is_control

    audio = b"\0\0" * 160
    assert not is_control(UserAudioRawFrame(audio=audio, sample_rate=16000, num_channels=1))
    assert not is_control(InputAudioRawFrame(audio=audio, sample_rate=16000, num_channels=1))
    assert not is_control(OutputAudioRawFrame(audio=audio, sample_rate=16000, num_channels=1))
    assert not is_control(Note(1))
    assert is_control(CancelFrame())
    assert is_control(InputTransportMessageFrame(message={"hello": 1}))
    assert is_control(Urgent(1))


class Later(Actor):
    """Answers `Note(tag)` later, once `go` is set: with the tag, or `Refused`/a crash
    for the tags "no" and "boom"; meanwhile it serves other frames. `waiting` lists
    the tags whose work waits for `go`."""

    def __init__(self, go: anyio.Event, waiting: list[str] | None = None) -> None:
        self.go = go
        self.waiting = waiting if waiting is not None else []

    async def receive(self, frame: Any) -> Any:
        if frame.tag == "now":
            return "now"

        async def work() -> Any:
            self.waiting.append(frame.tag)
            await self.go.wait()
            if frame.tag == "no":
                raise Refused("not that one")
            if frame.tag == "boom":
                raise RuntimeError("boom")
            return frame.tag

        return ReplyLater(work)


async def test_a_reply_later_answers_once_its_work_is_done_serving_frames_meanwhile() -> None:
    go, waiting = anyio.Event(), list[str]()
    answers: dict[str, Any] = {}

    async def ask(ref: Any, tag: str) -> None:
        try:
            answers[tag] = await ref.ask(Note(tag), timeout=5)
        except Refused as refusal:
            answers[tag] = refusal

    async with open_actor(ChildSpec("later", lambda: Later(go, waiting))) as ref:
        async with anyio.create_task_group() as tg:
            tg.start_soon(ask, ref, "late")
            tg.start_soon(ask, ref, "no")
            await wait_until(lambda: sorted(waiting) == ["late", "no"])
            assert await ref.ask(Note("now"), timeout=1) == "now"  # served while two wait
            assert answers == {}
            go.set()
        assert answers["late"] == "late"
        assert isinstance(answers["no"], Refused)  # a refusal later leaves the actor be
        assert ref.incarnation == 1


async def test_a_reply_later_that_fails_crashes_the_actor_and_the_asker_sees_why() -> None:
    go = anyio.Event()
    go.set()
    with pytest.raises(RuntimeError, match="boom"):  # noqa: PT012
        async with open_actor(ChildSpec("later", lambda: Later(go))) as ref:
            with pytest.raises(ActorCrashedError) as caught:
                await ref.ask(Note("boom"), timeout=5)
            assert isinstance(caught.value.__cause__, RuntimeError)
            await anyio.sleep(5)  # the root's crash cancels this block


async def test_a_reply_later_cut_short_by_the_stop_answers_stopped() -> None:
    go, waiting = anyio.Event(), list[str]()
    failures: list[Exception] = []

    async def ask(ref: Any) -> None:
        with pytest.raises(ActorStoppedError) as caught:
            await ref.ask(Note("never"), timeout=5)
        failures.append(caught.value)

    spec = ChildSpec("later", lambda: Later(go, waiting))
    async with anyio.create_task_group() as tg, open_actor(spec) as ref:
        tg.start_soon(ask, ref)
        await wait_until(lambda: waiting == ["never"])
        assert await ref.ask(Note("now"), timeout=1) == "now"
    assert len(failures) == 1
