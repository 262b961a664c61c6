"""The multilingual CTC backbone the transfer recipe starts from.

No hub is reachable where this project is built, so the backbone is trained here: supervised
multilingual CTC over the high-resource languages (en, es, fr, de, pt, it, ru) of any corpus
`read_examples` reads, on the from-scratch recipe's architecture.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from asr_worker.recipes.cards import backbone_card, write_report
from asr_worker.recipes.clips import language_examples, seconds_of, take_clips
from asr_worker.recipes.ctc import (
    PERTURBATION,
    CtcRecipe,
    build_processor,
    fit_ctc,
    save_recognizer,
    seeded_rng,
)
from asr_worker.recipes.scoring import evaluate_splits
from lidroute.train.budget import Budget
from lidroute.train.synth import HIGH_RESOURCE, phonemize

if TYPE_CHECKING:
    from transformers import Wav2Vec2ForCTC, Wav2Vec2Processor

log = logging.getLogger(__name__)


#: The backbone's architecture and optimisation: the from-scratch recipe, on more languages.
BACKBONE_RECIPE = CtcRecipe()
#: Updates of a backbone given no budget (`pretrain_backbone`, `asr_worker pretrain`).
BACKBONE_STEPS = 3000


def pretrain_backbone(
    data: str | Path,
    out_dir: Path,
    languages: Sequence[str] = HIGH_RESOURCE,
    *,
    utterances_per_language: int = 1000,
    max_steps: int | None = BACKBONE_STEPS,
    max_train_seconds: float | None = None,
    seed: int = 0,
    n_eval: int = 50,
    recipe: CtcRecipe = BACKBONE_RECIPE,
    targets: str = "phonemes",
    device: str = "cpu",
) -> dict[str, Any]:
    """Supervised multilingual CTC, on phonemes (default) or on the union of the alphabets.

    Supervised rather than self-supervised because on two CPU cores the contrastive wav2vec2
    objective needs far more updates than there is time for. Phoneme targets (espeak-ng's IPA
    for each transcript) rather than letters because the languages then share one output
    inventory: every update teaches every language the same phones, where letter targets split
    the model's effort over seven spelling systems (English's above all); the encoder learns
    phone-like units, which is what carries over to a new language and its alphabet. Batches mix
    all languages, so no language is learnt last and favoured.
    """
    from transformers import Wav2Vec2ForCTC

    rng = seeded_rng(seed)
    clips = _clips(data, languages, targets, seed, utterances_per_language)
    with tempfile.TemporaryDirectory(prefix="ctc-vocab-") as tmp:
        processor = build_processor([text for text, _ in clips], Path(tmp))
    model = Wav2Vec2ForCTC(recipe.config(len(processor.tokenizer))).to(device)
    budget = Budget(max_steps=max_steps, max_seconds=max_train_seconds)
    log.info(
        "pretraining backbone", extra={"languages": ",".join(languages), "hours": seconds_of(clips) / 3600}
    )
    audio_seconds = fit_ctc(model, processor, clips, budget, recipe, rng)
    save_recognizer(model, processor, out_dir)
    scores = _test_scores(model, processor, data, languages, n_eval, targets)
    report: dict[str, Any] = {
        "kind": "backbone",
        "targets": targets,
        "languages": list(languages),
        "seed": seed,
        "steps": budget.steps,
        "train_seconds": round(budget.elapsed, 1),
        "device": device,
        "train_hours": round(seconds_of(clips) / 3600, 3),
        "epochs": round(audio_seconds / max(1e-9, seconds_of(clips)), 2),
        "params": sum(p.numel() for p in model.parameters()),
        "utterances_per_language": utterances_per_language,
        "recipe": asdict(recipe),
        "augmentation": asdict(PERTURBATION),
        "data": str(data),
        "test": scores,
        "mean_cer": float(np.mean([s["cer"] for s in scores.values() if s])),
    }
    write_report(out_dir, report)
    backbone_card(out_dir, report)
    return report


def _clips(
    data: str | Path, languages: Sequence[str], targets: str, seed: int, utterances_per_language: int
) -> list[tuple[str, np.ndarray]]:
    """Each language's training clips, their transcripts in IPA when the targets are phonemes."""
    clips: list[tuple[str, np.ndarray]] = []
    if targets not in ("phonemes", "letters"):
        raise ValueError(f"targets must be phonemes or letters, not {targets!r}")
    for lang in languages:
        taken = take_clips(language_examples(data, "train", lang), seed=seed, limit=utterances_per_language)
        if targets == "phonemes":
            taken = list(zip(phonemize([t for t, _ in taken], lang), [a for _, a in taken], strict=True))
        clips += taken
    return clips


def _test_scores(
    model: Wav2Vec2ForCTC,
    processor: Wav2Vec2Processor,
    data: str | Path,
    languages: Sequence[str],
    n_eval: int,
    targets: str,
) -> dict[str, dict[str, float]]:
    """Each language's error rates on its test split, in the units of the targets (phones or letters)."""
    return {
        lang: evaluate_splits(model, processor, data, lang, ["test"], n_eval, targets)[0].get("test", {})
        for lang in languages
    }
