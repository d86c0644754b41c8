"""Speech recognition with no outside service: pocketsphinx decoders shared by every
room of the process, each in a process of its own (`supervisor.bots.decoders` says why)."""

from __future__ import annotations

import functools
from collections.abc import AsyncGenerator
from typing import Any

import anyio
from pipecat.audio.utils import create_file_resampler
from pipecat.frames.frames import Frame, StartFrame, TranscriptionFrame
from pipecat.services.settings import STTSettings
from pipecat.services.stt_service import SegmentedSTTService
from pipecat.utils.time import time_now_iso8601

from supervisor.bots import decoders, unsupported_settings

SAMPLE_RATE = decoders.SAMPLE_RATE
DECODER_PROCESSES = 2
"""Decoders a room-serving process keeps: utterances that end together (several rooms'
turns) decode in parallel on two cores; each is a process of about 100 MB RSS, 95 of
them the decoder."""


class Recognizer:
    """Decoders in processes of their own, started from the first call on."""

    def __init__(self, processes: int = DECODER_PROCESSES) -> None:
        self._decoders = decoders.Decoders(processes)

    def load(self) -> None:
        """Start every decoder process (returns at once): each loads its decoder first."""
        self._decoders.start()

    def wait_loaded(self) -> None:
        """Start the decoder processes and return once each has loaded its decoder
        (blocking: a process's `prewarm`, on a thread before its first room)."""
        self._decoders.wait_ready()

    @property
    def loaded(self) -> bool:
        return self._decoders.ready

    async def transcribe(self, pcm: bytes) -> decoders.Decoded:
        """The words in `pcm` (16-bit mono at `SAMPLE_RATE`) and when a decoder took it.
        Cancelled (an interruption), it returns at once; its decoder finishes the
        utterance and then serves the next."""
        return await anyio.to_thread.run_sync(self._decoders.decode, pcm, abandon_on_cancel=True)

    def close(self) -> None:
        """Stop the decoder processes (a process's own recognizer lives as long as it:
        its decoders see their standard input close when it exits)."""
        self._decoders.close()


@functools.cache
def shared_recognizer() -> Recognizer:
    """The process's recognizer, made on first use (a parent that runs no room has none)."""
    return Recognizer()


class PocketsphinxSTTService(SegmentedSTTService):
    """pipecat's segmented STT (an utterance, from the VAD's start to its stop, at a
    time) on the process's recognizer. Starting the service starts the decoders if the
    bot's `prewarm` did not, so they are there before the first utterance ends."""

    def __init__(self, *, recognizer: Recognizer | None = None, **kwargs: Any) -> None:
        # the VAD's stop already waited for 0.2 s of silence: pipecat's 0.5 s of padding
        # would be decoded at every turn's end for a word the model does not miss
        kwargs.setdefault("trailing_silence_secs", 0.2)
        super().__init__(settings=unsupported_settings(STTSettings), **kwargs)
        self._recognizer = recognizer or shared_recognizer()
        self._resampler = create_file_resampler()

    @property
    def wants_wav_segments(self) -> bool:
        return False  # raw 16-bit PCM, as the decoder reads it

    def can_generate_metrics(self) -> bool:
        return True

    async def start(self, frame: StartFrame) -> None:
        await super().start(frame)
        self._recognizer.load()

    async def run_stt(self, audio: bytes) -> AsyncGenerator[Frame, None]:
        """The processing time reported is the decode's own, from when a decoder took
        the utterance: the wait for one that several rooms share is the process's cost
        (`lksup_bot_added_seconds`), not the service's."""
        if self.sample_rate != SAMPLE_RATE:
            audio = await self._resampler.resample(audio, self.sample_rate, SAMPLE_RATE)
        decoded = await self._recognizer.transcribe(audio)
        await self.start_processing_metrics(start_time=decoded.started)
        await self.stop_processing_metrics()
        if decoded.words:
            yield TranscriptionFrame(decoded.words, self._user_id, time_now_iso8601())
