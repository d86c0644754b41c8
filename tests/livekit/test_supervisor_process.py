"""`supervisor run CONFIG` as a user runs it: a subprocess against the real server.

Simulated participants (the rtc SDK, in this process) join the configured rooms and
judge the bot by what they hear: each publishes a tone of its own frequency and must
hear that tone back, so a room echoing another room's audio would show. The process
is driven only through its config file, its environment and signals, and read
only through its log and what the participants see.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import anyio
import attrs
import numpy as np
import pytest
from livekit import api, rtc

from supervisor.livekit_server.server import LiveKitServer
from supervisor.process.rtc_shutdown import end_room
from tests.helpers.cli_process import (
    REPO_ROOT,
    SupervisorConfig,
    serving,
    supervisor_command,
    write_config,
)
from tests.helpers.echo import BOT, FRAME_MS, ONSET_RMS, talking
from tests.helpers.goodbye_bot import GOODBYE_SECONDS_ENV
from tests.helpers.participants import (
    SAMPLE_RATE,
    ServerCredentials,
    join,
    rms,
    subscribed_audio_track,
)
from tests.helpers.prometheus import get, scrape

pytestmark = pytest.mark.anyio

SLOW_GOODBYE_BOT = "tests.helpers.goodbye_bot:slow_goodbye_bot"
AT_ONCE = 2
"""Rooms whose echo is checked at the same time."""


def tone_for(index: int) -> float:
    """A different tone per room, so a room hearing another room's audio fails."""
    return 300.0 + 25.0 * index


WINDOWS = 4
"""0.5 s windows of echo a room may take to show its tone (`echo_problem`)."""


async def echo_problem(
    server: ServerCredentials, room: str, frequency: float, turns: asyncio.Semaphore
) -> str | None:
    """What is wrong with `room`'s echo of a participant's tone, or None if it is right.

    Judged on 0.5 s of echo, or on the next 0.5 s while that was mostly silence, up to
    `WINDOWS` of them: on a busy two-core machine one window now and then comes out
    with a stall in it (the receiver's loss concealment fading out and back), which is
    not what "each room echoes its own participant" judges; an echo that never comes
    through, or one of another room's tone, still fails."""
    problem = None
    try:
        async with turns, talking(server, room, frequency) as talker:
            for window in range(1, WINDOWS + 1):
                heard = (await talker.echo.heard(0.5 * window))[-round(500 / FRAME_MS) :]
                problem = window_problem(heard, frequency)
                if problem is None or not problem.startswith("mostly silence"):
                    return problem
    except Exception as error:  # noqa: BLE001 - every room's problem goes in one report
        return f"{type(error).__name__}: {error}"
    return problem


def window_problem(heard: list[np.ndarray], frequency: float) -> str | None:
    loud = [frame for frame in heard if rms(frame) > ONSET_RMS]
    if len(loud) < len(heard) / 2:
        return f"mostly silence: frame levels {[round(rms(frame)) for frame in heard]}"
    pitch = float(np.median([frame_pitch(frame) for frame in loud]))
    if abs(pitch - frequency) > 10.0:
        return f"heard {pitch:.0f} Hz, sent {frequency:.0f} Hz"
    return None


def frame_pitch(frame: np.ndarray) -> float:
    """The strongest frequency of one frame, to 1 Hz (zero-padded to a second).

    Judged frame by frame and then by the median, a dropped frame or the receiver's
    loss concealment (which a busy two-core machine causes now and then) cannot move
    the result, as it moves the spectrum of a whole window.
    """
    windowed = frame.astype(np.float64) * np.hanning(frame.size)
    spectrum = np.abs(np.fft.rfft(windowed, n=SAMPLE_RATE))
    spectrum[0] = 0.0
    return float(np.argmax(spectrum))


async def assert_rooms_echo(server: ServerCredentials, rooms: Sequence[str]) -> None:
    """A participant in each room hears its own tone back from the bot.

    The rooms take turns, `AT_ONCE` at a time. Measured here, twenty idle rooms
    already cost the supervisor about half a core (the rtc SDK's per-room media) and
    each echoing room some 10 % more, plus as much again in this process: twenty at
    once on two shared cores would only test how a starved event loop drops audio.
    """
    turns = asyncio.Semaphore(AT_ONCE)
    problems = await asyncio.gather(
        *(echo_problem(server, room, tone_for(i), turns) for i, room in enumerate(rooms))
    )
    wrong = {
        room: problem
        for room, problem in zip(rooms, problems, strict=True)
        if problem is not None
    }
    assert not wrong, f"rooms that did not echo their own participant: {wrong}"


