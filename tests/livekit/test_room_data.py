"""Data messages through a room and the real server: in, out, targeted, and bad input.

Every test runs the built-in data bot (`supervisor.bots.data`) under the room actor
tree, with simulated participants sending and receiving through a real LiveKit
server. Where a test must show that something did NOT reach a participant, it
relies on the order of the bot's reliable channel rather than on a quiet period: a
later reliable packet from the bot arriving first proves the earlier one was never
sent there. Only lossy packets, which nothing orders, are checked by waiting.

Most tests send only once the bot knows the participant, so that what they check does
not depend on the server's timing. The server announces a participant that publishes
no track up to 3 s late (it batches those updates) yet forwards its data at once, and
the rtc SDK then delivers the packet without its sender (the identity is dropped inside
the SDK); the connection actor has newcomers announced early and names the sender
itself where they were not (`actors.room.senders`, and the two tests of participants
who talk from their first moment in the room).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import statistics
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from livekit import api, rtc
from pipecat.pipeline.worker import PipelineWorker

from actors.room import RoomStats
from actors.room.transport import RoomTransport
from supervisor.bots.data import create_bot as data_bot
from supervisor.livekit_server.server import LiveKitServer
from tests.helpers.participants import data_inbox, join
from tests.helpers.probes import wait_until
from tests.helpers.rooms import RoomUnderTest, running_room

pytestmark = pytest.mark.anyio

RELIABLE = rtc.DataPacketKind.KIND_RELIABLE
LOSSY = rtc.DataPacketKind.KIND_LOSSY
TIMEOUT = 15.0


@dataclass
class RecordingBot:
    """The data bot, plus what its transport told the bot's handlers.

    A bot factory: the room calls it with each pipeline incarnation's transport,
    which it keeps so a test can call the transport's methods as a bot would.
    """

    transports: list[RoomTransport] = field(default_factory=list)
    app_messages: list[tuple[Any, str | None]] = field(default_factory=list)
    data_received: list[tuple[bytes, str | None]] = field(default_factory=list)

    def __call__(self, transport: RoomTransport) -> PipelineWorker:
        self.transports.append(transport)

        @transport.event_handler("on_app_message")
        async def on_app_message(_: RoomTransport, message: Any, sender: str | None) -> None:
            self.app_messages.append((message, sender))

        @transport.event_handler("on_data_received")
        async def on_data_received(_: RoomTransport, data: bytes, sender: str | None) -> None:
            self.data_received.append((data, sender))

        return data_bot(transport)

    @property
    def transport(self) -> RoomTransport:
        return self.transports[-1]


@dataclass
class Participant:
    """A simulated participant the bot already knows, with everything it receives."""

    room: rtc.Room
    inbox: asyncio.Queue[rtc.DataPacket]

    async def send(self, payload: bytes, *, reliable: bool = True) -> None:
        """Send to the bot alone, as a client talking to its agent does."""
        await self.room.local_participant.publish_data(
            payload, reliable=reliable, destination_identities=["bot"]
        )


@asynccontextmanager
async def participant(
    server: LiveKitServer, tree: RoomUnderTest, identity: str
) -> AsyncIterator[Participant]:
    """Join `tree`'s room as `identity` and wait until the bot has seen the join.

    Waiting keeps the bot's view of the room settled before the test sends anything
    (see the module docstring).
    """
    async with join(server, tree.settings.room, identity) as room:
        inbox = data_inbox(room)
        await wait_until(lambda: identity in tree.stats.participants, TIMEOUT)
        yield Participant(room, inbox)


def encode(message: Any) -> bytes:
    return json.dumps(message).encode("utf-8")


def reply(message: Any, sender: str = "alice") -> dict[str, Any]:
    """What the data bot answers to `message` from `sender`."""
    return {"reply_to": message, "from": sender}


async def next_packet(inbox: asyncio.Queue[rtc.DataPacket]) -> rtc.DataPacket:
    return await asyncio.wait_for(inbox.get(), timeout=TIMEOUT)


async def expect_packet(
    inbox: asyncio.Queue[rtc.DataPacket], data: bytes, kind: int = RELIABLE
) -> None:
    """The participant's next packet is `data`, on channel `kind`, from the bot."""
    packet = await next_packet(inbox)
    assert (packet.data, packet.kind) == (data, kind), (
        f"got {packet.data[:200]!r} ({rtc.DataPacketKind.Name(packet.kind)}), "
        f"wanted {data[:200]!r} ({rtc.DataPacketKind.Name(kind)})"
    )
    assert packet.participant is not None
    assert packet.participant.identity == "bot"


