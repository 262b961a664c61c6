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
from dataclasses import Field, asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch

from asr_worker.recipes.alphabet import (
    AlphabetReport,
    alphabet_report,
    backbone_vocabulary,
    processor_vocabulary,
)
from asr_worker.recipes.cards import REPORT_FILE, finetune_card, write_report
from asr_worker.recipes.clips import held_out, language_examples, safe_examples, seconds_of, take_clips
from asr_worker.recipes.ctc import (
    PERTURBATION,
    Perturbation,
    build_processor,
    fit_ctc,
    save_recognizer,
    seeded_rng,
)
from asr_worker.recipes.lm import add_word_lm
from asr_worker.recipes.scoring import evaluate_splits
from lidroute.train.budget import Budget

if TYPE_CHECKING:
    from transformers import Wav2Vec2ForCTC, Wav2Vec2Processor

    from asr_worker.decoding import WordLM

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FinetuneRecipe:
    """Optimisation of the transfer recipe; the defaults are what the transfer table uses.

    The fields named in `FLAGS` are `asr_worker finetune`'s flags, each with its default and (in the
    field's metadata) its help here alone: the command declares them and the model card restates
    them from these (`flag_fields`, `flag_name`).
    """

    lr: float = 1e-3
    warmup: float = 0.1
    batch_seconds: float = 20.0
    freeze_feature_encoder: bool = False
    augment: bool = field(
        default=True, metadata={"help": "no speed, telephone-channel and noise augmentation"}
    )
    #: Share of the updates that train the new head alone on the frozen backbone before
    #: everything trains: gradients from a random head would otherwise scramble the
    #: backbone's features in the first updates ("linear probing, then fine-tuning").
    head_share: float = field(
        default=0.15, metadata={"help": "share of the updates that train the new head alone first"}
    )

    #: The fields that are flags, in the order the command's --help has always listed them.
    FLAGS: ClassVar[tuple[str, ...]] = ("freeze_feature_encoder", "lr", "head_share", "augment")

    @classmethod
    def flag_fields(cls) -> list[Field[Any]]:
        """The fields in `FLAGS`, in that order: what the command parses and the card restates."""
        by_name = {item.name: item for item in fields(cls)}
        return [by_name[name] for name in cls.FLAGS]


def flag_name(item: Field[Any]) -> str:
    """A recipe field's flag: `--lr` for `lr`, and `--no-augment` for a switch that is on by default."""
    name = item.name.replace("_", "-")
    return f"--no-{name}" if item.default is True else f"--{name}"


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


#: Updates of a fine-tune given no budget (`finetune`, `asr_worker finetune`).
FINETUNE_STEPS = 800

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


@dataclass(frozen=True)
class _Run:
    """A `finetune` call's arguments, whole, for the steps it is made of; field for argument."""

    backbone: str
    data: str | Path
    language: str
    out_dir: Path
    minutes: float | None
    max_steps: int | None
    max_train_seconds: float | None
    seed: int
    replay: Sequence[tuple[str, float]]
    replay_data: str | Path | None
    vocab: str
    random_init: bool
    keep_head: bool
    recipe: FinetuneRecipe
    augmentation: Perturbation
    eval_splits: Sequence[str]
    n_eval: int
    device: str
    lm: bool
    lm_splits: Sequence[str]
    lm_utterances: int
    lm_grid: Mapping[str, Sequence[float]] | None

    @property
    def init(self) -> str:
        """Where the weights start, as the report and the card name it."""
        return "random" if self.random_init else "recognizer" if self.keep_head else "backbone"

    @property
    def vocabulary(self) -> str:
        """The alphabet asked for, but a recognizer trained further keeps its own: the "backbone" one."""
        return "backbone" if self.keep_head else self.vocab

    @property
    def head_share(self) -> float:
        """A random body has nothing to protect: the baseline trains everything from the first update,
        and a trained head gives the body no random gradients to protect it from."""
        return 0.0 if self.random_init or self.keep_head else self.recipe.head_share

    @property
    def how(self) -> Perturbation | None:
        """The augmentation the training audio goes through (None: the recipe turns it off)."""
        return self.augmentation if self.recipe.augment else None


