"""Test actors and frames for the kernel tests: a probe that records what it sees.

The journal lives outside the actors so it survives their restarts, which is what the
supervision tests need to tell incarnations apart.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import anyio
import sniffio
from pipecat.frames.frames import DataFrame, SystemFrame

from actors import Actor, ChildSpec, MailboxSpec, Restart

T = TypeVar("T")


@dataclass
class Note(DataFrame):
    """Content: recorded, answered with its tag."""

    tag: Any = None


@dataclass
class Urgent(SystemFrame):
    """Control: recorded, answered with its tag."""

    tag: Any = None


@dataclass
class Crash(DataFrame):
    """Makes the probe raise."""

    reason: str = "boom"


@dataclass
class Exit(DataFrame):
    """Makes the probe stop itself: a normal exit."""


@dataclass
class Hold(DataFrame):
    """Parks the probe until `release` is set, so a test can fill its mailbox."""

    held: anyio.Event = field(default_factory=anyio.Event)
    release: anyio.Event = field(default_factory=anyio.Event)


@dataclass
class Sleep(DataFrame):
    """Makes the probe sleep while handling it."""

    seconds: float = 0.0


class Journal:
    """What every probe saw and did, by name, across incarnations."""

    def __init__(self) -> None:
        self.frames: dict[str, list[Any]] = defaultdict(list)
        self.events: list[tuple[str, str]] = []

    def starts(self, name: str) -> int:
        return self.events.count(("start", name))


class Probe(Actor):
    """Records frames and lifecycle; misbehaves on request."""

    def __init__(self, journal: Journal, name: str, *, stop_delay: float = 0.0) -> None:
        self.journal = journal
        self.name = name
        self.stop_delay = stop_delay

    @asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        self.journal.events.append(("start", self.name))
        try:
            yield
        finally:
            self.journal.events.append(("stop", self.name))
            if self.stop_delay:
                await anyio.sleep(self.stop_delay)
                self.journal.events.append(("stopped", self.name))

    async def receive(self, frame: Any) -> Any:
        if isinstance(frame, (Note, Urgent)):
            self.journal.frames[self.name].append(frame.tag)
            return frame.tag
        if isinstance(frame, Crash):
            raise RuntimeError(frame.reason)
        if isinstance(frame, Exit):
            self.stop()
            return None
        if isinstance(frame, Hold):
            frame.held.set()
            await frame.release.wait()
            return None
        if isinstance(frame, Sleep):
            await anyio.sleep(frame.seconds)
            return frame.seconds
        return await super().receive(frame)


def probe_spec(
    journal: Journal,
    name: str,
    *,
    restart: Restart = Restart.PERMANENT,
    shutdown_timeout: float | None = 5.0,
    stop_delay: float = 0.0,
    mailbox: MailboxSpec | None = None,
) -> ChildSpec:
    return ChildSpec(
        name,
        lambda: Probe(journal, name, stop_delay=stop_delay),
        restart=restart,
        shutdown_timeout=shutdown_timeout,
        mailbox=mailbox or MailboxSpec(),
    )


def running_tasks() -> int:
    """How many tasks the current event loop runs, on either backend."""
    if sniffio.current_async_library() == "trio":
        import trio

        def count(task: Any) -> int:
            return 1 + sum(count(t) for n in task.child_nurseries for t in n.child_tasks)

        return count(trio.lowlevel.current_root_task())
    import asyncio

    return len(asyncio.all_tasks())


async def eventually(
    probe: Callable[[], T],
    check: Callable[[T], object] = bool,
    what: str | Callable[[], str] = "",
    timeout: float = 30.0,
    every: float = 0.1,
) -> T:
    """`probe()`'s first value `check` accepts (a true one, unless told), looked at every
    `every` s: a state read over HTTP, from Prometheus or off a room's view, changing in
    its own time. Fails after `timeout` s saying what was awaited (`what`, or a callable
    that says it then) and the last value seen."""
    last: T | None = None
    with anyio.move_on_after(timeout):
        while not check(last := probe()):
            await anyio.sleep(every)
        return last
    awaited = what() if callable(what) else what or probe
    raise AssertionError(f"not within {timeout:g} s: {awaited} (last seen: {last!r})")


async def wait_until(predicate: Callable[[], object], timeout: float = 5.0) -> None:
    """Until the kernel reaches a state asynchronously (a restart, a stop), which takes
    it a millisecond, not a tenth of a second: `eventually`, looked at more often."""
    await eventually(predicate, timeout=timeout, every=0.001)
