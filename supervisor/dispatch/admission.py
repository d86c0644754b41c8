"""Whether this process takes one more dispatched room: its capacity, then the accept hook.

The server offers a job to one worker at a time and moves on to the next when the
answer is no, so a full process must say so at once; and since a burst of offers comes
faster than rooms start (and than the CPU they will use shows), the jobs accepted and
not yet running count against the room limit and, at an estimate each, against the
load threshold, as livekit-agents counts its reserved slots.

The accept hook (`[dispatch] accept = "module:function"`, sync or async) is the user's
say over each job: it gets the `Job` and returns True, False, `Accept(...)` (with the
bot's identity, name, metadata or attributes in that room) or `Reject(reason)`. A hook
that raises, answers anything else or takes longer than `HOOK_TIMEOUT_SECONDS` rejects
that job only, with a log line; the worker goes on.
"""

from __future__ import annotations

import inspect
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import anyio
import attrs
from attrs import validators as v

from actors.room import Job
from supervisor.config import DispatchConfig

log = logging.getLogger("supervisor.dispatch")

HOOK_TIMEOUT_SECONDS = 3.0
"""The server waits 10 s for an answer to an offer before it gives up on the worker."""
LOAD_WINDOW_SECONDS = 2.5
"""The load is the CPU used over this window (livekit-agents averages 2.5 s as well)..."""
LOAD_MIN_SECONDS = 1.0
"""...once it spans this much: over a shorter span the figure is noise (the rtc SDK's
threads finishing the fleet's join in the milliseconds after a `restart` read as
several cores), and until then the load stays as it was."""
STARTING_JOB_LOAD = 0.02
"""What a job accepted and not yet running is expected to add to the load, before any
room runs to measure it by (a talking echo room costs about 4 % of one of 2 cores)."""


def _frozen_strings(value: Mapping[str, str]) -> Mapping[str, str]:
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in dict(value).items()):
        raise TypeError(f"attributes must map strings to strings, got {value!r}")
    return MappingProxyType(dict(value))


@attrs.frozen
class Accept:
    """The hook's yes, optionally with who the bot is in that room (default: `[bot] identity`).

    Checked as it is built, so a hook that builds a bad one fails there (and rejects
    its job) rather than the worker when it answers the server."""

    identity: str | None = attrs.field(default=None, validator=v.optional(v.instance_of(str)))
    name: str | None = attrs.field(default=None, validator=v.optional(v.instance_of(str)))
    metadata: str = attrs.field(default="", validator=v.instance_of(str))
    attributes: Mapping[str, str] = attrs.field(factory=dict, converter=_frozen_strings)


@attrs.frozen
class Reject:
    """The hook's no; `reason` is logged."""

    reason: str = "rejected by the accept hook"


class ProcessLoad:
    """This process's CPU time (every thread: the rtc SDK's media threads too) per wall
    second and per core it may run on, over the last `LOAD_WINDOW_SECONDS`."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        cpu: Callable[[], float] = time.process_time,
        cores: int | None = None,
    ) -> None:
        self._clock = clock
        self._cpu = cpu
        self.cores = cores or len(os.sched_getaffinity(0))
        self._samples: deque[tuple[float, float]] = deque([(clock(), cpu())])
        self.value = 0.0

    def restart(self) -> None:
        """Measure from now on, from 0. Called when the worker registers: what the
        process did before (importing, joining its configured rooms) is start-up, not
        load, and a start-up burst reported as load makes the worker full at once; the
        server offers a job only once, so a room created in that moment would get no
        bot at all."""
        self._samples = deque([(self._clock(), self._cpu())])
        self.value = 0.0

    def sample(self) -> float:
        """Take a sample; the load over the window up to now."""
        now, used = self._clock(), self._cpu()
        self._samples.append((now, used))
        while len(self._samples) > 2 and now - self._samples[1][0] >= LOAD_WINDOW_SECONDS:
            self._samples.popleft()
        then, used_then = self._samples[0]
        if now - then >= LOAD_MIN_SECONDS:
            self.value = max(0.0, (used - used_then) / (now - then) / self.cores)
        return self.value


class Admission:
    """The worker's capacity, and the user's hook."""

    def __init__(self, config: DispatchConfig, load: ProcessLoad | None = None) -> None:
        self.config = config
        self.load = load or ProcessLoad()

    def effective_load(self, running: int, starting: int) -> float:
        """The measured load plus an estimate for the `starting` jobs: the load per
        running job, or `STARTING_JOB_LOAD` while none runs."""
        per_job = self.load.value / running if running else STARTING_JOB_LOAD
        return self.load.value + starting * max(per_job, STARTING_JOB_LOAD)

    def full(self, running: int, starting: int) -> str | None:
        """Why no further job fits (None: one does)."""
        if running + starting >= self.config.max_rooms:
            return f"max_rooms ({self.config.max_rooms}) reached"
        load = self.effective_load(running, starting)
        if load >= self.config.load_threshold:
            return f"load {load:.2f} >= load_threshold {self.config.load_threshold:g}"
        return None

    async def decide(self, job: Job) -> Accept | Reject:
        """The hook's answer for `job` (accept when there is no hook)."""
        hook = self.config.accept_hook
        if hook is None:
            return Accept()
        try:
            with anyio.fail_after(HOOK_TIMEOUT_SECONDS):
                answer = await _call(hook, job)
        except TimeoutError:
            log.error(
                "[%s] job %s rejected: the accept hook %s took longer than %g s",
                job.key,
                job.id,
                self.config.accept,
                HOOK_TIMEOUT_SECONDS,
            )
            return Reject("the accept hook timed out")
        except Exception as err:  # noqa: BLE001 - the user's code: one job's problem
            log.error(
                "[%s] job %s rejected: the accept hook %s raised %r",
                job.key,
                job.id,
                self.config.accept,
                err,
            )
            return Reject("the accept hook raised")
        if answer is True:
            return Accept()
        if answer is False:
            return Reject()
        if isinstance(answer, Accept | Reject):
            return answer
        log.error(
            "[%s] job %s rejected: the accept hook %s returned %r, expected True, "
            "False, Accept or Reject",
            job.key,
            job.id,
            self.config.accept,
            answer,
        )
        return Reject("the accept hook gave no answer")


async def _call(hook: Callable[[Job], Any], job: Job) -> Any:
    """A coroutine function is awaited on the loop; a plain function runs in a thread, so
    one that blocks or hangs holds a thread, not every room's event loop."""
    if inspect.iscoroutinefunction(hook):
        return await hook(job)
    answer = await anyio.to_thread.run_sync(hook, job, abandon_on_cancel=True)
    return await answer if inspect.isawaitable(answer) else answer
