"""Splits added to a synthetic corpus after it is made, leaving its own splits as they are.

`condition_splits` takes `test_hard`'s changes one at a time, to say which of them a model fails
on; `tuning_split` adds new held-out sentences to tune decoders on. Both read the corpus's
recipe (`corpus.json`, `lidroute.train.synthetic`) so that they speak and degrade as the
corpus does, and neither redraws any utterance the corpus already has.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lidroute.audio import rms
from lidroute.train import synth
from lidroute.train.augment import add_noise, silence, telephone
from lidroute.train.budget import usable_cores
from lidroute.train.example import CorpusError
from lidroute.train.manifest import read_manifest, write_manifest, write_utterance
from lidroute.train.synthetic import (
    SPLITS,
    SynthPlan,
    corpus_sentences,
    read_recipe,
    speak,
    split_seed,
    vocab_subset,
    write_recipe,
    write_spoken,
)

#: `condition_splits`: test_hard's conditions one at a time, each on the test split's sentences.
CONDITIONS = (
    "cond_voices",
    "cond_speeds",
    "cond_noise",
    "cond_telephone",
    "cond_noise_telephone",
    "cond_pauses",
)


def condition_splits(
    folder: str | Path,
    *,
    languages: Sequence[str] | None = None,
    per_language: int | None = None,
    workers: int | None = None,
) -> dict[str, Path]:
    """Adds to a synthetic corpus one split per `test_hard` condition, each applied alone.

    `test_hard` changes voices, speaking rates, noise and channel at once, so its error says
    that a model fails on unfamiliar speech but not which change it fails on, and so not what
    training should add. These splits take the `test` split's sentences (first `per_language`
    of each language) and change one thing: the held-out voices at training's speeds
    (`cond_voices`), training's voices at the held-out speeds (`cond_speeds`), `test_hard`'s noise
    (`cond_noise`), its telephone channel (`cond_telephone`), or both (`cond_noise_telephone`).
    The voices, speeds and SNRs come from the corpus's own recipe (`corpus.json`). One more is
    not in `test_hard` but in real requests: two sentences with a 1-3 s pause between them
    (`cond_pauses`: each utterance, then `silence`, then the next one).
    """
    folder = Path(folder)
    recipe, plan = read_recipe(folder)
    seed = recipe["seed"]
    test = read_manifest(folder / "test.jsonl")
    languages = list(languages or recipe["languages"])
    missing = [lang for lang in languages if not any(e.language == lang for e in test)]
    if missing:
        raise CorpusError(f"{folder}: the test split has no {', '.join(missing)} utterances")
    workers = workers or usable_cores()
    rows: dict[str, list[dict[str, Any]]] = {cond: [] for cond in CONDITIONS}
    for lang in languages:
        examples = [e for e in test if e.language == lang][:per_language]
        spoken = _respoken(lang, [e.text for e in examples], recipe, plan, workers)
        cleans = [e.audio() for e in examples]
        for index, example in enumerate(examples):
            following = (index + 1) % len(examples)
            rng = np.random.default_rng([seed, synth.stable_hash(f"{lang}:conditions"), index])
            made = _degraded(cleans[index], cleans[following], rng, plan)
            for cond, utterances in spoken.items():
                utt = utterances[index]
                made[cond] = (utt.audio, {"voice": utt.variant, "speed": utt.speed, "pitch": utt.pitch})
            for cond, (audio, changed) in made.items():
                text = f"{example.text} {examples[following].text}" if cond == "cond_pauses" else example.text
                rows[cond].append(
                    write_utterance(folder, cond, lang, index, audio, text, example.meta | changed)
                )
    return {cond: write_manifest(folder / f"{cond}.jsonl", rows[cond]) for cond in CONDITIONS}


def _respoken(
    lang: str, texts: list[str], recipe: Mapping[str, Any], plan: SynthPlan, workers: int
) -> dict[str, list[synth.Utterance]]:
    """`texts` spoken by the held-out voices at training's speeds, and by training's voices at
    the held-out speeds: `test_hard`'s two changes of speaker, each without the other."""
    voices_and_speeds = {
        "cond_voices": (recipe["voices"]["test_hard"], (plan.speeds,)),
        "cond_speeds": (recipe["voices"]["train_dev_test"], plan.hard_speeds),
    }
    return {
        cond: speak(lang, cond, texts, recipe["seed"], voices, speeds, plan.pitches, workers)
        for cond, (voices, speeds) in voices_and_speeds.items()
    }