@dataclass(frozen=True)
class _Speech:
    """The training clips: the target language's first, then any replay's, and the target's share."""

    clips: list[tuple[str, np.ndarray]]
    target_texts: list[str]
    target_seconds: float


@dataclass(frozen=True)
class _Trained:
    """What the updates came to, for the report."""

    steps: int
    audio_seconds: float
    train_seconds: float


def finetune(
    backbone: str,
    data: str | Path,
    language: str,
    out_dir: Path,
    *,
    minutes: float | None = None,
    max_steps: int | None = FINETUNE_STEPS,
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
    run = _Run(**locals())  # the arguments, as given: nothing else is bound yet
    if keep_head and (random_init or vocab != "train"):
        raise ValueError("keep_head trains a recognizer further with its own alphabet and weights")
    earlier = _earlier_training(backbone, language) if keep_head else None
    rng = seeded_rng(seed)
    speech = _training_speech(run)
    processor, alphabet = _vocabulary(run, [text for text, _ in speech.clips])
    model = _model_to_train(run, len(processor.tokenizer))
    trained = _train(run, model, processor, speech.clips, rng)
    save_recognizer(model, processor, out_dir)
    word_lm, lm_summary = _word_lm(run, model, processor, speech.target_texts)
    scored = _scores(run, model, processor, word_lm, lm_summary)
    report = _report(run, earlier, speech, trained, model, alphabet) | scored
    write_report(out_dir, report)
    finetune_card(out_dir, report, alphabet)
    return report


def _training_speech(run: _Run) -> _Speech:
    """The target clips within the budget, then each replay language's share of the whole."""
    clips = take_clips(language_examples(run.data, "train", run.language), seed=run.seed, minutes=run.minutes)
    target_texts = [text for text, _ in clips]
    target_seconds = seconds_of(clips)
    for lang, share in run.replay:
        wanted = target_seconds * share / (1 - share)
        more = take_clips(
            language_examples(run.replay_data or run.data, "train", lang),
            seed=run.seed + 1,
            minutes=wanted / 60,
        )
        log.info("replay", extra={"language": lang, "seconds": round(seconds_of(more))})
        clips += more
    return _Speech(clips, target_texts, target_seconds)


def _vocabulary(run: _Run, train_text: list[str]) -> tuple[Wav2Vec2Processor, AlphabetReport]:
    """The processor of the alphabet asked for, and the report (logged) of what it lacks for the
    training and evaluation transcripts."""
    check = [
        e.text
        for split in run.eval_splits
        for e in safe_examples(run.data, split, run.language)[: run.n_eval]
    ]
    backbone_chars = backbone_vocabulary(run.backbone)
    processor = _processor(run, train_text, has_tokenizer=backbone_chars is not None)
    report = alphabet_report(processor_vocabulary(processor), train_text, check, backbone_chars)
    for line in report.lines():
        log.log(logging.WARNING if line.startswith("ALPHABET") else logging.INFO, line)
    return processor, report


def _processor(run: _Run, train_text: list[str], *, has_tokenizer: bool) -> Wav2Vec2Processor:
    """The training transcripts' characters, the backbone's own tokenizer, or a vocab.json's characters."""
    from transformers import Wav2Vec2Processor

    with tempfile.TemporaryDirectory(prefix="ctc-vocab-") as tmp:
        if run.vocabulary == "train":
            return build_processor(train_text, Path(tmp))
        if run.vocabulary == "backbone":
            if not has_tokenizer:
                raise ValueError(f"{run.backbone} has no tokenizer to take a vocabulary from")
            return Wav2Vec2Processor.from_pretrained(run.backbone)
        chars = [
            c
            for c in json.loads(Path(run.vocabulary).read_text(encoding="utf-8"))
            if len(c) == 1 and c != "|"
        ]
        return build_processor(chars, Path(tmp))


def _model_to_train(run: _Run, vocab_size: int) -> Wav2Vec2ForCTC:
    """The recognizer trained further as it is, or the backbone (or its architecture) under a new head."""
    from transformers import Wav2Vec2ForCTC

    if run.keep_head:
        model = Wav2Vec2ForCTC.from_pretrained(run.backbone, **TRAINING_CONFIG)
    else:
        model = load_for_finetuning(run.backbone, vocab_size, random_init=run.random_init)
    return model.to(run.device)


def _train(
    run: _Run,
    model: Wav2Vec2ForCTC,
    processor: Wav2Vec2Processor,
    clips: list[tuple[str, np.ndarray]],
    rng: np.random.Generator,
) -> _Trained:
    """The head alone for its share of the budget (if any), then everything for the rest."""
    started = time.monotonic()
    audio_seconds = 0.0
    steps = 0
    for body, share in ((False, run.head_share), (True, 1.0 - run.head_share)):
        if share <= 0:
            continue
        _set_trainable(model, body=body, freeze_feature_encoder=run.recipe.freeze_feature_encoder)
        budget = Budget(
            max_steps=max(1, round(run.max_steps * share)) if run.max_steps else None,
            max_seconds=run.max_train_seconds * share if run.max_train_seconds else None,
        )
        audio_seconds += fit_ctc(model, processor, clips, budget, run.recipe, rng, how=run.how)
        steps += budget.steps
    return _Trained(steps, audio_seconds, time.monotonic() - started)


def _word_lm(
    run: _Run, model: Wav2Vec2ForCTC, processor: Wav2Vec2Processor, target_texts: list[str]
) -> tuple[WordLM | None, dict[str, Any] | None]:
    """The word LM of the target transcripts beside the model, and what it did (None, None: no LM)."""
    if not run.lm:
        return None, None
    return add_word_lm(
        model,
        processor,
        run.out_dir,
        target_texts,
        held_out(run.data, run.lm_splits, run.language, run.lm_utterances),
        heard=run.augmentation,
        grid=run.lm_grid,
        splits=run.lm_splits,
    )


def _scores(
    run: _Run,
    model: Wav2Vec2ForCTC,
    processor: Wav2Vec2Processor,
    word_lm: WordLM | None,
    lm_summary: dict[str, Any] | None,
) -> dict[str, Any]:
    """The report's last keys: the LM, the scores as the worker decodes (with the LM, where there is
    one; and each replay language's test), and the greedy scores."""
    decoders = (None,) if word_lm is None else (None, word_lm)
    greedy, *with_lm = evaluate_splits(
        model, processor, run.data, run.language, run.eval_splits, run.n_eval, lms=decoders
    )
    scores = dict(with_lm[0] if with_lm else greedy)
    for lang, _ in run.replay:
        scores |= {
            f"{lang} {k}": v
            for k, v in evaluate_splits(model, processor, run.data, lang, ["test"], run.n_eval)[0].items()
        }
    return {"lm": lm_summary, "scores": scores, "scores_greedy": greedy}


def _report(
    run: _Run,
    earlier: dict[str, Any] | None,
    speech: _Speech,
    trained: _Trained,
    model: Wav2Vec2ForCTC,
    alphabet: AlphabetReport,
) -> dict[str, Any]:
    """How the model was made, the report's keys before its scores (`_scores`)."""
    how = run.how
    return {
        "kind": "finetuned",
        "language": run.language,
        "backbone": str(run.backbone),
        "init": run.init,
        "continues": earlier,
        "seed": run.seed,
        "minutes": run.minutes,
        "target_minutes": round(speech.target_seconds / 60, 2),
        "replay": [f"{lang}:{share}" for lang, share in run.replay],
        "steps": trained.steps,
        "train_seconds": round(trained.train_seconds, 1),
        "device": run.device,
        "epochs": round(trained.audio_seconds / max(1e-9, seconds_of(speech.clips)), 2),
        "params": sum(p.numel() for p in model.parameters()),
        "recipe": asdict(run.recipe),
        "augmentation": asdict(how) if how else None,
        "vocab": run.vocabulary,
        "alphabet": asdict(alphabet),
        "data": str(run.data),
    }


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
