"""The loop watchdog: a bot that blocks the event loop is named, counted and bounded.

`supervisor run` as a subprocess with `tests/helpers/blocking_bot.py`, which calls
`time.sleep` on the loop at the first audio it hears in one room. Alone, the process
logs that room and the blocking line, counts the stall, and answers `/healthz` 503
(from a thread: the loop cannot answer) while it lasts and 200 after. With
`--workers 2` the other worker's room keeps echoing throughout, and the parent kills
the stalled worker past `restart_after_seconds` and starts a new one.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import anyio
import attrs
import pytest

from supervisor.config import load_config
from supervisor.livekit_server.server import LiveKitServer, free_port
from supervisor.livekit_server.source import for_token
from supervisor.observability.watchdog import STACK_FRAMES
from tests.helpers import blocking_bot
from tests.helpers.cli_process import SupervisorConfig, SupervisorProcess, serving, write_config
from tests.helpers.echo import talking
from tests.helpers.participants import SILENCE_RMS, join, publishing_tone, subscribed_audio_track
from tests.helpers.probes import wait_until
from tests.helpers.prometheus import Samples, get
from tests.helpers.workers import (
    bot_sid_changed,
    config_text,
    echo_level,
    free_port_pair,
    rooms_by_shard,
    supervisor_run,
    worker_pids,
)

pytestmark = pytest.mark.anyio

BLOCKING_BOT = "tests.helpers.blocking_bot:create_bot"
STALL_SECONDS = 0.5
"""The test configs' `watchdog.stall_seconds`: small, so the tests stay short."""
OTHER_WORKER_SILENCE_MS = 1000
"""The longest silence allowed in the other worker's room while one worker is stalled
for 3 s: a third of the stall (which the stalled worker's rooms hear all of), over the
gaps other sessions on this machine's two shared cores cause (up to 560 ms measured,
in the SIGHUP test too, with load averages of 8-15)."""


def blocking_line() -> int:
    """The line of `tests/helpers/blocking_bot.py` that blocks the loop."""
    source = Path(blocking_bot.__file__).read_text().splitlines()
    return next(i for i, line in enumerate(source, 1) if line.strip() == blocking_bot.BLOCKING_CALL)


def blocking_env(tmp_path: Path, room: str, seconds: float) -> dict[str, str]:
    return {
        blocking_bot.ROOM_ENV: room,
        blocking_bot.SECONDS_ENV: str(seconds),
        blocking_bot.ONCE_FILE_ENV: str(tmp_path / "blocked-once"),
    }


def logged_at(line: str) -> float:
    """The wall-clock time a log line carries (the supervisor's `asctime`, in ms)."""
    stamp = re.search(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})", line)
    assert stamp, line
    return datetime.strptime(stamp[1], "%Y-%m-%d %H:%M:%S,%f").timestamp()


@attrs.define
class HealthLog:
    """Every /healthz answer a poller got: (wall-clock time, status)."""

    answers: list[tuple[float, int]] = attrs.field(factory=list)

    def first(self, status: int, after: float = 0.0) -> float | None:
        return next((t for t, s in self.answers if s == status and t >= after), None)


@contextlib.contextmanager
def polling_health(url: str, every: float = 0.05) -> Iterator[HealthLog]:
    """Poll `url` from a thread for the block's duration (urllib blocks: not on the loop)."""
    health, stop = HealthLog(), threading.Event()

    def poll() -> None:
        while not stop.wait(every):
            with contextlib.suppress(OSError):
                status, _ = get(url, timeout=2)
                health.answers.append((time.time(), status))

    thread = threading.Thread(target=poll, name="health-poller")
    thread.start()
    try:
        yield health
    finally:
        stop.set()
        thread.join()


async def fetch(url: str) -> tuple[int, str]:
    return await anyio.to_thread.run_sync(get, url)


async def test_a_blocking_bot_is_named_counted_and_fails_healthz_while_it_lasts(
    livekit_server: LiveKitServer, tmp_path: Path
) -> None:
    room = "stall-alone"
    config = SupervisorConfig(
        livekit_server, (room,), BLOCKING_BOT, watchdog={"stall_seconds": STALL_SECONDS}
    )
    base = config.metrics_url
    block_seconds = 4.0
    env = blocking_env(tmp_path, room, block_seconds)
    async with serving(tmp_path, config, env=env) as (run, _):
        before = Samples((await fetch(base + "/metrics"))[1])
        status_before = json.loads((await fetch(base + "/status"))[1])
        assert before["lksup_event_loop_stalls_total"] == 0
        assert before["lksup_room_event_loop_stalls_total", {"room": room}] == 0
        with polling_health(base + "/healthz") as health:
            async with (
                join(livekit_server, room, "alice", timeout=30) as client,
                publishing_tone(client),
            ):
                blocked = await run.wait_for(rf"\[{room}\] blocking the event loop")
                caught = await run.wait_for(
                    rf"\[{room}\] event loop stalled for [\d.]+ s at (.+):(\d+) in process_frame: "
                )
                # while it lasts (seconds more): the answers that need no loop
                during = Samples((await fetch(base + "/metrics"))[1])
                ready = await fetch(base + "/readyz")
                healthz = await fetch(base + "/healthz")
                status = await fetch(base + "/status")
                ended = await run.wait_for(r"the event loop runs again after a ([\d.]+) s stall")
                await wait_until(lambda: health.first(200, after=logged_at(ended[0].string)), 10)
        after = Samples((await fetch(base + "/metrics"))[1])

    assert Path(caught[0][1]) == Path(blocking_bot.__file__)
    assert int(caught[0][2]) == blocking_line()
    stack = run.lines[run.lines.index(caught[0].string) + 1 :]
    assert any(blocking_bot.BLOCKING_CALL in line for line in stack[: 2 * STACK_FRAMES]), "no stack"
    assert during["lksup_event_loop_stalled"] == 1
    assert ready[0] == 503, ready
    assert "event loop stalled" in ready[1], ready
    assert healthz[0] == 503, healthz
    assert f"room {room}" in healthz[1], healthz
    assert status[0] == 200, status
    stalled = json.loads(status[1])  # what was read before the stall, marked stale
    assert (stalled["healthy"], stalled["stale"], stalled["ready"]) == (False, True, False)
    assert f"room {room}" in stalled["health"], stalled
    assert stalled["rooms"] == status_before["rooms"]
    assert stalled["read_at"] == status_before["read_at"]
    assert after["lksup_event_loop_stalls_total"] == 1
    assert after["lksup_room_event_loop_stalls_total", {"room": room}] == 1
    assert after["lksup_event_loop_stalled"] == 0

    began, resumed = logged_at(blocked[0].string), logged_at(ended[0].string)
    assert health.first(200) is not None, "healthy before"
    assert health.first(200) < began, "healthy before"
    failing = health.first(503, after=began)
    assert failing is not None, "/healthz never answered 503 in the stall"
    assert failing < resumed, "/healthz never answered 503 in the stall"
    print(
        f"\na {block_seconds:g} s block with stall_seconds = {STALL_SECONDS:g}: /healthz 503 "
        f"{failing - began:.2f} s after it began, stall logged as {ended[0][1]} s, "
        f"/healthz 200 again {health.first(200, after=resumed) - resumed:.2f} s after it ended"
    )


