"""The voice bot as a livekit-agents worker: the peer `benchmarks/conversations.py` runs
beside `supervisor.bots.voice` (issue 22).

    <venv-agents>/bin/python benchmarks/agents_voice.py start [--drain-timeout S]

Run in livekit-agents' own virtual environment (`make agents-venv`: livekit-agents
1.8.9, livekit-plugins-silero 1.8.9 and pocketsphinx 5.1.1, pinned in
`agents-requirements.txt`), so it imports nothing of this project. The worker registers
with the server named by LIVEKIT_URL (credentials in LIVEKIT_API_KEY and
LIVEKIT_API_SECRET, as the agents CLI reads them) for automatic dispatch, and each job
runs an `AgentSession` in its room, talking to the first participant that joins:

- VAD: livekit-plugins-silero, its defaults (its ONNX model ships inside the wheel:
  traced, a job's only outside traffic is onnxruntime 1.32's telemetry, a DNS lookup
  of mobile.events.data.microsoft.com at each session it creates, as in any process
  using it, and the rtc SDK's UDP connect to 8.8.8.8, which sends nothing: it finds the
  default route).
- Turn detection: VAD-based: a turn ends when Silero has heard 0.55 s of silence (its
  default) and the transcript is in (agents' 0.5 s endpointing delay, counted from the
  end of speech, has passed by then: its `end_of_turn_delay` is the transcript's).
  livekit-plugins-turn-detector is not used: it fetches its models from Hugging Face
  (`download-files`). Nor is agents' own `inference.TurnDetector`, whose `start`-mode
  model (v1-mini) is in livekit-local-inference's wheel (its `dev` mode calls LiveKit
  Cloud): the nearest peer of the project's smart-turn, left for a later row.
  Interruptions are VAD-based too, set explicitly: unset, a worker in `dev` mode would
  build livekit-agents' adaptive interruption detector, a LiveKit Cloud inference
  service.
- STT: pocketsphinx on livekit-agents' `stt.STT` base, non-streaming, so the session
  wraps it in agents' `StreamAdapter`, which runs a second Silero stream of its own and
  recognizes each utterance the VAD ends. The decoder is configured as the project's
  voice bot's, loaded once per job process in the prewarm (`setup_fnc`): ~95 MB and
  0.4 s each, so not at the start of a call. It holds the GIL while it decodes, so it
  runs in a thread: the job's event loop is not blocked, though it is slowed.
- LLM: on `llm.LLM`, a script with no network: the reply to the last user message.
- TTS: on `tts.TTS`, espeak-ng, its WAV streamed as it comes and resampled to 24 kHz,
  the rate of agents' room output by default, so the room output does not resample
  it again. Non-streaming too: agents' `tts.StreamAdapter` splits the reply into
  sentences.
- Everything else at livekit-agents' defaults: a process per job on Linux, forked from
  a forkserver that preloads the plugins, as many idle job processes as cores, 24 kHz
  room input and output, preemptive generation on.

Options, from AGENTS_VOICE_* variables, each at livekit-agents' default when unset (see
`agents_options.py`):

- AGENTS_VOICE_EXECUTOR: `process` (the default on Linux) or `thread`
- AGENTS_VOICE_LOAD_THRESHOLD: the load above which the worker reports itself full (0.7)
- AGENTS_VOICE_IDLE_PROCESSES: job processes kept warm, each with its own decoder and
  Silero session (the machine's core count)
- AGENTS_VOICE_LOAD: `machine` (the default) or `worker` (the worker's own process tree)
- AGENTS_VOICE_HTTP_PORT: its health-check port (8081 in `start` mode: give each worker
  on a machine its own)
- AGENTS_VOICE_SHAPE: `voice` (the default: the session above) or `sine`, LiveKit's
  load-test shape (`benchmarks/sine_reply.py` is the supervisor's and pipecat's): no
  session, the job's Silero stream on the caller's audio and a second of 440 Hz sine
  published at each end of speech

and one of livekit-agents' own, which passes through:

- LIVEKIT_AGENTS_PRELOAD_LOCAL_INFERENCE: unset, agents' forkserver preloads its local
  end-of-turn model (livekit-local-inference's, in its wheel) for every job process to
  inherit, though this bot has no turn model: measured here, the worker's tree idle
  with its two warm job processes is 724 MB PSS with it, 476 MB with `0`, and each job
  process ~220 MB PSS against ~150 MB.

The tuned rows, as variables (all keep AGENTS_VOICE_LOAD=worker and
AGENTS_VOICE_LOAD_THRESHOLD=0.7, the supervisor's admission rule: with the machine's load,
the default, callers and the server beside the worker make it full, and the server
offers a room's job only once, so the room gets no bot):

- `agents-tuned`: LIVEKIT_AGENTS_PRELOAD_LOCAL_INFERENCE=0, still a process per job:
  the memory of a model it does not use saved, each call still isolated.
- `agents-thread`: AGENTS_VOICE_EXECUTOR=thread as well: every job a thread of the
  worker (the dispatch benchmark's best), one interpreter, but still a decoder and a
  Silero session per job, and every call's decoding and VAD on one GIL.

The worker logs a `turn metrics` line per message (see `log_turn`).
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import struct
from array import array

import pocketsphinx
from agents_options import server_options
from livekit import rtc
from livekit.agents import (
    DEFAULT_API_CONNECT_OPTIONS,
    NOT_GIVEN,
    Agent,
    AgentServer,
    AgentSession,
    APIConnectOptions,
    APIError,
    AutoSubscribe,
    ConversationItemAddedEvent,
    JobContext,
    JobProcess,
    NotGivenOr,
    cli,
    llm,
    stt,
    tts,
    utils,
    vad,
)
from livekit.plugins import silero

STT_RATE = 16_000
"""pocketsphinx's en-us model's rate."""
OUTPUT_RATE = 24_000
"""agents' room output rate (`AudioOutputOptions.sample_rate`): the TTS speaks at it."""
ESPEAK = "espeak-ng"
WAV_HEADER_BYTES = 44
"""espeak-ng writes a canonical 44-byte WAV header (with unknown lengths) to stdout; its
sample rate is the little-endian 32-bit word at byte 24."""
READ_BYTES = 4096
SHAPE = os.environ.get("AGENTS_VOICE_SHAPE", "voice")
"""`voice`, the session; `sine`, LiveKit's load-test shape."""
logger = logging.getLogger("agents_voice")


