"""Who sent a data packet that the rtc SDK delivers without a sender.

livekit-server forwards a new participant's data at once, but announces a participant
who publishes nothing only in its next batch of participant updates, up to 3 s later
(`subscriberUpdateInterval` in its `pkg/rtc/room.go`). Until then the rtc SDK's core
finds the sender among none of the participants it knows and drops the identity the
packet carried (rust-sdks `Room::handle_data`; the FFI then reports an empty identity,
in livekit 1.2.1, the newest, as on rust-sdks' main), so the packet looks like one a
server SDK sent. Delivered as it is, a reply meant for the newcomer would go to the
whole room, and a participant could pass for the backend in its first seconds in the
room. Data streams and RPC keep the identity, but a client's `publishData` uses
neither, and nothing the SDK or the server reports afterwards (the payload, its order,
its timing, any participant field) tells which of two newcomers sent it.

So newcomers are announced before they can speak where the server lets the bot know
of them in time, and their packets are attributed by elimination otherwise:

- Whenever the server lists the room, everyone in it that the SDK has not announced is
  announced at once (`announce`): the server broadcasts a participant immediately when
  its attributes change (`onParticipantUpdate`), even when the change deletes an
  attribute it never had, and takes it out of its batch. Its next packets name it.
- The room is listed whenever the server reports a change to it (`room_changed`). It
  reports the first change after 5 s without one (a join, say) at once
  (`roomUpdateInterval`, protocol `utils.ProtoProxy.MarkDirty`), so the first people
  to join a room that was quiet are announced about as soon as they are in: measured
  here (a loaded 2-core machine), 0.11 s after their join (p50; 0.02 to 1 s) against
  0.29 s (p50; 0.09 s at the least) for their connection to open its data channel.
  A newcomer who joins just after that listing is the only one unannounced when its
  first packet comes, which the next point then names.
- A packet that still comes without a sender is held, with every packet after it
  (nothing is reordered), while the server is asked who is in the room. The
  participants it lists that the SDK had not announced when the packet arrived are
  the candidates: none, and the server sent it (it stays without a sender); one, and
  it is theirs; several, and it cannot be told whose it is: it is dropped and counted,
  never passed on as the server's or as anyone's.

What is still dropped: a packet that arrives while two or more participants who may
send data are unannounced. That is two people who joined since the room was last
listed, into a room that changed in the 5 s before (the server then reports their
joins only in its next batch), one of whom speaks before that; or two joining a quiet
room when the bot's SDK hears their announcement after their first packet (the server
sends the announcement first, but by signalling, and the packet by the data channel:
up to 4 of 20 rounds of tests/livekit/test_room_data.py's newcomers when the machine was
loaded and the bot's event loop late, 29 of 560 in all). The listing that drops it
announces them, so their next packets are named.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable

import anyio
import attrs
from anyio.abc import TaskGroup

from actors.room.frames import DataReceivedFrame, DtmfReceivedFrame

log = logging.getLogger("actors.room")

SenderFrame = DataReceivedFrame | DtmfReceivedFrame
"""The frames that name who sent them."""

ANNOUNCE_BUDGET = 100
"""At most this many participant updates spent announcing newcomers per listing:
each announcement the server sends at once goes to everyone in the room, where its
batch would have carried many newcomers in one update. So a listing announces its
newcomers only while their number times the room's is within this (one newcomer in a
room of 100, ten in a room of 10); a crowd keeps the server's batching."""


@attrs.frozen
class Listing:
    """Who the server lists in the room."""

    everyone: frozenset[str]
    hidden: frozenset[str] = frozenset()
    """Those it never announces to other participants (their packets come without a
    sender for good, so they stay candidates, but cannot be announced)."""


@attrs.define
class _Held:
    frame: SenderFrame
    announced: frozenset[str] | None
    """Who the SDK knew when the frame arrived, for a frame without a sender."""
    arrival: int


