"""One conversation with livekit-agents' voice bot (`agents_voice.py`) on a real server:
the proof that it answers, and its figures for one call.

    python -m benchmarks.agents_voice_check [--turns 3] [--settle 8]

Starts a livekit-server (dev mode, loopback) and the worker in livekit-agents' venv
(`make agents-venv`; the worker's AGENTS_VOICE_* variables pass through), waits until
the worker registered and its idle job processes have prewarmed (`--settle`), then a
caller (an rtc SDK participant in this process) joins a fresh room, which the server
dispatches to the worker, and speaks espeak-ng sentences, one per turn, each after the
bot's previous reply. Printed: per turn, the voice-to-voice latency (the end of the
caller's speech to the first bot audio above SPEECH_RMS) and the transcripts agents
sent to the room; the worker's process tree's RSS and PSS registered and idle, and
after the conversation, each process's own, and the tree's CPU seconds for the
conversation. `benchmarks/conversations.py` is the harness for many callers at once;
this is the one-call check it and the suite's test stand on.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import attrs
import numpy as np
from livekit import rtc

from benchmarks.dispatch import AGENTS_PYTHON, REGISTERED, ensure_agents_venv
from benchmarks.echo import KEY_ENV, REPO_ROOT, SECRET_ENV
from benchmarks.process_tree import (
    command_line,
    cpu_seconds,
    own_pss_bytes,
    own_rss_bytes,
    pss_bytes,
    rss_bytes,
    sample,
    tree,
)
from supervisor.livekit_server.access import Credentials, join_token
from supervisor.livekit_server.server import LiveKitServer, free_port, spawn
from supervisor.process.rtc_shutdown import end_room, release_rtc

CALLER_RATE = 48_000
FRAME_MS = 10
SPEECH_RMS = 500.0
"""A 10 ms frame above this RMS is speech: espeak-ng's speech is thousands, the bot's
silence and Opus's comfort noise far below."""
REPLY_OVER = 1.0
"""Seconds of quiet after which the bot's reply is over."""
REPLY_TIMEOUT = 15.0
"""Seconds a caller waits for the reply to start: a missed transcript means no reply."""
REGISTER_TIMEOUT = 60.0
DISPATCH_TIMEOUT = 30.0
TRANSCRIPTION_TOPIC = "lk.transcription"
"""agents' room output sends the user's and the agent's transcripts as text streams."""
SENTENCES = (
    "What is the weather like tomorrow?",
    "I would like to book a table for two.",
    "Please call me back this afternoon.",
)
MB = 1 << 20


def spoken(text: str) -> np.ndarray:
    """`text` said by espeak-ng, int16 mono at CALLER_RATE."""
    wav = subprocess.run(["espeak-ng", "--stdout", text], capture_output=True, check=True).stdout
    rate = int.from_bytes(wav[24:28], "little")
    samples = (len(wav) - 44) // 2
    resampler = rtc.AudioResampler(rate, CALLER_RATE, num_channels=1)
    frames = [*resampler.push(rtc.AudioFrame(wav[44 : 44 + samples * 2], rate, 1, samples))]
    frames += resampler.flush()
    return np.concatenate([np.frombuffer(frame.data, dtype=np.int16) for frame in frames])


def rms(frame: rtc.AudioFrame) -> float:
    samples = np.frombuffer(frame.data, dtype=np.int16).astype(np.float64)
    return float(np.sqrt(np.mean(samples**2))) if len(samples) else 0.0


@attrs.define
class Worker:
    """The worker process and its log, which says when it registered."""

    process: subprocess.Popen[bytes]
    log_path: Path

    def registered(self) -> bool:
        return REGISTERED.search(self.log_path.read_text(errors="replace")) is not None

    def memory(self) -> dict[str, Any]:
        """The tree's RSS and PSS in MB, and each process's own (RSS, PSS, CPU seconds
        so far), by pid and the end of its command line (the forkserver and its job
        processes are told apart by pid: the job's is the one whose CPU grew)."""
        processes = {}
        for pid in tree(self.process.pid):
            own = sample(pid)
            processes[f"{pid} {' '.join(command_line(pid))[-40:]}"] = (
                round(own_rss_bytes(pid) / MB, 1),
                round(own_pss_bytes(pid) / MB, 1),
                round(own["cpu_s"], 2) if own is not None else None,
            )
        return {
            "rss_mb": round(rss_bytes(self.process.pid) / MB, 1),
            "pss_mb": round(pss_bytes(self.process.pid) / MB, 1),
            "processes": processes,
        }


@contextlib.contextmanager
def running_worker(server: LiveKitServer, log_path: Path, options: dict[str, str]) -> Any:
    """The worker in `start` mode (production defaults) with AGENTS_VOICE_* `options`
    over this process's environment, stopped with SIGTERM."""
    env = {
        **os.environ,
        **options,
        "LIVEKIT_URL": server.url,
        KEY_ENV: server.api_key,
        SECRET_ENV: server.api_secret,
        "AGENTS_VOICE_HTTP_PORT": os.environ.get("AGENTS_VOICE_HTTP_PORT", str(free_port())),
    }
    argv = [str(AGENTS_PYTHON), "benchmarks/agents_voice.py", "start", "--drain-timeout", "2"]
    process = spawn(argv, env=env, log_path=log_path)
    try:
        yield Worker(process, log_path)
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def wait_registered(worker: Worker) -> None:
    with anyio.fail_after(REGISTER_TIMEOUT):
        while not worker.registered():
            if worker.process.poll() is not None:
                raise RuntimeError(f"the worker exited {worker.process.returncode}")
            await anyio.sleep(0.2)


