"""Speech onset and the growing language-ID window, with the real VAD and the real LID model in-process."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from lid_service.model import LanguageIdModel, LidRequest
from lidroute.errors import InvalidArgument
from router.detection import AudioBuffer, OnsetDetector, VadPool, detect_language


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
    decision = await detect_language(
        buffer,
        ["en", "es", "sw"],
        recording(lid, calls),
        OnsetDetector(VadPool()),
        windows=[0.5, 1.0, 2.0],
        threshold=0.5,
        max_onset_search=5.0,
    )
    assert decision.language == "sw"
    assert calls == [0.5]
    assert 0.6 <= decision.onset / 16000 <= 0.85


async def test_windows_grow_until_the_threshold_or_the_last_window(lid: LanguageIdModel, speech) -> None:
    buffer = AudioBuffer()
    buffer.append(speech["en"][0].audio)
    buffer.end()
    calls: list[float] = []
    decision = await detect_language(
        buffer,
        ["en", "es"],
        recording(lid, calls),
        OnsetDetector(VadPool()),
        windows=[0.25, 0.5, 1.0],
        threshold=1.01,
        max_onset_search=5.0,
    )
    assert calls == [0.25, 0.5, 1.0]  # never confident enough: every window, then decide
    assert decision.window == 16000
    assert {c for c, _ in decision.alternatives} == {"en", "es"}


async def test_detection_waits_for_audio_as_it_streams_in(lid: LanguageIdModel, speech) -> None:
    buffer = AudioBuffer()
    calls: list[float] = []
    task = asyncio.create_task(
        detect_language(
            buffer,
            ["en", "es", "sw"],
            recording(lid, calls),
            OnsetDetector(VadPool()),
            windows=[1.0],
            threshold=0.5,
            max_onset_search=5.0,
        )
    )
    audio = np.concatenate([silence(0.5), speech["es"][1].audio])
    for i in range(0, len(audio), 1600):
        buffer.append(audio[i : i + 1600])
        await asyncio.sleep(0)
        if task.done():
            break
    decision = await asyncio.wait_for(task, 10)
    assert decision.language == "es" and calls == [1.0]


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
