"""Trains a small SpeechBrain ECAPA-TDNN language-ID model on synthetic speech and exports it.

No model hub is reachable here, so the LID service needs a model this code can make on two CPU
cores in a couple of minutes. The output directory has the layout of
`speechbrain/lang-id-voxlingua107-ecapa` (`hyperparams.yaml`, `embedding_model.ckpt`,
`classifier.ckpt`, `label_encoder.txt`, labels like `sw: Swahili`), so the service loads it with
the same `EncoderClassifier.from_hparams(source=...)` call as the real hub model.

What buys accuracy on short windows is variety, not epochs (a model trained long on three voices
overfits them): every batch draws a crop length, many espeak-ng voice variants, speeds and pitches,
additive noise and a random spectral tilt. Evaluation uses voice variants that training never heard.

A run can start from a model an earlier run wrote (`init`) and train it further on new sentences,
so that a budget longer than one working session on the CPU is spent in several runs.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from lid_service.recipes.data import LidCorpus, batch_stream, crop_audio, make_corpus
from lid_service.recipes.export import (
    LidRun,
    evaluate_export,
    export_model,
    load_init,
    model_card,
    recipe_of,
)
from lid_service.recipes.network import LidNetwork, calibrate_scale, cosine_scores
from lid_service.recipes.recipe import (
    CALIBRATION_VARIANTS,
    EVAL_CROPS,
    EVAL_VARIANTS,
    RECIPE,
    SAMPLE_RATE,
    LidRecipe,
    language_label,
)
from lidroute.settings import comma_list
from lidroute.train.budget import Budget
from lidroute.train.synth import (
    EXTRA_VARIANTS,
    LANGUAGES,
    VARIANTS,
    get_language,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Speech:
    """A run's synthetic speech: training, calibration and evaluation corpora, each in its own voices."""

    train_variants: list[str]
    train: LidCorpus
    calibration: LidCorpus
    evaluation: LidCorpus
    seconds: float


def train_lid(
    out_dir: Path,
    languages: Sequence[str],
    *,
    seed: int = 0,
    utterances_per_language: int = 150,
    max_train_seconds: float | None = 120.0,
    max_steps: int | None = None,
    crop_seconds: tuple[float, float] = (0.25, 2.0),
    channels: int | None = None,
    extra_voices: bool = False,
    batch_size: int | None = None,
    device: str = "cpu",
    init: Path | None = None,
    lr: float | None = None,
) -> dict[str, float]:
    """Trains, calibrates, exports and evaluates a language-ID model; returns accuracies per window.

    `channels` widens (or narrows) the four TDNN blocks, the last layer keeping three times their
    width as ECAPA does; the compute per update grows about linearly with it on the CPU.
    `batch_size` is the number of crops per update (default 32). On `device` "cuda" the updates
    run on the GPU and the other CPU cores make the batches (`batch_stream`).
    `extra_voices` adds the rest of espeak-ng's speaking variants (`EXTRA_VARIANTS`) to the
    training voices: the same number of utterances, spread over more timbres.
    `init` names a directory an earlier run wrote, to train further from (same languages, its
    width): the margin is full from the first update, and the schedule warms up again to `lr`
    (default the recipe's 3e-3; the bundled model's further runs used 1e-3, the history of docs/models.md).
    Give it another `seed` than the earlier run's, so that it hears new sentences.

    Returns `{"acc_0.25", "acc_0.5", "acc_1.0", "train_seconds", ...}`, the accuracies measured by
    loading the written directory with `EncoderClassifier`, on voices that training never heard.
    """
    languages = _checked_languages(languages)
    out_dir, init = Path(out_dir), None if init is None else Path(init)
    run = LidRun(**locals())  # the arguments, checked: nothing else is bound yet
    _check_options(run)
    labels = [language_label(code) for code in languages]
    recipe = _recipe(run)
    torch.manual_seed(seed)
    torch.set_num_threads(min(torch.get_num_threads(), 2) or 1)
    model = LidNetwork(len(languages), recipe)
    if init is not None:  # before the minutes of synthesis, so that a wrong model fails at once
        load_init(model, init, labels)
    speech = _synthesise(run, recipe)
    train_seconds, steps = _train(model, speech.train, run, recipe)
    scale = _calibrated_scale(model, speech.calibration)
    model.cpu()
    export_model(out_dir, model, labels, scale, recipe)
    metrics = evaluate_export(out_dir, speech.evaluation)
    params = sum(p.numel() for p in model.parameters())
    metrics.update(
        train_seconds=train_seconds,
        synth_seconds=speech.seconds,
        steps=float(steps),
        params=float(params),
        scale=scale,
    )
    model_card(run, metrics, recipe, speech.train_variants)
    log.info("language-ID model written", extra={"out_dir": str(out_dir), **metrics})
    return metrics