async def expect_packets(
    inbox: asyncio.Queue[rtc.DataPacket], expected: list[tuple[bytes, int]]
) -> None:
    """The participant's next packets are `expected` (data, kind), from the bot, in any order.

    For a mix of channels: the lossy channel is unordered, and nothing orders it
    against the reliable one.
    """
    packets = [await next_packet(inbox) for _ in expected]
    assert sorted((p.data, p.kind) for p in packets) == sorted(expected)
    assert all(p.participant is not None and p.participant.identity == "bot" for p in packets)


async def assert_no_more(*inboxes: asyncio.Queue[rtc.DataPacket], quiet: float = 0.5) -> None:
    """Nothing else arrives: a check for lossy packets, which no later packet can fence."""
    await asyncio.sleep(quiet)
    leftovers = [inbox.get_nowait().data for inbox in inboxes if not inbox.empty()]
    assert not leftovers, f"unexpected packets: {leftovers}"


async def expect_counts(stats: RoomStats, **expected: int) -> None:
    """The room's data counters reach exactly `expected`.

    Waits because the bot counts a message sent once the connection confirms it,
    which may be just after the participant has it.
    """
    await wait_until(lambda: all(getattr(stats, k) >= v for k, v in expected.items()), TIMEOUT)
    assert {k: getattr(stats, k) for k in expected} == expected


async def test_message_reaches_the_bot_and_its_handlers(livekit_server: LiveKitServer) -> None:
    bot = RecordingBot()
    message = {"hello": "bot", "n": 1}
    async with (
        running_room(livekit_server, "data-in", bot) as tree,
        participant(livekit_server, tree, "alice") as alice,
    ):
        await alice.send(encode(message))
        # the reply names the sender: the bot got a frame with participant_id "alice"
        await expect_packet(alice.inbox, encode(reply(message)))
        await wait_until(lambda: bot.app_messages and bot.data_received, TIMEOUT)
        assert bot.app_messages == [(message, "alice")]
        assert bot.data_received == [(encode(message), "alice")]
        await expect_counts(tree.stats, data_in=1, data_out=1, data_malformed=0)


@pytest.mark.parametrize(
    ("urgent", "kind"), [(False, RELIABLE), (True, LOSSY)], ids=["reliable", "urgent"]
)
async def test_reply_comes_on_the_channel_asked_for(
    livekit_server: LiveKitServer, urgent: bool, kind: int
) -> None:
    room = f"data-out-{'urgent' if urgent else 'reliable'}"
    message = {"urgent": urgent, "text": "ping"}
    async with (
        running_room(livekit_server, room, data_bot) as tree,
        participant(livekit_server, tree, "alice") as alice,
    ):
        await alice.send(encode(message))
        await expect_packet(alice.inbox, encode(reply(message)), kind)
        await expect_counts(tree.stats, data_in=1, data_out=1)


