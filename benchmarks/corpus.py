"""The callers' utterances for `benchmarks/conversations.py`: short conversational
questions spoken by espeak-ng in a few voices and speeds, made here, nothing downloaded.

    python -m benchmarks.corpus [--cache .cache/corpus]

Each (sentence, voice, speed) is one utterance, 16 kHz int16 mono, its leading and
trailing silence trimmed so that its end is the end of speech (what the voice-to-voice
latency is measured from). They are written once as WAV files into a folder of the cache
named by a hash of the sentences, voices, speeds and rate, so a change to any of them
makes a new folder and the old one is never read again.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import wave
from collections.abc import Sequence
from io import BytesIO
from pathlib import Path

import attrs
import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
CACHE = REPO_ROOT / ".cache" / "corpus"
ESPEAK = "espeak-ng"
SAMPLE_RATE = 16_000
SENTENCES = (
    "What time does the shop open tomorrow?",
    "Can you tell me the weather for this weekend?",
    "I would like to book a table for two.",
    "How long does the delivery usually take?",
    "Is there a train to the airport tonight?",
    "Could you repeat that, please?",
    "What is the balance on my account?",
    "I lost my card, what should I do?",
    "Do you have any rooms free on Friday?",
    "How much does the basic plan cost?",
    "Can I change my appointment to Monday?",
    "Where is the nearest pharmacy?",
    "Please send me the receipt by email.",
    "Why was my order cancelled?",
    "Is the museum open on holidays?",
    "I need help resetting my password.",
    "What are your opening hours on Sunday?",
    "Can you recommend a good restaurant nearby?",
    "How do I return a broken item?",
    "Thank you, that is all for today.",
)
VOICES = ("en-us", "en-gb", "en+f3")
"""espeak-ng voices: American, British, and a female variant."""
SPEEDS_WPM = (150, 180)
TRIM_LEVEL = 64
"""A sample whose magnitude stays under this is silence when trimming a clip's ends
(espeak-ng writes true zeros around speech; this leaves its faint tails out too)."""


@attrs.frozen
class Utterance:
    text: str
    voice: str
    wpm: int
    samples: np.ndarray = attrs.field(eq=False, repr=False)
    """int16 mono at `SAMPLE_RATE`, speech from its first sample to its last."""

    @property
    def seconds(self) -> float:
        return len(self.samples) / SAMPLE_RATE


def synthesize(
    text: str, rate: int, *, voice: str | None = None, wpm: int | None = None,
    program: str = ESPEAK,
) -> np.ndarray:
    """`text` spoken by espeak-ng (`program`), int16 mono resampled to `rate`: the one
    place this project turns text into a caller's speech (tests and the corpus)."""
    options = [*(["-v", voice] if voice else []), *(["-s", str(wpm)] if wpm else [])]
    wav = subprocess.run(
        [program, "--stdout", *options, text], capture_output=True, check=True
    ).stdout
    with wave.open(BytesIO(wav)) as reader:
        source_rate = reader.getframerate()
        speech = np.frombuffer(reader.readframes(reader.getnframes()), dtype=np.int16)
    # espeak-ng's header gives no length on a pipe: the wave module reads what is there
    at = np.arange(round(len(speech) * rate / source_rate)) * source_rate / rate
    return np.interp(at, np.arange(len(speech)), speech).astype(np.int16)


def trimmed(samples: np.ndarray) -> np.ndarray:
    """`samples` without the silence before its first and after its last loud sample."""
    loud = np.flatnonzero(np.abs(samples.astype(np.int32)) >= TRIM_LEVEL)
    return samples[loud[0] : loud[-1] + 1] if loud.size else samples[:0]


def _key(sentences: Sequence[str], voices: Sequence[str], speeds: Sequence[int]) -> str:
    described = json.dumps([list(sentences), list(voices), list(speeds), SAMPLE_RATE])
    return hashlib.sha256(described.encode()).hexdigest()[:16]


def corpus(
    cache: Path = CACHE,
    sentences: Sequence[str] = SENTENCES,
    voices: Sequence[str] = VOICES,
    speeds: Sequence[int] = SPEEDS_WPM,
) -> list[Utterance]:
    """Every (sentence, voice, speed), synthesized into the cache the first time (a
    few seconds) and read from it after."""
    folder = cache / _key(sentences, voices, speeds)
    plan = [(text, voice, wpm) for text in sentences for voice in voices for wpm in speeds]
    if not (folder / "index.json").exists():
        if shutil.which(ESPEAK) is None:
            raise RuntimeError(f"{ESPEAK} is not installed: apt-get install espeak-ng")
        building = folder.with_name(folder.name + ".building")
        shutil.rmtree(building, ignore_errors=True)
        building.mkdir(parents=True)
        for index, (text, voice, wpm) in enumerate(plan):
            speech = trimmed(synthesize(text, SAMPLE_RATE, voice=voice, wpm=wpm))
            with wave.open(str(building / f"{index:03d}.wav"), "wb") as writer:
                writer.setnchannels(1)
                writer.setsampwidth(2)
                writer.setframerate(SAMPLE_RATE)
                writer.writeframes(speech.tobytes())
        index_entries = [{"text": t, "voice": v, "wpm": w} for t, v, w in plan]
        (building / "index.json").write_text(json.dumps(index_entries, indent=1) + "\n")
        shutil.rmtree(folder, ignore_errors=True)
        building.rename(folder)  # whole or not at all: a run cut short rebuilds
    entries = json.loads((folder / "index.json").read_text())
    found = []
    for index, entry in enumerate(entries):
        with wave.open(str(folder / f"{index:03d}.wav")) as reader:
            samples = np.frombuffer(reader.readframes(reader.getnframes()), dtype=np.int16)
        found.append(Utterance(entry["text"], entry["voice"], entry["wpm"], samples))
    return found


def corpus_folder(cache: Path = CACHE) -> Path:
    """The folder `corpus` reads with the default sentences, voices and speeds."""
    return cache / _key(SENTENCES, VOICES, SPEEDS_WPM)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=CACHE)
    args = parser.parse_args(argv)
    utterances = corpus(args.cache)
    seconds = [u.seconds for u in utterances]
    print(
        f"{len(utterances)} utterances in {corpus_folder(args.cache)}: "
        f"{min(seconds):.2f}-{max(seconds):.2f} s, {sum(seconds):.0f} s in all"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