def bot_departure(room: rtc.Room) -> asyncio.Future[int]:
    """Resolves with the bot's disconnect reason once it leaves `room`."""
    left: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    def on_disconnected(participant: rtc.RemoteParticipant) -> None:
        if participant.identity == BOT and not left.done():
            left.set_result(participant.disconnect_reason)

    room.on("participant_disconnected", on_disconnected)
    return left


async def assert_bot_left(departures: Mapping[str, asyncio.Future[int]], timeout: float) -> None:
    """The bot left each room itself (a crash would show as a timeout, much later)."""
    with anyio.move_on_after(timeout):
        await asyncio.gather(*departures.values())
    reasons = {
        room: rtc.DisconnectReason.Name(left.result()) if left.done() else "still there"
        for room, left in departures.items()
    }
    assert set(reasons.values()) == {"CLIENT_INITIATED"}, reasons


# --- the tests ------------------------------------------------------------------------


async def test_twenty_rooms_from_a_config_all_join_and_echo(
    livekit_server: LiveKitServer, tmp_path: Path
) -> None:
    rooms = tuple(f"many-{i:02d}" for i in range(20))
    async with serving(tmp_path, SupervisorConfig(livekit_server, rooms)) as (run, _):
        ready_after = time.perf_counter() - run.started_at
        joined = {m[1] for m in run.matches(r"\[(many-\d\d)\] joined as bot")}
        assert joined == set(rooms)
        assert livekit_server.api_secret not in "\n".join(run.lines)
        started = time.perf_counter()
        await assert_rooms_echo(livekit_server, rooms)
        echo_seconds = time.perf_counter() - started
    print(
        f"\n20 rooms: all joined {ready_after:.2f} s after the process started; "
        f"20 participants heard their echo within {echo_seconds:.2f} s"
    )


DRAIN_MARGIN_SECONDS = 3.0
"""What the process may take past `shutdown_timeout_seconds`: its own start and exit."""


@pytest.mark.parametrize(
    ("goodbye", "timeout", "finished"),
    [(1.5, 6.0, True), (2.5, 1.0, False)],
    ids=["goodbyes-finish", "timeout-cuts-goodbyes"],
)
async def test_sigterm_drains_every_room_and_exits_0_within_the_timeout(
    livekit_server: LiveKitServer, tmp_path: Path, goodbye: float, timeout: float, finished: bool
) -> None:
    rooms = tuple(f"drain-{timeout:g}-{name}" for name in "abc")
    config = SupervisorConfig(
        livekit_server, rooms, SLOW_GOODBYE_BOT, {"shutdown_timeout_seconds": timeout}
    )
    async with (
        serving(tmp_path, config, env={GOODBYE_SECONDS_ENV: str(goodbye)}) as (run, _),
        contextlib.AsyncExitStack() as participants,
    ):
        departures = {}
        for room in rooms:
            client = await participants.enter_async_context(join(livekit_server, room, "alice"))
            await subscribed_audio_track(client, BOT, timeout=30)
            departures[room] = bot_departure(client)

        signalled = time.perf_counter()
        run.send_signal(signal.SIGTERM)
        code = await run.wait(timeout + DRAIN_MARGIN_SECONDS)
        drain_seconds = time.perf_counter() - signalled
        assert code == 0, run.tail()
        await assert_bot_left(departures, timeout=5)
    held = {m[1] for m in run.matches(r"\[(drain-[\w.-]+)\] goodbye: holding the EndFrame")}
    released = {m[1] for m in run.matches(r"\[(drain-[\w.-]+)\] goodbye: EndFrame released")}
    assert held == set(rooms), "a bot got no EndFrame"
    assert released == (set(rooms) if finished else set()), released
    print(f"\nSIGTERM, goodbyes of {goodbye:g} s, shutdown timeout {timeout:g} s: 3 rooms left "
          f"and exit 0 in {drain_seconds:.2f} s")