async def test_targeted_and_broadcast_messages(livekit_server: LiveKitServer) -> None:
    bot = RecordingBot()
    request = {"question": "who hears this?"}
    async with (
        running_room(livekit_server, "data-fanout", bot) as tree,
        participant(livekit_server, tree, "alice") as alice,
        participant(livekit_server, tree, "bob") as bob,
    ):
        await alice.send(encode(request))
        await expect_packet(alice.inbox, encode(reply(request)))
        transport = bot.transport
        await transport.send_message("for bob only", participant_id="bob")
        await transport.send_message({"to": "everyone", "ü": "ñ"})
        await transport.send_message("plain text, ünïcode")
        # reliable packets from the bot keep their order: each participant's next
        # packets show which of the earlier targeted ones reached it (none for the other)
        everyone = json.dumps({"to": "everyone", "ü": "ñ"}, ensure_ascii=False).encode("utf-8")
        plain = "plain text, ünïcode".encode()
        await expect_packet(alice.inbox, everyone)
        await expect_packet(alice.inbox, plain)
        await expect_packet(bob.inbox, b"for bob only")
        await expect_packet(bob.inbox, everyone)
        await expect_packet(bob.inbox, plain)

        await transport.send_message_urgent({"urgent": "for all"})
        await transport.send_message_urgent("urgent for alice", participant_id="alice")
        await transport.send_message("done")
        urgent_for_all = (encode({"urgent": "for all"}), LOSSY)
        await expect_packets(
            alice.inbox, [urgent_for_all, (b"urgent for alice", LOSSY), (b"done", RELIABLE)]
        )
        await expect_packets(bob.inbox, [urgent_for_all, (b"done", RELIABLE)])
        await assert_no_more(alice.inbox, bob.inbox)
        await expect_counts(tree.stats, data_in=1, data_out=7)


async def test_a_new_participant_is_answered_alone_from_its_first_message(
    livekit_server: LiveKitServer,
) -> None:
    """Alice talks from her first moment in the room, before the server has announced
    her to the bot (it batches the announcement of a participant who publishes
    nothing, up to 3 s): every message still reaches the bot with her identity, so
    every reply goes to her alone and Bob, already there, hears none of them."""
    bot = RecordingBot()
    pings = [{"ping": n} for n in range(8)]
    async with (
        running_room(livekit_server, "data-early-sender", bot) as tree,
        participant(livekit_server, tree, "bob") as bob,
        join(livekit_server, tree.settings.room, "alice") as alice,
    ):
        inbox = data_inbox(alice)
        sent = time.perf_counter()
        for ping in pings:  # no wait for the bot to know her
            await alice.local_participant.publish_data(
                encode(ping), reliable=True, destination_identities=["bot"]
            )
        for ping in pings:
            await expect_packet(inbox, encode(reply(ping, sender="alice")))
        alice_round_trip = time.perf_counter() - sent
        announced = "alice" in tree.stats.participants
        # The bot's reliable packets keep their order: Bob's first packet being the
        # answer to his own message proves none of Alice's answers reached him.
        sent = time.perf_counter()
        await bob.send(encode({"ping": "bob"}))
        await expect_packet(bob.inbox, encode(reply({"ping": "bob"}, sender="bob")))
        bob_round_trip = time.perf_counter() - sent
        assert [sender for _, sender in bot.app_messages] == ["alice"] * len(pings) + ["bob"]
        assert tree.stats.data_unattributed == 0
    print(f"\nalice announced to the bot by the time her replies came back: {announced}; "
          f"her {len(pings)} answers in {alice_round_trip * 1000:.0f} ms, bob's one (known "
          f"sender) in {bob_round_trip * 1000:.0f} ms")


ROUNDS = 20
QUIET_SECONDS = 5.0
"""livekit-server's `roomUpdateInterval` (pkg/rtc/room.go): in a room whose last room
update is older than this, a join is reported to everyone at once."""


@dataclass
class Newcomer:
    """A participant that sent its first message as soon as it was in the room."""

    identity: str
    room: rtc.Room
    inbox: asyncio.Queue[rtc.DataPacket]
    message: dict[str, str]
    sent_at: float
    answered_at: list[float]


