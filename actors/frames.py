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
    """Ask a supervisor to start one more child; the reply is the child's `ActorRef`."""

    spec: ChildSpec


@dataclass
class StopChildFrame(SystemFrame):
    """Ask a supervisor to stop a child within its shutdown timeout and forget it."""

    child: str


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
