"""The files that say how a model was made: `training.json` beside it, and its model card (README.md)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from asr_worker.decoding import WordLM
from asr_worker.recipes.alphabet import AlphabetReport
from asr_worker.recipes.ctc import (
    PERTURBATION,
    Perturbation,
)
from lidroute.train.corpus import (
    TUNE_SPLIT,
    json_tuples,
    synth_command,
    tune_command,
)

if TYPE_CHECKING:
    pass


#: Written beside a model: what made it and what it scored (also what `transfer` reads back).
REPORT_FILE = "training.json"


def write_report(out_dir: Path, report: Mapping[str, Any]) -> None:
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


def backbone_card(out_dir: Path, report: Mapping[str, Any]) -> None:
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


def finetune_card(out_dir: Path, report: Mapping[str, Any], alphabet: AlphabetReport) -> None:
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
    flags += _recipe_flags(report["recipe"], switches=True)
    lm = report.get("lm") or {}
    if lm.get("tuned_splits", ["dev"]) != ["dev"]:
        flags.append(f"--lm-dev-splits {','.join(lm['tuned_splits'])} --lm-dev-utterances {lm['tuned_on']}")
    flags += _recipe_flags(report["recipe"], switches=False)
    flags += _augmentation_flags(report.get("augmentation") or {})
    return " ".join(flags)


def _recipe_flags(recipe: Mapping[str, Any], *, switches: bool) -> list[str]:
    """The flags of the recipe's fields that a run changed from their defaults: its switches
    (`--no-augment`) or its flags with a value (`--lr 0.0005`), each as the command declares them
    (`FinetuneRecipe.flag_fields`); cards give the switches before the LM's flags, the values after."""
    from asr_worker.recipes.finetune import FinetuneRecipe, flag_name  # it writes cards: imported here

    changed = [
        item
        for item in FinetuneRecipe.flag_fields()
        if isinstance(item.default, bool) == switches and recipe[item.name] != item.default
    ]
    return [flag_name(item) if switches else f"{flag_name(item)} {recipe[item.name]}" for item in changed]


def _augmentation_flags(augmentation: Mapping[str, Any]) -> list[str]:
    """`--augmentation FIELD=VALUE` for each field of a recorded `Perturbation` that is not the usual one."""
    usual = asdict(PERTURBATION)
    flags: list[str] = []
    for name, value in augmentation.items():
        if name in usual and json_tuples(value) != usual[name]:
            text = ",".join(map(str, value)) if isinstance(value, list | tuple) else str(value)
            flags.append(f"--augmentation {name}={text}")
    return flags
