"""Speech recognition with no outside service: pocketsphinx, one decoder per process.

pocketsphinx 5.1.1 (the `voice` extra) ships its en-us acoustic model, dictionary and
language model inside the wheel, so nothing is downloaded. Measured here (2 cores): a
decoder costs about 95 MB and 0.4 s to load, and two threads decode no faster than one.
So a process keeps one decoder for all its rooms, loaded (by the bot's `prewarm`) and run
on a thread of its own, off the event loop the rooms share, while a decoder per room
would cost 95 MB a room and decode no faster. Utterances from different rooms queue
for it in the order they end; `--workers N` gives each core its own.

The decoder's search is narrowed for speed (`FAST_SEARCH`): 0.16 s for a 1.8 s
utterance against 0.81 s with pocketsphinx's defaults (quiet machine), at about the
same accuracy on espeak-ng's voice, and without the passes that hold the GIL. The
transcript feeds a scripted LLM; its accuracy is not the point, its cost is real.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncGenerator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from pipecat.audio.utils import create_file_resampler
from pipecat.frames.frames import Frame, StartFrame, TranscriptionFrame
from pipecat.services.settings import STTSettings
from pipecat.services.stt_service import SegmentedSTTService
from pipecat.utils.time import time_now_iso8601

from supervisor.bots import unsupported_settings

try:
    from pocketsphinx import Decoder  # type: ignore[import-untyped]
except ImportError as err:  # at import, i.e. when the config names the voice bot
    raise ImportError(
        f"{err}: the voice bot needs pocketsphinx: pip install 'livekit-supervisor[voice]'"
    ) from err

SAMPLE_RATE = 16_000
"""The rate of the en-us acoustic model."""
FAST_SEARCH: dict[str, Any] = {
    "ds": 2, "topn": 2, "maxhmmpf": 3000, "maxwpf": 5, "pl_window": 10,
    "fwdflat": False, "bestpath": False,
}  # fmt: skip
"""Frame downsampling, fewer Gaussians and a narrower beam (pocketsphinx's "fast"
settings), and no second or third pass: those run in `end_utt` holding the GIL (every
room's loop waited 100 ms at each utterance's end, measured), where the first pass
lets it go as it decodes (5-7 ms)."""


CHUNK_BYTES = SAMPLE_RATE * 2 // 10
"""100 ms of audio: the decoder holds the GIL while it decodes (py-spy: a third of the
GIL's time in a voice room), so it decodes a chunk at a time and lets the GIL go
between chunks, or the rooms' event loop waits for a whole utterance (loop lag p99
0.5-2.5 s measured with it whole)."""


class Recognizer:
    """One decoder, loaded and used on one thread: one utterance at a time."""

    def __init__(self) -> None:
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pocketsphinx")
        self._loaded: Future[Decoder] | None = None

    def load(self) -> Future[Decoder]:
        """The decoder, loading on its thread from the first call on (returns at once)."""
        if self._loaded is None:
            self._loaded = self._thread.submit(
                Decoder, samprate=SAMPLE_RATE, loglevel="FATAL", **FAST_SEARCH
            )
        return self._loaded

    async def transcribe(self, pcm: bytes) -> str:
        """The words in `pcm` (16-bit mono at `SAMPLE_RATE`), or "" if it heard none."""
        return await asyncio.wrap_future(self._thread.submit(self._decode, self.load(), pcm))

    @staticmethod
    def _decode(loaded: Future[Decoder], pcm: bytes) -> str:
        decoder = loaded.result()  # on this thread: done, since the load ran first
        decoder.start_utt()
        for at in range(0, len(pcm), CHUNK_BYTES):
            decoder.process_raw(pcm[at : at + CHUNK_BYTES])
            time.sleep(0)  # the GIL, to whichever room's loop waits for it
        decoder.end_utt()
        hypothesis = decoder.hyp()
        return hypothesis.hypstr if hypothesis is not None else ""


@functools.cache
def shared_recognizer() -> Recognizer:
    """The process's recognizer, made on first use (a parent that runs no room loads none)."""
    return Recognizer()


class PocketsphinxSTTService(SegmentedSTTService):
    """pipecat's segmented STT (an utterance, from the VAD's start to its stop, at a
    time) on the process's recognizer. Starting the service starts loading the decoder
    if the bot's `prewarm` did not, so it is there before the first utterance ends."""

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
        await self.start_processing_metrics()
        if self.sample_rate != SAMPLE_RATE:
            audio = await self._resampler.resample(audio, self.sample_rate, SAMPLE_RATE)
        text = await self._recognizer.transcribe(audio)
        await self.stop_processing_metrics()
        if text:
            yield TranscriptionFrame(text, self._user_id, time_now_iso8601())