def _degraded(
    clean: np.ndarray, following: np.ndarray, rng: np.random.Generator, plan: SynthPlan
) -> dict[str, tuple[np.ndarray, dict[str, Any]]]:
    """`clean` through `test_hard`'s noise, its channel, and both, and (a change real requests
    have) paused before the `following` utterance; each with what it changed, for the manifest.
    The draws from `rng` come in one order (SNR, noise, pause, silence), which the corpus's
    splits depend on: reorder them and every condition split changes."""
    snr_db = round(float(rng.uniform(*plan.hard_snr_db)), 2)
    noisy = add_noise(clean, snr_db, rng)
    pause = round(float(rng.uniform(1.0, 3.0)), 2)
    paused = np.concatenate([clean, silence(pause, rms(clean), rng), following])
    return {
        "cond_noise": (noisy, {"snr_db": snr_db}),
        "cond_telephone": (telephone(clean, plan.telephone_rate), {"telephone": True}),
        "cond_noise_telephone": (
            telephone(noisy, plan.telephone_rate),
            {"snr_db": snr_db, "telephone": True},
        ),
        "cond_pauses": (paused, {"pause_seconds": pause}),
    }


#: `tuning_split`'s split: more held-out sentences, spoken as `dev` is, to tune decoders on.
TUNE_SPLIT = "tune"


def tuning_split(
    folder: str | Path,
    *,
    languages: Sequence[str] | None = None,
    per_language: int = 200,
    workers: int | None = None,
) -> Path:
    """Adds to a synthetic corpus a `tune` split: new sentences, spoken and degraded as `dev` is.

    A recognizer's LM fusion (`asr_worker lm`) picks three numbers on held-out speech, and 50
    dev sentences per language make a noisy choice: English's recognizer trained 8,000 updates
    further chose a fusion that lost its whole acoustic gain on 300 new `test_hard` utterances
    (20.5 % CER, where the earlier run's fusion read 18.6 %). A larger dev split would do, but
    every split is cut from one pool of sentences whose draws depend on the total, so a corpus
    with a larger dev split has other training sentences, and every model trained on it
    changes. This split is drawn apart (its own seed) and leaves out every sentence the corpus
    already has, so the corpus's splits, and the models trained on them, stay as they are. An
    earlier `tune` split is replaced, whichever languages it had.
    """
    folder = Path(folder)
    recipe, plan = read_recipe(folder)
    seed = recipe["seed"]
    languages = list(languages or recipe["languages"])
    unknown = [lang for lang in languages if lang not in recipe["languages"]]
    if unknown:
        raise CorpusError(f"{folder}: the corpus has no {', '.join(unknown)}")
    if per_language < 1:
        raise CorpusError(f"per_language must be positive, got {per_language}")
    have: dict[str, set[str]] = defaultdict(set)
    for split in SPLITS:
        if (folder / f"{split}.jsonl").is_file():
            for example in read_manifest(folder / f"{split}.jsonl"):
                have[example.language].add(example.text)
    workers = workers or usable_cores()
    voices = recipe["voices"]["train_dev_test"]
    rows: list[dict[str, Any]] = []
    for lang in languages:
        vocab = vocab_subset(lang, recipe.get("vocab_words"), seed)
        wanted = {TUNE_SPLIT: per_language + len(have[lang])}
        pool = corpus_sentences(lang, wanted, seed=split_seed(seed, TUNE_SPLIT), plan=plan, vocab=vocab)
        items = [item for item in pool[TUNE_SPLIT] if item[0] not in have[lang]][:per_language]
        texts = [text for text, _ in items]
        utterances = speak(lang, TUNE_SPLIT, texts, seed, voices, (plan.speeds,), plan.pitches, workers)
        rows += write_spoken(
            folder,
            TUNE_SPLIT,
            lang,
            utterances,
            items,
            seed,
            plan,
            noise=bool(recipe.get("noise")),
            level=bool(recipe.get("level")),
        )
    recipe["tune"] = {"languages": languages, "per_language": per_language}
    write_recipe(folder, recipe)
    return write_manifest(folder / f"{TUNE_SPLIT}.jsonl", rows)


def tune_command(folder: str | Path) -> str | None:
    """The `lidroute corpus tune` call that made `folder`'s `tune` split, for model cards; None
    when it has none."""
    try:
        tune = json.loads((Path(folder) / "corpus.json").read_text(encoding="utf-8"))["tune"]
    except (OSError, ValueError, KeyError):
        return None
    languages = ",".join(tune["languages"])
    return f"lidroute corpus tune {folder} --languages {languages} --per-language {tune['per_language']}"
