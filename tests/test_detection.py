"""Speech onset and the growing language-ID window, with the real VAD and the real LID model in-process."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from lid_service.model import LanguageIdModel, LidRequest
from lidroute.audio import speech_segments
from lidroute.errors import InvalidArgument
from lidroute.vad import Pauses, VadPool
from router.detection import AudioBuffer, NoSpeech, OnsetDetector, detect_language


@pytest.fixture(scope="module")
def lid(models_dir: Path) -> LanguageIdModel:
    return LanguageIdModel(str(models_dir / "lid"), Path(tempfile.mkdtemp()))


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * 16000), np.float32)


def recording(lid: LanguageIdModel, calls: list[float]):  # type: ignore[no-untyped-def]
    async def identify(audio: np.ndarray, candidates: Sequence[str]) -> list[tuple[str, float]]:
        calls.append(len(audio) / 16000)
        return lid.identify([LidRequest(audio, tuple(candidates))])[0]

    return identify


def detect(
    buffer: AudioBuffer,
    lid: LanguageIdModel,
    calls: list[float],
    candidates: Sequence[str],
    windows: Sequence[float],
    threshold: float = 0.5,
):  # type: ignore[no-untyped-def]
    """detect_language as the router runs it, with the real LID model and a fresh VAD."""
    return detect_language(
        buffer,
        list(candidates),
        recording(lid, calls),
        OnsetDetector(VadPool()),
        windows=list(windows),
        threshold=threshold,
        max_onset_search=5.0,
    )


def test_onset_is_found_after_leading_silence(speech) -> None:
    detector = OnsetDetector(VadPool())
    audio = np.concatenate([silence(1.2), speech["es"][0].audio])
    onset = detector.feed(audio)
    assert onset is not None and 1.0 <= onset / 16000 <= 1.35


def test_silence_has_no_onset() -> None:
    detector = OnsetDetector(VadPool())
    assert detector.feed(silence(2.0)) is None
    detector.close()


async def test_a_confident_first_window_ends_detection(lid: LanguageIdModel, speech) -> None:
    buffer = AudioBuffer()
    buffer.append(np.concatenate([silence(0.8), speech["sw"][0].audio]))
    buffer.end()
    calls: list[float] = []
    decision = await detect(buffer, lid, calls, ["en", "es", "sw"], [1.0, 2.0, 3.0], threshold=0.5)
    assert decision.language == "sw"
    assert calls == [1.0]
    assert 0.6 <= decision.onset / 16000 <= 0.85


async def test_windows_grow_until_the_threshold_or_the_last_window(lid: LanguageIdModel, speech) -> None:
    buffer = AudioBuffer()
    buffer.append(speech["en"][0].audio)
    buffer.end()
    calls: list[float] = []
    decision = await detect(buffer, lid, calls, ["en", "es"], [0.25, 0.5, 1.0], threshold=1.01)
    assert calls == [0.25, 0.5, 1.0]  # never confident enough: every window, then decide
    assert decision.window == 16000
    assert {c for c, _ in decision.alternatives} == {"en", "es"}


async def test_a_window_that_runs_to_the_end_of_the_request_leaves_out_the_silence_after_the_speech(
    lid: LanguageIdModel, speech
) -> None:
    buffer = AudioBuffer()
    spoken = speech["sw"][0].audio
    buffer.append(np.concatenate([silence(0.5), spoken, silence(2.0)]))
    buffer.end()
    calls: list[float] = []
    decision = await detect(buffer, lid, calls, ["en", "es", "sw"], [5.0], threshold=0.5)
    seconds = len(spoken) / 16000
    assert decision.language == "sw"
    assert seconds - 0.6 < calls[0] < seconds + 0.15, (calls, seconds)  # not the 2 s of silence after it
    assert decision.window == int(calls[0] * 16000)


async def test_a_window_that_ends_in_a_pause_is_cut_there_and_no_bigger_window_follows_it(
    lid: LanguageIdModel, speech
) -> None:
    buffer = AudioBuffer()
    first, second = speech["es"][0].audio, speech["es"][1].audio
    buffer.append(np.concatenate([first, silence(3.0), second]))
    buffer.end()
    calls: list[float] = []
    seconds = len(first) / 16000
    windows = [seconds + 0.5, seconds + 1.5]  # both end inside the pause
    decision = await detect(buffer, lid, calls, ["en", "es", "sw"], windows, threshold=1.01)
    assert len(calls) == 1 and seconds - 0.6 < calls[0] < seconds + 0.15, (calls, seconds)
    assert decision.language == "es"


async def test_detection_waits_for_audio_as_it_streams_in(lid: LanguageIdModel, speech) -> None:
    buffer = AudioBuffer()
    calls: list[float] = []
    task = asyncio.create_task(detect(buffer, lid, calls, ["en", "es", "sw"], [1.0], threshold=0.5))
    audio = np.concatenate([silence(0.5), speech["es"][1].audio])
    for i in range(0, len(audio), 1600):
        buffer.append(audio[i : i + 1600])
        await asyncio.sleep(0)
        if task.done():
            break
    decision = await asyncio.wait_for(task, 10)
    assert decision.language == "es" and calls == [1.0]


async def test_the_onset_is_found_when_the_stream_ends_before_the_scan_catches_up(
    lid: LanguageIdModel, speech
) -> None:
    """A fast client sends everything and half-closes while the VAD is still on its first frames."""
    buffer = AudioBuffer()
    audio = np.concatenate([silence(0.7), speech["en"][0].audio])

    async def send() -> None:
        for i in range(0, len(audio), 1600):
            buffer.append(audio[i : i + 1600])
            await asyncio.sleep(0)
        buffer.end()

    sender = asyncio.create_task(send())
    calls: list[float] = []
    decision = await detect(buffer, lid, calls, ["en", "es", "sw"], [1.0], threshold=0.5)
    await sender
    assert 0.6 <= decision.onset / 16000 <= 0.75
    assert decision.language == "en"


async def test_too_little_audio_is_an_error(lid: LanguageIdModel) -> None:
    buffer = AudioBuffer()
    buffer.append(np.full(800, 0.01, np.float32))
    buffer.end()
    with pytest.raises(InvalidArgument, match="too short"):
        await detect_language(
            buffer,
            ["en", "es"],
            recording(lid, []),
            OnsetDetector(VadPool()),
            windows=[0.5],
            threshold=0.5,
            max_onset_search=5.0,
        )


async def test_a_request_of_silence_alone_has_no_speech_and_no_language(lid: LanguageIdModel) -> None:
    buffer = AudioBuffer()
    buffer.append(silence(2.0))
    buffer.end()
    calls: list[float] = []
    with pytest.raises(NoSpeech, match=r"no speech in 2\.00 s"):
        await detect(buffer, lid, calls, ["en", "es"], [0.5, 1.0])
    assert calls == []  # the language-ID model is never asked


async def test_too_short_a_request_is_refused_as_too_short_not_as_silence(lid: LanguageIdModel) -> None:
    buffer = AudioBuffer()
    buffer.append(silence(0.05))
    buffer.end()
    with pytest.raises(InvalidArgument, match="too short"):
        await detect(buffer, lid, [], ["en", "es"], [0.5])


def test_audio_handed_on_to_the_worker_is_no_longer_held_but_still_counted() -> None:
    buffer = AudioBuffer()
    buffer.append(np.ones(10, np.float32))
    buffer.append(np.ones(5, np.float32))
    assert sum(map(len, buffer.take())) == 15
    assert buffer.chunks == [] and buffer.size == 15
    buffer.append(np.ones(3, np.float32))
    assert sum(map(len, buffer.take())) == 3 and buffer.size == 18
    with pytest.raises(RuntimeError, match="handed over"):
        buffer.array()


async def test_a_client_faster_than_its_audio_is_handed_on_waits_for_room() -> None:
    buffer = AudioBuffer()
    buffer.append(np.ones(100, np.float32))
    await asyncio.wait_for(buffer.room(50), 1)  # before it is handed on, detection needs it all
    buffer.take()
    buffer.append(np.ones(100, np.float32))
    waiting = asyncio.ensure_future(buffer.room(50))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    buffer.take()
    await asyncio.wait_for(waiting, 1)


def noisy_pair(speech, snr_db: float) -> tuple[np.ndarray, tuple[int, int]]:  # type: ignore[no-untyped-def]
    """Two sentences a second apart, steady noise `snr_db` under the speech throughout; the gap's span."""
    first, second = (utt.audio for utt in speech["es"])
    audio = np.concatenate([first, silence(1.0), second])
    level = float(np.sqrt(np.mean(first**2)))
    audio += (
        np.random.default_rng(3).standard_normal(len(audio)).astype(np.float32) * level / 10 ** (snr_db / 20)
    )
    return audio, (len(first), len(first) + 16000)


