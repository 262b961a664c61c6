"""The recipes' command lines (`python -m asr_worker ...`).

- `pretrain`: the multilingual backbone, from any corpus `lidroute.train.corpus.read_examples` reads.
- `finetune`: the transfer recipe, with the alphabet report, optional feature-encoder freezing,
  replay of another language against forgetting, augmentation, evaluation and `--register`.
- `lm`: a word LM for beam-search decoding, its weights tuned on held-out speech.
- `transfer`: the transfer table (backbone vs random initialisation vs zero-shot, per budget).
- `head`: a recognizer as a CTC head on Whisper base's frozen encoder.
- `lexicon`: heads' word LMs of their languages' commonest words, one fusion setting for all.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import Field, asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from asr_worker.recipes.alphabet import AlphabetReport
from asr_worker.recipes.backbone import BACKBONE_RECIPE, BACKBONE_STEPS, pretrain_backbone
from asr_worker.recipes.cards import REPORT_FILE, finetune_card, write_report
from asr_worker.recipes.clips import held_out, language_examples
from asr_worker.recipes.ctc import (
    PERTURBATION,
    CtcRecipe,
    Perturbation,
)
from asr_worker.recipes.finetune import (
    FINETUNE_STEPS,
    FinetuneRecipe,
    finetune,
    flag_name,
    parse_replay,
    register,
)
from asr_worker.recipes.heads import (
    LEXICON_BEAM,
    LEXICON_WORDS,
    HeadRecipe,
    kept_scores,
    lexicon_lms,
    train_head,
)
from asr_worker.recipes.lm import add_word_lm
from asr_worker.recipes.scoring import evaluate_splits
from asr_worker.recipes.transfer import transfer_table
from lidroute.settings import comma_list
from lidroute.train.corpus import (
    CorpusError,
)
from lidroute.train.synth import HIGH_RESOURCE

if TYPE_CHECKING:
    from transformers import Wav2Vec2ForCTC, Wav2Vec2Processor

    from asr_worker.decoding import WordLM
    from lidroute.settings import CommonSettings


log = logging.getLogger(__name__)


RecipeT = TypeVar("RecipeT", CtcRecipe, Perturbation, HeadRecipe)


#: What `--data` names, for every command that reads a corpus.
_DATA_HELP = "corpus folder, .jsonl manifest, Common Voice folder or HF dataset"


def _common(parser: argparse.ArgumentParser, *, log_level: bool = True) -> None:
    parser.add_argument("--data", required=True, help=_DATA_HELP)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, help="updates (the reproducible budget)")
    parser.add_argument("--seconds", type=float, help="wall-clock cap on training")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    if log_level:  # else it comes with the settings flags
        parser.add_argument("--log-level", default="INFO")


def _run(parser: argparse.ArgumentParser, fn: Callable[[], object]) -> None:
    try:
        fn()
    except OSError as exc:  # its first argument is the error number: say what and where
        parser.exit(2, f"{parser.prog}: {exc}\n")
    except (CorpusError, KeyError, ValueError) as exc:
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


def _recipe_or_exit(parser: argparse.ArgumentParser, recipe: RecipeT, overrides: Sequence[str]) -> RecipeT:
    """`recipe_with`, a bad override ending the command with its usage, as argparse ends it for a bad flag."""
    try:
        return recipe_with(recipe, overrides)
    except ValueError as exc:
        parser.error(str(exc))


def _add_field_flags(parser: argparse.ArgumentParser, items: Sequence[Field[Any]]) -> None:
    """One flag per recipe field (`flag_name`), with the field's default and its metadata's help: a
    switch for a boolean field, which stores the field's other value, else a value of the field's type."""
    for item in items:
        help_text = item.metadata.get("help")
        if isinstance(item.default, bool):
            action = "store_false" if item.default else "store_true"
            parser.add_argument(flag_name(item), dest=item.name, action=action, help=help_text)
        else:
            parser.add_argument(
                flag_name(item), dest=item.name, type=type(item.default), default=item.default, help=help_text
            )


def _field_values(args: argparse.Namespace, items: Sequence[Field[Any]]) -> dict[str, Any]:
    """The parsed values of the flags `_add_field_flags` declared, by field: the recipe's arguments."""
    return {item.name: getattr(args, item.name) for item in items}


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
    recipe = _recipe_or_exit(parser, BACKBONE_RECIPE, args.recipe)
    configure(args.log_level, fmt="text", service="asr-pretrain")

    def run() -> None:
        report = pretrain_backbone(
            args.data,
            Path(args.out),
            args.languages.split(","),
            utterances_per_language=args.utterances,
            max_steps=args.steps or (None if args.seconds else BACKBONE_STEPS),
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
    from lidroute.settings import CommonSettings, settings_from_namespace

    parser = _finetune_parser()
    args = parser.parse_args(argv)
    augmentation = _recipe_or_exit(parser, PERTURBATION, args.augmentation)
    configure(getattr(args, "log_level", "INFO"), fmt="text", service="asr-finetune")
    settings = settings_from_namespace(CommonSettings, args, parser) if args.register else None
    _run(parser, lambda: _finetune_and_register(args, augmentation, settings))


def _finetune_parser() -> argparse.ArgumentParser:
    """`asr_worker finetune`'s flags: the run's, the recipe's (declared on `FinetuneRecipe`), the
    augmentation's, the LM's, and the settings that `--register` needs."""
    from lidroute.settings import CommonSettings, add_setting_flags

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
    _add_field_flags(parser, FinetuneRecipe.flag_fields())
    parser.add_argument(
        "--augmentation",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="change a field of the training augmentation (Perturbation), e.g. timbre_share=0.3 or "
        "speed=0.8,1.25 (repeatable)",
    )
    _add_lm_flags(parser)
    parser.add_argument("--eval-utterances", type=int, default=100)
    parser.add_argument("--register", action="store_true", help="register the model for --language")
    add_setting_flags(parser, CommonSettings)
    return parser


def _add_lm_flags(parser: argparse.ArgumentParser) -> None:
    """`asr_worker finetune`'s word-LM flags: whether there is one, and what its fusion is tuned on."""
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


def _finetune_and_register(
    args: argparse.Namespace, augmentation: Perturbation, settings: CommonSettings | None
) -> None:
    """The fine-tune the flags ask for, its model registered when `settings` are given; prints its scores."""
    report = finetune(
        args.backbone,
        args.data,
        args.language,
        Path(args.out),
        minutes=args.minutes,
        max_steps=args.steps or (None if args.seconds else FINETUNE_STEPS),
        max_train_seconds=args.seconds,
        seed=args.seed,
        replay=args.replay,
        replay_data=args.replay_data,
        vocab=args.vocab,
        random_init=args.random_init,
        keep_head=args.keep_head,
        recipe=FinetuneRecipe(**_field_values(args, FinetuneRecipe.flag_fields())),
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


def lm_main(argv: Sequence[str] | None = None) -> None:
    """`python -m asr_worker lm --model DIR --data D --language xx`: a word LM for a recognizer.

    For any `save_pretrained` CTC recognizer, a fine-tuned hub checkpoint too: the LM learns the
    transcripts of the data's train split and is tuned on its dev split. A model made by
    `asr_worker finetune` is re-scored with and without it, and its report and card rewritten.
    """
    from lidroute.logs import configure

    parser = _lm_parser()
    args = parser.parse_args(argv)
    configure(args.log_level, fmt="text", service="asr-lm")
    _run(parser, lambda: print(json.dumps(_add_lm(args))))


def _lm_parser() -> argparse.ArgumentParser:
    """`asr_worker lm`'s flags: the recognizer, its data, and the held-out speech its fusion is tuned on."""
    parser = argparse.ArgumentParser(prog="asr_worker lm", description=lm_main.__doc__)
    parser.add_argument("--model", required=True, help="the recognizer's directory; lm.json goes there")
    parser.add_argument("--data", required=True, help=_DATA_HELP)
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
    return parser


def _add_lm(args: argparse.Namespace) -> dict[str, Any]:
    """The word LM the flags ask for, saved beside the model; a model of ours is re-scored with it.
    Returns what the LM did (with the new scores' CERs, for a model of ours)."""
    from transformers import Wav2Vec2ForCTC, Wav2Vec2Processor

    out_dir = Path(args.model)
    if not (out_dir / "config.json").is_file():
        raise ValueError(f"{out_dir} is not a save_pretrained model directory")
    model = Wav2Vec2ForCTC.from_pretrained(out_dir).eval().to(args.device)
    processor = Wav2Vec2Processor.from_pretrained(out_dir)
    texts = [e.text for e in language_examples(args.data, "train", args.language)]
    splits = comma_list(args.dev_splits)
    dev = held_out(args.data, splits, args.language, args.dev_utterances)
    lm, summary = add_word_lm(model, processor, out_dir, texts, dev, copies=args.heard_copies, splits=splits)
    report_file = out_dir / REPORT_FILE
    report = json.loads(report_file.read_text(encoding="utf-8")) if report_file.is_file() else {}
    if report.get("kind") == "finetuned":
        _rescore(out_dir, report, model, processor, args.data, args.language, lm, summary)
    return summary


def _rescore(
    out_dir: Path,
    report: dict[str, Any],
    model: Wav2Vec2ForCTC,
    processor: Wav2Vec2Processor,
    data: str,
    language: str,
    lm: WordLM,
    summary: dict[str, Any],
) -> None:
    """A fine-tuned model's report and card rewritten with its new LM: the same splits and as many
    utterances scored with and without it; the new CERs go into `summary`."""
    splits = list(report["scores"])
    n_eval = max(int(s["utterances"]) for s in report["scores"].values())
    report["lm"] = summary
    report["scores_greedy"], report["scores"] = evaluate_splits(
        model, processor, data, language, splits, n_eval, lms=(None, lm)
    )
    write_report(out_dir, report)
    finetune_card(out_dir, report, AlphabetReport(**report["alphabet"]))
    summary["scores"] = {k: round(v["cer"], 4) for k, v in report["scores"].items()}


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


def head_main(argv: Sequence[str] | None = None) -> None:
    """`python -m asr_worker head --language xx --synthetic CORPUS --real MANIFEST --out DIR`."""
    from lidroute.logs import configure

    parser = argparse.ArgumentParser(prog="asr_worker head", description=train_head.__doc__)
    parser.add_argument("--language", required=True)
    parser.add_argument("--out", required=True, help="the head's folder, which the worker loads")
    parser.add_argument(
        "--synthetic", action="append", default=[], help="corpus folder (train and dev splits); repeatable"
    )
    parser.add_argument(
        "--real",
        action="append",
        default=[],
        help="JSONL manifest of recorded speech with text, split by speaker; repeatable",
    )
    parser.add_argument(
        "--pooled",
        default="",
        help="comma-separated languages whose speech also trains this head (one head pooled over them)",
    )
    parser.add_argument("--init", help="a head folder of the same shape to start from (e.g. a pooled head)")
    parser.add_argument("--minutes", type=float, help="training time (default: the recipe's)")
    parser.add_argument("--lm", action="store_true", help="a word LM of the training transcripts")
    parser.add_argument(
        "--recipe",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override a HeadRecipe field, e.g. copies=2 (repeatable)",
    )
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    configure(args.log_level, fmt="text", service="asr-head")

    def run() -> None:
        pooled = tuple(lang for lang in args.pooled.split(",") if lang)
        recipe = HeadRecipe(
            args.language,
            synthetic=tuple(args.synthetic),
            real=tuple(args.real),
            pooled=pooled,
            init=args.init,
        )
        recipe = recipe_with(recipe, args.recipe)
        if args.minutes:
            recipe = replace(recipe, minutes=args.minutes)
        report = train_head(recipe, Path(args.out), lm=args.lm)
        print(json.dumps({"kept_epoch": report["kept_epoch"], **kept_scores(report)}))

    _run(parser, run)


def lexicon_main(argv: Sequence[str] | None = None) -> None:
    """`python -m asr_worker lexicon --heads DIR,DIR --real MANIFEST`: word LMs from word lists."""
    from lidroute.logs import configure

    parser = argparse.ArgumentParser(prog="asr_worker lexicon", description=lexicon_lms.__doc__)
    parser.add_argument("--heads", required=True, help="comma-separated head folders; lm.json goes in each")
    parser.add_argument(
        "--real",
        action="append",
        required=True,
        help="JSONL manifest the heads were trained on; their held-out speakers tune the fusion (repeatable)",
    )
    parser.add_argument(
        "--synthetic",
        action="append",
        default=[],
        help="a synthetic corpus whose dev split tunes the fusion too (repeatable)",
    )
    parser.add_argument(
        "--words", type=int, default=LEXICON_WORDS, help="the commonest words of each language"
    )
    parser.add_argument(
        "--beam", type=int, default=LEXICON_BEAM, help="beam width to tune at and search with"
    )
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    configure(args.log_level, fmt="text", service="asr-lexicon")
    folders = [Path(folder) for folder in comma_list(args.heads)]
    _run(
        parser,
        lambda: print(
            json.dumps(lexicon_lms(folders, args.real, args.words, beam=args.beam, synthetic=args.synthetic))
        ),
    )