@attrs.define
class Ear:
    """What the caller hears of the bot: the time of each frame above SPEECH_RMS."""

    loud: list[float] = attrs.Factory(list)

    async def listen(self, track: rtc.RemoteAudioTrack) -> None:
        stream = rtc.AudioStream(
            track, sample_rate=CALLER_RATE, num_channels=1, frame_size_ms=FRAME_MS
        )
        try:
            async for event in stream:
                if rms(event.frame) > SPEECH_RMS:
                    self.loud.append(time.monotonic())
        finally:
            await stream.aclose()

    async def reply_after(self, ended: float) -> float | None:
        """Seconds from `ended` to the first loud frame after it, once the reply is over
        (REPLY_OVER quiet); None if none began within REPLY_TIMEOUT."""
        while True:
            after = [at for at in self.loud if at > ended]
            now = time.monotonic()
            if after and now - after[-1] > REPLY_OVER:
                return after[0] - ended
            if not after and now - ended > REPLY_TIMEOUT:
                return None
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def caller(credentials: Credentials, room_name: str) -> AsyncIterator[
    tuple[rtc.Room, rtc.AudioSource, asyncio.Future[rtc.RemoteAudioTrack], list[str]]
]:  # fmt: skip
    """A connected caller with a microphone, the bot's audio track once subscribed, and
    the transcripts received."""
    room = rtc.Room()
    loop = asyncio.get_running_loop()
    bot_audio: asyncio.Future[rtc.RemoteAudioTrack] = loop.create_future()
    transcripts: list[str] = []
    readers: set[asyncio.Task[None]] = set()

    def on_subscribed(track: rtc.Track, *_: object) -> None:
        if isinstance(track, rtc.RemoteAudioTrack) and not bot_audio.done():
            bot_audio.set_result(track)

    async def read(reader: rtc.TextStreamReader) -> None:
        transcripts.append(await reader.read_all())

    def on_text(reader: rtc.TextStreamReader, _identity: str) -> None:
        task = asyncio.create_task(read(reader))
        readers.add(task)
        task.add_done_callback(readers.discard)

    room.on("track_subscribed", on_subscribed)
    room.register_text_stream_handler(TRANSCRIPTION_TOPIC, on_text)
    source = rtc.AudioSource(CALLER_RATE, 1)
    try:
        await room.connect(credentials.url, join_token(credentials, room_name, "caller"))
        track = rtc.LocalAudioTrack.create_audio_track("mic", source)
        options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
        await room.local_participant.publish_track(track, options)
        yield room, source, bot_audio, transcripts
    finally:
        await end_room(room, source)


async def say(source: rtc.AudioSource, speech: np.ndarray) -> float:
    """Plays `speech` in real time (10 ms frames against the clock) and returns when the
    last of it was sent."""
    step = CALLER_RATE * FRAME_MS // 1000
    next_at = time.monotonic()
    for start in range(0, len(speech), step):
        chunk = speech[start : start + step]
        await source.capture_frame(rtc.AudioFrame(chunk.tobytes(), CALLER_RATE, 1, len(chunk)))
        next_at += FRAME_MS / 1000
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))
    return time.monotonic()


async def converse(
    server: LiveKitServer,
    log_path: Path,
    *,
    turns: int = 1,
    settle: float = 8.0,
    options: dict[str, str] | None = None,
) -> dict[str, Any]:
    """One conversation of `turns` sentences with a fresh worker (AGENTS_VOICE_*
    `options` over the environment's); its figures."""
    credentials = Credentials(server.url, server.api_key, server.api_secret)
    speeches = [spoken(SENTENCES[turn % len(SENTENCES)]) for turn in range(turns)]
    with running_worker(server, log_path, options or {}) as worker:
        await wait_registered(worker)
        registered = worker.memory()
        await anyio.sleep(settle)  # the idle job processes fork and prewarm
        idle = worker.memory()
        cpu_before = cpu_seconds(worker.process.pid)
        latencies: list[float | None] = []
        async with caller(credentials, f"voice-{os.getpid()}-{time.monotonic_ns()}") as (
            _room, source, bot_audio, transcripts,
        ):  # fmt: skip
            joined = time.monotonic()
            with anyio.fail_after(DISPATCH_TIMEOUT):
                track = await bot_audio
            dispatched = time.monotonic() - joined
            ear = Ear()
            listening = asyncio.create_task(ear.listen(track))
            try:
                await asyncio.sleep(1.0)  # the session's input is linked to the caller
                for speech in speeches:
                    ended = await say(source, speech)
                    latencies.append(await ear.reply_after(ended))
                    await asyncio.sleep(1.0)
            finally:
                listening.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await listening
            after = worker.memory()
        cpu = cpu_seconds(worker.process.pid) - cpu_before
    return {
        "dispatch_s": round(dispatched, 3),
        "voice_to_voice_s": [None if x is None else round(x, 3) for x in latencies],
        "transcripts": transcripts,
        "conversation_cpu_s": round(cpu, 2),
        "memory_registered": registered,
        "memory_idle": idle,
        "memory_after": after,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--settle", type=float, default=8.0)
    args = parser.parse_args(argv)
    ensure_agents_venv()
    os.chdir(REPO_ROOT)
    log_path = Path(tempfile.mkdtemp(prefix="agents-voice-")) / "worker.log"
    server = LiveKitServer()
    server.start()
    try:
        figures = asyncio.run(converse(server, log_path, turns=args.turns, settle=args.settle))
    finally:
        server.stop()
        release_rtc()
    print(f"worker log: {log_path}")
    for name, value in figures.items():
        print(f"{name}: {value}")
    print(f"load average: {os.getloadavg()}")
    return 0 if all(figures["voice_to_voice_s"]) else 1


if __name__ == "__main__":
    sys.exit(main())