@asynccontextmanager
async def newcomers(
    server: LiveKitServer, room: str, identities: Sequence[str]
) -> AsyncIterator[list[Newcomer]]:
    """`identities` join `room` at the same moment, each sending the bot its first
    message the moment it is in (before the server has announced it to anyone)."""
    async with AsyncExitStack() as stack:

        async def arrive(identity: str) -> Newcomer:
            client = await stack.enter_async_context(join(server, room, identity))
            inbox = data_inbox(client)
            answered_at: list[float] = []
            client.on("data_received", lambda _: answered_at.append(time.perf_counter()))
            message = {"hello": identity}
            sent_at = time.perf_counter()
            await client.local_participant.publish_data(
                encode(message), reliable=True, destination_identities=["bot"]
            )
            return Newcomer(identity, client, inbox, message, sent_at, answered_at)

        async with asyncio.TaskGroup() as arriving:  # one failing leaves with the other
            arrivals = [arriving.create_task(arrive(identity)) for identity in identities]
        yield [arrival.result() for arrival in arrivals]


async def rooms_left_alone(server: LiveKitServer, rooms: Sequence[str]) -> None:
    """Wait until no room of `rooms` has been updated for `QUIET_SECONDS`.

    Only each room's bot is in it, and the server leaves agents out of a room's
    participant count, so nothing has changed in a room since it was created. (The
    server's interval is all there is to wait for: it tells nobody when it lapses.)"""
    async with api.LiveKitAPI(server.url, server.api_key, server.api_secret) as lk:
        listed = await lk.room.list_rooms(api.ListRoomsRequest(names=list(rooms)))
    assert len(listed.rooms) == len(rooms)
    quiet_from = max(room.creation_time_ms for room in listed.rooms) / 1000 + QUIET_SECONDS
    await wait_until(lambda: time.time() > quiet_from, QUIET_SECONDS + TIMEOUT)


async def answered_alone(
    tree: RoomUnderTest, arrivals: list[Newcomer], dropped_before: int
) -> tuple[list[str], int]:
    """What went wrong with `arrivals`' first messages, and how many were dropped: each
    must be answered to its sender only, or dropped and counted (never passed on as
    someone else's). `dropped_before`: the room's count of dropped messages before
    they joined."""

    def settled() -> bool:
        answered = sum(not newcomer.inbox.empty() for newcomer in arrivals)
        return answered + tree.stats.data_unattributed - dropped_before >= len(arrivals)

    with contextlib.suppress(TimeoutError):  # reported below as unanswered
        await wait_until(settled, TIMEOUT)
    wrong = []
    dropped = tree.stats.data_unattributed - dropped_before
    unanswered = [newcomer.identity for newcomer in arrivals if newcomer.inbox.empty()]
    if len(unanswered) > dropped:
        wrong.append(f"unanswered {unanswered}, of which {dropped} counted as dropped")
    for newcomer in arrivals:
        if newcomer.inbox.empty():
            continue
        first = newcomer.inbox.get_nowait()
        if first.data != encode(reply(newcomer.message, sender=newcomer.identity)):
            wrong.append(f"{newcomer.identity} got {first.data!r}")
            continue
        # The bot's reliable packets keep their order: the answer to a second message
        # coming next proves no other answer was on its way to this participant.
        second = {"again": newcomer.identity}
        await newcomer.room.local_participant.publish_data(
            encode(second), reliable=True, destination_identities=["bot"]
        )
        try:
            await expect_packet(newcomer.inbox, encode(reply(second, sender=newcomer.identity)))
        except (AssertionError, TimeoutError) as exc:
            wrong.append(f"{newcomer.identity}, after its answer: {exc or 'nothing'}")
    return wrong, len(unanswered)