def worker_restarted(run: SupervisorProcess, index: int, old: int) -> bool:
    return any(pid != old for pid in worker_pids(run).get(index, []))


async def test_a_stalled_worker_is_restarted_while_the_other_keeps_echoing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (stalled_room,), (other_room,) = rooms_by_shard("stall-w", count=2, per_shard=1)
    restart_after, block_seconds = 3.0, 10.0
    text = config_text(free_port(), [stalled_room, other_room], free_port_pair(), bot=BLOCKING_BOT)
    text += (
        f"[watchdog]\nstall_seconds = {STALL_SECONDS}\nrestart_after_seconds = {restart_after}\n"
    )
    path = write_config(tmp_path, text)
    for name, value in blocking_env(tmp_path, stalled_room, block_seconds).items():
        monkeypatch.setenv(name, value)  # the workers inherit the parent's environment

    async with supervisor_run(path, workers=2) as run:
        await run.wait_for(r"\[worker \d\] .* ready: 1 room\(s\)", count=2, timeout=90)
        pids = worker_pids(run)
        server = for_token(load_config(path).livekit)
        async with (
            talking(server, other_room, 440.0) as other,
            join(server, stalled_room, "alice", timeout=30) as client,
        ):
            await other.echo.heard(0.5)
            other_bot = other.room.remote_participants["bot"].sid
            await subscribed_audio_track(client, "bot", timeout=30)
            old_bot = client.remote_participants["bot"].sid
            async with publishing_tone(client):
                blocked = await run.wait_for(
                    rf"\[worker 0\] .* \[{stalled_room}\] blocking the event loop"
                )
                caught = await run.wait_for(
                    rf"\[worker 0\] .* \[{stalled_room}\] "
                    rf"event loop stalled for [\d.]+ s at (.+):(\d+) "
                )
                killed = await run.wait_for(
                    rf"supervisor: worker 0 \(pid {pids[0][0]}\) stalled for ([\d.]+) s "
                    rf"\(watchdog.restart_after_seconds = 3\): killing it; event loop stalled"
                )
                # from before the stall to its end
                stall_silence_ms = other.echo.longest_silence_ms()
                await run.wait_for(
                    rf"worker 0 \(pid {pids[0][0]}\) died after .* \(killed by SIGKILL\)"
                )
                await wait_until(lambda: worker_restarted(run, 0, pids[0][0]), timeout=30)
                await wait_until(bot_sid_changed(client, old_bot), timeout=60)
                level = await echo_level(client)  # the new worker's bot echoes the room again
                silence_ms = other.echo.longest_silence_ms()
                recorded_ms = other.echo.since_onset_ms()
            other_bot_rejoined = other.room.remote_participants["bot"].sid != other_bot

    assert int(caught[0][2]) == blocking_line()
    assert len(worker_pids(run)[1]) == 1, "the other worker was restarted too"
    assert level > SILENCE_RMS, f"{stalled_room} is silent after the restart (rms {level:.0f})"
    assert not other_bot_rejoined, f"{other_room}'s bot (worker 1) left and rejoined"
    assert stall_silence_ms <= OTHER_WORKER_SILENCE_MS, (
        f"{other_room} (worker 1) went silent for {stall_silence_ms} ms"
    )
    began = logged_at(blocked[0].string)
    print(
        f"\n--workers 2, a {block_seconds:g} s block, restart_after_seconds = {restart_after:g}: "
        f"worker 0 killed {logged_at(killed[0].string) - began:.2f} s after the block began "
        f"(new pid {worker_pids(run)[0][-1]}, was {pids[0][0]}); {other_room} on worker 1 "
        f"echoed for {recorded_ms} ms, longest silence {stall_silence_ms} ms until the kill, "
        f"{silence_ms} ms until worker 0's room echoed again (the new worker's start shares "
        "the cores)"
    )