async def test_a_second_signal_during_the_drain_stops_at_once(
    livekit_server: LiveKitServer, tmp_path: Path
) -> None:
    rooms = ("halt-a", "halt-b")
    config = SupervisorConfig(
        livekit_server, rooms, SLOW_GOODBYE_BOT, {"shutdown_timeout_seconds": 20}
    )
    async with serving(tmp_path, config, env={GOODBYE_SECONDS_ENV: "2.5"}) as (run, _):
        run.send_signal(signal.SIGTERM)
        await run.wait_for(r"goodbye: holding the EndFrame", count=len(rooms), timeout=10)
        signalled = time.perf_counter()
        run.send_signal(signal.SIGTERM)
        assert await run.wait(15) == 1, run.tail()
        stop_seconds = time.perf_counter() - signalled
    assert run.matches("SIGTERM again: stopping at once")
    assert not run.matches("goodbye: EndFrame released"), "the second signal waited for the drain"
    print(f"\nsecond SIGTERM during a drain: exit 1 after {stop_seconds:.2f} s")


async def test_sighup_adds_and_removes_rooms_while_the_others_keep_echoing(
    livekit_server: LiveKitServer, tmp_path: Path
) -> None:
    config = SupervisorConfig(livekit_server, ("hup-keep", "hup-quiet", "hup-gone"))
    added = ("hup-new-1", "hup-new-2")
    async with (
        serving(tmp_path, config) as (run, path),
        talking(livekit_server, "hup-keep", 440.0) as keep,
        join(livekit_server, "hup-gone", "alice") as gone,
    ):
        await subscribed_audio_track(gone, BOT, timeout=30)
        gone_left = bot_departure(gone)
        await keep.echo.heard(0.3)
        bot_sid = keep.room.remote_participants[BOT].sid

        reloaded = attrs.evolve(config, rooms=("hup-keep", "hup-quiet", *added))
        write_config(path.parent, reloaded.text())
        run.send_signal(signal.SIGHUP)
        await run.wait_for(r"reloaded: 2 started, 1 stopped, 4 rooms", timeout=60)
        await assert_bot_left({"hup-gone": gone_left}, timeout=10)
        await assert_rooms_echo(livekit_server, added)

        path.write_text(path.read_text().replace("hup-new-2", "hup-new-1"))  # a duplicate
        run.send_signal(signal.SIGHUP)
        refused = await run.wait_for(r"reload refused, keeping the running rooms: (.*)")
        assert "rooms[3].name = 'hup-new-1': expected a name no other room uses" in refused[0][1]
        await anyio.sleep(1.0)  # the running rooms stay: keep listening past the refusal

        assert keep.room.remote_participants[BOT].sid == bot_sid, "hup-keep's bot rejoined"
        silence_ms = keep.echo.longest_silence_ms()
        recorded_ms = keep.echo.since_onset_ms()
        touched = run.matches(r"\[(hup-keep|hup-quiet|hup-new-\d)\] (left|stopped|joined)")
        restarts = scrape(config.metrics_url)["lksup_room_restarts_total", {"room": "hup-keep"}]
    # Untouched means no actor of hup-keep restarted (a restarted pipeline or audio actor
    # would leave a gap) and the echo never stopped: the gap allowed is what a busy
    # two-core machine causes while five rooms join beside it (up to ~0.5 s seen),
    # well short of the second or more a rejoin takes.
    assert restarts == 0, f"hup-keep's actors restarted {restarts} times across the reloads"
    assert silence_ms <= 1000, f"hup-keep's echo went silent for {silence_ms} ms across the reloads"
    assert sorted(m[0] for m in touched) == [
        "[hup-keep] joined",
        "[hup-new-1] joined",
        "[hup-new-2] joined",
        "[hup-quiet] joined",
    ], "a room other than hup-gone was stopped or rejoined"
    print(f"\nSIGHUP: hup-keep's echo recorded for {recorded_ms} ms across two reloads; "
          f"longest silence {silence_ms} ms")


async def test_token_from_the_cli_joins_the_server(
    livekit_server: LiveKitServer, tmp_path: Path
) -> None:
    config = SupervisorConfig(livekit_server, ("token-room",))
    path = write_config(tmp_path, config.text())
    result = await anyio.run_process(
        supervisor_command("token", "token-room", "carol", "--config", str(path)),
        cwd=REPO_ROOT,
        env={**os.environ, **config.env()},
        check=False,
    )
    out = result.stdout.decode()
    assert result.returncode == 0, result.stderr.decode()
    assert livekit_server.api_secret not in out + result.stderr.decode()
    url = re.search(r"^url:\s+(\S+)$", out, re.MULTILINE)
    token = re.search(r"^token:\s+(\S+)$", out, re.MULTILINE)
    assert url, out
    assert token, out
    assert url[1] == livekit_server.url
    client = rtc.Room()
    try:
        with anyio.fail_after(15):
            await client.connect(url[1], token[1])
        assert client.name == "token-room"
        assert client.local_participant.identity == "carol"
    finally:
        await end_room(client)


