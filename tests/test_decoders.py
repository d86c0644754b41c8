"""The voice bot's decoder processes (`supervisor.bots.decoders`): light, shared by
threads, replaced when one dies, gone when closed."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from supervisor.bots.decoders import SAMPLE_RATE, DecoderGone, Decoders

SILENCE = bytes(2 * SAMPLE_RATE // 2)  # half a second
"""What the decoders hear in it varies with the model ("" or a word it imagines), but
not from one call to the next: the same audio, the same words."""


@pytest.fixture
def two() -> Iterator[Decoders]:
    decoders = Decoders(2)
    yield decoders
    decoders.close()


def pids(decoders: Decoders) -> list[int]:
    return [process._process.pid for process in decoders._all]


def test_a_decoder_process_imports_neither_pipecat_nor_the_rtc_sdk(two: Decoders) -> None:
    two.wait_ready()
    for pid in pids(two):
        maps = Path(f"/proc/{pid}/maps").read_text()
        assert "pocketsphinx" in maps
        assert "liblivekit_ffi" not in maps  # the rtc SDK's library is not loaded
        # nor pipecat's dependencies' native parts (numpy comes with pipecat)
        assert "numpy" not in maps, [line for line in maps.splitlines() if "numpy" in line][:3]


def test_threads_decode_at_once_on_the_processes(two: Decoders) -> None:
    assert not two.ready
    two.wait_ready()
    assert two.ready
    asked = time.time()
    with ThreadPoolExecutor(4) as threads:
        decoded = list(threads.map(two.decode, [SILENCE] * 8))
    assert [d.words for d in decoded] == [decoded[0].words] * 8
    # eight calls on two decoders: the later ones waited for an idle one, and say so
    started = sorted(d.started for d in decoded)
    assert asked <= started[0]
    assert started[-1] > started[1]


def test_a_decoder_process_that_dies_fails_its_call_and_is_replaced(two: Decoders) -> None:
    heard = two.decode(SILENCE).words
    dead = two._all[0]
    dead._process.kill()
    dead._process.wait()
    # the calls take the processes in turn: one of the next two meets the dead one
    outcomes = []
    for _ in range(2):
        try:
            outcomes.append(two.decode(SILENCE).words)
        except DecoderGone as gone:
            outcomes.append(str(gone))
    assert sorted(outcomes) == sorted([heard, "a decoder process exited (-9)"])
    assert dead not in two._all
    assert len(two._all) == 2
    assert [two.decode(SILENCE).words for _ in range(4)] == [heard] * 4  # both answer again


def test_closed_decoders_exit_and_a_later_call_starts_new_ones(two: Decoders) -> None:
    heard = two.decode(SILENCE).words
    processes = list(two._all)
    two.close()
    assert [process._process.poll() for process in processes] == [0, 0]
    assert two.decode(SILENCE).words == heard
    assert not set(pids(two)) & {process._process.pid for process in processes}


def test_a_decoder_process_is_this_module_run_as_a_script(two: Decoders) -> None:
    two.start()
    (args, *_) = [process._process.args for process in two._all]
    assert args[:2] == [sys.executable, "-I"]
    assert Path(args[2]).name == "decoders.py"
