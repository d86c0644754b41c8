"""Supervision after Erlang/OTP: restart what failed, give up when it keeps failing.

A supervisor is itself an actor. It starts its children one after another (each one's
lifespan entered before the next starts, so the later ones can rely on the earlier),
restarts them by strategy and restart type, waits an exponential backoff with jitter
before each restart, and counts restarts: more than `intensity.max_restarts` within
`intensity.within_seconds` and it stops every child in reverse start order and fails
with `RestartIntensityError`, which its own parent treats as a crash. Stopping a
supervisor stops its children in reverse start order, each within its shutdown timeout.
"""

from __future__ import annotations

import logging
import random
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import anyio
from anyio.abc import TaskStatus
from pipecat.frames.frames import Frame

from actors.actor import Actor, ReplyLater
from actors.cell import ActorCell, ActorState
from actors.errors import Refused, RestartIntensityError
from actors.frames import (
    ChildExitedFrame,
    RestartChildrenFrame,
    StartChildFrame,
    StopChildFrame,
    WhichChildrenFrame,
)
from actors.mailbox import Mailbox
from actors.specs import (
    Backoff,
    ChildInfo,
    ChildSpec,
    ChildStatistics,
    Restart,
    RestartIntensity,
    Strategy,
)

log = logging.getLogger("actors")


def _count_in_window(times: deque[float], seconds: float) -> int:
    """Record a restart now and count those within the last `seconds`."""
    now = anyio.current_time()
    while times and now - times[0] > seconds:
        times.popleft()
    times.append(now)
    return len(times)


class _Release:
    """A task status whose `started()` gives a limiter's place back, once."""

    def __init__(self, limiter: anyio.CapacityLimiter) -> None:
        self._limiter: anyio.CapacityLimiter | None = limiter

    def started(self, value: object = None) -> None:
        if self._limiter is not None:
            self._limiter.release_on_behalf_of(self)
            self._limiter = None