async def rooms_with_bot(server: ServerCredentials, rooms: Sequence[str]) -> set[str]:
    """The rooms where the server lists the bot as a participant."""
    present = set()
    async with api.LiveKitAPI(server.url, server.api_key, server.api_secret) as lk:
        for room in rooms:
            with contextlib.suppress(api.TwirpError):
                listing = await lk.room.list_participants(api.ListParticipantsRequest(room=room))
                if any(p.identity == BOT for p in listing.participants):
                    present.add(room)
    return present


async def readiness(
    config: SupervisorConfig, status: int, body: str, timeout: float = 30.0
) -> None:
    """Wait until the supervisor's `/readyz` answers `status` with `body`."""
    url = config.metrics_url + "/readyz"
    answer = None
    with anyio.move_on_after(timeout):
        while (answer := await anyio.to_thread.run_sync(get, url)) != (status, body + "\n"):
            await anyio.sleep(0.1)
        return
    raise AssertionError(f"/readyz answered {answer}, not {status} {body!r}, for {timeout} s")


OUTAGE_SECONDS = 40.0
"""Long enough for the rtc SDK to give up its own reconnecting (some 20-30 s after the
server vanished), so the supervisor's restarts must bring the rooms back."""
BACK_WITHIN_SECONDS = 30.0


async def test_every_room_comes_back_after_the_livekit_server_restarts(tmp_path: Path) -> None:
    server = LiveKitServer(log_path=tmp_path / "livekit-1.log")
    await anyio.to_thread.run_sync(server.start)
    rooms = tuple(f"phoenix-{i}" for i in range(5))
    config = SupervisorConfig(server, rooms)
    try:
        async with serving(tmp_path, config) as (run, _):
            await assert_rooms_echo(server, rooms)
            await readiness(config, 200, f"ready: {len(rooms)} of {len(rooms)} room(s) running")
            server.kill()
            killed = time.perf_counter()
            # Not ready as soon as the SDK notices: every room is reconnecting...
            names = ", ".join(rooms)
            await readiness(
                config, 503, f"not ready: 0 of 5 room(s) running; reconnecting: {names}"
            )
            unready_after = time.perf_counter() - killed
            assert scrape(config.metrics_url)["lksup_rooms", {"state": "reconnecting"}] == 5
            # ...then the SDK gives up and every room's connection actor restarts...
            await run.wait_for(r"\[phoenix-\d\] left", count=len(rooms), timeout=OUTAGE_SECONDS)
            # ...and keeps failing while the server stays down.
            await anyio.sleep(OUTAGE_SECONDS - (time.perf_counter() - killed))
            server = LiveKitServer(server.settings, log_path=tmp_path / "livekit-2.log")
            await anyio.to_thread.run_sync(server.start)
            restarted = time.perf_counter()
            with anyio.move_on_after(BACK_WITHIN_SECONDS):
                while (back := await rooms_with_bot(server, rooms)) != set(rooms):
                    await anyio.sleep(0.2)
            back_after = time.perf_counter() - restarted
            missing = set(rooms) - back
            assert back == set(rooms), f"not back within {BACK_WITHIN_SECONDS} s: {missing}"
            await readiness(config, 200, f"ready: {len(rooms)} of {len(rooms)} room(s) running")
            await assert_rooms_echo(server, rooms)
            assert run.process.returncode is None
        quarantined = run.matches(r"/rooms/(phoenix-\d) crashed .*RestartIntensityError")
        assert not quarantined, f"the outage quarantined {[m[1] for m in quarantined]}"
        print(f"\nLiveKit server down {OUTAGE_SECONDS:g} s: /readyz 503 {unready_after:.2f} s "
              f"after the kill; all 5 rooms' bots back {back_after:.2f} s after it answered again")
    finally:
        await anyio.to_thread.run_sync(server.stop)
