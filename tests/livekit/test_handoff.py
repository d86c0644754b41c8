"""A draining worker hands its rooms to the fleet (`[dispatch] handoff`): no call cut.

Two `supervisor run` processes with `[dispatch]` on one server, both in the agent's
fleet; callers talk to their bots (`tests.helpers.counting_bot`: the echo bot, counting
the caller's messages); SIGTERM the worker serving them. Its rooms' bots come back from
the other worker while the callers stay, counting on from where the old bots were, and
the drained worker exits long before its `drain_seconds`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import statistics
from pathlib import Path

import anyio
import attrs
import pytest
from livekit import rtc

from supervisor.livekit_server import LiveKitServer
from tests.helpers.cli_process import SupervisorConfig
from tests.helpers.participants import (
    agents_listed,
    bot_track,
    data_inbox,
    first_tone_at,
    hears_echo,
    join,
    publishing_tone,
    subscribed_audio_track,
    tone_windows,
)
from tests.helpers.probes import until
from tests.helpers.prometheus import Samples, get
from tests.livekit.test_dispatch import dispatch_config, dispatch_worker

DRAIN_SECONDS = 120
"""Far longer than a handoff takes: the drained worker exiting well before says the
calls were handed over, not waited for."""
WINDOW = 0.05
"""The audio a tone is judged on, when timing the gap: it biases each gap by up to this."""


async def last_tone_at(track: rtc.Track, frequency: float, replaced: anyio.Event) -> float:
    """The loop time of the end of the last `WINDOW` of `track` that carried `frequency`,
    read until `replaced` is set (the track's bot replaced)."""
    last = 0.0

    async def read() -> None:
        nonlocal last
        async with contextlib.aclosing(tone_windows(track, frequency, WINDOW)) as windows:
            async for at, tone in windows:
                last = at if tone else last

    async with anyio.create_task_group() as reading:
        reading.start_soon(read)
        await replaced.wait()
        reading.cancel_scope.cancel()
    return last


COUNTING_BOT = "tests.helpers.counting_bot:create_bot"


async def count(room: rtc.Room, inbox: asyncio.Queue[rtc.DataPacket]) -> int:
    """Send the bot a message; the count in its answer."""
    await room.local_participant.publish_data(json.dumps({"hello": True}), reliable=True)
    with anyio.fail_after(20):
        while True:
            packet = await inbox.get()
            if packet.participant is not None and packet.participant.identity == "bot":
                return int(json.loads(packet.data)["count"])


@pytest.mark.anyio
async def test_a_draining_worker_hands_every_call_to_the_fleet_and_exits_early(
    tmp_path: Path, livekit_server: LiveKitServer
) -> None:
    """Three callers talk to worker a's bots (b starts once they are served, so a took
    every room), each sending two messages; a is sent SIGTERM with `drain_seconds` at
    120: b takes each job over, removing a's bot and joining under its identity with the
    state it offered; every caller hears the echo again from b's bot, one bot per room,
    whose next answer counts 3, and a exits 0 within 30 s. Printed: the time each room
    is without a bot's track (b's `lksup_fleet_handoff_seconds`) and the caller's gap
    from the last tone it decoded of a's track to the first of b's, which is shorter:
    the caller's decoder conceals the end of a's track for a while."""
    names = [f"handoff-{i}" for i in range(3)]

    def config() -> SupervisorConfig:
        dispatch = dispatch_config(
            livekit_server, idle_timeout_seconds=30, drain_seconds=DRAIN_SECONDS, handoff=True
        )
        return attrs.evolve(dispatch, bot=COUNTING_BOT)

    async with (
        dispatch_worker(tmp_path, livekit_server, "a", config=config()) as a,
        contextlib.AsyncExitStack() as stack,
    ):
        callers: dict[str, rtc.Room] = {}
        inboxes: dict[str, asyncio.Queue[rtc.DataPacket]] = {}
        for name in names:
            room = await stack.enter_async_context(join(livekit_server, name, "caller"))
            inboxes[name] = data_inbox(room)
            await stack.enter_async_context(publishing_tone(room, 440.0))
            callers[name] = room
        tracks = {
            name: await subscribed_audio_track(room, "bot", timeout=30)
            for name, room in callers.items()
        }
        for name, room in callers.items():
            assert [await count(room, inboxes[name]) for _ in range(2)] == [1, 2]
        old = {name: bot_track(room) for name, room in callers.items()}
        async with dispatch_worker(tmp_path, livekit_server, "b", config=config()) as b:
            await until(
                lambda: [run.status()["worker"]["fleet"]["members"] for run in (a, b)] == [2, 2],
                what="a and b in one fleet",
            )
            gaps: dict[str, float] = {}

            async def gap(name: str) -> None:
                room, replaced = callers[name], anyio.Event()
                last = 0.0

                async def old_bot() -> None:
                    nonlocal last
                    last = await last_tone_at(tracks[name], 440.0, replaced)

                async with anyio.create_task_group() as listening:
                    listening.start_soon(old_bot)
                    await until(lambda: bot_track(room) not in (old[name], None), timeout=60)
                    track = await subscribed_audio_track(room, "bot")
                    replaced.set()
                first = await first_tone_at(track, 440.0, window=WINDOW)
                gaps[name] = first - last

            signalled = anyio.current_time()
            a.send_signal(signal.SIGTERM)
            async with anyio.create_task_group() as handoffs:
                for name in names:
                    handoffs.start_soon(gap, name)
            assert await a.wait(timeout=30) == 0, a.tail()
            exited = anyio.current_time() - signalled
            assert len(a.matches(r"\] job \S+: handed over to fleet-")) == len(names), a.tail()
            taken = r"\] taking job \S+ handed over by fleet-"
            assert len(b.matches(taken)) == len(names), b.tail()
            for name, room in callers.items():
                assert await agents_listed(livekit_server, name) == ["bot"], name
                await hears_echo(room)
                assert await count(room, inboxes[name]) == 3, name  # the count came along
            samples = Samples(get(f"{b.metrics_url}/metrics")[1])
            assert samples["lksup_fleet_handoffs_total", {"direction": "taken"}] == len(names)
            assert samples["lksup_fleet_handoff_seconds_count"] == len(names)
            without = samples["lksup_fleet_handoff_seconds_sum"] / len(names)
            ordered = sorted(gaps.values())
            print(f"\ncaller's decoded gap over {len(ordered)} handoffs: p50 "
                  f"{statistics.median(ordered) * 1000:.0f} ms, max {ordered[-1] * 1000:.0f} ms; "
                  f"a's SIGTERM to its exit {exited:.1f} s; rooms without a bot's track "
                  f"{without * 1000:.0f} ms on average (b's lksup_fleet_handoff_seconds)")