class Supervisor(Actor):
    """An actor whose job is to keep its children running.

    `concurrency` lets a one_for_one supervisor start and stop that many children at
    once (they are independent, so their order does not matter); the other strategies
    always start children one by one and stop them in reverse order.
    """

    def __init__(
        self,
        children: Sequence[ChildSpec] = (),
        *,
        strategy: Strategy = Strategy.ONE_FOR_ONE,
        intensity: RestartIntensity = RestartIntensity(),
        backoff: Backoff = Backoff(),
        concurrency: int = 1,
        seed: int | None = None,
    ) -> None:
        names = [spec.name for spec in children]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"duplicate child names: {', '.join(duplicates)}")
        self._specs = tuple(children)
        self._strategy = strategy
        self._intensity = intensity
        self._backoff = backoff
        self._random = random.Random(seed)
        self._children: dict[str, ActorCell] = {}
        self._generation: dict[str, int] = {}
        self._restart_times: deque[float] = deque()
        self._child_restart_times: dict[str, deque[float]] = {}
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        self._limiter = anyio.CapacityLimiter(concurrency)
        self._retiring: set[ActorCell] = set()
        """Children stopping beside the supervisor's work (`StopChildFrame(wait=False)`)."""

    @asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        try:
            for spec in self._specs:
                self._adopt(spec)
            await self._start_in_order(list(self._children.values()))
            yield
        finally:
            await self._stop_all()

    async def receive(self, frame: Frame) -> Any:
        if isinstance(frame, ChildExitedFrame):
            await self._child_exited(frame)
        elif isinstance(frame, RestartChildrenFrame):
            await self._restart(frame.generations)
        elif isinstance(frame, StartChildFrame):
            if frame.spec.name in self._children:
                raise Refused(f"{self.ref.path}: a child named {frame.spec.name!r} exists")
            cell = self._adopt(frame.spec)
            if frame.wait:
                await self._start(cell)
            else:
                self.tasks.start_soon(self._start_beside, cell)
            return cell.ref
        elif isinstance(frame, StopChildFrame):
            child = self._children.get(frame.child)
            if child is None or child in self._retiring:
                raise Refused(f"{self.ref.path}: no child named {frame.child!r}")
            if not frame.wait:
                self._retiring.add(child)
                return ReplyLater(partial(self._retire_beside, child))
            await self._retire(child)
        elif isinstance(frame, WhichChildrenFrame):
            return tuple(
                ChildInfo(c.spec.name, c.ref, c.state, c.incarnation, c.restarts, c.last_error)
                for c in self._children.values()
            )
        else:
            return await super().receive(frame)
        return None

    def children(self) -> tuple[ChildStatistics, ...]:
        """Every child slot as it is now, synchronously and without a message: for
        readers on the event loop's thread that must not wait for this supervisor (busy
        starting a room, it answers no `WhichChildrenFrame` until it is done)."""
        return tuple(cell.statistics() for cell in self._children.values())

    @property
    def _own_mailbox(self) -> Mailbox:
        assert self._cell is not None
        return self._cell.mailbox

    def _adopt(self, spec: ChildSpec) -> ActorCell:
        cell = ActorCell(spec, self.ref.path, siblings=self._children)
        self._children[spec.name] = cell
        self._generation[spec.name] = self._generation.get(spec.name, 0) + 1
        return cell

    async def _start(self, cell: ActorCell) -> bool:
        """Start one child; True once its lifespan is entered, False if it died first."""
        await self.tasks.start(self._watch, cell)
        return cell.state is ActorState.RUNNING

    async def _start_beside(self, cell: ActorCell) -> None:
        """Run a child started without waiting: its start holds one of the `concurrency`
        places until its lifespan is entered. A child stopped (or its supervisor
        stopping) before its turn came is not started at all."""
        started = _Release(self._limiter)
        await self._limiter.acquire_on_behalf_of(started)
        try:
            if cell.mailbox.closed or self._children.get(cell.spec.name) is not cell:
                return
            await self._watch(cell, task_status=started)
        finally:
            started.started()

    async def _start_in_order(self, cells: list[ActorCell]) -> None:
        """Start children one after another, stopping at one that fails to start when
        the later ones depend on it: its exit, already queued, restarts them with it.

        Independent children (one_for_one) start up to `concurrency` at a time: a
        hundred rooms join in parallel, not one after another.
        """
        if self._concurrent:
            await self._each_limited(self._start, cells)
            return
        for cell in cells:
            if not await self._start(cell) and self._strategy is not Strategy.ONE_FOR_ONE:
                return

    @property
    def _concurrent(self) -> bool:
        return self._strategy is Strategy.ONE_FOR_ONE and self._limiter.total_tokens > 1

    async def _each_limited(self, step: Callable[[ActorCell], Any], cells: list[ActorCell]) -> None:
        async def limited(cell: ActorCell) -> None:
            async with self._limiter:
                await step(cell)

        async with anyio.create_task_group() as group:
            for cell in cells:
                group.start_soon(limited, cell)

    async def _watch(
        self, cell: ActorCell, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        error = await cell.live(task_status=task_status)
        if not cell.stop_requested:
            self._own_mailbox.put_system(ChildExitedFrame(cell.spec.name, cell.incarnation, error))

    async def _child_exited(self, frame: ChildExitedFrame) -> None:
        cell = self._children.get(frame.child)
        if (
            cell is None
            or cell.incarnation != frame.incarnation
            or cell.stop_requested
            or cell in self._retiring
        ):
            return  # a stop we asked for, or news about an incarnation already replaced
        restart = cell.spec.restart
        if restart is Restart.TEMPORARY or (restart is Restart.TRANSIENT and frame.error is None):
            log.info("%s ended (%s): not restarted", cell.path, restart.value)
            await self._retire(cell)
            return
        if frame.error is None:
            log.warning("%s exited although it is permanent: restarting it", cell.path)
        restarts = _count_in_window(self._restart_times, self._intensity.within_seconds)
        limit = self._intensity.max_restarts
        if limit is not None and restarts > limit:
            raise RestartIntensityError(
                f"{self.ref.path}: {restarts} restarts within "
                f"{self._intensity.within_seconds:g} s (at most "
                f"{self._intensity.max_restarts} allowed); last failure in {cell.path}: "
                f"{frame.error!r}"
            ) from frame.error
        affected = self._affected(cell)
        for other in reversed(affected):
            if other is not cell:
                await other.stop(other.spec.shutdown_timeout)
        generations = {}
        for member in affected:
            member.state = ActorState.BACKOFF
            self._generation[member.spec.name] += 1
            generations[member.spec.name] = self._generation[member.spec.name]
        attempt = _count_in_window(
            self._child_restart_times.setdefault(cell.spec.name, deque()),
            self._intensity.within_seconds,
        )
        delay = self._backoff.delay(attempt, self._random.random)
        log.info("%s: restarting %s in %.3f s", self.ref.path, ", ".join(generations), delay)
        self.tasks.start_soon(self._restart_after, delay, generations)

    def _affected(self, failed: ActorCell) -> list[ActorCell]:
        cells = list(self._children.values())
        if self._strategy is Strategy.ONE_FOR_ONE:
            return [failed]
        if self._strategy is Strategy.ONE_FOR_ALL:
            return cells
        return cells[cells.index(failed) :]

    async def _restart_after(self, delay: float, generations: dict[str, int]) -> None:
        await anyio.sleep(delay)
        self._own_mailbox.put_system(RestartChildrenFrame(generations))

    async def _restart(self, generations: dict[str, int]) -> None:
        due = []
        for name, generation in generations.items():
            cell = self._children.get(name)
            if cell is not None and self._generation[name] == generation and (
                cell not in self._retiring
            ):
                cell.restarts += 1
                due.append(cell)  # else: stopped, or a later failure rescheduled it
        await self._start_in_order(due)

    async def _retire_beside(self, cell: ActorCell) -> None:
        try:
            async with self._limiter:
                await self._retire(cell)
        finally:
            self._retiring.discard(cell)

    async def _retire(self, cell: ActorCell) -> None:
        """Stop a child for good and forget it, so its name can be used again."""
        await self._close(cell)
        del self._children[cell.spec.name]
        self._child_restart_times.pop(cell.spec.name, None)
        self._generation[cell.spec.name] += 1

    async def _close(self, cell: ActorCell) -> None:
        await cell.stop(cell.spec.shutdown_timeout)
        cell.close()

    async def _stop_all(self) -> None:
        """Stop every child; their slots stay listed (closed), so a sibling still
        stopping that sends to one counts a dead letter instead of failing a lookup."""
        cells = list(self._children.values())
        if self._concurrent:
            await self._each_limited(self._close, cells)
            return
        for cell in reversed(cells):
            await self._close(cell)
