"""`SenderAttribution` alone, with a fake server: order, the three outcomes, failures, and
which newcomers it has announced.

The real-server case (a newcomer's first messages) is in tests/livekit/test_room_data.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import anyio
import anyio.lowlevel
import pytest

from actors.room.frames import DataReceivedFrame, DtmfReceivedFrame
from actors.room.senders import ANNOUNCE_BUDGET, Listing, SenderAttribution, SenderFrame

pytestmark = pytest.mark.anyio


class FakeRoom:
    """What the SDK knows and what the server lists; the server answers when told to,
    and an announcement it is asked for reaches the SDK at once."""

    def __init__(
        self, announced: set[str], listed: set[str], hidden: frozenset[str] = frozenset()
    ) -> None:
        self.announced = announced
        self.listed = listed
        self.hidden = hidden
        self.asked = 0
        self.answered = 0  # listings returned (what follows from one runs in that step)
        self.answer = anyio.Event()
        self.answer.set()
        self.fail = False
        self.announcing: list[str] = []  # every announcement asked for, in order
        self.announced_by_server = anyio.Event()  # cleared to hold announcements back
        self.announced_by_server.set()
        self.refuse = False
        self.refused = 0
        self.heard = True  # an accepted announcement reaches the SDK at once

    async def who_is_here(self) -> Listing:
        self.asked += 1
        await self.answer.wait()
        if self.fail:
            raise ConnectionError("server API down")
        self.answered += 1
        return Listing(frozenset(self.listed), frozenset(self.hidden))

    async def announce(self, identity: str) -> None:
        self.announcing.append(identity)
        await self.announced_by_server.wait()
        if self.refuse:
            self.refused += 1
            raise ConnectionError("participant not found")
        if self.heard:
            self.announced.add(identity)


@asynccontextmanager
async def serving(
    room: FakeRoom,
) -> AsyncIterator[tuple[SenderAttribution, list[SenderFrame], list[int]]]:
    delivered: list[SenderFrame] = []
    dropped: list[int] = []
    senders = SenderAttribution(
        "r", lambda: room.announced, delivered.append, lambda: dropped.append(1)
    )
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(senders.serve, room.who_is_here, room.announce)
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
        senders.received(data("hi", "alice"))
        assert [f.participant_id for f in delivered] == ["alice"]  # synchronously
    assert room.asked == 0


async def test_a_newcomer_is_named_and_nothing_overtakes_its_messages() -> None:
    room = FakeRoom({"bot", "bob"}, {"bot", "bob", "alice"})
    room.answer = anyio.Event()  # the server takes its time
    async with serving(room) as (senders, delivered, dropped):
        senders.received(data("a1", None))
        await settle(lambda: room.asked == 1)  # the server is asked about a1...
        senders.received(data("a2", None))  # ...a2 came after
        senders.received(data("b1", "bob"))  # held behind alice's
        room.announced.add("alice")  # announced meanwhile: her next one has a sender
        senders.received(data("a3", "alice"))
        senders.received(DtmfReceivedFrame(1, "1", None))
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
        senders.received(data("from the backend", None))
        await settle(lambda: len(delivered) == 1)
    assert delivered[0].participant_id is None
    assert dropped == []


@pytest.mark.parametrize("fault", ["two newcomers", "server API down"])
async def test_a_frame_whose_sender_cannot_be_told_is_dropped_not_misnamed(fault: str) -> None:
    room = FakeRoom({"bot"}, {"bot", "alice", "carol"})
    room.fail = fault == "server API down"
    async with serving(room) as (senders, delivered, dropped):
        senders.received(data("whose?", None))
        senders.received(data("later", "dave"))
        await settle(lambda: len(delivered) == 1)
    assert [(f.data, f.participant_id) for f in delivered] == [(b"later", "dave")]
    assert dropped == [1]


async def test_a_listing_has_the_newcomers_it_finds_announced() -> None:
    """Alice's first frame is named from the listing, and the listing has her
    announced, so her next frames name her themselves; a hidden participant, whom the
    server never announces, is not asked about, yet stays a possible sender."""
    room = FakeRoom({"bot"}, {"bot", "alice"})
    async with serving(room) as (senders, delivered, dropped):
        senders.received(data("a1", None))
        await settle(lambda: len(delivered) == 1 and "alice" in room.announced)
        senders.received(data("a2", "alice"))  # as the SDK names her now
    assert [(f.data, f.participant_id) for f in delivered] == [(b"a1", "alice"), (b"a2", "alice")]
    assert (room.asked, room.announcing, dropped) == (1, ["alice"], [])

    room = FakeRoom({"bot"}, {"bot", "alice", "recorder"}, hidden=frozenset({"recorder"}))
    async with serving(room) as (senders, delivered, dropped):
        senders.received(data("whose?", None))
        await settle(lambda: dropped == [1] and "alice" in room.announced)
    assert (delivered, room.announcing) == ([], ["alice"])


async def test_a_change_to_the_room_has_whoever_joined_announced() -> None:
    """Listed on a change, with nothing held: newcomers are announced before they
    send anything, and nothing is delivered or held meanwhile."""
    room = FakeRoom({"bot", "bob"}, {"bot", "bob", "alice", "carol"})
    async with serving(room) as (senders, delivered, dropped):
        senders.room_changed()
        await settle(lambda: {"alice", "carol"} <= room.announced)
        senders.received(data("b1", "bob"))
        assert [f.data for f in delivered] == [b"b1"]  # synchronously: nothing is held
        senders.room_changed()  # nobody new: listed, nobody announced
        await settle(lambda: room.answered == 2)
    assert (sorted(room.announcing), dropped) == (["alice", "carol"], [])


async def test_a_change_during_a_listing_gets_a_listing_of_its_own() -> None:
    """A listing asked before a change cannot show who joined with it."""
    room = FakeRoom({"bot"}, {"bot", "alice"})
    room.answer = anyio.Event()
    async with serving(room) as (senders, delivered, _):
        senders.received(data("a1", None))
        await settle(lambda: room.asked == 1)
        senders.room_changed()  # after the question: a listing of its own follows
        room.answer.set()
        await settle(lambda: room.answered == 2)
    assert [(f.data, f.participant_id) for f in delivered] == [(b"a1", "alice")]
    assert room.announcing == ["alice"]


async def test_an_announcement_is_asked_for_once_while_it_is_on_its_way() -> None:
    """Accepted but not heard yet (the server's signalling can lag its API): later
    listings do not ask again, until she has left and come back."""
    room = FakeRoom({"bot"}, {"bot", "alice"})
    room.heard = False
    async with serving(room) as (senders, _, _):
        for listings in range(1, 4):
            senders.room_changed()
            await settle(lambda: room.answered == listings)  # noqa: B023 - awaited here
        assert room.announcing == ["alice"]
        room.listed = {"bot"}  # she left...
        senders.room_changed()
        await settle(lambda: room.answered == 4)
        room.listed = {"bot", "alice"}  # ...and came back
        senders.room_changed()
        await settle(lambda: room.announcing == ["alice", "alice"])


async def test_an_announcement_is_asked_for_once_and_again_after_a_failure() -> None:
    room = FakeRoom({"bot"}, {"bot", "alice"})
    room.announced_by_server = anyio.Event()  # alice's announcement takes its time...
    room.refuse = True
    async with serving(room) as (senders, _, _):
        senders.room_changed()
        await settle(lambda: room.announcing == ["alice"])
        senders.room_changed()  # listed again while it is under way: not asked twice
        await settle(lambda: room.answered == 2)
        room.announced_by_server.set()  # ...and is refused (she left, say)
        await settle(lambda: room.refused == 1)
        room.refuse = False
        senders.room_changed()  # the next listing asks again
        await settle(lambda: "alice" in room.announced)
    assert room.announcing == ["alice", "alice"]


async def test_a_crowd_of_newcomers_is_left_to_the_servers_batch() -> None:
    """Announcing each at once would send everyone in the room one update per
    newcomer: past `ANNOUNCE_BUDGET` the server's batch announces them."""
    crowd = {f"p{n}" for n in range(ANNOUNCE_BUDGET // 10)}  # 10 newcomers x 11 listed
    room = FakeRoom({"bot"}, {"bot", *crowd})
    async with serving(room) as (senders, _, _):
        senders.room_changed()
        await settle(lambda: room.answered == 1)
        room.listed = {"bot", "alice"}  # the crowd left, alice came
        senders.room_changed()
        await settle(lambda: "alice" in room.announced)
    assert room.announcing == ["alice"]

