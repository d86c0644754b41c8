"""`supervisor run --workers N` as a child process: its config, rooms that land on a
chosen worker, the worker pids it reports, and the bot's echo as one participant hears it.

Shared by the workers tests and the watchdog tests (a stalled worker is restarted).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from livekit import rtc

from supervisor.livekit_server.server import free_port
from supervisor.process.workers import shard_of
from tests.helpers.cli_process import SupervisorProcess, supervisor_process
from tests.helpers.configs import ECHO_BOT
from tests.helpers.participants import collect_audio, rms, subscribed_audio_track

KEY_ENV = "SUPERVISOR_WORKERS_TEST_KEY"
SECRET_ENV = "SUPERVISOR_WORKERS_TEST_SECRET"

CONFIG = f"""
[livekit]
url = "ws://127.0.0.1:{{port}}"
api_key_env = "{KEY_ENV}"
api_secret_env = "{SECRET_ENV}"
embedded_server = true

[bot]
factory = "{{bot}}"

[supervision]
shutdown_timeout_seconds = {{shutdown_timeout}}

[metrics]
listen = "127.0.0.1:{{metrics_port}}"
"""

STUBBORN_BOT = "tests.helpers.bots:stubborn_bot"


def config_text(
    port: int,
    rooms: list[str],
    metrics_port: int = 9464,
    *,
    bot: str = ECHO_BOT,
    shutdown_timeout: float = 5,
) -> str:
    head = CONFIG.format(
        port=port, metrics_port=metrics_port, bot=bot, shutdown_timeout=shutdown_timeout
    )
    return head + "".join(f'[[rooms]]\nname = "{room}"\n' for room in rooms)


def free_port_pair() -> int:
    """A free port whose successor is free too: two workers' metrics ports."""
    while True:
        port = free_port()
        with contextlib.suppress(OSError), socket.socket() as probe:
            probe.bind(("127.0.0.1", port + 1))
            return port


def rooms_by_shard(prefix: str, count: int, per_shard: int) -> list[list[str]]:
    """`per_shard` room names for each of `count` workers, found by trying names."""
    shards: list[list[str]] = [[] for _ in range(count)]
    for i in range(10_000):
        name = f"{prefix}-{i}"
        shard = shards[shard_of(name, count)]
        if len(shard) < per_shard:
            shard.append(name)
        if all(len(s) == per_shard for s in shards):
            return shards
    raise AssertionError("no spread of names found")


def worker_pids(run: SupervisorProcess) -> dict[int, list[int]]:
    """Every worker pid the parent reported, by worker index, in start order."""
    pids: dict[int, list[int]] = {}
    for m in run.matches(r"supervisor: worker (\d+) started \(pid (\d+)\)"):
        pids.setdefault(int(m[1]), []).append(int(m[2]))
    return pids


@contextlib.asynccontextmanager
async def supervisor_run(path: Path, workers: int) -> AsyncIterator[SupervisorProcess]:
    """Run the CLI with `--workers`; whatever happens, leave no worker behind.

    The credentials variables the config names are removed from the environment, so
    the workers can only have the embedded server's from the parent.
    """
    args = ("run", str(path), "--workers", str(workers))
    async with supervisor_process(*args, unset=(KEY_ENV, SECRET_ENV)) as run:
        try:
            yield run
        finally:
            for pid in (pid for pids in worker_pids(run).values() for pid in pids):
                if is_worker(pid):
                    os.kill(pid, signal.SIGKILL)


def is_worker(pid: int) -> bool:
    """Whether `pid` is (still) a live supervisor worker process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z" and b"--worker-index" in cmdline


async def echo_level(participant: rtc.Room) -> float:
    """RMS of a second of the bot's audio, after half a second to settle."""
    track = await subscribed_audio_track(participant, "bot", timeout=30)
    await collect_audio(track, 0.5)
    return rms(await collect_audio(track, 1.0, timeout=15))


def bot_sid_changed(participant: rtc.Room, old: str) -> Callable[[], bool]:
    """Whether the bot in `participant`'s room is another session than `old` (it rejoined)."""
    return lambda: (
        (bot := participant.remote_participants.get("bot")) is not None and bot.sid != old
    )
