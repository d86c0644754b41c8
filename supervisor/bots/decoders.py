"""pocketsphinx decoders in processes of their own: the voice bot's speech recognition.

A decoder holds the GIL while it decodes (py-spy: a third of the GIL's samples in a
voice room when it decoded on a thread of the rooms' process), so in the rooms' process
it would make every room's event loop wait, and two threads decode no faster than one.
In processes of their own, a few decoders serve every room of the process, in parallel
on the cores and off the GIL the rooms share.

Each decoder process is this file run as a script (`python -I decoders.py`), importing
pocketsphinx and the standard library only, and answering on its pipes: a request is
4 bytes of length (big-endian) and the audio, an answer the words and a newline. Not a
multiprocessing child: spawn imports the parent's main module again in each child (the
CLI, so pipecat and the rtc SDK: 180 MB RSS a decoder process, of which the decoder is
95), and `python -m` would import this package's `__init__`, pipecat with it. A decoder
process exits when its standard input closes, so it ends with the process it serves,
however that one ends.

pocketsphinx 5.1.1 (the `voice` extra) ships its en-us acoustic model, dictionary and
language model inside the wheel, so nothing is downloaded. Measured here (2 cores): a
decoder costs about 95 MB and 0.4 s to load.
"""

from __future__ import annotations

import queue
import signal
import struct
import subprocess
import sys
import threading
import time
from typing import IO, Any, NamedTuple

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
settings), one pass: 0.16 s for a 1.8 s utterance against 0.81 s with pocketsphinx's
defaults (a quiet machine), at about the same accuracy on espeak-ng's voice. The
transcript feeds a scripted LLM: its accuracy is not the point, its cost is real."""

_LENGTH = struct.Struct(">I")
_READY = b"ready\n"


class Decoded(NamedTuple):
    words: str
    """The words heard, or "" if none."""
    started: float
    """`time.time()` when an idle decoder took the utterance: the call waited for one
    until then, which is the sharing's cost and not the decoder's time."""


class DecoderGone(RuntimeError):
    """A decoder process exited (its exit status in the message); another replaces it."""


def serve(requests: IO[bytes], answers: IO[bytes]) -> None:
    """A decoder process's life: load the decoder, say so, then answer each request
    until `requests` ends."""
    decoder = Decoder(samprate=SAMPLE_RATE, loglevel="FATAL", **FAST_SEARCH)
    answers.write(_READY)
    answers.flush()
    while len(header := requests.read(_LENGTH.size)) == _LENGTH.size:
        (size,) = _LENGTH.unpack(header)
        decoder.start_utt()
        decoder.process_raw(requests.read(size), full_utt=True)
        decoder.end_utt()
        hypothesis = decoder.hyp()
        words = hypothesis.hypstr if hypothesis is not None else ""
        answers.write(words.replace("\n", " ").encode() + b"\n")
        answers.flush()


class _DecoderProcess:
    """One decoder process, used by one thread at a time (`Decoders` sees to it)."""

    def __init__(self) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-I", __file__], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        self.ready = False

    def _answer(self) -> bytes:
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        if not line.endswith(b"\n"):
            raise DecoderGone(f"a decoder process exited ({self._process.wait()})")
        return line

    def wait_ready(self) -> None:
        if not self.ready:
            self.ready = self._answer() == _READY

    def decode(self, pcm: bytes) -> str:
        assert self._process.stdin is not None
        self.wait_ready()
        try:
            self._process.stdin.write(_LENGTH.pack(len(pcm)) + pcm)
            self._process.stdin.flush()
        except BrokenPipeError:
            raise DecoderGone(f"a decoder process exited ({self._process.wait()})") from None
        return self._answer().decode().rstrip("\n")

    def kill(self) -> None:
        self._process.kill()
        self._process.wait()
        self._close_pipes()

    def _close_pipes(self) -> None:
        """Its pipes, once it has exited (left open, each is an fd until collected)."""
        for pipe in (self._process.stdin, self._process.stdout):
            if pipe is not None and not pipe.closed:
                pipe.close()

    def close(self) -> None:
        assert self._process.stdin is not None
        self._process.stdin.close()  # it ends its loop, and exits
        try:
            self._process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.kill()
        self._close_pipes()


class Decoders:
    """`processes` decoder processes, started on the first call; each call (blocking,
    from any thread) waits for an idle one."""

    def __init__(self, processes: int) -> None:
        self._processes = processes
        self._idle: queue.SimpleQueue[_DecoderProcess] = queue.SimpleQueue()
        self._all: list[_DecoderProcess] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        """Start every decoder process (returns at once): each loads its decoder first."""
        with self._lock:
            while len(self._all) < self._processes:
                self._add()

    def _add(self) -> None:
        process = _DecoderProcess()
        self._all.append(process)
        self._idle.put(process)

    @property
    def ready(self) -> bool:
        """Whether every decoder process has loaded its decoder, as far as it said."""
        return len(self._all) == self._processes and all(p.ready for p in self._all)

    def wait_ready(self) -> None:
        """Start the decoder processes, and return once each has loaded its decoder."""
        self.start()
        taken = [self._idle.get() for _ in range(self._processes)]
        try:
            for process in taken:
                process.wait_ready()
        finally:
            for process in taken:
                self._idle.put(process)

    def decode(self, pcm: bytes) -> Decoded:
        """The words in `pcm` (16-bit mono at `SAMPLE_RATE`)."""
        self.start()
        process = self._idle.get()
        started = time.time()
        try:
            words = process.decode(pcm)
        except BaseException:
            # gone, or its pipes in an unknown state (an error mid-request): replaced,
            # so the next call has a decoder again
            process.kill()
            with self._lock:
                if process in self._all:
                    self._all.remove(process)
                    self._add()
            raise
        self._idle.put(process)
        return Decoded(words, started)

    def close(self) -> None:
        """Stop every decoder process (one that is decoding finishes first); a call after
        this starts new ones."""
        with self._lock:
            processes, self._all = self._all, []
            self._idle = queue.SimpleQueue()
        for process in processes:
            process.close()


if __name__ == "__main__":
    # a terminal's Ctrl-C reaches the whole process group: the process this one serves
    # decides (it drains), and this one ends when it closes the pipe
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    serve(sys.stdin.buffer, sys.stdout.buffer)