class SenderAttribution:
    """Names the sender of every frame the SDK reports without one, keeping the order,
    and has newcomers announced so that fewer frames come without one.

    `received` and `room_changed` are called from the rtc callbacks (synchronous, on
    the event loop); `serve` runs in the connection's incarnation and asks the server,
    through `who_is_here` and `announce`, whenever a held frame or a change needs it.
    `announced` names everyone the SDK knows right now.
    """

    def __init__(
        self,
        room: str,
        announced: Callable[[], set[str]],
        deliver: Callable[[SenderFrame], None],
        on_unattributed: Callable[[], None] = lambda: None,
    ) -> None:
        self.room = room
        self._announced = announced
        self._deliver = deliver
        self._on_unattributed = on_unattributed
        self._held: deque[_Held] = deque()
        self._arrivals = 0
        self._changed = False
        self._asked: set[str] = set()  # whose announcement the server accepted or is taking
        self._wake = anyio.Event()

    def received(self, frame: SenderFrame) -> None:
        """A frame from the SDK."""
        self._arrivals += 1
        if frame.participant_id is None:
            self._held.append(_Held(frame, frozenset(self._announced()), self._arrivals))
            self._wake.set()
        elif self._held:
            self._held.append(_Held(frame, None, self._arrivals))
        else:
            self._deliver(frame)

    def room_changed(self) -> None:
        """The server reported a change to the room: someone may have joined."""
        self._changed = True
        self._wake.set()

    async def serve(
        self,
        who_is_here: Callable[[], Awaitable[Listing]],
        announce: Callable[[str], Awaitable[None]],
    ) -> None:
        """Deliver the held frames in order, each sender-less one once its sender is
        known, and list the room after each change (`room_changed`).

        One answer from the server serves every held frame that arrived before it was
        asked: whoever it lists was there for all of them.
        """
        async with anyio.create_task_group() as announcing:

            async def ask() -> Listing | None:
                self._changed = False  # this listing covers every change so far
                listing = await self._ask(who_is_here)
                if listing is not None:
                    self._announce_newcomers(listing, announce, announcing)
                return listing

            while True:
                await self._wake.wait()
                self._wake = anyio.Event()
                if self._changed and not self._held:
                    await ask()
                listing: Listing | None = None
                asked_after = 0  # the last arrival the current listing covers
                while self._held:
                    held = self._held[0]
                    if held.announced is not None:
                        if listing is None or held.arrival > asked_after:
                            asked_after = self._arrivals
                            listing = await ask()
                        if not self._attribute(held, listing):
                            self._held.popleft()
                            continue
                    self._held.popleft()
                    self._deliver(held.frame)

    async def _ask(self, who_is_here: Callable[[], Awaitable[Listing]]) -> Listing | None:
        try:
            return await who_is_here()
        except Exception as exc:  # noqa: BLE001 - the server's API is down or refused: say so, go on
            log.warning("[%s] could not list the room's participants: %s", self.room, exc)
            return None

    def _announce_newcomers(
        self,
        listing: Listing,
        announce: Callable[[str], Awaitable[None]],
        tasks: TaskGroup,
    ) -> None:
        """Have the server announce at once whoever `listing` shows the SDK does not
        know yet, once each (its announcement may reach the SDK after the next
        listing), within `ANNOUNCE_BUDGET`."""
        unannounced = listing.everyone - listing.hidden - self._announced()
        self._asked &= unannounced  # announced since, or gone
        newcomers = unannounced - self._asked
        if not newcomers or len(newcomers) * len(listing.everyone) > ANNOUNCE_BUDGET:
            return
        for identity in sorted(newcomers):
            self._asked.add(identity)
            tasks.start_soon(self._announce_one, announce, identity)

    async def _announce_one(
        self, announce: Callable[[str], Awaitable[None]], identity: str
    ) -> None:
        try:
            await announce(identity)
        except Exception as exc:  # noqa: BLE001 - left meanwhile, or refused: its batch announces it
            log.info("[%s] could not have %s announced at once: %s", self.room, identity, exc)
            self._asked.discard(identity)  # the next listing asks again

    def _attribute(self, held: _Held, listing: Listing | None) -> bool:
        """Name `held`'s sender from `listing`; False when it cannot be told."""
        assert held.announced is not None
        candidates = None if listing is None else sorted(listing.everyone - held.announced)
        if candidates is not None and len(candidates) <= 1:
            held.frame.participant_id = candidates[0] if candidates else None
            return True
        self._on_unattributed()
        log.warning(
            "[%s] dropped a %s whose sender the SDK did not name and the server could not "
            "tell (%s)",
            self.room,
            type(held.frame).__name__,
            "no participant list" if candidates is None else
            f"{len(candidates)} participants not yet announced",
        )
        return False
