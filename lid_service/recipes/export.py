"""A trained LID network written as a SpeechBrain model directory, scored, with its model card."""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from lid_service.recipes.data import LidCorpus, collate, crop_audio
from lid_service.recipes.network import LidNetwork
from lid_service.recipes.recipe import (
    CALIBRATION_VARIANTS,
    EVAL_CROPS,
    EVAL_VARIANTS,
    RECIPE,
    SAMPLE_RATE,
    LidRecipe,
    language_label,
)

if TYPE_CHECKING:
    from speechbrain.inference.classifiers import EncoderClassifier

log = logging.getLogger(__name__)


#: The end of every language-ID `hyperparams.yaml` lidroute writes: the labels, the modules
#: `EncoderClassifier` runs, and what its pretrainer loads.
LOADING = """\
label_encoder: !new:speechbrain.dataio.encoder.CategoricalEncoder

__label_count: !apply:speechbrain.dataio.encoder.CategoricalEncoder.expect_len
    - !ref <label_encoder>
    - !ref <out_n_neurons>

modules:
    compute_features: !ref <compute_features>
    mean_var_norm: !ref <mean_var_norm>
    embedding_model: !ref <embedding_model>
    classifier: !ref <classifier>

# No `paths`: each loadable is fetched as <source>/<name>.ckpt from whatever directory or hub
# id `from_hparams(source=...)` names, so the directory can be moved or uploaded as it is.
# label_encoder.ckpt is therefore a copy of label_encoder.txt (VoxLingua107's file name).
pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer
    loadables:
        embedding_model: !ref <embedding_model>
        classifier: !ref <classifier>
        label_encoder: !ref <label_encoder>
"""


HYPERPARAMS = (
    """\
# ############################################################################
# Model: small ECAPA-TDNN spoken-language identification, trained on synthetic speech
# Made by lidroute (lid_service/recipes/ecapa.py); layout of speechbrain/lang-id-voxlingua107-ecapa.
# Load with EncoderClassifier.from_hparams(source=<this directory or a hub id>).
# classify_batch returns log-posteriors: the classifier ends in a log-softmax over
# temperature-scaled cosine scores (the Linear holds the calibrated scale times identity).
# ############################################################################

sample_rate: {sample_rate}
n_mels: {n_mels}
out_n_neurons: {n_classes}
emb_dim: {lin_neurons}

compute_features: !new:speechbrain.lobes.features.Fbank
    n_mels: !ref <n_mels>
    hop_length: {hop_ms}

mean_var_norm: !new:speechbrain.processing.features.InputNormalization
    norm_type: sentence
    std_norm: False

embedding_model: !new:speechbrain.lobes.models.ECAPA_TDNN.ECAPA_TDNN
    input_size: !ref <n_mels>
    channels: {channels}
    kernel_sizes: {kernel_sizes}
    dilations: {dilations}
    attention_channels: {attention_channels}
    se_channels: {se_channels}
    lin_neurons: !ref <emb_dim>

softmax: !new:speechbrain.nnet.activations.Softmax
    apply_log: True

cosine_classifier: !new:speechbrain.lobes.models.ECAPA_TDNN.Classifier
    input_size: !ref <emb_dim>
    out_neurons: !ref <out_n_neurons>

# Holds the calibrated softmax temperature times the identity (cosines -> logits).
temperature: !new:torch.nn.Linear
    in_features: !ref <out_n_neurons>
    out_features: !ref <out_n_neurons>
    bias: False

classifier: !new:torch.nn.Sequential
    - !ref <cosine_classifier>
    - !ref <temperature>
    - !ref <softmax>

"""
    + LOADING
)


def recipe_of(model_dir: Path) -> LidRecipe:
    """The network settings of a directory `export_model` wrote, read from its hyperparams.yaml.

    The yaml's `!new:`/`!ref` tags build objects in SpeechBrain's loader; here they are read as
    the plain mappings and strings they are written as, so nothing is built just to be measured.
    """
    import yaml

    class _Plain(yaml.SafeLoader):
        pass

    def plain(loader: yaml.SafeLoader, _suffix: str, node: yaml.Node) -> object:
        if isinstance(node, yaml.MappingNode):
            return loader.construct_mapping(node, deep=True)
        if isinstance(node, yaml.SequenceNode):
            return loader.construct_sequence(node, deep=True)
        return loader.construct_scalar(node)

    _Plain.add_multi_constructor("!", plain)
    path = model_dir / "hyperparams.yaml"
    try:
        doc = yaml.load(path.read_text(encoding="utf-8"), Loader=_Plain)
        ecapa = doc["embedding_model"]
        return replace(
            RECIPE,
            n_mels=int(doc["n_mels"]),
            hop_ms=float(doc["compute_features"]["hop_length"]),
            channels=tuple(int(c) for c in ecapa["channels"]),
            kernel_sizes=tuple(int(k) for k in ecapa["kernel_sizes"]),
            dilations=tuple(int(d) for d in ecapa["dilations"]),
            attention_channels=int(ecapa["attention_channels"]),
            se_channels=int(ecapa["se_channels"]),
            lin_neurons=int(doc["emb_dim"]),
        )
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: not a language-ID model written by `lid_service train` ({exc})") from exc


