"""The transfer table: fine-tuning from the backbone, from random weights and zero-shot, per budget."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from asr_worker.recipes.clips import language_examples
from asr_worker.recipes.finetune import FinetuneRecipe, finetune
from asr_worker.recipes.scoring import evaluate_model

if TYPE_CHECKING:
    pass


def zero_shot(
    model_dir: str | Path, data: str | Path, language: str, n_eval: int = 100, device: str = "cpu"
) -> dict[str, float]:
    """A high-resource model applied unchanged to another language's test speech."""
    from transformers import Wav2Vec2ForCTC, Wav2Vec2Processor

    model = Wav2Vec2ForCTC.from_pretrained(model_dir).to(device)
    processor = Wav2Vec2Processor.from_pretrained(model_dir)
    return evaluate_model(model, processor, language_examples(data, "test", language)[:n_eval])[0]


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