async def test_newcomers_joining_together_are_each_answered_alone(
    livekit_server: LiveKitServer,
) -> None:
    """Two participants join at the same moment and each sends a message at once,
    before the server's batch would have announced either to the bot: every message
    is answered to its sender only, or dropped and counted, never passed to another.
    `ROUNDS` rounds, each in its own room, which nothing has changed for
    `QUIET_SECONDS`, so the server reports the join at once. How many are dropped is
    printed, not asserted: a newcomer whose announcement the bot's SDK hears after its
    message (a starved machine) still cannot be told apart (`actors.room.senders`;
    5 of 220 rounds here under load, 14-19 of 20 before the announcements)."""
    names = [f"data-together-{n}" for n in range(ROUNDS)]
    failures: dict[int, list[str]] = {}
    first_answers: list[float] = []
    dropped = 0
    async with AsyncExitStack() as stack:
        trees = [
            await stack.enter_async_context(running_room(livekit_server, name, data_bot))
            for name in names
        ]
        await rooms_left_alone(livekit_server, names)
        for n, tree in enumerate(trees):
            dropped_before = tree.stats.data_unattributed
            async with newcomers(livekit_server, tree.settings.room, ("ann", "ben")) as arrivals:
                wrong, unanswered = await answered_alone(tree, arrivals, dropped_before)
            dropped += unanswered
            if wrong:
                failures[n] = wrong
            first_answers += [
                newcomer.answered_at[0] - newcomer.sent_at
                for newcomer in arrivals
                if newcomer.answered_at
            ]
    if first_answers:
        print(f"\nfirst answers: p50 {statistics.median(first_answers) * 1000:.0f} ms, "
              f"max {max(first_answers) * 1000:.0f} ms ({len(first_answers)} answered, "
              f"{dropped} dropped and counted of {2 * ROUNDS})")
    assert not failures, f"{len(failures)} of {ROUNDS} rounds went wrong: {failures}"


@pytest.mark.parametrize(
    ("fault", "payload"),
    [
        ("not-utf8", b"\xff\xfe not utf-8 \xc3"),
        ("not-json", b"hello, not json"),
        ("json-array", b'[1, "a JSON array", {"x": 2}]'),
    ],
    ids=["not-utf8", "not-json", "json-array"],
)
async def test_malformed_message_is_counted_and_delivered_raw(
    livekit_server: LiveKitServer, fault: str, payload: bytes
) -> None:
    bot = RecordingBot()
    after = {"after": "the bad one"}
    async with (
        running_room(livekit_server, f"data-malformed-{fault}", bot) as tree,
        participant(livekit_server, tree, "alice") as alice,
    ):
        await alice.send(payload)
        await alice.send(encode(after))
        # alice's first reply answers the valid message: the bad one was not an app message
        await expect_packet(alice.inbox, encode(reply(after)))
        await wait_until(lambda: len(bot.data_received) >= 2, TIMEOUT)
        assert bot.data_received == [(payload, "alice"), (encode(after), "alice")]
        assert bot.app_messages == [(after, "alice")]
        await expect_counts(tree.stats, data_in=2, data_malformed=1, data_oversized=0, data_out=1)
        assert alice.inbox.empty()


async def test_oversized_message_is_refused_with_a_log_line(
    livekit_server: LiveKitServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="actors.room")
    bot = RecordingBot()
    room = "data-oversized"
    big = encode({"pad": "x" * 4000})  # a valid app message, but over the room's limit
    after = {"after": "the big one"}
    async with (
        running_room(livekit_server, room, bot, max_data_bytes=1000) as tree,
        participant(livekit_server, tree, "alice") as alice,
    ):
        await alice.send(big)
        await alice.send(encode(after))
        await expect_packet(alice.inbox, encode(reply(after)))
        await wait_until(lambda: bot.data_received, TIMEOUT)
        assert bot.data_received == [(encode(after), "alice")]
        assert bot.app_messages == [(after, "alice")]
        await expect_counts(tree.stats, data_in=1, data_oversized=1, data_malformed=0, data_out=1)
        assert alice.inbox.empty()
    refusals = [
        r.getMessage()
        for r in caplog.records
        if r.name == "actors.room" and r.levelno >= logging.WARNING and "refused" in r.getMessage()
    ]
    assert len(refusals) == 1, refusals
    assert room in refusals[0]
    assert str(len(big)) in refusals[0]
