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
import math
import re
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from lidroute.audio import speech_bounds
from lidroute.settings import comma_list
from lidroute.train.budget import Budget, usable_cores
from lidroute.train.corpus import telephone
from lidroute.train.synth import (
    EXTRA_VARIANTS,
    LANGUAGES,
    VARIANTS,
    Utterance,
    get_language,
    synth_utterances,
)

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
EVAL_CROPS: tuple[float, ...] = (0.25, 0.5, 1.0)
# Voice variants kept out of training: the first group measures accuracy, the second calibrates
# the posterior temperature. Both are unseen by training, so the scores speak of new voices.
EVAL_VARIANTS: tuple[str, ...] = ("m3", "f4", "klatt4", "Denis")
CALIBRATION_VARIANTS: tuple[str, ...] = ("f2", "Gene")


@dataclass(frozen=True)
class _Recipe:
    """Model size and optimisation settings, measured on 2 CPU cores (see README of a trained model)."""

    n_mels: int = 40
    hop_ms: float = 10.0
    channels: tuple[int, ...] = (128, 128, 128, 128, 384)
    kernel_sizes: tuple[int, ...] = (5, 3, 3, 3, 1)
    dilations: tuple[int, ...] = (1, 2, 3, 4, 1)
    attention_channels: int = 64
    se_channels: int = 64
    lin_neurons: int = 96
    margin: float = 0.2
    scale: float = 30.0
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 2e-5
    warmup_fraction: float = 0.05
    margin_warmup_fraction: float = 0.3
    warp: tuple[float, float] = (0.85, 1.18)
    warp_probability: float = 0.6
    #: Share of crops heard through an 8 kHz telephone channel (after the noise, as on a call):
    #: without it the channel alone cost the model 10 points of accuracy on 0.5 s windows.
    telephone_probability: float = 0.3
    spec_mask: bool = False  # SpecAugment masks slowed learning too much for a 2-minute budget
    log_uniform_crops: bool = True
    eval_per_language: int = 60
    calibration_per_language: int = 30

    @property
    def ecapa(self) -> dict[str, object]:
        """ECAPA_TDNN's arguments: the same dict builds the model and writes hyperparams.yaml, so
        the exported file always describes the network whose weights sit beside it."""
        return {
            "channels": list(self.channels),
            "kernel_sizes": list(self.kernel_sizes),
            "dilations": list(self.dilations),
            "attention_channels": self.attention_channels,
            "se_channels": self.se_channels,
            "lin_neurons": self.lin_neurons,
        }


RECIPE = _Recipe()


def language_label(code: str) -> str:
    """VoxLingua107's label style, `code: Name`; the service maps labels back to codes."""
    return f"{code}: {get_language(code).name}"


# --------------------------------------------------------------------------- data


def _trim(audio: np.ndarray) -> np.ndarray:
    """Cuts leading and trailing silence, as the router does by starting windows at speech onset."""
    start, end = speech_bounds(audio)
    return audio[start:end]


@dataclass
class _Corpus:
    audio: list[np.ndarray]
    labels: np.ndarray
    variants: list[str]


def _corpus(
    languages: Sequence[str], n: int, seed: int, variants: Sequence[str], *, max_words: int = 5
) -> _Corpus:
    audio: list[np.ndarray] = []
    labels: list[int] = []
    voices: list[str] = []
    for index, lang in enumerate(languages):
        utterances: list[Utterance] = synth_utterances(
            lang,
            n,
            seed=seed,
            variants=variants,
            speeds=(120, 200),
            pitches=(20, 80),
            max_words=max_words,
            workers=max(4, usable_cores()),
        )
        audio.extend(_trim(u.audio) for u in utterances)
        labels.extend([index] * len(utterances))
        voices.extend(u.variant for u in utterances)
    return _Corpus(audio, np.asarray(labels, dtype=np.int64), voices)


def _warp(wav: np.ndarray, rng: np.random.Generator, recipe: _Recipe) -> np.ndarray:
    """Resamples by a random factor and plays back at 16 kHz: tempo, pitch and formants all move.

    Shifting formants imitates a different vocal tract, i.e. a voice the synthesiser never had;
    new voices are what language ID meets in use.
    """
    if rng.random() >= recipe.warp_probability:
        return wav
    import soxr

    factor = rng.uniform(*recipe.warp)
    return soxr.resample(wav, SAMPLE_RATE, int(SAMPLE_RATE * factor)).astype(np.float32, copy=False)


