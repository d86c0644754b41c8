"""Who sent a data packet that the rtc SDK delivers without a sender.

livekit-server forwards a new participant's data at once, but announces a participant
who publishes nothing only in its next batch of participant updates, up to 3 s later
(`subscriberUpdateInterval` in its `pkg/rtc/room.go`). Until then the rtc SDK's core
finds the sender among none of the participants it knows and drops the identity the
packet carried (rust-sdks `Room::handle_data`; the FFI then reports an empty identity),
so the packet looks like one a server SDK sent. Delivered as it is, a reply meant for
the newcomer would go to the whole room, and a participant could pass for the backend
in its first seconds in the room.

So a packet without a sender is held, with every packet after it (nothing is
reordered), while the server is asked who is in the room. The participants the server
lists that the SDK had not announced when the packet arrived are the candidates: none,
and the server sent it (it stays without a sender); one, and it is theirs; several
(people who joined within the same few seconds, one of whom spoke at once), and it
cannot be told whose it is: it is dropped and counted, never passed on as the
server's. Packets with a sender pass straight through while nothing is held.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable

import anyio
import attrs

from actors.room.frames import DataReceivedFrame, DtmfReceivedFrame

log = logging.getLogger("actors.room")

SenderFrame = DataReceivedFrame | DtmfReceivedFrame
"""The frames that name who sent them."""


@attrs.define
class _Held:
    frame: SenderFrame
    announced: frozenset[str] | None
    """Who the SDK knew when the frame arrived, for a frame without a sender."""
    arrival: int


class SenderAttribution:
    """Names the sender of every frame the SDK reports without one, keeping the order.

    `received` is called from the rtc callbacks (synchronous, on the event loop);
    `serve` runs in the connection's incarnation and asks the server, through
    `who_is_here`, whenever a held frame needs it.
    """

    def __init__(
        self,
        room: str,
        deliver: Callable[[SenderFrame], None],
        on_unattributed: Callable[[], None] = lambda: None,
    ) -> None:
        self.room = room
        self._deliver = deliver
        self._on_unattributed = on_unattributed
        self._held: deque[_Held] = deque()
        self._arrivals = 0
        self._wake = anyio.Event()

    def received(self, frame: SenderFrame, announced: Callable[[], set[str]]) -> None:
        """A frame from the SDK; `announced` names everyone the SDK knows right now."""
        self._arrivals += 1
        if frame.participant_id is None:
            self._held.append(_Held(frame, frozenset(announced()), self._arrivals))
            self._wake.set()
        elif self._held:
            self._held.append(_Held(frame, None, self._arrivals))
        else:
            self._deliver(frame)

    async def serve(self, who_is_here: Callable[[], Awaitable[set[str]]]) -> None:
        """Deliver the held frames in order, each sender-less one once its sender is known.

        One answer from the server serves every held frame that arrived before it was
        asked: whoever it lists was there for all of them.
        """
        listing: set[str] | None = None
        asked_after = 0  # the last arrival the current listing covers
        while True:
            await self._wake.wait()
            self._wake = anyio.Event()
            while self._held:
                held = self._held[0]
                if held.announced is not None:
                    if listing is None or held.arrival > asked_after:
                        asked_after = self._arrivals
                        listing = await self._ask(who_is_here)
                    if not self._attribute(held, listing):
                        self._held.popleft()
                        continue
                self._held.popleft()
                self._deliver(held.frame)
            listing = None

    async def _ask(self, who_is_here: Callable[[], Awaitable[set[str]]]) -> set[str] | None:
        try:
            return await who_is_here()
        except Exception as exc:  # noqa: BLE001 - the server's API is down or refused: say so, go on
            log.warning("[%s] could not list the room's participants: %s", self.room, exc)
            return None

    def _attribute(self, held: _Held, listing: set[str] | None) -> bool:
        """Name `held`'s sender from `listing`; False when it cannot be told."""
        assert held.announced is not None
        candidates = None if listing is None else sorted(listing - held.announced)
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
