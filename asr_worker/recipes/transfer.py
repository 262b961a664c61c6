"""Cross-lingual transfer: a multilingual CTC backbone, and fine-tuning it to a new language.

The recipe for a language with little labelled speech: take a backbone trained on high-resource
languages, discard its output layer, put a new randomly initialised CTC head over the target
language's alphabet, and train on a few minutes of target speech. The backbone is any
`from_pretrained` source: a hub checkpoint such as `facebook/wav2vec2-xls-r-300m` where a network
is reachable, or the one `asr_worker pretrain` makes here by supervised multilingual CTC over
en, es, fr, de, pt, it and ru (no hub is reachable on the machines this project is built on).

Commands (`python -m asr_worker ...`):
- `pretrain`: the multilingual backbone, from any corpus `lidroute.train.corpus.read_examples` reads.
- `finetune`: the transfer recipe, with the alphabet report, optional feature-encoder freezing,
  replay of another language against forgetting, augmentation, evaluation and `--register`.
- `transfer`: the transfer table (backbone vs random initialisation vs zero-shot, per budget).

Budgets are counted in updates, so a run is reproducible from its seed whatever else the
machine is doing; the wall-clock limit is only a cap.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import tempfile
import time
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import torch

from asr_worker.decoding import DEFAULT_BEAM, CtcTokens, WordLM
from asr_worker.recipes.ctc import (
    PERTURBATION,
    CtcRecipe,
    Perturbation,
    build_processor,
    characters,
    decode,
    error_rate,
    fit_ctc,
    frame_log_probs,
    normalize_text,
    perturb,
)
from asr_worker.recipes.lm import TUNING_TOLERANCE, tune
from lidroute.settings import comma_list
from lidroute.train.budget import Budget
from lidroute.train.corpus import (
    TUNE_SPLIT,
    CorpusError,
    Example,
    json_tuples,
    read_examples,
    synth_command,
    tune_command,
)
from lidroute.train.synth import HIGH_RESOURCE, phonemize

if TYPE_CHECKING:
    from transformers import Wav2Vec2ForCTC, Wav2Vec2Processor

log = logging.getLogger(__name__)
RecipeT = TypeVar("RecipeT", CtcRecipe, Perturbation)

#: The backbone's architecture and optimisation: the from-scratch recipe, on more languages.
BACKBONE_RECIPE = CtcRecipe()
#: Written beside a model: what made it and what it scored (also what `transfer` reads back).
REPORT_FILE = "training.json"


# --------------------------------------------------------------------------- data


def take_clips(
    examples: Sequence[Example],
    *,
    seed: int,
    minutes: float | None = None,
    limit: int | None = None,
) -> list[tuple[str, np.ndarray]]:
    """(transcript, audio) pairs for training: a seeded random subset of at most `minutes` of
    speech and `limit` utterances, decoded once and held in memory for the whole run.

    The subset is a prefix of one seeded order, so the subset for a smaller budget is part of the
    one for a larger budget ("10 minutes" is in "60 minutes", as in a real data collection).
    """
    order = np.random.default_rng([seed, 104729]).permutation(len(examples))
    clips: list[tuple[str, np.ndarray]] = []
    total = 0.0
    for i in order:
        if limit is not None and len(clips) >= limit:
            break
        audio = examples[int(i)].audio()
        if minutes is not None and total + len(audio) / 16000 > minutes * 60:
            break
        clips.append((examples[int(i)].text, audio))
        total += len(audio) / 16000
    return clips


def _examples(source: str | Path, split: str, language: str) -> list[Example]:
    examples = [e for e in read_examples(source, split=split, language=language) if e.language == language]
    if not examples:
        raise CorpusError(f"{source} has no {split} examples in language {language!r}")
    return examples


def seconds_of(clips: Iterable[tuple[str, np.ndarray]]) -> float:
    return sum(len(audio) for _, audio in clips) / 16000


# --------------------------------------------------------------------------- the alphabet


@dataclass(frozen=True)
class AlphabetReport:
    """What the target vocabulary covers, so that an alphabet mismatch is seen before training.

    A character that the transcripts use and the vocabulary lacks can never be written by the
    model: it is trained (and scored) as `<unk>`, a silent error floor. That happens when a
    vocabulary is reused from another language (`--vocab backbone`: Turkish `ı` under an
    English head), or when test text has letters the few training minutes never showed.
    """

    vocabulary: tuple[str, ...]
    #: Characters of the text checked that the vocabulary lacks, with their counts.
    missing: dict[str, int]
    #: Share of all characters (training and checked text) that are missing.
    missing_share: float
    #: Characters the backbone's old head did not have: their output weights start from nothing.
    new_to_backbone: tuple[str, ...]
    #: Transcripts that Unicode NFC normalisation changed (decomposed accents and the like).
    normalised: int
    #: Characters seen fewer than 5 times in training: expect them to be guessed poorly.
    rare: dict[str, int] = field(default_factory=dict)

    def lines(self) -> list[str]:
        out = [f"vocabulary: {len(self.vocabulary)} characters: {''.join(self.vocabulary)}"]
        if self.normalised:
            out.append(f"{self.normalised} transcripts changed by NFC normalisation")
        if self.missing:
            names = ", ".join(f"{c!r} {_char_name(c)} x{n}" for c, n in sorted(self.missing.items()))
            out.append(
                f"ALPHABET MISMATCH: the text has characters the vocabulary lacks ({names}); "
                f"{100 * self.missing_share:.2f} % of characters will be <unk>"
            )
        if self.new_to_backbone:
            out.append(f"new to the backbone's head: {''.join(self.new_to_backbone)}")
        if self.rare:
            out.append(
                "rare in training (<5): " + ", ".join(f"{c!r} x{n}" for c, n in sorted(self.rare.items()))
            )
        return out


def _char_name(char: str) -> str:
    return unicodedata.name(char, f"U+{ord(char):04X}")


def alphabet_report(
    vocabulary: Sequence[str],
    train_text: Sequence[str],
    check_text: Sequence[str],
    backbone_vocabulary: Sequence[str] | None,
) -> AlphabetReport:
    """Checks training and evaluation transcripts against the vocabulary the head will have."""
    known = set(vocabulary)
    counts = characters([*train_text, *check_text])
    missing = {c: n for c, n in counts.items() if c not in known}
    trained = characters(train_text)
    return AlphabetReport(
        vocabulary=tuple(vocabulary),
        missing=missing,
        missing_share=sum(missing.values()) / max(1, sum(counts.values())),
        new_to_backbone=tuple(
            c for c in vocabulary if backbone_vocabulary is not None and c not in backbone_vocabulary
        ),
        normalised=sum(1 for t in [*train_text, *check_text] if unicodedata.normalize("NFC", t) != t),
        rare={c: n for c, n in trained.items() if n < 5 and c in known},
    )


def processor_vocabulary(processor: Wav2Vec2Processor) -> list[str]:
    """The characters of a processor's tokenizer (special tokens and the word delimiter left out)."""
    tokenizer = processor.tokenizer
    specials = set(tokenizer.all_special_tokens) | {tokenizer.word_delimiter_token}
    return sorted(t for t in tokenizer.get_vocab() if t not in specials and len(t) == 1)


