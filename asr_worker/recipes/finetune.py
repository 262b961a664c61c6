"""Cross-lingual transfer: fine-tuning a multilingual CTC backbone to a new language.

The recipe for a language with little labelled speech: take a backbone trained on high-resource
languages, discard its output layer, put a new randomly initialised CTC head over the target
language's alphabet, and train on a few minutes of target speech. The backbone is any
`from_pretrained` source: a hub checkpoint such as `facebook/wav2vec2-xls-r-300m` where a network
is reachable, or the one `asr_worker pretrain` makes here (`asr_worker.recipes.backbone`).

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
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from asr_worker.recipes.alphabet import alphabet_report, backbone_vocabulary, processor_vocabulary
from asr_worker.recipes.cards import REPORT_FILE, finetune_card, write_report
from asr_worker.recipes.clips import held_out, language_examples, safe_examples, seconds_of, take_clips
from asr_worker.recipes.ctc import (
    PERTURBATION,
    Perturbation,
    build_processor,
    fit_ctc,
)
from asr_worker.recipes.lm import add_word_lm
from asr_worker.recipes.scoring import evaluate_splits
from lidroute.train.budget import Budget

if TYPE_CHECKING:
    from transformers import Wav2Vec2ForCTC

log = logging.getLogger(__name__)


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
    clips = take_clips(language_examples(data, "train", language), seed=seed, minutes=minutes)
    target_texts = [text for text, _ in clips]
    target_seconds = seconds_of(clips)
    for lang, share in replay:
        wanted = target_seconds * share / (1 - share)
        more = take_clips(
            language_examples(replay_data or data, "train", lang), seed=seed + 1, minutes=wanted / 60
        )
        log.info("replay", extra={"language": lang, "seconds": round(seconds_of(more))})
        clips += more
    check = [e.text for split in eval_splits for e in safe_examples(data, split, language)[:n_eval]]

    backbone_chars = backbone_vocabulary(backbone)
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
            held_out(data, lm_splits, language, lm_utterances),
            heard=augmentation,
            grid=lm_grid,
            splits=lm_splits,
        )
        if lm
        else (None, None)
    )
    decoders = (None,) if word_lm is None else (None, word_lm)
    greedy, *with_lm = evaluate_splits(model, processor, data, language, eval_splits, n_eval, lms=decoders)
    scores = dict(with_lm[0] if with_lm else greedy)
    for lang, _ in replay:
        scores |= {
            f"{lang} {k}": v
            for k, v in evaluate_splits(model, processor, data, lang, ["test"], n_eval)[0].items()
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
    write_report(out_dir, report)
    finetune_card(out_dir, report, report_alphabet)
    return report


def _set_trainable(model: Wav2Vec2ForCTC, *, body: bool, freeze_feature_encoder: bool) -> None:
    """The head always trains; the rest when `body`; the convolutional feature encoder never when frozen."""
    for param in model.parameters():
        param.requires_grad = body
    for param in model.lm_head.parameters():
        param.requires_grad = True
    if freeze_feature_encoder:
        model.freeze_feature_encoder()


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
