"""The rooms of a process as its actor tree holds them, read in place on the loop: each
room's state, its slots' mailboxes, drops and restarts. What `/readyz` and `/status`
ask of the rooms, and what the room metrics export (`room_metrics`), come from here, so
that they agree."""

from __future__ import annotations

from collections import Counter

from actors import ActorState, ChildStatistics, RestartIntensityError
from actors.room import RoomStats
from supervisor.observability.families import Accumulator
from supervisor.process.rooms import RoomSet

ROOM_STATES = ("starting", "running", "reconnecting", "backoff", "failed", "stopping")
"""A room's state: joining for the first time (`starting`), serving (`running`: its tree
runs and its connection is joined), its tree running but its connection resuming or
rejoining (`reconnecting`: the server went away, or the SDK gave up and the connection
actor restarted), waiting to restart (`backoff`), quarantined after too many restarts
(`failed`), or leaving (`stopping`)."""
READINESS_NAMES = 5
"""How many rooms of each state `/readyz` names when not ready."""


def room_state(cell: ChildStatistics | None, stats: RoomStats | None) -> str:
    """A room's state for `lksup_rooms` and `/readyz` (see `ROOM_STATES`), from its slot
    (None: not built yet) and its connection.

    A room in backoff because it exceeded its restart intensity is quarantined, i.e.
    `failed`. A running tree counts as `running` only while its connection is joined:
    the SDK resuming a lost link, or a connection actor rejoining after it gave up,
    leaves the tree running but serves nobody.
    """
    if cell is None:
        return "starting"
    state = cell.state
    if state is ActorState.BACKOFF:
        return "failed" if isinstance(cell.last_error, RestartIntensityError) else "backoff"
    if state in (ActorState.STOPPING, ActorState.STOPPED):
        return "stopping"
    if state is ActorState.RUNNING and (stats is None or stats.connection != "connected"):
        return "reconnecting"
    return state.value



class RoomCensus:
    """Counts a `RoomSet`'s rooms by state and accumulates its slots' counters."""

    def __init__(self, room_set: RoomSet) -> None:
        self.room_set = room_set
        self.accumulated = Accumulator()

    @property
    def totals(self) -> Counter[tuple[str, ...]]:
        """Mailbox drops and dead letters by actor kind, restarts by kind and by room."""
        return self.accumulated.totals

    def readiness(self) -> tuple[bool, str]:
        """Ready while every configured room runs (its tree started, its connection
        joined); otherwise which rooms are in which state, a few names each."""
        states = self.states(self.slots())
        by_state: dict[str, list[str]] = {}
        for room in self.room_set.config.rooms:
            by_state.setdefault(states[room.name], []).append(room.name)
        running = len(by_state.pop("running", []))
        detail = f"{running} of {len(self.room_set.config.rooms)} room(s) running"
        for state in ROOM_STATES:
            names = by_state.get(state, [])
            if names:
                more = len(names) - READINESS_NAMES
                listed = ", ".join(names[:READINESS_NAMES])
                if more > 0:
                    listed += f" (+{more} more)"
                detail += f"; {state}: {listed}"
        worker = self.room_set.worker
        if worker is None:
            return not by_state, detail
        dispatch = (
            "draining" if worker.draining
            else "registered" if worker.registered
            else "not registered"
        )
        detail += f"; agent worker {dispatch}, {len(self.room_set.dispatched)} dispatched room(s)"
        return not by_state and worker.registered and not worker.draining, detail

    def rooms_now(self) -> list[tuple[str, str, int]]:
        """Every room of the process, its state (as `lksup_rooms` counts it) and its
        restarts (as `lksup_room_restarts_total`), in start order: for `/status`."""
        slots = self.slots()
        self.scan(slots)  # the restarts since the last scrape, into the totals
        states = self.states(slots)
        return [(name, state, self.totals[("room", name)]) for name, state in states.items()]

    def slots(self) -> dict[str, ChildStatistics]:
        """Every room's slot, with the slots of its tree, read in place (see
        `supervisor.observability.metrics`)."""
        supervisor = self.room_set.supervisor
        return {room.name: room for room in supervisor.children()} if supervisor else {}

    def states(self, slots: dict[str, ChildStatistics]) -> dict[str, str]:
        """The state of every room with a slot (a removed one still stopping too), then
        of every room served and not yet built (`starting`)."""
        stats = self.room_set.stats
        states = {name: room_state(slot, stats.get(name)) for name, slot in slots.items()}
        for name in self.room_set.room_names():
            states.setdefault(name, "starting")
        return states

    def scan(self, rooms: dict[str, ChildStatistics]) -> tuple[Counter[str], Counter[str]]:
        """Every room's slots: mailbox depth now (sum and max by kind); drops, dead
        letters and restarts into the accumulated totals."""
        depth: Counter[str] = Counter()
        deepest: Counter[str] = Counter()
        acc = self.accumulated
        acc.begin()
        for name, room in rooms.items():
            for kind, slot in [("room", room), *((child.name, child) for child in room.children)]:
                mailbox = slot.mailbox
                depth[kind] += mailbox.depth
                deepest[kind] = max(deepest[kind], mailbox.depth)
                acc.report(slot.slot, "dropped", mailbox.dropped, ("dropped", kind))
                acc.report(slot.slot, "dead", mailbox.dead_letters, ("dead", kind))
                acc.report(slot.slot, "restarts", slot.restarts, ("restarts", kind), ("room", name))
        acc.end()
        return depth, deepest