def _backbone_vocabulary(backbone: str) -> list[str] | None:
    """The old head's characters, or None when the backbone has no tokenizer (a pretraining checkpoint)."""
    from transformers import Wav2Vec2Processor

    try:
        return processor_vocabulary(Wav2Vec2Processor.from_pretrained(backbone))
    except (OSError, ValueError, TypeError):
        return None


# --------------------------------------------------------------------------- evaluation


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


def _evaluate_splits(
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
            examples = _examples(data, split, language)[:n_eval]
        except CorpusError as exc:
            log.warning("split not evaluated", extra={"split": split, "error": str(exc)})
            continue
        references = phonemize([e.text for e in examples], language) if targets == "phonemes" else None
        scored = evaluate_model(model, processor, examples, references, lms)
        for result, scores in zip(results, scored, strict=True):
            result[split] = scores
    return results


def add_word_lm(
    model: Wav2Vec2ForCTC,
    processor: Wav2Vec2Processor,
    out_dir: Path,
    texts: Iterable[str],
    dev: Sequence[Example],
    *,
    heard: Perturbation = PERTURBATION,
    copies: int = 2,
    grid: Mapping[str, Sequence[float]] | None = None,
    splits: Sequence[str] = ("dev",),
) -> tuple[WordLM, dict[str, Any]]:
    """Trains the word LM of a recognizer on `texts`, tunes its fusion weights on `dev`, saves it.

    The LM learns only from training transcripts, never from the speech it is scored on; `dev`
    (held-out speech, may be empty: then the default weights stay) picks how much the decoder
    trusts it. The fusion is tuned on `dev` heard clean and `copies` more times through `heard`
    (the noise, channel, tempo and pauses the recognizers are trained to withstand, drawn from a
    fixed seed), because one weight serves all traffic: tuned on clean synthetic speech alone it
    fits the acoustic model at its surest, trusts the LM too little for noisy or telephone
    speech, and 50 clean utterances are too few to choose well (a Turkish recognizer: 1.8 % /
    12.3 % CER on `test` / `test_hard` tuned on clean dev, 1.3 % / 11.8 % tuned this way).
    `grid` narrows `tune`'s (its `weights`, `bonuses`, `oov_penalties`) where a few minutes of
    search are too many, as in tests. `splits` names the splits `dev` came from, for the card.
    Returns the LM and what it did: vocabulary size, dev CER greedy and with the LM, dev WER.
    """
    if copies < 0:
        raise ValueError(f"copies must not be negative, got {copies}")
    lm = WordLM.train(normalize_text(t) for t in texts)
    summary: dict[str, Any] = {
        "words": lm.vocabulary_size,
        "tuned_on": len(dev),
        "tuned_splits": list(splits),
        "heard_copies": copies,
        "beam": DEFAULT_BEAM,
        "tolerance": TUNING_TOLERANCE,
    }
    if dev:
        clean = [e.audio() for e in dev]
        rng = np.random.default_rng(0)
        heard_audio = clean + [perturb(audio, rng, heard) for _ in range(copies) for audio in clean]
        log_probs = frame_log_probs(model, processor, heard_audio)
        references = [normalize_text(e.text) for e in dev] * (1 + copies)
        greedy = decode(processor, log_probs)
        lm, dev_cer, dev_wer = tune(
            lm,
            log_probs,
            references,
            CtcTokens.of(processor),
            beam=summary["beam"],
            tolerance=summary["tolerance"],
            **(grid or {}),
        )
        summary |= {"dev_cer_greedy": error_rate(references, greedy), "dev_cer": dev_cer, "dev_wer": dev_wer}
    summary |= {
        "lm_weight": lm.lm_weight,
        "word_bonus": lm.word_bonus,
        "oov_letter_penalty": lm.oov_letter_penalty,
    }
    lm.save(out_dir)
    log.info("word LM", extra=summary)
    return lm, summary


# --------------------------------------------------------------------------- the backbone


def pretrain_backbone(
    data: str | Path,
    out_dir: Path,
    languages: Sequence[str] = HIGH_RESOURCE,
    *,
    utterances_per_language: int = 1000,
    max_steps: int | None = 3000,
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

    torch.manual_seed(seed)
    torch.set_num_threads(min(torch.get_num_threads(), 2) or 1)
    rng = np.random.default_rng(seed)
    clips: list[tuple[str, np.ndarray]] = []
    if targets not in ("phonemes", "letters"):
        raise ValueError(f"targets must be phonemes or letters, not {targets!r}")
    for lang in languages:
        taken = take_clips(_examples(data, "train", lang), seed=seed, limit=utterances_per_language)
        if targets == "phonemes":
            taken = list(zip(phonemize([t for t, _ in taken], lang), [a for _, a in taken], strict=True))
        clips += taken
    with tempfile.TemporaryDirectory(prefix="ctc-vocab-") as tmp:
        processor = build_processor([text for text, _ in clips], Path(tmp))
    model = Wav2Vec2ForCTC(recipe.config(len(processor.tokenizer))).to(device)
    budget = Budget(max_steps=max_steps, max_seconds=max_train_seconds)
    log.info(
        "pretraining backbone", extra={"languages": ",".join(languages), "hours": seconds_of(clips) / 3600}
    )
    audio_seconds = fit_ctc(model, processor, clips, budget, recipe, rng)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    scores = {
        lang: _evaluate_splits(model, processor, data, lang, ["test"], n_eval, targets)[0].get("test", {})
        for lang in languages
    }
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
    _write_report(out_dir, report)
    _backbone_card(out_dir, report)
    return report


def _write_report(out_dir: Path, report: Mapping[str, Any]) -> None:
    (out_dir / REPORT_FILE).write_text(
        json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )


def _score_rows(
    scores: Mapping[str, Mapping[str, float]], greedy: Mapping[str, Mapping[str, float]] | None = None
) -> str:
    """A score table; with `greedy`, two more columns give the same sets decoded greedily."""
    extra = " greedy CER | greedy WER |" if greedy else ""
    rows = ["| set | utterances | CER | WER |" + extra, "|---|---|---|---|" + "---|---|" * bool(greedy)]
    for name, s in scores.items():
        if s:
            row = f"| {name} | {int(s['utterances'])} | {100 * s['cer']:.1f} % | {100 * s['wer']:.1f} % |"
            if greedy and greedy.get(name):
                row += f" {100 * greedy[name]['cer']:.1f} % | {100 * greedy[name]['wer']:.1f} % |"
            rows.append(row)
    return "\n".join(rows)


def _times(n: int) -> str:
    return {1: "once", 2: "twice"}.get(n, f"{n} times")


def _decoding_line(report: Mapping[str, Any]) -> str:
    lm = report.get("lm")
    if not lm:
        return "## Scores (greedy decoding, no language model)"
    copies = lm.get("heard_copies", 0)  # a report from before dev was heard augmented has none
    heard = f" heard clean and {_times(copies)} through the training augmentation" if copies else ""
    # Reports from before the choice weighed words as well give no dev WER: letters alone chose;
    # those from before it preferred the lightest of the near-best LMs give no tolerance.
    goal, wer = ("", "")
    if "dev_wer" in lm:
        goal, wer = ", for the lowest CER + WER", f", WER {100 * lm['dev_wer']:.1f} %"
    if "tolerance" in lm:
        goal = f", the lightest LM within {100 * lm['tolerance']:g} % of the lowest CER + WER"
    # Reports from before the `tune` split tuned on dev alone.
    splits = " and ".join(f"`{split}`" for split in lm.get("tuned_splits", ["dev"]))
    made = tune_command(report["data"]) if TUNE_SPLIT in lm.get("tuned_splits", []) else None
    splits += f", the `tune` split made by `{made}`" if made else ""
    tuned = (
        f"tuned on {lm['tuned_on']} held-out utterances ({splits}){heard}{goal} (dev CER"
        f" {100 * lm['dev_cer_greedy']:.1f} % greedy, {100 * lm['dev_cer']:.1f} % with the LM{wer})"
        if lm.get("tuned_on")
        else "the defaults (no dev split to tune them on)"
    )
    return (
        # Reports from before the worker's beam was widened record no width: it was 16.
        f"## Scores\n\nDecoded as the worker decodes it: CTC beam search (width {lm.get('beam', 16)})"
        " with the word LM beside the model"
        f" (`lm.json`, a word bigram of the training transcripts, {lm['words']:,} distinct words),"
        f" LM weight {lm['lm_weight']:g}, word bonus {lm['word_bonus']:g} and unseen-word penalty"
        f" {lm.get('oov_letter_penalty', WordLM.oov_letter_penalty):g} a letter, {tuned}."
        " The greedy columns are the same model without the LM."
    )


def _provenance(report: Mapping[str, Any]) -> str:
    """The card's lines on the data and, for reports that recorded it (older ones did not), on
    what the training audio went through."""
    fields = report.get("augmentation")
    if not fields:
        return _data_line(report["data"])
    augmentation = Perturbation.describe(fields)
    return f"{_data_line(report['data'])}\n\nAugmentation, drawn afresh each epoch: {augmentation}."


def _where(report: Mapping[str, Any]) -> str:
    """Where the training time on a card was spent; reports written before it was recorded were CPU runs."""
    device = str(report.get("device", "cpu"))
    return "on the CPU" if device == "cpu" else f"on a GPU (`{device}`)"


def _data_line(data: str) -> str:
    """How the data was made, when it is a synthetic corpus: a card says where its data came from."""
    command = synth_command(data)
    return f"\n\nThe data (`{data}`) was made by `{command}`." if command else ""


def _backbone_card(out_dir: Path, report: Mapping[str, Any]) -> None:
    langs = ",".join(report["languages"])
    unit = "phoneme (IPA)" if report["targets"] == "phonemes" else "character"
    what = (
        "espeak-ng's IPA transcription of each transcript, stress marks dropped: one phone inventory "
        "shared by all the languages"
        if report["targets"] == "phonemes"
        else "the union of the languages' alphabets"
    )
    text = f"""# Multilingual wav2vec2 CTC backbone ({langs})

Made by `python -m asr_worker pretrain --data {report["data"]} --languages {langs}
--utterances {report["utterances_per_language"]} --targets {report["targets"]} --steps {report["steps"]}
--seed {report["seed"]}`: a `Wav2Vec2ForCTC` ({report["params"]:,} parameters) trained from random
initialisation by supervised CTC whose targets are {what}, on {report["train_hours"]} h of speech
({report["epochs"]} epochs, {report["train_seconds"]:.0f} s {_where(report)}). It is the starting point
of `asr_worker finetune`, which discards its output layer.{_provenance(report)}

## Scores (test split, greedy decoding; {unit} error rate in the CER column)

{_score_rows(report["test"])}

Mean {unit} error rate {100 * report["mean_cer"]:.1f} %.
"""
    (out_dir / "README.md").write_text(text, encoding="utf-8")


# --------------------------------------------------------------------------- fine-tuning


@dataclass(frozen=True)
class FinetuneRecipe:
    """Optimisation of the transfer recipe; the defaults are what the transfer table uses."""

    lr: float = 1e-3
    warmup: float = 0.1
    batch_seconds: float = 20.0
    freeze_feature_encoder: bool = False
    augment: bool = True
    #: Share of the updates that train the new head alone on the frozen backbone before
    #: everything trains: gradients from a random head would otherwise scramble the
    #: backbone's features in the first updates ("linear probing, then fine-tuning").
    head_share: float = 0.15


def parse_replay(text: str) -> tuple[str, float]:
    """`en:0.1` -> ("en", 0.1): a tenth of the training audio is English."""
    lang, sep, share = text.partition(":")
    try:
        value = float(share) if sep else 0.1
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: the share after ':' must be a number") from None
    if not lang or not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not LANG:SHARE with 0 < SHARE < 1")
    return lang, value


#: How every fine-tune trains whatever the loaded config says: a mean CTC loss that an impossible
#: alignment (a transcript longer than its frames) cannot turn infinite, and no layer dropping.
TRAINING_CONFIG: dict[str, Any] = {"ctc_loss_reduction": "mean", "ctc_zero_infinity": True, "layerdrop": 0.0}


def _earlier_training(recognizer: str, language: str) -> dict[str, Any] | None:
    """How a recognizer that training continues was made, from its report (None: not one of ours).

    Ours say what they recognise, so continuing a backbone or another language's model, whose
    head would be kept for an alphabet it was never trained on, is refused before any work.
    """
    path = Path(recognizer) / REPORT_FILE
    if not path.is_file():
        return None
    report = json.loads(path.read_text(encoding="utf-8"))
    if report.get("kind") != "finetuned":
        raise ValueError(
            f"{recognizer} is a {report.get('kind')}, not a {language} recognizer to train further"
        )
    if report.get("language") != language:
        raise ValueError(f"{recognizer} recognises {report.get('language')}, not {language}")
    return {k: v for k, v in report.items() if k not in ("scores", "scores_greedy", "lm", "alphabet")}


def load_for_finetuning(backbone: str, vocab_size: int, *, random_init: bool = False) -> Wav2Vec2ForCTC:
    """The backbone with a fresh, randomly initialised CTC head of `vocab_size` outputs.

    The old head is always discarded, even when its size happens to match: its rows belong to
    another alphabet. `random_init` keeps the architecture and nothing else (the baseline).
    """
    from transformers import Wav2Vec2Config, Wav2Vec2ForCTC

    overrides = {"vocab_size": vocab_size, "pad_token_id": 0, **TRAINING_CONFIG}
    if random_init:
        config = Wav2Vec2Config.from_pretrained(backbone, **overrides)
        return Wav2Vec2ForCTC(config)
    model = Wav2Vec2ForCTC.from_pretrained(backbone, ignore_mismatched_sizes=True, **overrides)
    head = torch.nn.Linear(model.lm_head.in_features, vocab_size)
    torch.nn.init.normal_(head.weight, std=model.config.initializer_range)
    torch.nn.init.zeros_(head.bias)
    model.lm_head = head
    return model


def finetune(
    backbone: str,
    data: str | Path,
    language: str,
    out_dir: Path,
    *,
    minutes: float | None = None,
    max_steps: int | None = 800,
    max_train_seconds: float | None = None,
    seed: int = 0,
    replay: Sequence[tuple[str, float]] = (),
    replay_data: str | Path | None = None,
    vocab: str = "train",
    random_init: bool = False,
    keep_head: bool = False,
    recipe: FinetuneRecipe = FinetuneRecipe(),
    augmentation: Perturbation = PERTURBATION,
    eval_splits: Sequence[str] = ("test", "test_hard"),
    n_eval: int = 100,
    device: str = "cpu",
    lm: bool = True,
    lm_splits: Sequence[str] = ("dev",),
    lm_utterances: int = 50,
    lm_grid: Mapping[str, Sequence[float]] | None = None,
) -> dict[str, Any]:
    """The transfer recipe end to end; writes a `save_pretrained` directory and returns its report.

    With `lm`, a word LM of the training transcripts goes beside the model (`add_word_lm`, tuned
    on up to `lm_utterances` of the `lm_splits`, where the data has them, over `lm_grid` if given)
    and the scores are the worker's beam search with it; the greedy scores are reported too.

    `vocab` is "train" (the characters of the training transcripts, the usual choice),
    "backbone" (reuse the old head's alphabet, which shows the alphabet mismatch), or a
    vocab.json file.

    `keep_head` trains a recognizer of this language further: its head and alphabet stay, every
    update trains everything, and the schedule starts again (warm-up, then cosine decay). A
    budget too long for one sitting is then two runs, the second starting from the first's
    saved model, with no optimizer state to carry between them.
    """
    from transformers import Wav2Vec2ForCTC, Wav2Vec2Processor

    if keep_head and (random_init or vocab != "train"):
        raise ValueError("keep_head trains a recognizer further with its own alphabet and weights")
    earlier = _earlier_training(backbone, language) if keep_head else None
    # A recognizer trained further keeps its alphabet: the "backbone" vocabulary.
    vocab = "backbone" if keep_head else vocab
    torch.manual_seed(seed)
    torch.set_num_threads(min(torch.get_num_threads(), 2) or 1)
    rng = np.random.default_rng(seed)
    clips = take_clips(_examples(data, "train", language), seed=seed, minutes=minutes)
    target_texts = [text for text, _ in clips]
    target_seconds = seconds_of(clips)
    for lang, share in replay:
        wanted = target_seconds * share / (1 - share)
        more = take_clips(_examples(replay_data or data, "train", lang), seed=seed + 1, minutes=wanted / 60)
        log.info("replay", extra={"language": lang, "seconds": round(seconds_of(more))})
        clips += more
    check = [e.text for split in eval_splits for e in _safe_examples(data, split, language)[:n_eval]]

    backbone_chars = _backbone_vocabulary(backbone)
    train_text = [text for text, _ in clips]
    with tempfile.TemporaryDirectory(prefix="ctc-vocab-") as tmp:
        if vocab == "train":
            processor = build_processor(train_text, Path(tmp))
        elif vocab == "backbone":
            if backbone_chars is None:
                raise ValueError(f"{backbone} has no tokenizer to take a vocabulary from")
            processor = Wav2Vec2Processor.from_pretrained(backbone)
        else:
            chars = [
                c for c in json.loads(Path(vocab).read_text(encoding="utf-8")) if len(c) == 1 and c != "|"
            ]
            processor = build_processor(chars, Path(tmp))
    report_alphabet = alphabet_report(processor_vocabulary(processor), train_text, check, backbone_chars)
    for line in report_alphabet.lines():
        log.log(logging.WARNING if line.startswith("ALPHABET") else logging.INFO, line)

    if keep_head:
        model = Wav2Vec2ForCTC.from_pretrained(backbone, **TRAINING_CONFIG).to(device)
    else:
        model = load_for_finetuning(backbone, len(processor.tokenizer), random_init=random_init).to(device)
    # A random body has nothing to protect: the baseline trains everything from the first update,
    # and a trained head gives the body no random gradients to protect it from.
    head_share = 0.0 if random_init or keep_head else recipe.head_share
    how = augmentation if recipe.augment else None
    started = time.monotonic()
    audio_seconds = 0.0
    steps = 0
    for body, share in ((False, head_share), (True, 1.0 - head_share)):
        if share <= 0:
            continue
        _set_trainable(model, body=body, freeze_feature_encoder=recipe.freeze_feature_encoder)
        budget = Budget(
            max_steps=max(1, round(max_steps * share)) if max_steps else None,
            max_seconds=max_train_seconds * share if max_train_seconds else None,
        )
        audio_seconds += fit_ctc(model, processor, clips, budget, recipe, rng, how=how)
        steps += budget.steps
    train_seconds = time.monotonic() - started
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    word_lm, lm_summary = (
        add_word_lm(
            model,
            processor,
            out_dir,
            target_texts,
            _held_out(data, lm_splits, language, lm_utterances),
            heard=augmentation,
            grid=lm_grid,
            splits=lm_splits,
        )
        if lm
        else (None, None)
    )
    decoders = (None,) if word_lm is None else (None, word_lm)
    greedy, *with_lm = _evaluate_splits(model, processor, data, language, eval_splits, n_eval, lms=decoders)
    scores = dict(with_lm[0] if with_lm else greedy)
    for lang, _ in replay:
        scores |= {
            f"{lang} {k}": v
            for k, v in _evaluate_splits(model, processor, data, lang, ["test"], n_eval)[0].items()
        }
    report: dict[str, Any] = {
        "kind": "finetuned",
        "language": language,
        "backbone": str(backbone),
        "init": "random" if random_init else "recognizer" if keep_head else "backbone",
        "continues": earlier,
        "seed": seed,
        "minutes": minutes,
        "target_minutes": round(target_seconds / 60, 2),
        "replay": [f"{lang}:{share}" for lang, share in replay],
        "steps": steps,
        "train_seconds": round(train_seconds, 1),
        "device": device,
        "epochs": round(audio_seconds / max(1e-9, seconds_of(clips)), 2),
        "params": sum(p.numel() for p in model.parameters()),
        "recipe": asdict(recipe),
        "augmentation": asdict(how) if how else None,
        "vocab": vocab,
        "alphabet": asdict(report_alphabet),
        "data": str(data),
        "lm": lm_summary,
        "scores": scores,
        "scores_greedy": greedy,
    }
    _write_report(out_dir, report)
    _finetune_card(out_dir, report, report_alphabet)
    return report


def _set_trainable(model: Wav2Vec2ForCTC, *, body: bool, freeze_feature_encoder: bool) -> None:
    """The head always trains; the rest when `body`; the convolutional feature encoder never when frozen."""
    for param in model.parameters():
        param.requires_grad = body
    for param in model.lm_head.parameters():
        param.requires_grad = True
    if freeze_feature_encoder:
        model.freeze_feature_encoder()


def _safe_examples(data: str | Path, split: str, language: str) -> list[Example]:
    try:
        return _examples(data, split, language)
    except CorpusError:
        return []


def _held_out(data: str | Path, splits: Sequence[str], language: str, limit: int | None) -> list[Example]:
    """Up to `limit` utterances of the language from `splits` in order, for tuning the LM fusion;
    a split the data lacks gives none."""
    return [e for split in splits for e in _safe_examples(data, split, language)][:limit]


def _finetune_card(out_dir: Path, report: Mapping[str, Any], alphabet: AlphabetReport) -> None:
    from lidroute.train.synth import LANGUAGES

    spec = LANGUAGES.get(report["language"])
    name = spec.name if spec else report["language"]
    init = {
        "backbone": f"the backbone `{report['backbone']}` with its output layer replaced by a new CTC head",
        "random": f"random initialisation with the architecture of `{report['backbone']}` (the baseline)",
        "recognizer": f"the recognizer `{report['backbone']}`, its head and alphabet kept",
    }[report["init"]]
    earlier = report.get("continues")
    replay = " plus replay " + ", ".join(report["replay"]) if report["replay"] else ""
    head_share = report["recipe"]["head_share"] if report["init"] == "backbone" else 0
    head = f", the first {100 * head_share:.0f} % of them on the new head alone" if head_share else ""
    alphabet_lines = "\n".join(f"- {line}" for line in alphabet.lines())
    seconds = f"{report['train_seconds']:.0f} s {_where(report)}"
    trained = f"{report['steps']} updates ({report['epochs']} epochs) in {seconds}"
    if earlier:
        trained += f", after the {_updates(earlier)} updates that made it"
    text = f"""# {name} CTC speech recognizer (cross-lingual transfer)

A `transformers` `Wav2Vec2ForCTC` ({report["params"]:,} parameters) fine-tuned from {init}, on
{report["target_minutes"]} minutes of {name} speech{replay}:
{trained}{head}.
Load it with `Wav2Vec2ForCTC.from_pretrained(dir)` and `Wav2Vec2Processor.from_pretrained(dir)`.

Made by {_made_by(report)}.{_provenance(report)}

## Alphabet

{alphabet_lines}

{_decoding_line(report)}

{_score_rows(report["scores"], report.get("scores_greedy") if report.get("lm") else None)}

`test` is new sentences in the training voices; `test_hard` is voices and speeds never heard in
training, 10-20 dB noise and telephone-band audio (see `lidroute corpus synth`).
"""
    (out_dir / "README.md").write_text(text, encoding="utf-8")


def _updates(report: Mapping[str, Any] | None) -> int:
    """Updates of the run a report describes and of every run it continues."""
    return report["steps"] + _updates(report.get("continues")) if report else 0


def _made_by(report: Mapping[str, Any]) -> str:
    """The command that made the model, or the runs in order when it continues earlier ones."""
    runs: list[str] = []
    out, run = "DIR", report
    while run:
        command = f"`python -m asr_worker finetune {_finetune_flags(run)} --out {out}`"
        if run is not report:
            command += f" ({run['steps']} updates in {run['train_seconds']:.0f} s {_where(run)})"
        runs.insert(0, command)
        out, run = run["backbone"], run.get("continues")
    return runs[0] if len(runs) == 1 else f"{len(runs)} runs: " + ", then ".join(runs)


def _finetune_flags(report: Mapping[str, Any]) -> str:
    """The `asr_worker finetune` flags, less `--out`, that made the model a report describes."""
    flags = [
        f"--backbone {report['backbone']}",
        f"--data {report['data']}",
        f"--language {report['language']}",
        f"--steps {report['steps']}",
        f"--seed {report['seed']}",
    ]
    if report["minutes"] is not None:
        flags.append(f"--minutes {report['minutes']}")
    flags += [f"--replay {r}" for r in report["replay"]]
    if report["init"] == "random":
        flags.append("--random-init")
    if report["init"] == "recognizer":
        flags.append("--keep-head")
    elif report["vocab"] != "train":
        flags.append(f"--vocab {report['vocab']}")
    if report["recipe"]["freeze_feature_encoder"]:
        flags.append("--freeze-feature-encoder")
    if not report["recipe"]["augment"]:
        flags.append("--no-augment")
    lm = report.get("lm") or {}
    if lm.get("tuned_splits", ["dev"]) != ["dev"]:
        flags.append(f"--lm-dev-splits {','.join(lm['tuned_splits'])} --lm-dev-utterances {lm['tuned_on']}")
    for field_name in ("lr", "head_share"):
        if report["recipe"][field_name] != getattr(FinetuneRecipe, field_name):
            flags.append(f"--{field_name.replace('_', '-')} {report['recipe'][field_name]}")
    usual = asdict(PERTURBATION)
    for name, value in (report.get("augmentation") or {}).items():
        if name in usual and json_tuples(value) != usual[name]:
            text = ",".join(map(str, value)) if isinstance(value, list | tuple) else str(value)
            flags.append(f"--augmentation {name}={text}")
    return " ".join(flags)


def register(language: str, out_dir: Path, redis_url: str, key_prefix: str) -> None:
    """Points the registry at the new model; workers serving the language hot-reload it."""
    import redis.asyncio as aioredis

    from lidroute.keys import Keys
    from lidroute.registry import Registry

    uri = str(out_dir.resolve())

    async def run() -> None:
        client = aioredis.Redis.from_url(redis_url)
        try:
            await Registry(client, Keys(key_prefix)).register_missing({language: uri}, force=True)
        finally:
            await client.aclose()

    asyncio.run(run())


# --------------------------------------------------------------------------- the transfer table


def zero_shot(
    model_dir: str | Path, data: str | Path, language: str, n_eval: int = 100, device: str = "cpu"
) -> dict[str, float]:
    """A high-resource model applied unchanged to another language's test speech."""
    from transformers import Wav2Vec2ForCTC, Wav2Vec2Processor

    model = Wav2Vec2ForCTC.from_pretrained(model_dir).to(device)
    processor = Wav2Vec2Processor.from_pretrained(model_dir)
    return evaluate_model(model, processor, _examples(data, "test", language)[:n_eval])[0]


def transfer_table(
    backbone: str,
    data: str | Path,
    out_dir: Path,
    *,
    languages: Sequence[str] = ("sw", "mr"),
    minutes: Sequence[float] = (10, 60),
    max_steps: int = 800,
    seed: int = 0,
    n_eval: int = 100,
    recipe: FinetuneRecipe = FinetuneRecipe(),
    zero_shot_model: str | None = None,
    device: str = "cpu",
) -> list[dict[str, Any]]:
    """Fine-tunes from the backbone and from random initialisation at each budget (same updates,
    same data, same seed), and applies a high-resource recognizer unchanged (`zero_shot_model`,
    by default the backbone itself, which suits a letter backbone; a phoneme backbone writes IPA,
    so give it a recognizer of a high-resource language). Writes `transfer.md` and `.json`."""
    rows: list[dict[str, Any]] = []
    for lang in languages:
        row: dict[str, Any] = {
            "language": lang,
            "zero_shot": zero_shot(zero_shot_model or backbone, data, lang, n_eval, device),
        }
        for budget in minutes:
            for init in ("backbone", "random"):
                report = finetune(
                    backbone,
                    data,
                    lang,
                    out_dir / f"{lang}-{budget:g}min-{init}",
                    minutes=budget,
                    max_steps=max_steps,
                    seed=seed,
                    random_init=init == "random",
                    recipe=recipe,
                    eval_splits=("test",),
                    n_eval=n_eval,
                    device=device,
                    lm=False,  # the table compares acoustic models, as zero-shot is scored
                )
                row[f"{budget:g}min {init}"] = report["scores"]["test"] | {
                    "train_seconds": report["train_seconds"],
                    "target_minutes": report["target_minutes"],
                }
        rows.append(row)
        _write_table(out_dir, rows, backbone, zero_shot_model or backbone, minutes, max_steps, seed)
    return rows


def _write_table(
    out_dir: Path,
    rows: Sequence[Mapping[str, Any]],
    backbone: str,
    zero_shot_model: str,
    minutes: Sequence[float],
    steps: int,
    seed: int,
) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    columns = ["zero-shot"] + [f"{m:g} min {init}" for m in minutes for init in ("backbone", "random")]
    lines = [
        f"Test-split CER (WER) after {steps} updates, seed {seed}; backbone `{backbone}`; "
        f"zero-shot: `{zero_shot_model}` unchanged.",
        "",
        "| language | " + " | ".join(columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for row in rows:
        cells = [row["zero_shot"]] + [
            row[f"{m:g}min {init}"] for m in minutes for init in ("backbone", "random")
        ]
        lines.append(
            f"| {row['language']} | "
            + " | ".join(f"{100 * c['cer']:.1f} % ({100 * c['wer']:.0f} %)" for c in cells)
            + " |"
        )
    (out_dir / "transfer.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (out_dir / "transfer.json").write_text(json.dumps(list(rows), indent=2) + "\n", encoding="utf-8")
    print("\n".join(lines), flush=True)


# --------------------------------------------------------------------------- commands


def _common(parser: argparse.ArgumentParser, *, log_level: bool = True) -> None:
    parser.add_argument(
        "--data", required=True, help="corpus folder, .jsonl manifest, Common Voice folder or HF dataset"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, help="updates (the reproducible budget)")
    parser.add_argument("--seconds", type=float, help="wall-clock cap on training")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    if log_level:  # else it comes with the settings flags
        parser.add_argument("--log-level", default="INFO")


def _run(parser: argparse.ArgumentParser, fn: Callable[[], object]) -> None:
    try:
        fn()
    except (CorpusError, KeyError, ValueError, OSError) as exc:
        parser.exit(2, f"{parser.prog}: {exc.args[0] if exc.args else exc}\n")


def recipe_with(recipe: RecipeT, overrides: Sequence[str]) -> RecipeT:
    """`["hidden_size=256", "conv_dim=64,64,64,64,64"]` applied to a recipe (a `CtcRecipe`, a
    `Perturbation`), typed like its fields."""
    changes: dict[str, Any] = {}
    for item in overrides:
        name, sep, value = item.partition("=")
        current = getattr(recipe, name, None)
        if not sep or current is None:
            raise ValueError(f"{item!r}: not FIELD=VALUE with a field of {', '.join(asdict(recipe))}")
        try:
            if isinstance(current, tuple):
                changes[name] = tuple(type(current[0])(v) for v in value.split(","))
            else:
                changes[name] = type(current)(value)
        except ValueError:
            raise ValueError(f"{item!r}: {value!r} is not a {type(current).__name__}") from None
    return replace(recipe, **changes)


def pretrain_main(argv: Sequence[str] | None = None) -> None:
    """`python -m asr_worker pretrain --data CORPUS --out DIR`: the multilingual backbone."""
    from lidroute.logs import configure

    parser = argparse.ArgumentParser(prog="asr_worker pretrain", description=pretrain_backbone.__doc__)
    _common(parser)
    parser.add_argument("--out", required=True)
    parser.add_argument("--languages", default=",".join(HIGH_RESOURCE))
    parser.add_argument("--utterances", type=int, default=1000, help="training utterances per language")
    parser.add_argument("--targets", choices=("phonemes", "letters"), default="phonemes")
    parser.add_argument(
        "--recipe",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override a CtcRecipe field, e.g. hidden_size=256 (repeatable)",
    )
    args = parser.parse_args(argv)
    try:
        recipe = recipe_with(BACKBONE_RECIPE, args.recipe)
    except ValueError as exc:
        parser.error(str(exc))
    configure(args.log_level, fmt="text", service="asr-pretrain")

    def run() -> None:
        report = pretrain_backbone(
            args.data,
            Path(args.out),
            args.languages.split(","),
            utterances_per_language=args.utterances,
            max_steps=args.steps or (None if args.seconds else 3000),
            max_train_seconds=args.seconds,
            seed=args.seed,
            recipe=recipe,
            targets=args.targets,
            device=args.device,
        )
        print(json.dumps({k: report[k] for k in ("steps", "train_seconds", "mean_cer")}))

    _run(parser, run)


def finetune_main(argv: Sequence[str] | None = None) -> None:
    """`python -m asr_worker finetune --backbone B --data D --language xx --out DIR`."""
    from lidroute.logs import configure
    from lidroute.settings import CommonSettings, add_setting_flags, settings_from_namespace

    parser = argparse.ArgumentParser(prog="asr_worker finetune", description=finetune.__doc__)
    _common(parser, log_level=False)
    parser.add_argument("--backbone", required=True, help="hub id or local directory (from_pretrained)")
    parser.add_argument("--language", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--minutes", type=float, help="use at most this much target speech")
    parser.add_argument(
        "--replay", type=parse_replay, action="append", default=[], help="LANG:SHARE, e.g. en:0.1"
    )
    parser.add_argument("--replay-data", help="where replay speech comes from (default: --data)")
    parser.add_argument("--vocab", default="train", help="train | backbone | path to a vocab.json")
    parser.add_argument(
        "--random-init", action="store_true", help="baseline: the backbone's architecture only"
    )
    parser.add_argument(
        "--keep-head",
        action="store_true",
        help="--backbone is a recognizer of --language: train it further, its head and alphabet kept",
    )
    parser.add_argument("--freeze-feature-encoder", action="store_true")
    parser.add_argument("--lr", type=float, default=FinetuneRecipe.lr)
    parser.add_argument(
        "--head-share",
        type=float,
        default=FinetuneRecipe.head_share,
        help="share of the updates that train the new head alone first",
    )
    parser.add_argument(
        "--no-augment", action="store_true", help="no speed, telephone-channel and noise augmentation"
    )
    parser.add_argument(
        "--augmentation",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="change a field of the training augmentation (Perturbation), e.g. timbre_share=0.3 or "
        "speed=0.8,1.25 (repeatable)",
    )
    parser.add_argument(
        "--no-lm", action="store_true", help="no word LM beside the model: the worker decodes greedily"
    )
    parser.add_argument(
        "--lm-dev-splits",
        default="dev",
        help="comma-separated held-out splits the LM fusion is tuned on (`lidroute corpus tune` adds `tune`)",
    )
    parser.add_argument(
        "--lm-dev-utterances", type=int, default=50, help="at most this many of their utterances"
    )
    parser.add_argument("--eval-utterances", type=int, default=100)
    parser.add_argument("--register", action="store_true", help="register the model for --language")
    add_setting_flags(parser, CommonSettings)
    args = parser.parse_args(argv)
    try:
        augmentation = recipe_with(PERTURBATION, args.augmentation)
    except ValueError as exc:
        parser.error(str(exc))
    configure(getattr(args, "log_level", "INFO"), fmt="text", service="asr-finetune")
    settings = settings_from_namespace(CommonSettings, args, parser) if args.register else None

    def run() -> None:
        report = finetune(
            args.backbone,
            args.data,
            args.language,
            Path(args.out),
            minutes=args.minutes,
            max_steps=args.steps or (None if args.seconds else 800),
            max_train_seconds=args.seconds,
            seed=args.seed,
            replay=args.replay,
            replay_data=args.replay_data,
            vocab=args.vocab,
            random_init=args.random_init,
            keep_head=args.keep_head,
            recipe=FinetuneRecipe(
                lr=args.lr,
                freeze_feature_encoder=args.freeze_feature_encoder,
                augment=not args.no_augment,
                head_share=args.head_share,
            ),
            augmentation=augmentation,
            n_eval=args.eval_utterances,
            device=args.device,
            lm=not args.no_lm,
            lm_splits=comma_list(args.lm_dev_splits),
            lm_utterances=args.lm_dev_utterances,
        )
        if settings is not None:
            register(args.language, Path(args.out), settings.redis_url, settings.key_prefix)
            print(f"registered {args.language} -> {Path(args.out).resolve()}", flush=True)
        print(json.dumps({"scores": report["scores"], "train_seconds": report["train_seconds"]}))

    _run(parser, run)


def lm_main(argv: Sequence[str] | None = None) -> None:
    """`python -m asr_worker lm --model DIR --data D --language xx`: a word LM for a recognizer.

    For any `save_pretrained` CTC recognizer, a fine-tuned hub checkpoint too: the LM learns the
    transcripts of the data's train split and is tuned on its dev split. A model made by
    `asr_worker finetune` is re-scored with and without it, and its report and card rewritten.
    """
    from transformers import Wav2Vec2ForCTC, Wav2Vec2Processor

    from lidroute.logs import configure

    parser = argparse.ArgumentParser(prog="asr_worker lm", description=lm_main.__doc__)
    parser.add_argument("--model", required=True, help="the recognizer's directory; lm.json goes there")
    parser.add_argument(
        "--data", required=True, help="corpus folder, .jsonl manifest, Common Voice folder or HF dataset"
    )
    parser.add_argument("--language", required=True)
    parser.add_argument(
        "--dev-splits",
        default="dev",
        help="comma-separated held-out splits to tune on (`lidroute corpus tune` adds `tune`)",
    )
    parser.add_argument(
        "--dev-utterances", type=int, help="at most this many of their utterances (default: all)"
    )
    parser.add_argument(
        "--heard-copies",
        type=int,
        default=2,
        help="times the dev speech is also heard through the training augmentation (0: clean only)",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    configure(args.log_level, fmt="text", service="asr-lm")

    def run() -> None:
        out_dir = Path(args.model)
        if not (out_dir / "config.json").is_file():
            raise ValueError(f"{out_dir} is not a save_pretrained model directory")
        model = Wav2Vec2ForCTC.from_pretrained(out_dir).eval().to(args.device)
        processor = Wav2Vec2Processor.from_pretrained(out_dir)
        texts = [e.text for e in _examples(args.data, "train", args.language)]
        splits = comma_list(args.dev_splits)
        dev = _held_out(args.data, splits, args.language, args.dev_utterances)
        lm, summary = add_word_lm(
            model, processor, out_dir, texts, dev, copies=args.heard_copies, splits=splits
        )
        report_file = out_dir / REPORT_FILE
        report = json.loads(report_file.read_text(encoding="utf-8")) if report_file.is_file() else {}
        if report.get("kind") == "finetuned":
            splits = list(report["scores"])
            n_eval = max(int(s["utterances"]) for s in report["scores"].values())
            report["lm"] = summary
            report["scores_greedy"], report["scores"] = _evaluate_splits(
                model, processor, args.data, args.language, splits, n_eval, lms=(None, lm)
            )
            _write_report(out_dir, report)
            _finetune_card(out_dir, report, AlphabetReport(**report["alphabet"]))
            summary["scores"] = {k: round(v["cer"], 4) for k, v in report["scores"].items()}
        print(json.dumps(summary))

    _run(parser, run)


def transfer_main(argv: Sequence[str] | None = None) -> None:
    """`python -m asr_worker transfer --backbone B --data D --out DIR`: the transfer table."""
    from lidroute.logs import configure

    parser = argparse.ArgumentParser(prog="asr_worker transfer", description=transfer_table.__doc__)
    _common(parser)
    parser.add_argument("--backbone", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--languages", default="sw,mr")
    parser.add_argument("--minutes", default="10,60", help="target-speech budgets, comma-separated")
    parser.add_argument(
        "--zero-shot", help="high-resource recognizer applied unchanged (default: the backbone)"
    )
    args = parser.parse_args(argv)
    configure(args.log_level, fmt="text", service="asr-transfer")
    _run(
        parser,
        lambda: transfer_table(
            args.backbone,
            args.data,
            Path(args.out),
            languages=args.languages.split(","),
            minutes=[float(m) for m in args.minutes.split(",")],
            max_steps=args.steps or 800,
            seed=args.seed,
            zero_shot_model=args.zero_shot,
            device=args.device,
        ),
    )