def load_init(model: LidNetwork, model_dir: Path, labels: Sequence[str]) -> None:
    """Copies an earlier run's weights into `model`, whose languages must be the earlier model's, in order."""
    from speechbrain.dataio.encoder import CategoricalEncoder

    encoder = CategoricalEncoder()
    try:
        encoder.load(model_dir / "label_encoder.txt")
        embedding = torch.load(model_dir / "embedding_model.ckpt", map_location="cpu")
        head = torch.load(model_dir / "classifier.ckpt", map_location="cpu")
    except OSError as exc:
        raise ValueError(f"{model_dir}: cannot read the earlier model ({exc})") from exc
    known = [encoder.ind2lab[i] for i in range(len(encoder))]
    if known != list(labels):
        raise ValueError(
            f"{model_dir} knows {known}; this run asks for {list(labels)} (same languages, same order)"
        )
    model.embedding_model.load_state_dict(embedding)
    # The exported head is (cosine classifier, temperature); training goes on from the cosines.
    model.classifier.load_state_dict({k.removeprefix("0."): v for k, v in head.items() if k.startswith("0.")})


def earlier_calls(model_dir: Path) -> list[str]:
    """The `train_lid(...)` calls on an earlier model's card, so a further run's card lists every run."""
    card = model_dir / "README.md"
    text = card.read_text(encoding="utf-8") if card.exists() else ""
    # Cards made before the recipes moved name the module `lid_service.training`.
    pattern = r"^`lid_service\.(?:recipes\.ecapa|training)\.(train_lid\(.*\))`$"
    return re.findall(pattern, text, flags=re.MULTILINE)


def export_model(
    out_dir: Path, model: LidNetwork, labels: Sequence[str], scale: float, recipe: LidRecipe
) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    n = len(labels)
    (out_dir / "hyperparams.yaml").write_text(
        HYPERPARAMS.format(
            sample_rate=SAMPLE_RATE,
            n_mels=recipe.n_mels,
            hop_ms=recipe.hop_ms,
            n_classes=n,
            **recipe.ecapa,
        ),
        encoding="utf-8",
    )
    torch.save(to_half(model.embedding_model.state_dict()), out_dir / "embedding_model.ckpt")
    head = torch.nn.Sequential(model.classifier, torch.nn.Linear(n, n, bias=False))
    with torch.no_grad():
        head[1].weight.copy_(torch.eye(n) * scale)
    # The yaml's Sequential also holds the (parameter-free) log-softmax as item 2.
    torch.save(to_half(head.state_dict()), out_dir / "classifier.ckpt")
    write_labels(out_dir, labels)


def write_labels(out_dir: Path, labels: Sequence[str]) -> None:
    """`label_encoder.txt`, and the same as `label_encoder.ckpt`, the name the pretrainer fetches."""
    from speechbrain.dataio.encoder import CategoricalEncoder

    encoder = CategoricalEncoder()
    encoder.update_from_iterable(labels)
    encoder.expect_len(len(labels))
    encoder.save(out_dir / "label_encoder.txt")
    shutil.copyfile(out_dir / "label_encoder.txt", out_dir / "label_encoder.ckpt")