def _checked_languages(languages: Sequence[str]) -> list[str]:
    """The languages without repeats, in order, all known, and at least two: else there is nothing to tell."""
    languages = list(dict.fromkeys(languages))
    if len(languages) < 2:
        raise ValueError("language ID needs at least two languages")
    for code in languages:
        get_language(code)
    return languages


def _check_options(run: LidRun) -> None:
    """Refuses, before any work, a width, batch, device or learning rate the run could not train with."""
    if run.channels is not None and run.channels < 8:
        raise ValueError(f"channels={run.channels}: need at least 8")
    if run.batch_size is not None and run.batch_size < 1:
        raise ValueError(f"batch_size={run.batch_size}: need at least 1")
    if torch.device(run.device).type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {run.device!r}: this machine has no CUDA GPU that torch can use")
    if run.lr is not None and not run.lr > 0:
        raise ValueError(f"lr={run.lr}: need a positive learning rate")


def _recipe(run: LidRun) -> LidRecipe:
    """The recipe at the run's width (the earlier model's, when training one further), learning rate
    and batch size, where the run gives them."""
    if run.init is not None:
        recipe = recipe_of(run.init)
        if run.channels is not None and run.channels != recipe.channels[0]:
            raise ValueError(f"channels={run.channels}: {run.init} has width {recipe.channels[0]}")
    elif run.channels is None:
        recipe = RECIPE
    else:
        recipe = replace(RECIPE, channels=(run.channels,) * 4 + (3 * run.channels,))
    if run.lr is not None:
        recipe = replace(recipe, lr=run.lr)
    if run.batch_size is not None:
        recipe = replace(recipe, batch_size=run.batch_size)
    return recipe


def _synthesise(run: LidRun, recipe: LidRecipe) -> _Speech:
    """The corpora: training voices exclude the held-out ones that calibrate and evaluate the model."""
    held_out = set(EVAL_VARIANTS) | set(CALIBRATION_VARIANTS)
    voices = (*VARIANTS, *(EXTRA_VARIANTS if run.extra_voices else ()))
    train_variants = [v for v in voices if v not in held_out]
    started = time.monotonic()
    train = make_corpus(run.languages, run.utterances_per_language, run.seed, train_variants)
    calibration = make_corpus(
        run.languages, recipe.calibration_per_language, run.seed + 1000, CALIBRATION_VARIANTS
    )
    evaluation = make_corpus(run.languages, recipe.eval_per_language, run.seed + 2000, EVAL_VARIANTS)
    synth_seconds = time.monotonic() - started
    log.info("synthesized speech", extra={"seconds": round(synth_seconds, 1), "train": len(train.audio)})
    return _Speech(train_variants, train, calibration, evaluation, synth_seconds)


