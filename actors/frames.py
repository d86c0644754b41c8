"""The kernel's own control frames.

They subclass pipecat's `SystemFrame`, so they travel in the system lane (never
dropped, served first, order kept) and a pipecat processor that sees one knows it is
control, not content.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipecat.frames.frames import SystemFrame

from actors.specs import ChildSpec


@dataclass
class StartChildFrame(SystemFrame):
    """Ask a supervisor to start one more child; the reply is the child's `ActorRef`.

    With `wait` (OTP's `start_child`) the reply comes once the child's lifespan is
    entered, and the supervisor serves nothing else meanwhile. Without it the reply
    comes at once and the child starts beside the supervisor's other work, up to its
    `concurrency` at a time: how many rooms offered together join together (the
    caller watches the ref's state to learn when it runs)."""

    spec: ChildSpec
    wait: bool = True


@dataclass
class StopChildFrame(SystemFrame):
    """Ask a supervisor to stop a child within its shutdown timeout and forget it.

    The reply comes once the child is stopped. With `wait` (OTP's `terminate_child`)
    the supervisor serves nothing else meanwhile; without it the child stops beside
    the supervisor's other work, up to its `concurrency` at a time, and its name stays
    taken until it is gone: how many rooms that end together leave together, and a
    room leaving does not hold up another's start."""

    child: str
    wait: bool = True


@dataclass
class WhichChildrenFrame(SystemFrame):
    """Ask a supervisor for a `ChildInfo` of each child, in start order."""


@dataclass
class ChildExitedFrame(SystemFrame):
    """A child's incarnation ended: the supervisor decides what happens next."""

    child: str
    incarnation: int
    error: BaseException | None


@dataclass
class RestartChildrenFrame(SystemFrame):
    """A backoff elapsed: restart these children, unless a newer decision replaced it."""

    generations: dict[str, int]