def _augment(wav: np.ndarray, rng: np.random.Generator, recipe: _Recipe) -> np.ndarray:
    """Gain, spectral tilt (a crude channel), additive coloured noise at a random SNR, and a
    telephone channel."""
    wav = wav * rng.uniform(0.2, 1.0)
    if rng.random() < 0.5:
        coefficient = rng.uniform(-0.8, 0.9)
        wav = np.concatenate([wav[:1], wav[1:] - coefficient * wav[:-1]])
    if rng.random() < 0.7:
        noise = rng.standard_normal(len(wav)).astype(np.float32)
        if rng.random() < 0.5:  # brown-ish noise: a leaky integrator over white noise
            noise = np.cumsum(noise) * 0.05
            noise -= np.convolve(noise, np.ones(401) / 401, mode="same")
        snr_db = rng.uniform(5.0, 40.0)
        signal_power = float((wav**2).mean()) + 1e-8
        noise_power = float((noise**2).mean()) + 1e-8
        wav = wav + noise * math.sqrt(signal_power / noise_power / 10 ** (snr_db / 10))
    if rng.random() < recipe.telephone_probability:
        wav = telephone(wav.astype(np.float32))
    peak = float(np.abs(wav).max())
    return (wav / peak if peak > 1.0 else wav).astype(np.float32)


def _crop(wav: np.ndarray, length: int, rng: np.random.Generator | None) -> np.ndarray:
    """A window of `length` samples: at speech onset for evaluation (as the router asks), else random."""
    if len(wav) <= length:
        return wav
    start = 0 if rng is None or rng.random() < 0.3 else int(rng.integers(0, len(wav) - length + 1))
    return wav[start : start + length]