def _train(model: LidNetwork, train: LidCorpus, run: LidRun, recipe: LidRecipe) -> tuple[float, int]:
    """Additive-angular-margin training on random crops until the budget is spent, on the run's device;
    returns the seconds it took and the updates it made."""
    from speechbrain.nnet.losses import AdditiveAngularMargin, LogSoftmaxWrapper

    where = torch.device(run.device)
    model.to(where).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    # No cudnn.benchmark on a GPU: crops come in 45 lengths, and on an H200 its autotuning made
    # the first 200 updates take 188 s of a 310 s run (two runs sharing the card); without it a
    # run alone made 33 updates a second from its first.
    batches = batch_stream(train, run.crop_seconds, run.seed, recipe, where)
    budget = Budget(max_steps=run.max_steps, max_seconds=run.max_train_seconds)
    while not budget.done:
        for group in optimizer.param_groups:
            group["lr"] = recipe.lr * budget.lr_factor(recipe.warmup_fraction)
        margin = _margin(run, recipe, budget)
        loss_fn = LogSoftmaxWrapper(AdditiveAngularMargin(margin=margin, scale=recipe.scale))
        x, lens, targets = (t.to(where, non_blocking=True) for t in next(batches))
        loss = loss_fn(model(x, lens, spec_mask=recipe.spec_mask), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()
        budget.steps += 1
        if budget.steps % 50 == 0:
            log.info(
                "training",
                extra={"step": budget.steps, "loss": round(loss.item(), 4), "seconds": round(budget.elapsed)},
            )
    train_seconds = budget.elapsed
    del batches  # ends the loader workers, if any
    return train_seconds, budget.steps


def _margin(run: LidRun, recipe: LidRecipe, budget: Budget) -> float:
    """The margin grows from 0: a full margin on random embeddings can leave training on a plateau
    for most of a short budget (seen here: loss stuck near its initial value). A model from an
    earlier run has its embeddings already: full margin from the start."""
    return recipe.margin * (1.0 if run.init else min(1.0, budget.progress / recipe.margin_warmup_fraction))


def _calibrated_scale(model: LidNetwork, calibration: LidCorpus) -> float:
    """The softmax temperature that fits the cosine scores of the calibration voices, at every window."""
    calibration_wavs: list[np.ndarray] = []
    calibration_labels: list[np.ndarray] = []
    for seconds in EVAL_CROPS:
        calibration_wavs += [crop_audio(w, int(seconds * SAMPLE_RATE), None) for w in calibration.audio]
        calibration_labels.append(calibration.labels)
    return calibrate_scale(
        cosine_scores(model, calibration_wavs), torch.from_numpy(np.concatenate(calibration_labels))
    )


def main(argv: list[str] | None = None) -> None:
    """`python -m lid_service train --out DIR --languages en,es,...`: prints the scores as JSON."""
    import json

    from lidroute.logs import configure

    parser = _parser()
    options = vars(parser.parse_args(argv))
    if "crop_seconds" in options:
        options["crop_seconds"] = _crops(parser, options["crop_seconds"])
    if "init" in options:
        options["init"] = Path(options["init"]) if options["init"] else None
    out, languages = Path(options.pop("out")), comma_list(options.pop("languages"))
    configure(options.pop("log_level"), fmt="text", service="lid-train")
    try:
        metrics = train_lid(out, languages, **options)
    except (KeyError, ValueError, RuntimeError) as exc:
        parser.exit(2, f"lid_service train: {exc.args[0] if exc.args else exc}\n")
    print(json.dumps({key: round(value, 4) for key, value in metrics.items()}))


def _parser() -> argparse.ArgumentParser:
    """`lid_service train`'s flags, each stored under the name of the `train_lid` option it sets; one
    left out is left out of the call too, so the option's default is `train_lid`'s, declared there once."""
    parser = argparse.ArgumentParser(
        prog="lid_service train", description=__doc__.split("\n")[0], argument_default=argparse.SUPPRESS
    )
    parser.add_argument(
        "--out", required=True, help="directory to write (SpeechBrain EncoderClassifier layout)"
    )
    parser.add_argument("--languages", default=",".join(LANGUAGES), help="comma-separated codes")
    parser.add_argument("--seed", type=int)
    parser.add_argument(
        "--seconds",
        dest="max_train_seconds",
        metavar="SECONDS",
        type=float,
        help="wall-clock training budget",
    )
    parser.add_argument(
        "--steps",
        dest="max_steps",
        metavar="STEPS",
        type=int,
        help="stop after this many updates (reproducible budget)",
    )
    parser.add_argument(
        "--utterances",
        dest="utterances_per_language",
        metavar="UTTERANCES",
        type=int,
        help="training utterances per language",
    )
    parser.add_argument(
        "--crops",
        dest="crop_seconds",
        metavar="CROPS",
        help="shortest,longest training crop in seconds (default 0.25,2)",
    )
    parser.add_argument(
        "--channels", type=int, help=f"width of the TDNN blocks (default {RECIPE.channels[0]})"
    )
    parser.add_argument(
        "--extra-voices",
        action="store_true",
        help="train on all of espeak-ng's speaking voice variants, not only the corpus's",
    )
    parser.add_argument("--batch-size", type=int, help=f"crops per update (default {RECIPE.batch_size})")
    parser.add_argument(
        "--device", help="where the updates run: cpu, or cuda (the other CPU cores then make the batches)"
    )
    parser.add_argument(
        "--init",
        help="train further from the model an earlier run wrote to this directory (same languages)",
    )
    parser.add_argument("--lr", type=float, help=f"peak learning rate (default {RECIPE.lr})")
    parser.add_argument("--log-level", default="INFO")
    return parser


def _crops(parser: argparse.ArgumentParser, text: str) -> tuple[float, float]:
    """`--crops 0.25,3` as (0.25, 3.0); anything else ends the command with its usage."""
    try:
        low, high = (float(x) for x in text.split(","))
    except ValueError:
        parser.error(f"--crops {text!r}: give two numbers, e.g. 0.25,3")
    if not 0 < low <= high:
        parser.error(f"--crops {text!r}: need 0 < shortest <= longest")
    return low, high