DECODER_SEARCH = {
    "ds": 2, "topn": 2, "maxhmmpf": 3000, "maxwpf": 5, "pl_window": 10,
    "fwdflat": False, "bestpath": False,
}  # fmt: skip
"""The project's voice bot's search (`supervisor.bots.decoders.FAST_SEARCH`, which this
venv cannot import; tests/test_builtin_bots.py holds the two equal): pruned for speed
(one frame in two, the top 2 Gaussians, fewer active HMMs and words), one pass."""


def load_decoder() -> pocketsphinx.Decoder:
    """The project's voice bot's decoder, its logging silenced."""
    return pocketsphinx.Decoder(samprate=STT_RATE, loglevel="FATAL", **DECODER_SEARCH)


def prewarm(proc: JobProcess) -> None:
    """Runs once in each job process (or job thread) before it is given a job: the
    models' load stays off the call's path."""
    proc.userdata["vad"] = silero.VAD.load()
    if SHAPE == "voice":  # the sine shape has no recognition
        proc.userdata["decoder"] = load_decoder()


class PocketsphinxSTT(stt.STT):
    """Speech recognition of a whole utterance with the job process's decoder."""

    def __init__(self, decoder: pocketsphinx.Decoder) -> None:
        super().__init__(capabilities=stt.STTCapabilities(streaming=False, interim_results=False))
        self._decoder = decoder

    @property
    def model(self) -> str:
        return "en-us"

    @property
    def provider(self) -> str:
        return "pocketsphinx"

    def _decode(self, pcm: bytes) -> str:
        self._decoder.start_utt()
        self._decoder.process_raw(pcm, full_utt=True)
        self._decoder.end_utt()
        hypothesis = self._decoder.hyp()
        return hypothesis.hypstr if hypothesis is not None else ""

    async def _recognize_impl(
        self,
        buffer: utils.AudioBuffer,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions,
    ) -> stt.SpeechEvent:
        audio = utils.merge_frames(buffer)
        resampler = rtc.AudioResampler(audio.sample_rate, STT_RATE, num_channels=1)
        frames = [*resampler.push(audio), *resampler.flush()]
        pcm = b"".join(frame.data.tobytes() for frame in frames)
        text = await asyncio.to_thread(self._decode, pcm)
        return stt.SpeechEvent(
            type=stt.SpeechEventType.FINAL_TRANSCRIPT,
            alternatives=[stt.SpeechData(language="en", text=text)],
        )


