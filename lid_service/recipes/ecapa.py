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

import logging
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from lid_service.recipes.data import batch_stream, crop_audio, make_corpus
from lid_service.recipes.export import evaluate_export, export_model, load_init, model_card, recipe_of
from lid_service.recipes.network import LidNetwork, calibrate_scale, cosine_scores
from lid_service.recipes.recipe import (
    CALIBRATION_VARIANTS,
    EVAL_CROPS,
    EVAL_VARIANTS,
    RECIPE,
    SAMPLE_RATE,
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
    languages = list(dict.fromkeys(languages))
    if len(languages) < 2:
        raise ValueError("language ID needs at least two languages")
    for code in languages:
        get_language(code)
    out_dir = Path(out_dir)
    if channels is not None and channels < 8:
        raise ValueError(f"channels={channels}: need at least 8")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size={batch_size}: need at least 1")
    where = torch.device(device)
    if where.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r}: this machine has no CUDA GPU that torch can use")
    if lr is not None and not lr > 0:
        raise ValueError(f"lr={lr}: need a positive learning rate")
    labels = [language_label(code) for code in languages]
    if init is not None:
        init = Path(init)
        recipe = recipe_of(init)
        if channels is not None and channels != recipe.channels[0]:
            raise ValueError(f"channels={channels}: {init} has width {recipe.channels[0]}")
    else:
        recipe = RECIPE if channels is None else replace(RECIPE, channels=(channels,) * 4 + (3 * channels,))
    if lr is not None:
        recipe = replace(recipe, lr=lr)
    if batch_size is not None:
        recipe = replace(recipe, batch_size=batch_size)
    torch.manual_seed(seed)
    torch.set_num_threads(min(torch.get_num_threads(), 2) or 1)
    model = LidNetwork(len(languages), recipe)
    if init is not None:  # before the minutes of synthesis, so that a wrong model fails at once
        load_init(model, init, labels)

    held_out = set(EVAL_VARIANTS) | set(CALIBRATION_VARIANTS)
    train_variants = [v for v in (*VARIANTS, *(EXTRA_VARIANTS if extra_voices else ())) if v not in held_out]
    started = time.monotonic()
    train = make_corpus(languages, utterances_per_language, seed, train_variants)
    calibration = make_corpus(languages, recipe.calibration_per_language, seed + 1000, CALIBRATION_VARIANTS)
    evaluation = make_corpus(languages, recipe.eval_per_language, seed + 2000, EVAL_VARIANTS)
    synth_seconds = time.monotonic() - started
    log.info("synthesized speech", extra={"seconds": round(synth_seconds, 1), "train": len(train.audio)})

    from speechbrain.nnet.losses import AdditiveAngularMargin, LogSoftmaxWrapper

    model.to(where).train()
    params = sum(p.numel() for p in model.parameters())
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    # No cudnn.benchmark on a GPU: crops come in 45 lengths, and on an H200 its autotuning made
    # the first 200 updates take 188 s of a 310 s run (two runs sharing the card); without it a
    # run alone made 33 updates a second from its first.
    batches = batch_stream(train, crop_seconds, seed, recipe, where)

    budget = Budget(max_steps=max_steps, max_seconds=max_train_seconds)
    while not budget.done:
        for group in optimizer.param_groups:
            group["lr"] = recipe.lr * budget.lr_factor(recipe.warmup_fraction)
        # The margin grows from 0: a full margin on random embeddings can leave training on a
        # plateau for most of a short budget (seen here: loss stuck near its initial value).
        # A model from an earlier run has its embeddings already: full margin from the start.
        margin = recipe.margin * (1.0 if init else min(1.0, budget.progress / recipe.margin_warmup_fraction))
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
    steps = budget.steps
    del batches  # ends the loader workers, if any

    calibration_wavs, calibration_labels = [], []
    for seconds in EVAL_CROPS:
        calibration_wavs += [crop_audio(w, int(seconds * SAMPLE_RATE), None) for w in calibration.audio]
        calibration_labels.append(calibration.labels)
    scale = calibrate_scale(
        cosine_scores(model, calibration_wavs), torch.from_numpy(np.concatenate(calibration_labels))
    )

    model.cpu()
    export_model(out_dir, model, labels, scale, recipe)
    metrics = evaluate_export(out_dir, evaluation)
    metrics.update(
        train_seconds=train_seconds,
        synth_seconds=synth_seconds,
        steps=float(steps),
        params=float(params),
        scale=scale,
    )
    model_card(
        out_dir,
        languages,
        metrics,
        seed=seed,
        utterances_per_language=utterances_per_language,
        max_train_seconds=max_train_seconds,
        max_steps=max_steps,
        crop_seconds=crop_seconds,
        channels=channels,
        extra_voices=extra_voices,
        batch_size=batch_size,
        device=device,
        train_variants=train_variants,
        init=init,
        lr=lr,
        params=params,
        steps=steps,
        scale=scale,
        recipe=recipe,
    )
    log.info("language-ID model written", extra={"out_dir": str(out_dir), **metrics})
    return metrics


def main(argv: list[str] | None = None) -> None:
    """`python -m lid_service train --out DIR --languages en,es,...`: prints the scores as JSON."""
    import argparse
    import json

    from lidroute.logs import configure

    parser = argparse.ArgumentParser(prog="lid_service train", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--out", required=True, help="directory to write (SpeechBrain EncoderClassifier layout)"
    )
    parser.add_argument("--languages", default=",".join(LANGUAGES), help="comma-separated codes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seconds", type=float, default=120.0, help="wall-clock training budget")
    parser.add_argument("--steps", type=int, help="stop after this many updates (reproducible budget)")
    parser.add_argument("--utterances", type=int, default=150, help="training utterances per language")
    parser.add_argument(
        "--crops", default="0.25,2", help="shortest,longest training crop in seconds (default 0.25,2)"
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
        "--device",
        default="cpu",
        help="where the updates run: cpu, or cuda (the other CPU cores then make the batches)",
    )
    parser.add_argument(
        "--init",
        help="train further from the model an earlier run wrote to this directory (same languages)",
    )
    parser.add_argument("--lr", type=float, help=f"peak learning rate (default {RECIPE.lr})")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    try:
        low, high = (float(x) for x in args.crops.split(","))
    except ValueError:
        parser.error(f"--crops {args.crops!r}: give two numbers, e.g. 0.25,3")
    if not 0 < low <= high:
        parser.error(f"--crops {args.crops!r}: need 0 < shortest <= longest")
    configure(args.log_level, fmt="text", service="lid-train")
    try:
        metrics = train_lid(
            Path(args.out),
            comma_list(args.languages),
            seed=args.seed,
            utterances_per_language=args.utterances,
            max_train_seconds=args.seconds,
            max_steps=args.steps,
            crop_seconds=(low, high),
            channels=args.channels,
            extra_voices=args.extra_voices,
            batch_size=args.batch_size,
            device=args.device,
            init=Path(args.init) if args.init else None,
            lr=args.lr,
        )
    except (KeyError, ValueError, RuntimeError) as exc:
        parser.exit(2, f"lid_service train: {exc.args[0] if exc.args else exc}\n")
    print(json.dumps({key: round(value, 4) for key, value in metrics.items()}))
