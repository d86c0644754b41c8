"""One actor slot: its mailbox, its ref, and the running of one incarnation.

The slot outlives incarnations: a restart builds a fresh actor from the spec's factory
and runs it against the same mailbox, so refs stay valid and queued frames survive.
Supervisors drive slots; the kernel's root (`open_actor`) drives one slot alone.
"""

from __future__ import annotations

import enum
import itertools
import logging
from collections.abc import Mapping
from typing import Any

import anyio
from anyio.abc import TaskStatus

from actors.actor import Actor, ReplyLater
from actors.errors import (
    ActorCrashedError,
    ActorError,
    ActorStoppedError,
    Refused,
    leaf_error,
)
from actors.mailbox import STOP, Mailbox, Reply, Request
from actors.ref import ActorRef
from actors.specs import ChildSpec, ChildStatistics

log = logging.getLogger("actors")

_slots = itertools.count(1)


class ActorState(enum.Enum):
    """Where a slot is in its life; supervisors add `BACKOFF` between incarnations."""

    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    BACKOFF = "backoff"
    STOPPED = "stopped"


def _request_failure(path: str, cause: BaseException) -> ActorError:
    """What an asker sees when the actor ended while holding its request."""
    error: ActorError
    if isinstance(cause, Exception):
        error = ActorCrashedError(f"{path}: crashed handling the request: {cause!r}")
    else:
        error = ActorStoppedError(f"{path}: stopped while handling the request")
    error.__cause__ = cause
    return error


class ActorCell:
    """A named place in the tree where successive incarnations of one actor live."""

    def __init__(
        self, spec: ChildSpec, parent_path: str, siblings: Mapping[str, ActorCell] | None = None
    ) -> None:
        self.spec = spec
        self.siblings: Mapping[str, ActorCell] = siblings if siblings is not None else {}
        self.path = f"{parent_path}/{spec.name}"
        self.mailbox = Mailbox(spec.mailbox, self.path)
        self.ref = ActorRef(self)
        self.state = ActorState.STARTING
        self.incarnation = 0
        self.restarts = 0
        self.last_error: BaseException | None = None
        self.stop_requested = False
        self.slot = next(_slots)
        self.actor: Actor | None = None
        """The running incarnation's actor; None between incarnations."""
        self._scope: anyio.CancelScope | None = None
        self._exited: anyio.Event | None = None

    def statistics(self) -> ChildStatistics:
        """This slot now, with the slots below it (see `Actor.children`)."""
        return ChildStatistics(
            self.spec.name, self.slot, self.state, self.incarnation, self.restarts,
            self.last_error, self.mailbox.stats,
            self.actor.children() if self.actor is not None else (),
        )  # fmt: skip

    async def live(
        self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> BaseException | None:
        """Run one incarnation to its end; return its crash error, None for a clean end.

        `task_status.started()` fires once the actor's lifespan is entered (so a
        supervisor can start children one after another, as OTP does) or, if it never
        gets there, when the incarnation ends.
        """
        self.incarnation += 1
        self.stop_requested = False
        self.mailbox.clear_stop()
        self._exited = anyio.Event()
        self.state = ActorState.STARTING
        announced = [False]

        def started() -> None:
            if not announced[0]:
                announced[0] = True
                task_status.started()

        error: BaseException | None = None
        try:
            with anyio.CancelScope() as self._scope:
                await self._run(started)
        except Exception as exc:  # noqa: BLE001 - whatever a handler raises crashes the actor
            error = leaf_error(exc)
        finally:
            self._scope = None
            self.state = ActorState.STOPPED
            self._exited.set()
            started()
        if error is not None:
            self.last_error = error
            log.error("%s crashed (incarnation %d): %r", self.path, self.incarnation, error)
        return error

    async def _run(self, started: Any) -> None:
        actor: Actor = self.spec.factory()
        self.actor = actor
        try:
            async with anyio.create_task_group() as tasks:
                actor._attach(self, tasks)
                try:
                    async with actor.lifespan():
                        self.state = ActorState.RUNNING
                        started()
                        await self._serve(actor)
                        self.state = ActorState.STOPPING
                finally:
                    tasks.cancel_scope.cancel()
        finally:
            self.actor = None

    async def _serve(self, actor: Actor) -> None:
        get = self.mailbox.get
        receive = actor.receive
        while True:
            item = await get()
            if item is STOP:
                return
            if type(item) is Request:
                try:
                    value = await receive(item.frame)
                except Refused as refusal:
                    item.reply.fail(refusal)
                except BaseException as exc:
                    item.reply.fail(_request_failure(self.path, exc))
                    raise
                else:
                    if type(value) is ReplyLater:
                        actor.tasks.start_soon(self._reply_later, value, item.reply)
                    else:
                        item.reply.set(value)
            else:
                try:
                    value = await receive(item)
                except Refused as refusal:
                    log.warning("%s refused %s: %s", self.path, item, refusal)
                else:
                    if type(value) is ReplyLater:
                        actor.tasks.start_soon(self._reply_later, value, None)

    async def _reply_later(self, later: ReplyLater, reply: Reply | None) -> None:
        """Answer a request (None: a told frame) with the deferred work's outcome."""
        try:
            value = await later.work()
        except Refused as refusal:
            if reply is None:
                log.warning("%s refused a told frame later: %s", self.path, refusal)
            else:
                reply.fail(refusal)
        except BaseException as exc:
            if reply is not None:
                reply.fail(_request_failure(self.path, exc))
            raise
        else:
            if reply is not None:
                reply.set(value)

    async def stop(self, timeout: float | None) -> None:
        """Stop the running incarnation: request it, wait `timeout`, then kill it.

        `timeout` None waits as long as it takes (OTP's `infinity`, for supervisors);
        0 kills at once (OTP's `brutal_kill`).
        """
        if self._exited is None or self._exited.is_set():
            return
        self.stop_requested = True
        self.state = ActorState.STOPPING
        self.mailbox.request_stop()
        with anyio.move_on_after(timeout if timeout is not None else float("inf")):
            await self._exited.wait()
        if not self._exited.is_set():
            log.warning("%s did not stop within %g s: killing it", self.path, timeout)
            if self._scope is not None:
                self._scope.cancel()
            await self._exited.wait()

    def close(self) -> None:
        """The slot is done for good: later frames are dead letters, asks fail at once."""
        self.state = ActorState.STOPPED
        self.mailbox.close()