def test_the_vad_finds_a_pause_that_steady_noise_fills_where_the_level_finds_none(speech) -> None:  # type: ignore[no-untyped-def]
    audio, (gap_start, gap_end) = noisy_pair(speech, snr_db=15)
    assert speech_segments(audio) == [(0, len(audio))]  # the level hears no pause
    pauses = Pauses(VadPool())
    pauses.scan(audio[:gap_start], 0)
    assert pauses.cut() is None  # a sentence alone: no pause yet
    pauses.scan(audio, 0)
    cut = pauses.cut()
    assert cut is not None and gap_start < cut < gap_end
    pauses.close()


def test_pauses_count_from_the_start_of_the_stream_when_its_head_is_let_go(speech) -> None:  # type: ignore[no-untyped-def]
    """A worker keeps only what follows its last final result; the pause it finds in what is
    held is where it is in the whole stream, found as when the stream was scanned whole."""
    audio, _ = noisy_pair(speech, snr_db=15)
    whole = Pauses(VadPool())
    whole.scan(audio, 0)
    head = len(audio) // 4 // 512 * 512
    pieces = Pauses(VadPool())
    pieces.scan(audio[:head], 0)
    pieces.scan(audio[head // 2 :], head // 2)  # the first half of the head let go meanwhile
    assert pieces.cut() == whole.cut() and pieces.scanned == whole.scanned