def script(chat_ctx: llm.ChatContext) -> str:
    """The reply to the last user message, as the project's voice bot answers."""
    said = [message.text_content or "" for message in chat_ctx.messages() if message.role == "user"]
    text = said[-1].strip() if said else ""
    return f"I heard you say {text}." if text else "I did not catch that."


class ScriptLLM(llm.LLM):
    """An LLM that answers from `script`, with no network."""

    def chat(
        self,
        *,
        chat_ctx: llm.ChatContext,
        tools: list[llm.Tool] | None = None,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
        parallel_tool_calls: NotGivenOr[bool] = NOT_GIVEN,
        tool_choice: NotGivenOr[llm.ToolChoice] = NOT_GIVEN,
        extra_kwargs: NotGivenOr[dict[str, object]] = NOT_GIVEN,
    ) -> llm.LLMStream:
        return ScriptStream(self, chat_ctx=chat_ctx, tools=tools or [], conn_options=conn_options)


class ScriptStream(llm.LLMStream):
    """The whole reply as one chunk."""

    async def _run(self) -> None:
        delta = llm.ChoiceDelta(role="assistant", content=script(self._chat_ctx))
        self._event_ch.send_nowait(llm.ChatChunk(id=utils.shortuuid(), delta=delta))


class EspeakTTS(tts.TTS):
    """espeak-ng speech at OUTPUT_RATE."""

    def __init__(self) -> None:
        super().__init__(
            capabilities=tts.TTSCapabilities(streaming=False),
            sample_rate=OUTPUT_RATE,
            num_channels=1,
        )

    @property
    def model(self) -> str:
        return "en"

    @property
    def provider(self) -> str:
        return ESPEAK

    def synthesize(
        self, text: str, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS
    ) -> tts.ChunkedStream:
        return EspeakStream(tts=self, input_text=text, conn_options=conn_options)