def _crop_length(crop_seconds: tuple[float, float], rng: np.random.Generator, recipe: _Recipe) -> int:
    """A training window length in samples, on a 1/16 s grid.

    Log-uniform lengths spend more steps on the short windows the router asks about first, and
    short steps are cheap; the grid lets the CPU kernels reuse their plans for repeated shapes.
    """
    low, high = crop_seconds
    seconds = (
        math.exp(rng.uniform(math.log(low), math.log(high)))
        if recipe.log_uniform_crops
        else rng.uniform(low, high)
    )
    return max(round(seconds * 16) * SAMPLE_RATE // 16, SAMPLE_RATE // 16)


def _batch(wavs: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-pads to the longest and returns SpeechBrain's relative lengths."""
    longest = max(len(w) for w in wavs)
    out = torch.zeros(len(wavs), longest)
    for i, w in enumerate(wavs):
        out[i, : len(w)] = torch.from_numpy(w)
    return out, torch.tensor([len(w) / longest for w in wavs])


_Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def _batches(
    train: _Corpus, crop_seconds: tuple[float, float], rng: np.random.Generator, recipe: _Recipe
) -> Iterator[_Batch]:
    """Endless training batches (waveforms, relative lengths, labels), all of one crop length."""
    while True:
        length = _crop_length(crop_seconds, rng, recipe)
        picks = rng.integers(0, len(train.audio), size=recipe.batch_size)
        wavs = [_augment(_crop(_warp(train.audio[i], rng, recipe), length, rng), rng, recipe) for i in picks]
        x, lens = _batch(wavs)
        yield x, lens, torch.from_numpy(train.labels[picks]).unsqueeze(1)


class _BatchStream(torch.utils.data.IterableDataset):
    """`_batches` in loader worker processes, each drawing from its own generator.

    A GPU takes an update in milliseconds, far less than one CPU core needs to warp, crop and
    noise a batch, so on a GPU the batches are made by every other core at once. Each worker's
    generator is seeded by (seed, worker), so a run's data depends on its seed and worker count.
    """

    def __init__(self, train: _Corpus, crop_seconds: tuple[float, float], seed: int, recipe: _Recipe) -> None:
        super().__init__()
        self.train, self.crop_seconds, self.seed, self.recipe = train, crop_seconds, seed, recipe

    def __iter__(self) -> Iterator[_Batch]:
        info = torch.utils.data.get_worker_info()
        rng = np.random.default_rng([self.seed, info.id if info is not None else 0])
        return _batches(self.train, self.crop_seconds, rng, self.recipe)


def _batch_stream(
    train: _Corpus, crop_seconds: tuple[float, float], seed: int, recipe: _Recipe, device: torch.device
) -> Iterator[_Batch]:
    """Batches made in this process from one generator of `seed` on the CPU (the draws of the
    bundled recipe, one after another), or by a pool of loader workers when the updates run on a GPU."""
    if device.type == "cpu":
        return _batches(train, crop_seconds, np.random.default_rng(seed), recipe)
    workers = max(1, usable_cores() - 1)
    loader = torch.utils.data.DataLoader(
        _BatchStream(train, crop_seconds, seed, recipe),
        batch_size=None,
        num_workers=workers,
        pin_memory=True,
        prefetch_factor=4,
    )
    log.info("making batches in loader workers", extra={"workers": workers})
    return iter(loader)


# --------------------------------------------------------------------------- model


class _Lid(torch.nn.Module):
    def __init__(self, n_classes: int, recipe: _Recipe) -> None:
        from speechbrain.lobes.features import Fbank
        from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN, Classifier
        from speechbrain.processing.features import InputNormalization

        super().__init__()
        self.compute_features = Fbank(n_mels=recipe.n_mels, hop_length=recipe.hop_ms)
        self.mean_var_norm = InputNormalization(norm_type="sentence", std_norm=False)
        self.embedding_model = ECAPA_TDNN(input_size=recipe.n_mels, **recipe.ecapa)
        self.classifier = Classifier(input_size=recipe.lin_neurons, out_neurons=n_classes)

    def forward(self, wavs: torch.Tensor, lens: torch.Tensor, *, spec_mask: bool = False) -> torch.Tensor:
        """Cosine similarity to each language's prototype, shape [batch, 1, languages]."""
        feats = self.compute_features(wavs)
        feats = self.mean_var_norm(feats, lens)
        if spec_mask:
            feats = _spec_mask(feats)
        return self.classifier(self.embedding_model(feats, lens))


def _spec_mask(feats: torch.Tensor) -> torch.Tensor:
    """SpecAugment-style: one band of Mel channels and one stretch of frames per example set to the mean."""
    batch, frames, mels = feats.shape
    feats = feats.clone()
    for i in range(batch):
        width = int(torch.randint(0, mels // 5 + 1, ()))
        start = int(torch.randint(0, mels - width + 1, ()))
        feats[i, :, start : start + width] = 0.0
        length = int(torch.randint(0, max(1, frames // 10) + 1, ()))
        begin = int(torch.randint(0, frames - length + 1, ()))
        feats[i, begin : begin + length, :] = 0.0
    return feats


def _cosines(model: _Lid, wavs: Sequence[np.ndarray], batch_size: int = 64) -> torch.Tensor:
    device = next(model.parameters()).device
    model.eval()
    outs = []
    with torch.inference_mode():
        for i in range(0, len(wavs), batch_size):
            x, lens = _batch(wavs[i : i + batch_size])
            outs.append(model(x.to(device), lens.to(device)).squeeze(1).cpu())
    model.train()
    return torch.cat(outs)


def _calibrate_scale(cosines: torch.Tensor, labels: torch.Tensor) -> float:
    """The softmax temperature that minimises NLL on unseen voices, so router thresholds mean something.

    Training uses AAM scale 30, which makes posteriors far too sure of themselves on new voices.
    """
    grid = torch.linspace(1.0, 60.0, 119)
    nll = torch.stack(
        [torch.nn.functional.cross_entropy(s * cosines, labels) for s in grid]
    )  # one scalar: a grid is exact enough and cannot diverge
    return float(grid[int(nll.argmin())])


# --------------------------------------------------------------------------- export

_HYPERPARAMS = """\
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


def _recipe_of(model_dir: Path) -> _Recipe:
    """The network settings of a directory `_export` wrote, read from its hyperparams.yaml.

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


def _load_init(model: _Lid, model_dir: Path, labels: Sequence[str]) -> None:
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


def _earlier_calls(model_dir: Path) -> list[str]:
    """The `train_lid(...)` calls on an earlier model's card, so a further run's card lists every run."""
    card = model_dir / "README.md"
    text = card.read_text(encoding="utf-8") if card.exists() else ""
    # Cards made before the recipes moved name the module `lid_service.training`.
    pattern = r"^`lid_service\.(?:recipes\.ecapa|training)\.(train_lid\(.*\))`$"
    return re.findall(pattern, text, flags=re.MULTILINE)


def _export(out_dir: Path, model: _Lid, labels: Sequence[str], scale: float, recipe: _Recipe) -> None:
    from speechbrain.dataio.encoder import CategoricalEncoder

    out_dir.mkdir(parents=True, exist_ok=True)
    n = len(labels)
    (out_dir / "hyperparams.yaml").write_text(
        _HYPERPARAMS.format(
            sample_rate=SAMPLE_RATE,
            n_mels=recipe.n_mels,
            hop_ms=recipe.hop_ms,
            n_classes=n,
            **recipe.ecapa,
        ),
        encoding="utf-8",
    )
    torch.save(_half(model.embedding_model.state_dict()), out_dir / "embedding_model.ckpt")
    head = torch.nn.Sequential(model.classifier, torch.nn.Linear(n, n, bias=False))
    with torch.no_grad():
        head[1].weight.copy_(torch.eye(n) * scale)
    # The yaml's Sequential also holds the (parameter-free) log-softmax as item 2.
    torch.save(_half(head.state_dict()), out_dir / "classifier.ckpt")
    encoder = CategoricalEncoder()
    encoder.update_from_iterable(labels)
    encoder.expect_len(n)
    encoder.save(out_dir / "label_encoder.txt")
    shutil.copyfile(out_dir / "label_encoder.txt", out_dir / "label_encoder.ckpt")


def _half(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Floating tensors in half precision, on the CPU: half the bytes of the bundle, and
    `load_state_dict` copies them into the float32 model that `from_hparams` builds. The scores
    on the card are measured on the written files, so they include the rounding."""
    return {k: (v.half() if v.is_floating_point() else v).cpu() for k, v in state.items()}


def _evaluate_export(out_dir: Path, corpus: _Corpus) -> dict[str, float]:
    """Scores the written directory through `EncoderClassifier`, exactly as the service loads it."""
    from speechbrain.inference.classifiers import EncoderClassifier

    scores: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="lid-load-") as savedir:
        classifier = EncoderClassifier.from_hparams(source=str(out_dir.resolve()), savedir=savedir)
        if classifier is None:
            raise RuntimeError(f"EncoderClassifier could not load {out_dir}")
        for seconds in EVAL_CROPS:
            wavs = [_crop(w, int(seconds * SAMPLE_RATE), None) for w in corpus.audio]
            predicted = []
            with torch.inference_mode():
                for i in range(0, len(wavs), 64):
                    x, lens = _batch(wavs[i : i + 64])
                    predicted.append(classifier.classify_batch(x, lens)[2].reshape(-1))
            hits = torch.cat(predicted).cpu().numpy() == corpus.labels
            scores[f"acc_{seconds}"] = float(hits.mean())
            by_voice = {
                v: round(float(hits[[x == v for x in corpus.variants]].mean()), 3)
                for v in set(corpus.variants)
            }
            log.info("accuracy by held-out voice", extra={"seconds": seconds, **by_voice})
    return scores


def _model_card(
    out_dir: Path,
    languages: Sequence[str],
    metrics: dict[str, float],
    *,
    seed: int,
    utterances_per_language: int,
    max_train_seconds: float | None,
    max_steps: int | None,
    crop_seconds: tuple[float, float],
    channels: int | None,
    extra_voices: bool,
    batch_size: int | None,
    device: str,
    train_variants: Sequence[str],
    init: Path | None,
    lr: float | None,
    params: int,
    steps: int,
    scale: float,
    recipe: _Recipe,
) -> None:
    langs = ", ".join(f"`{language_label(code)}`" for code in languages)
    accuracy = " | ".join(f"{100 * metrics[f'acc_{s}']:.1f} %" for s in EVAL_CROPS)
    options = [
        f"seed={seed}",
        f"utterances_per_language={utterances_per_language}",
        f"max_train_seconds={max_train_seconds}",
        f"max_steps={max_steps}",
        f"crop_seconds={crop_seconds!r}",
    ]
    if channels is not None:
        options.append(f"channels={channels}")
    if extra_voices:
        options.append("extra_voices=True")
    if batch_size is not None:
        options.append(f"batch_size={batch_size}")
    if device != "cpu":
        options.append(f"device={device!r}")
    if init is not None:
        options.append(f"init={str(init)!r}")
    if lr is not None:
        options.append(f"lr={lr}")
    call = f"train_lid(out_dir, {list(languages)!r}, {', '.join(options)})"
    calls = [*(_earlier_calls(init) if init is not None else []), call]
    runs = "\n\n".join(f"`lid_service.recipes.ecapa.{c}`" for c in calls)
    if len(calls) > 1:
        runs += (
            f"\n\n{len(calls)} runs, each from the model the one before it wrote (`init`);"
            " the scores below are the last run's."
        )
    hardware = torch.cuda.get_device_name(device) if torch.device(device).type == "cuda" else "the CPU"
    text = f"""# Small spoken-language identification model (synthetic speech)

A SpeechBrain ECAPA-TDNN language-ID model in the layout of `speechbrain/lang-id-voxlingua107-ecapa`,
made offline by `lidroute` so that the system works without a model hub. Load it with
`EncoderClassifier.from_hparams(source="<this directory>")`; `classify_batch` returns
log-posteriors over the languages below.

**Languages ({len(languages)}):** {langs}

## How it was made

{runs}

- Speech: espeak-ng speaking random sequences of real words of each language, read at run time
  from Babel's CLDR data (names of territories, languages, currencies, months...); no recorded
  speech and no text from the repository. {utterances_per_language} utterances per language in
  {len(train_variants)} espeak-ng voice variants, speeds 120–200 wpm, pitch 20–80.
- Features: 16 kHz audio, {recipe.n_mels} log-Mel filterbanks, sentence mean normalisation.
- Model: ECAPA-TDNN, channels {list(recipe.channels)}, {recipe.lin_neurons}-d embedding,
  cosine classifier; {params:,} parameters. Trained with additive angular margin
  (margin {recipe.margin}, scale {recipe.scale}), Adam (lr {recipe.lr}, warm-up then cosine decay
  over the training budget), batches of {recipe.batch_size} random crops of
  {crop_seconds[0]}–{crop_seconds[1]} s with gain, spectral tilt, noise (SNR 5–40 dB) and, for
  {100 * recipe.telephone_probability:.0f} % of them, an 8 kHz telephone channel:
  {steps} steps in {metrics["train_seconds"]:.0f} s on {hardware}.
- Posteriors: cosine scores times {scale:.1f} (temperature fitted on voices {", ".join(CALIBRATION_VARIANTS)},
  unseen in training), then log-softmax.

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
    (out_dir / "README.md").write_text(text, encoding="utf-8")


# --------------------------------------------------------------------------- training


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
    run on the GPU and the other CPU cores make the batches (`_batch_stream`).
    `extra_voices` adds the rest of espeak-ng's speaking variants (`EXTRA_VARIANTS`) to the
    training voices: the same number of utterances, spread over more timbres.
    `init` names a directory an earlier run wrote, to train further from (same languages, its
    width): the margin is full from the first update, and the schedule warms up again to `lr`
    (default the recipe's 3e-3; the bundled model's further runs used 1e-3, docs/models.md §2).
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
        recipe = _recipe_of(init)
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
    model = _Lid(len(languages), recipe)
    if init is not None:  # before the minutes of synthesis, so that a wrong model fails at once
        _load_init(model, init, labels)

    held_out = set(EVAL_VARIANTS) | set(CALIBRATION_VARIANTS)
    train_variants = [v for v in (*VARIANTS, *(EXTRA_VARIANTS if extra_voices else ())) if v not in held_out]
    started = time.monotonic()
    train = _corpus(languages, utterances_per_language, seed, train_variants)
    calibration = _corpus(languages, recipe.calibration_per_language, seed + 1000, CALIBRATION_VARIANTS)
    evaluation = _corpus(languages, recipe.eval_per_language, seed + 2000, EVAL_VARIANTS)
    synth_seconds = time.monotonic() - started
    log.info("synthesized speech", extra={"seconds": round(synth_seconds, 1), "train": len(train.audio)})

    from speechbrain.nnet.losses import AdditiveAngularMargin, LogSoftmaxWrapper

    model.to(where).train()
    params = sum(p.numel() for p in model.parameters())
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    # No cudnn.benchmark on a GPU: crops come in 45 lengths, and on an H200 its autotuning made
    # the first 200 updates take 188 s of a 310 s run (two runs sharing the card); without it a
    # run alone made 33 updates a second from its first.
    batches = _batch_stream(train, crop_seconds, seed, recipe, where)

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
        calibration_wavs += [_crop(w, int(seconds * SAMPLE_RATE), None) for w in calibration.audio]
        calibration_labels.append(calibration.labels)
    scale = _calibrate_scale(
        _cosines(model, calibration_wavs), torch.from_numpy(np.concatenate(calibration_labels))
    )

    model.cpu()
    _export(out_dir, model, labels, scale, recipe)
    metrics = _evaluate_export(out_dir, evaluation)
    metrics.update(
        train_seconds=train_seconds,
        synth_seconds=synth_seconds,
        steps=float(steps),
        params=float(params),
        scale=scale,
    )
    _model_card(
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


__all__ = ["CALIBRATION_VARIANTS", "EVAL_VARIANTS", "LANGUAGES", "language_label", "main", "train_lid"]
