"""A TTS service that speaks with espeak-ng: the built-in bots' voice, no outside service.

espeak-ng is Debian's `espeak-ng` package, which `make run` and `make test` install when
missing and root. Its absence fails the import, i.e. when the config names a bot that
speaks: a config error (exit 2), not a bot that fails in every room until each is
quarantined.
"""

from __future__ import annotations

import asyncio
import shutil
import struct
from collections.abc import AsyncGenerator
from typing import Any

from pipecat.audio.utils import create_stream_resampler
from pipecat.frames.frames import ErrorFrame, Frame, TTSAudioRawFrame
from pipecat.services.settings import TTSSettings
from pipecat.services.tts_service import TTSService

from supervisor.bots import unsupported_settings

ESPEAK = "espeak-ng"
if shutil.which(ESPEAK) is None:
    raise ImportError(
        f"{ESPEAK} is not installed: apt-get install espeak-ng (`make run` does, as root)"
    )
WAV_HEADER_BYTES = 44
"""espeak-ng writes a canonical 44-byte WAV header (with unknown lengths) to stdout."""
READ_BYTES = 4096


class EspeakTTSService(TTSService):
    """Speaks with the espeak-ng command on pipecat's `TTSService`, streaming its WAV
    output as it comes (the base class times the first byte)."""

    def __init__(self, *, voice: str = "en", **kwargs: Any) -> None:
        super().__init__(
            push_start_frame=True, push_stop_frames=True,
            settings=unsupported_settings(TTSSettings), **kwargs,
        )  # fmt: skip
        self._voice = voice
        self._resampler = create_stream_resampler()

    def can_generate_metrics(self) -> bool:
        return True

    async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame, None]:
        await self.start_tts_usage_metrics(text)
        await self.start_processing_metrics()
        process = await asyncio.create_subprocess_exec(
            ESPEAK, "--stdout", "-v", self._voice, text,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        assert process.stdout is not None
        try:
            header = await process.stdout.readexactly(WAV_HEADER_BYTES)
            (rate,) = struct.unpack_from("<I", header, 24)
            odd = b""  # a read may end inside a sample: its first byte waits for the next
            while chunk := await process.stdout.read(READ_BYTES):
                await self.stop_ttfb_metrics()
                pcm = odd + chunk
                cut = len(pcm) // 2 * 2
                pcm, odd = pcm[:cut], pcm[cut:]
                audio = await self._resampler.resample(pcm, rate, self.sample_rate)
                if audio:
                    yield TTSAudioRawFrame(
                        audio=audio, sample_rate=self.sample_rate, num_channels=1,
                        context_id=context_id,
                    )  # fmt: skip
        except asyncio.IncompleteReadError:
            yield ErrorFrame(error=f"{ESPEAK} wrote no audio for {text!r}")
        finally:
            if process.returncode is None:
                process.kill()
            await process.wait()
            await self.stop_ttfb_metrics()
            await self.stop_processing_metrics()