class EspeakStream(tts.ChunkedStream):
    """One espeak-ng process per sentence, its audio resampled and pushed as it is read
    (agents' emitter cuts it into frames), so the first audio leaves before espeak-ng
    has finished."""

    async def _run(self, output_emitter: tts.AudioEmitter) -> None:
        output_emitter.initialize(
            request_id=utils.shortuuid(),
            sample_rate=OUTPUT_RATE,
            num_channels=1,
            mime_type="audio/pcm",
        )
        process = await asyncio.create_subprocess_exec(
            ESPEAK, "--stdout", "-v", "en", self.input_text,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        assert process.stdout is not None
        try:
            try:
                header = await process.stdout.readexactly(WAV_HEADER_BYTES)
            except asyncio.IncompleteReadError as err:
                raise APIError(f"{ESPEAK} wrote no audio", retryable=False) from err
            (rate,) = struct.unpack_from("<I", header, 24)
            resampler = rtc.AudioResampler(rate, OUTPUT_RATE, num_channels=1)
            pending = b""  # an odd byte: half a sample, until the next read
            while chunk := await process.stdout.read(READ_BYTES):
                pending += chunk
                samples = len(pending) // 2
                if samples == 0:
                    continue
                frame = rtc.AudioFrame(pending[: samples * 2], rate, 1, samples)
                pending = pending[samples * 2 :]
                for out in resampler.push(frame):
                    output_emitter.push(out.data.tobytes())
            for out in resampler.flush():
                output_emitter.push(out.data.tobytes())
            output_emitter.flush()
        finally:
            if process.returncode is None:
                process.kill()
            await process.wait()


def log_turn(event: ConversationItemAddedEvent) -> None:
    """Each message's timings as agents measured them (`ChatMessage.metrics`: for the
    user's, transcription and end-of-turn delays; for the bot's, LLM time to first token
    and TTS time to first byte), a `turn metrics` line in the worker's log: where a
    harness reads the time each service takes."""
    if isinstance(event.item, llm.ChatMessage):
        timings = {k: v for k, v in event.item.metrics.items() if isinstance(v, float)}
        logger.info("turn metrics", extra={"role": event.item.role, **timings})


TONE_HZ = 440.0
TONE_SECONDS = 1.0
AMPLITUDE = 0.3
TONE_FRAME_MS = 10


def tone_frames() -> list[rtc.AudioFrame]:
    """The sine reply at OUTPUT_RATE in 10 ms frames (`benchmarks/sine_reply.py`'s
    tone: the same frequency, length and level)."""
    samples = OUTPUT_RATE * TONE_FRAME_MS // 1000
    wave = array("h", (
        round(AMPLITUDE * 32767 * math.sin(2 * math.pi * TONE_HZ * i / OUTPUT_RATE))
        for i in range(round(TONE_SECONDS * OUTPUT_RATE))
    ))  # fmt: skip
    return [
        rtc.AudioFrame(wave[i : i + samples].tobytes(), OUTPUT_RATE, 1, samples)
        for i in range(0, len(wave), samples)
    ]


async def sine(ctx: JobContext) -> None:
    """LiveKit's load-test shape: the job's Silero stream on the first participant's
    microphone, and the tone published at each end of speech it reports."""
    await ctx.connect(auto_subscribe=AutoSubscribe.AUDIO_ONLY)
    source = rtc.AudioSource(OUTPUT_RATE, 1)
    track = rtc.LocalAudioTrack.create_audio_track("sine", source)
    options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
    await ctx.room.local_participant.publish_track(track, options)
    caller = await ctx.wait_for_participant()
    ctx.room.on("participant_disconnected", lambda _participant: ctx.shutdown("caller left"))
    audio = rtc.AudioStream.from_participant(
        participant=caller, track_source=rtc.TrackSource.SOURCE_MICROPHONE,
        sample_rate=STT_RATE, num_channels=1,
    )  # fmt: skip
    stream = ctx.proc.userdata["vad"].stream()
    frames = tone_frames()

    async def listen() -> None:
        async for event in audio:
            stream.push_frame(event.frame)

    async def reply() -> None:
        async for event in stream:
            if event.type == vad.VADEventType.END_OF_SPEECH:
                for frame in frames:
                    await source.capture_frame(frame)

    await asyncio.gather(listen(), reply())


server = AgentServer(**server_options("AGENTS_VOICE"), setup_fnc=prewarm)


async def voice(ctx: JobContext) -> None:
    session: AgentSession[None] = AgentSession(
        vad=ctx.proc.userdata["vad"],
        stt=PocketsphinxSTT(ctx.proc.userdata["decoder"]),
        llm=ScriptLLM(),
        tts=EspeakTTS(),
        turn_handling={"turn_detection": "vad", "interruption": {"mode": "vad"}},
    )
    session.on("conversation_item_added", log_turn)
    await session.start(agent=Agent(instructions="Repeat what the user says."), room=ctx.room)


server.rtc_session(sine if SHAPE == "sine" else voice)


if __name__ == "__main__":
    cli.run_app(server)
