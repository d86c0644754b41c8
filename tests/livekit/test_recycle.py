"""Recycling against the real server: a worker past `[recycle] max_rooms_served` is
replaced by a fresh one that serves before the old one drains (`supervisor.process.recycle`).

`supervisor run` with `[dispatch]` and no `--workers` runs its rooms in one worker under
a parent, so the single-process run is the one tested here; `--workers N` runs the same
slots. Callers create rooms by joining them, as in `test_dispatch.py`. Waits are for
log lines and conditions, never fixed sleeps.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
from livekit import rtc

from benchmarks.process_tree import own_rss_bytes, parent_of, tree
from supervisor.dispatch.fleet import successor_identity
from supervisor.livekit_server.server import LiveKitServer
from tests.helpers.cli_process import SupervisorConfig, serving
from tests.helpers.participants import hears_echo, hears_echo_across_a_handoff, join
from tests.helpers.probes import wait_until
from tests.helpers.prometheus import get
from tests.livekit.test_dispatch import DISPATCH_BOT, REGISTERED

pytestmark = [pytest.mark.livekit, pytest.mark.parametrize("anyio_backend", ["asyncio"])]


def status_of(port: int) -> dict[str, object]:
    """The `/status` of whichever worker holds the metrics port now."""
    return json.loads(get(f"http://127.0.0.1:{port}/status")[1])


@pytest.mark.anyio
async def test_a_worker_past_its_bound_is_replaced_before_it_drains(
    tmp_path: Path, livekit_server: LiveKitServer
) -> None:
    """Two rooms served: the worker is due. Its successor registers and takes the next
    room, the configured room and the metrics port; the old worker hands its running
    call over to it (`[dispatch] handoff`, on by default) and exits 0 while that call goes
    on; no dispatched room goes without its bot, and the configured room's caller hears
    the new bot after a gap that is measured."""
    config = SupervisorConfig(
        livekit_server,
        rooms=("recycle-static",),
        bot=DISPATCH_BOT,
        dispatch={"enabled": True, "idle_timeout_seconds": 1, "drain_seconds": 120},
        recycle={"max_rooms_served": 2},
    )
    async with serving(tmp_path, config) as (run, _):
        await run.wait_for(REGISTERED, timeout=30)
        first_pid = status_of(config.metrics_port)["pid"]
        async with (
            join(livekit_server, "recycle-static", "caller") as static,
            join(livekit_server, "recycle-long", "caller") as long_call,
        ):
            bot_seen: list[tuple[str, float]] = []
            for event in ("participant_connected", "participant_disconnected"):
                static.on(event, lambda p, e=event: bot_seen.append((e, time.perf_counter())))
            await hears_echo(static)
            await hears_echo(long_call)
            for n in (1, 2):
                async with join(livekit_server, f"recycle-{n}", "caller") as room:
                    await hears_echo(room)
            await run.wait_for(r"worker 0 \(pid \d+\) is due for recycling: 2 rooms served")
            (serves,) = await run.wait_for(
                r"worker 0 \(pid (\d+)\) serves: its predecessor \(pid (\d+)\) drains", timeout=60
            )
            successor, predecessor = int(serves[1]), int(serves[2])
            assert predecessor == first_pid != successor
            await wait_until(
                lambda: _pid_answering(config.metrics_port) == successor, timeout=10
            )
            # the configured room's bot is the successor's now
            await wait_until(lambda: [e for e, _ in bot_seen] == [
                "participant_disconnected", "participant_connected"], timeout=30)
            await hears_echo(static)
            gap = bot_seen[1][1] - bot_seen[0][1]
            # the old worker hands its call to the successor and retires while it goes on
            (retired,) = await run.wait_for(
                rf"worker 0 \(pid {predecessor}\) retired: (.*)$", timeout=60
            )
            assert retired[1] == "exit code 0"
            assert run.matches(r"\[recycle-long\] job \S+: handed over to fleet-")
            await hears_echo(long_call, successor_identity("bot"))
            # the next room goes to the successor, which took the port
            async with join(livekit_server, "recycle-3", "caller") as room:
                await hears_echo(room)
                rooms = status_of(config.metrics_port)["rooms"]
                assert sorted(r["name"] for r in rooms) == [  # type: ignore[attr-defined]
                    "recycle-3", "recycle-long", "recycle-static"]
        assert await run.stop() == 0
    assert not run.matches(r"died after|did not serve within|still draining|t[ao]ke? it over")
    print(f"recycle: the configured room's bot left and came back {gap:.2f} s apart")


def _pid_answering(port: int) -> int | None:
    try:
        pid = status_of(port)["pid"]
    except OSError:
        return None
    assert isinstance(pid, int)
    return pid


@pytest.mark.anyio
async def test_a_successor_that_cannot_serve_leaves_the_old_worker_serving(
    tmp_path: Path, livekit_server: LiveKitServer
) -> None:
    """A recycle never costs capacity: while no successor serves, the old worker takes
    rooms. Here every successor fails at start (`tests.helpers.successor_fails`) and
    the old worker still serves the next room."""
    config = SupervisorConfig(
        livekit_server,
        rooms=(),
        bot="tests.helpers.successor_fails:create_bot",
        dispatch={"enabled": True, "idle_timeout_seconds": 1},
        recycle={"max_rooms_served": 1},
    )
    async with serving(tmp_path, config) as (run, _):
        await run.wait_for(REGISTERED, timeout=30)
        first_pid = status_of(config.metrics_port)["pid"]
        async with join(livekit_server, "recycle-a", "caller") as room:
            await hears_echo(room)
        await run.wait_for(r"worker 0's successor \(pid \d+\) did not serve", timeout=90)
        async with join(livekit_server, "recycle-b", "caller") as room:
            await hears_echo(room)
        # the whole log: each failed successor's traceback fills the tail
        assert run.matches(rf"\(pid {first_pid}\) is due"), run.tail()
        assert await run.stop() == 0


RETIRED = r"worker 0 \(pid \d+\) retired: exit code 0"
CHURN_LIFETIMES = 48
CHURN_AT_ONCE = 4
CHURN_BOUND = 10
WARM_LIFETIMES = 10
GROWTH_ALLOWED = 2.0
"""A worker's peak over the first worker's warm-up. The SDK's native heap grows unevenly
with overlapping rooms: in one clean-clone run the last of three workers peaked at 1.66
times the warm-up (216 MiB) where the others stayed under 1.1."""


@pytest.mark.anyio
async def test_recycling_bounds_each_worker_s_memory_over_a_churn(
    tmp_path: Path, livekit_server: LiveKitServer
) -> None:
    """48 room lifetimes, 4 at a time, each a caller who creates a room, hears the
    bot's echo and hangs up. Workers are replaced every 10 rooms served (each serves
    those and the rooms that come while its successor starts), a successor replaced in
    its turn, and each replaced worker retires;
    no worker's resident memory reaches twice the first worker's after its warm-up
    (10 rooms: the issue's goal); every job accepted is served and no offer is declined
    but by a draining worker.

    How much one worker serving them all would grow is a benchmark's figure, not a
    test's (`docs/benchmarks/runs/08-run-j.md`: 0.04-0.23 MB a lifetime for the supervisor at
    this pace). A room whose job the server never offered is not the supervisor's:
    livekit-server offers none to a worker whose reported load passes its
    `agents.target_load`, which a machine busy with other work can make happen; such
    rooms are counted, not failed."""
    bound = int(os.environ.get("CHURN_BOUND", CHURN_BOUND))  # 0: the growth unbounded
    config = SupervisorConfig(
        livekit_server,
        rooms=(),
        bot=DISPATCH_BOT,
        # a busy machine must not make the worker refuse rooms: admission is not tested here
        dispatch={"enabled": True, "idle_timeout_seconds": 1, "load_threshold": 1.0},
        recycle={"max_rooms_served": bound},
    )
    served: list[int] = []
    unserved: list[str] = []
    rss: dict[int, list[tuple[int, float]]] = {}
    async with serving(tmp_path, config) as (run, _):
        await run.wait_for(REGISTERED, timeout=30)

        async def lifetime(n: int, limit: anyio.CapacityLimiter) -> None:
            async with limit, joined_at_last(livekit_server, f"churn-{n}") as room:
                try:  # a recycle hands the running calls over
                    await hears_echo_across_a_handoff(room, timeout=30)
                except (TimeoutError, AssertionError):
                    unserved.append(f"churn-{n}")
                else:
                    served.append(n)

        async def sample() -> None:
            while True:
                for pid in workers_of(run.process.pid):  # each on its own: see workers_of
                    rss.setdefault(pid, []).append((len(served), own_rss_bytes(pid) / 2**20))
                await anyio.sleep(0.5)

        limit = anyio.CapacityLimiter(CHURN_AT_ONCE)
        async with anyio.create_task_group() as sampling:
            sampling.start_soon(sample)
            async with anyio.create_task_group() as callers:
                for n in range(int(os.environ.get("CHURN_LIFETIMES", CHURN_LIFETIMES))):
                    callers.start_soon(lifetime, n, limit)
            sampling.cancel_scope.cancel()
        # every worker sampled but the last is replaced, and retires once its rooms end
        assert len(rss) >= 3  # the first, its successor and the successor's
        try:
            await run.wait_for(RETIRED, count=len(rss) - 1, timeout=90)
        except AssertionError as err:  # whose retirement is missing: the parent's account
            lives = run.matches(r".*(supervisor: worker 0 |is due for recycling|successor).*")
            raise AssertionError(
                f"{err}\nworkers sampled: {list(rss)}; the parent's account of them:\n"
                + "\n".join(m.group(0) for m in lives)
            ) from None
        accepted = [room for room in unserved if run.matches(rf"\[{room}\] job \S+ accepted")]
        assert not accepted  # (inside the block: the log's tail is shown)
        declined = run.matches(r"\[(churn-\d+)\] job \S+ declined: (.*)")
        assert all(why == "the worker is draining" for _, why in map(re.Match.groups, declined))
        due = [m.group(1) for m in run.matches(r"is due for recycling: (.*)")]
        assert await run.stop() == 0
    first = next(iter(rss))  # the first worker sampled
    warm = next(mb for lifetimes, mb in rss[first] if lifetimes >= WARM_LIFETIMES)
    peaks = [max(mb for _, mb in samples) for samples in rss.values()]
    print(
        f"churn: {len(served)} lifetimes, {len(unserved)} rooms never offered; the first "
        f"worker {warm:.0f} MiB after {WARM_LIFETIMES}; each worker's peak (MiB): "
        + ", ".join(f"{peak:.0f}" for peak in peaks)
        + f"; due: {', '.join(due)}"
    )
    assert max(peaks) < GROWTH_ALLOWED * warm


@contextlib.asynccontextmanager
async def joined_at_last(server: LiveKitServer, room: str) -> AsyncIterator[rtc.Room]:
    """A caller in `room`, joining again if a join times out: on a busy machine the
    test's own callers are slow, which is not what is tested."""
    async with contextlib.AsyncExitStack() as stack:
        for attempt in (1, 2, 3):
            try:
                caller = await stack.enter_async_context(join(server, room, "caller", timeout=20))
                break
            except TimeoutError:
                if attempt == 3:
                    raise
        yield caller


def workers_of(parent: int) -> list[int]:
    """The worker processes of `parent` (itself when it runs no worker): its children
    that run a worker. Not their own children: the rtc SDK forks a worker to run
    `lsb_release -a` at each room's connect, and until its exec that child has the
    worker's command line and, summed with it, twice its RSS. Counted as workers, such
    forks made this test wait for retirements that could not come and, summed into a
    worker's memory, read it at twice the warm-up (262 MiB)."""
    found = []
    for pid in tree(parent)[1:]:
        with contextlib.suppress(OSError):  # gone meanwhile
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
            if b"--worker-index" in command and parent_of(pid) == parent:
                found.append(pid)
    return found or [parent]
