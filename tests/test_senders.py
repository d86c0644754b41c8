"""`SenderAttribution` alone, with a fake server listing: order, the three outcomes, failures.

The real-server case (a newcomer's first messages) is in tests/livekit/test_room_data.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import anyio
import anyio.lowlevel
import pytest

from actors.room.frames import DataReceivedFrame, DtmfReceivedFrame
from actors.room.senders import SenderAttribution, SenderFrame

pytestmark = pytest.mark.anyio


class FakeRoom:
    """What the SDK knows and what the server lists; the server answers when told to."""

    def __init__(self, announced: set[str], listed: set[str]) -> None:
        self.announced = announced
        self.listed = listed
        self.asked = 0
        self.answer = anyio.Event()
        self.answer.set()
        self.fail = False

    async def who_is_here(self) -> set[str]:
        self.asked += 1
        await self.answer.wait()
        if self.fail:
            raise ConnectionError("server API down")
        return set(self.listed)


@asynccontextmanager
async def serving(
    room: FakeRoom,
) -> AsyncIterator[tuple[SenderAttribution, list[SenderFrame], list[int]]]:
    delivered: list[SenderFrame] = []
    dropped: list[int] = []
    senders = SenderAttribution("r", delivered.append, lambda: dropped.append(1))
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(senders.serve, room.who_is_here)
        yield senders, delivered, dropped
        tasks.cancel_scope.cancel()


def data(text: str, sender: str | None) -> DataReceivedFrame:
    return DataReceivedFrame(text.encode(), sender, None, True)


async def settle(condition: Callable[[], bool]) -> None:
    with anyio.fail_after(5):
        while not condition():
            await anyio.lowlevel.checkpoint()


async def test_frames_with_a_sender_pass_at_once_and_ask_nobody() -> None:
    room = FakeRoom({"bot", "alice"}, {"bot", "alice"})
    async with serving(room) as (senders, delivered, _):
        senders.received(data("hi", "alice"), lambda: room.announced)
        assert [f.participant_id for f in delivered] == ["alice"]  # synchronously
    assert room.asked == 0


async def test_a_newcomer_is_named_and_nothing_overtakes_its_messages() -> None:
    room = FakeRoom({"bot", "bob"}, {"bot", "bob", "alice"})
    room.answer = anyio.Event()  # the server takes its time
    async with serving(room) as (senders, delivered, dropped):
        senders.received(data("a1", None), lambda: room.announced)
        await settle(lambda: room.asked == 1)  # the server is asked about a1...
        senders.received(data("a2", None), lambda: room.announced)  # ...a2 came after
        senders.received(data("b1", "bob"), lambda: room.announced)  # held behind alice's
        room.announced.add("alice")  # announced meanwhile: her next one has a sender
        senders.received(data("a3", "alice"), lambda: room.announced)
        senders.received(DtmfReceivedFrame(1, "1", None), lambda: room.announced)
        assert delivered == []
        room.answer.set()
        await settle(lambda: len(delivered) == 5)
    assert [(getattr(f, "data", b"dtmf"), f.participant_id) for f in delivered] == [
        (b"a1", "alice"), (b"a2", "alice"), (b"b1", "bob"), (b"a3", "alice"), (b"dtmf", None),
    ]  # fmt: skip
    # a2 came after the first question, so a second one was asked, and it covers every
    # frame that came before it; the DTMF came after alice was announced and the server
    # lists nobody else: the server's own
    assert room.asked == 2
    assert dropped == []


async def test_a_frame_nobody_new_could_have_sent_stays_the_servers() -> None:
    room = FakeRoom({"bot", "alice"}, {"bot", "alice"})
    async with serving(room) as (senders, delivered, dropped):
        senders.received(data("from the backend", None), lambda: room.announced)
        await settle(lambda: len(delivered) == 1)
    assert delivered[0].participant_id is None
    assert dropped == []


@pytest.mark.parametrize("fault", ["two newcomers", "server API down"])
async def test_a_frame_whose_sender_cannot_be_told_is_dropped_not_misnamed(fault: str) -> None:
    room = FakeRoom({"bot"}, {"bot", "alice", "carol"})
    room.fail = fault == "server API down"
    async with serving(room) as (senders, delivered, dropped):
        senders.received(data("whose?", None), lambda: room.announced)
        senders.received(data("later", "dave"), lambda: room.announced)
        await settle(lambda: len(delivered) == 1)
    assert [(f.data, f.participant_id) for f in delivered] == [(b"later", "dave")]
    assert dropped == [1]
