"""Scoring a CTC model on held-out splits, decoded as the worker decodes it."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from asr_worker.decoding import WordLM
from asr_worker.recipes.clips import language_examples
from asr_worker.recipes.ctc import (
    decode,
    error_rate,
    frame_log_probs,
    normalize_text,
)
from lidroute.train.corpus import (
    CorpusError,
    Example,
)
from lidroute.train.synth import phonemize

if TYPE_CHECKING:
    from transformers import Wav2Vec2ForCTC, Wav2Vec2Processor

log = logging.getLogger(__name__)


def evaluate_model(
    model: Wav2Vec2ForCTC,
    processor: Wav2Vec2Processor,
    examples: Sequence[Example],
    references: Sequence[str] | None = None,
    lms: Sequence[WordLM | None] = (None,),
) -> list[dict[str, float]]:
    """Corpus CER and WER decoded as the worker decodes, once per decoder in `lms` (None: greedy,
    else beam search with that LM); also the real-time factor of the forward pass plus that decoding.

    The acoustic model runs once whatever the number of decoders. `references` replace the
    examples' transcripts (a phoneme model is scored on phonemes).
    """
    audio = [e.audio() for e in examples]
    audio_seconds = max(1e-9, sum(len(a) for a in audio) / 16000)
    refs = [normalize_text(t) for t in (references or [e.text for e in examples])]
    started = time.perf_counter()
    log_probs = frame_log_probs(model, processor, audio)
    forward = time.perf_counter() - started
    results = []
    for lm in lms:
        started = time.perf_counter()
        hypotheses = decode(processor, log_probs, lm)
        elapsed = forward + time.perf_counter() - started
        results.append(
            {
                "cer": error_rate(refs, hypotheses),
                "wer": error_rate(refs, hypotheses, words=True),
                "rtf": elapsed / audio_seconds,
                "utterances": float(len(examples)),
            }
        )
    return results


def evaluate_splits(
    model: Wav2Vec2ForCTC,
    processor: Wav2Vec2Processor,
    data: str | Path,
    language: str,
    splits: Sequence[str],
    n_eval: int,
    targets: str = "letters",
    lms: Sequence[WordLM | None] = (None,),
) -> list[dict[str, dict[str, float]]]:
    """Per decoder in `lms`, the scores of each split that the data has."""
    results: list[dict[str, dict[str, float]]] = [{} for _ in lms]
    for split in splits:
        try:
            examples = language_examples(data, split, language)[:n_eval]
        except CorpusError as exc:
            log.warning("split not evaluated", extra={"split": split, "error": str(exc)})
            continue
        references = phonemize([e.text for e in examples], language) if targets == "phonemes" else None
        scored = evaluate_model(model, processor, examples, references, lms)
        for result, scores in zip(results, scored, strict=True):
            result[split] = scores
    return results