def to_half(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Floating tensors in half precision, on the CPU: half the bytes of the bundle, and
    `load_state_dict` copies them into the float32 model that `from_hparams` builds. The scores
    on the card are measured on the written files, so they include the rounding."""
    return {k: (v.half() if v.is_floating_point() else v).cpu() for k, v in state.items()}


@contextmanager
def loaded(out_dir: Path) -> Iterator[EncoderClassifier]:
    """The written directory loaded through `EncoderClassifier`, exactly as the service loads it."""
    from speechbrain.inference.classifiers import EncoderClassifier

    with tempfile.TemporaryDirectory(prefix="lid-load-") as savedir:
        classifier = EncoderClassifier.from_hparams(source=str(out_dir.resolve()), savedir=savedir)
        if classifier is None:
            raise RuntimeError(f"EncoderClassifier could not load {out_dir}")
        yield classifier


def evaluate_export(out_dir: Path, corpus: LidCorpus) -> dict[str, float]:
    """Scores the written directory through `EncoderClassifier`, exactly as the service loads it."""
    scores: dict[str, float] = {}
    with loaded(out_dir) as classifier:
        for seconds in EVAL_CROPS:
            wavs = [crop_audio(w, int(seconds * SAMPLE_RATE), None) for w in corpus.audio]
            predicted = []
            with torch.inference_mode():
                for i in range(0, len(wavs), 64):
                    x, lens = collate(wavs[i : i + 64])
                    predicted.append(classifier.classify_batch(x, lens)[2].reshape(-1))
            hits = torch.cat(predicted).cpu().numpy() == corpus.labels
            scores[f"acc_{seconds}"] = float(hits.mean())
            by_voice = {
                v: round(float(hits[[x == v for x in corpus.variants]].mean()), 3)
                for v in set(corpus.variants)
            }
            log.info("accuracy by held-out voice", extra={"seconds": seconds, **by_voice})
    return scores


@dataclass(frozen=True)
class LidRun:
    """A `train_lid` call, its languages without repeats: what the run's steps read and its card restates."""

    out_dir: Path
    languages: list[str]
    seed: int
    utterances_per_language: int
    max_train_seconds: float | None
    max_steps: int | None
    crop_seconds: tuple[float, float]
    channels: int | None
    extra_voices: bool
    batch_size: int | None
    device: str
    init: Path | None
    lr: float | None

    def call(self) -> str:
        """The call as a card gives it: the budget and the data always, the other options where set."""
        options = [
            f"seed={self.seed}",
            f"utterances_per_language={self.utterances_per_language}",
            f"max_train_seconds={self.max_train_seconds}",
            f"max_steps={self.max_steps}",
            f"crop_seconds={self.crop_seconds!r}",
        ]
        where = {
            "channels": self.channels,
            "extra_voices": True if self.extra_voices else None,
            "batch_size": self.batch_size,
            "device": repr(self.device) if self.device != "cpu" else None,
            "init": repr(str(self.init)) if self.init is not None else None,
            "lr": self.lr,
        }
        options += [f"{name}={value}" for name, value in where.items() if value is not None]
        return f"train_lid(out_dir, {self.languages!r}, {', '.join(options)})"


def model_card(
    run: LidRun, metrics: Mapping[str, float], recipe: LidRecipe, train_variants: Sequence[str]
) -> None:
    """The README.md beside the model: its languages, how it was made, and the scores in `metrics`."""
    langs = ", ".join(f"`{language_label(code)}`" for code in run.languages)
    accuracy = " | ".join(f"{100 * metrics[f'acc_{s}']:.1f} %" for s in EVAL_CROPS)
    text = f"""# Small spoken-language identification model (synthetic speech)

A SpeechBrain ECAPA-TDNN language-ID model in the layout of `speechbrain/lang-id-voxlingua107-ecapa`,
made offline by `lidroute` so that the system works without a model hub. Load it with
`EncoderClassifier.from_hparams(source="<this directory>")`; `classify_batch` returns
log-posteriors over the languages below.

**Languages ({len(run.languages)}):** {langs}

## How it was made

{_runs(run)}

{_method(run, metrics, recipe, train_variants)}

## Scores

Accuracy on {RECIPE.eval_per_language} held-out utterances per language (new sentences, voice
variants {", ".join(EVAL_VARIANTS)} that training never heard), window starting at speech onset:

| 0.25 s | 0.5 s | 1.0 s |
|---|---|---|
| {accuracy} |

## Limits

Trained on synthetic speech only: expect much lower accuracy on real recordings (domain shift),
and no knowledge of languages outside the list. It is a demo model for running the system
offline, not a replacement for `speechbrain/lang-id-voxlingua107-ecapa`.
"""
    (run.out_dir / "README.md").write_text(text, encoding="utf-8")


def _runs(run: LidRun) -> str:
    """The call that made the model, after those that made the model it trained further (`init`)."""
    calls = [*(earlier_calls(run.init) if run.init is not None else []), run.call()]
    runs = "\n\n".join(f"`lid_service.recipes.ecapa.{c}`" for c in calls)
    if len(calls) > 1:
        runs += (
            f"\n\n{len(calls)} runs, each from the model the one before it wrote (`init`);"
            " the scores below are the last run's."
        )
    return runs


def _method(
    run: LidRun, metrics: Mapping[str, float], recipe: LidRecipe, train_variants: Sequence[str]
) -> str:
    """The card's list of the speech, features, model, training and posteriors behind the scores."""
    crops, scale = run.crop_seconds, metrics["scale"]
    hardware = (
        torch.cuda.get_device_name(run.device) if torch.device(run.device).type == "cuda" else "the CPU"
    )
    return f"""- Speech: espeak-ng speaking random sequences of real words of each language, read at run time
  from Babel's CLDR data (names of territories, languages, currencies, months...); no recorded
  speech and no text from the repository. {run.utterances_per_language} utterances per language in
  {len(train_variants)} espeak-ng voice variants, speeds 120–200 wpm, pitch 20–80.
- Features: 16 kHz audio, {recipe.n_mels} log-Mel filterbanks, sentence mean normalisation.
- Model: ECAPA-TDNN, channels {list(recipe.channels)}, {recipe.lin_neurons}-d embedding,
  cosine classifier; {int(metrics["params"]):,} parameters. Trained with additive angular margin
  (margin {recipe.margin}, scale {recipe.scale}), Adam (lr {recipe.lr}, warm-up then cosine decay
  over the training budget), batches of {recipe.batch_size} random crops of
  {crops[0]}–{crops[1]} s with gain, spectral tilt, noise (SNR 5–40 dB) and, for
  {100 * recipe.telephone_probability:.0f} % of them, an 8 kHz telephone channel:
  {int(metrics["steps"])} steps in {metrics["train_seconds"]:.0f} s on {hardware}.
- Posteriors: cosine scores times {scale:.1f} (temperature fitted on voices {", ".join(CALIBRATION_VARIANTS)},
  unseen in training), then log-softmax."""
