"""A draining worker hands its rooms to the fleet (`[dispatch] handoff`): no call cut.

Two `supervisor run` processes with `[dispatch]` on one server, both in the agent's
fleet; callers talk to their bots (`tests.helpers.counting_bot`: the echo bot, counting
the caller's messages); SIGTERM the worker serving them. The other worker's bots join
beside the old ones, held back until each old one is gone, and count on from where the
old bots were; the callers hear one bot at a time; the drained worker exits long before
its `drain_seconds`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import statistics
from pathlib import Path

import anyio
import attrs
import pytest
from livekit import rtc

from supervisor.fleet import successor_identity
from supervisor.livekit_server import LiveKitServer
from tests.helpers.cli_process import SupervisorConfig
from tests.helpers.participants import (
    agents_listed,
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
SUCCESSOR = successor_identity("bot")


async def last_tone_at(track: rtc.Track, frequency: float, replaced: anyio.Event) -> float:
    """The loop time of the end of the last `WINDOW` of `track` that carried `frequency`,
    read until `replaced` is set (the track's bot gone)."""
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
AGENT = rtc.ParticipantKind.PARTICIPANT_KIND_AGENT


async def count(room: rtc.Room, inbox: asyncio.Queue[rtc.DataPacket]) -> int:
    """Send the bot a message; the count in its answer."""
    await room.local_participant.publish_data(json.dumps({"hello": True}), reliable=True)
    with anyio.fail_after(20):
        while True:
            packet = await inbox.get()
            if packet.participant is not None and packet.participant.kind == AGENT:
                return int(json.loads(packet.data)["count"])


@pytest.mark.anyio
async def test_a_draining_worker_hands_every_call_to_the_fleet_and_exits_early(
    tmp_path: Path, livekit_server: LiveKitServer
) -> None:
    """Three callers (`HANDOFF_ROOMS`) talk to worker a's bots (b starts once they are
    served, so a took every room), each sending two messages; a is sent SIGTERM with
    `drain_seconds` at 120: b takes each job over with the state a's bot offered, its
    bot joining as `bot~2` beside a's and removing it once published; every caller hears
    the echo from b's bot, never both bots at once (the last tone of a's track ends
    before the first of b's begins), one bot per room, whose next answer counts 3, and a
    exits 0 within 30 s. Printed: the caller's gap from the last tone of a's track to
    the first of b's, and the time b's bots took from their join to their track
    published (`lksup_fleet_handoff_seconds`), which the caller does not hear."""
    names = [f"handoff-{i}" for i in range(int(os.environ.get("HANDOFF_ROOMS", 3)))]

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
        async with dispatch_worker(tmp_path, livekit_server, "b", config=config()) as b:
            await until(
                lambda: [run.status()["worker"]["fleet"]["members"] for run in (a, b)] == [2, 2],
                what="a and b in one fleet",
            )
            gaps: dict[str, float] = {}

            async def gap(name: str) -> None:
                """From the last tone of a's bot to the first of b's, as the caller
                hears them (negative: both at once)."""
                room, gone = callers[name], anyio.Event()
                room.on("participant_disconnected",
                        lambda p: gone.set() if p.identity == "bot" else None)  # fmt: skip
                last = first = 0.0

                async def old_bot() -> None:
                    nonlocal last
                    last = await last_tone_at(tracks[name], 440.0, gone)

                async def new_bot() -> None:
                    nonlocal first
                    track = await subscribed_audio_track(room, SUCCESSOR, timeout=60)
                    first = await first_tone_at(track, 440.0, window=WINDOW, timeout=60)

                async with anyio.create_task_group() as listening:
                    listening.start_soon(old_bot)
                    listening.start_soon(new_bot)
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
                assert await agents_listed(livekit_server, name) == [SUCCESSOR], name
                await hears_echo(room, SUCCESSOR)
                assert await count(room, inboxes[name]) == 3, name  # the count came along
            samples = Samples(get(f"{b.metrics_url}/metrics")[1])
            assert samples["lksup_fleet_handoffs_total", {"direction": "taken"}] == len(names)
            assert samples["lksup_fleet_handoff_seconds_count"] == len(names)
            publishing = samples["lksup_fleet_handoff_seconds_sum"] / len(names)
            ordered = sorted(gaps.values())
            print(f"\ncaller's gap over {len(ordered)} handoffs: p50 "
                  f"{statistics.median(ordered) * 1000:.0f} ms, least {ordered[0] * 1000:.0f} "
                  f"ms, most {ordered[-1] * 1000:.0f} ms; a's SIGTERM to its exit "
                  f"{exited:.1f} s; b's bots joined to published {publishing * 1000:.0f} ms "
                  f"on average (lksup_fleet_handoff_seconds); gaps (ms): "
                  + " ".join(f"{g * 1000:.0f}" for g in ordered))
            # one bot heard at a time: a's last tone ends before b's first begins (each
            # time is a window's end, so a window's length of tone can be shared)
            assert ordered[0] > -WINDOW, gaps
