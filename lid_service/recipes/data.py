"""What the LID recipe trains on: synthetic speech per language, augmented, cropped and batched."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from lid_service.recipes.recipe import SAMPLE_RATE, LidRecipe
from lidroute.audio import speech_bounds
from lidroute.train.budget import usable_cores
from lidroute.train.corpus import telephone
from lidroute.train.synth import (
    Utterance,
    synth_utterances,
)

log = logging.getLogger(__name__)


def trim_edges(audio: np.ndarray) -> np.ndarray:
    """Cuts leading and trailing silence, as the router does by starting windows at speech onset."""
    start, end = speech_bounds(audio)
    return audio[start:end]


@dataclass
class LidCorpus:
    audio: list[np.ndarray]
    labels: np.ndarray
    variants: list[str]


def make_corpus(
    languages: Sequence[str], n: int, seed: int, variants: Sequence[str], *, max_words: int = 5
) -> LidCorpus:
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
        audio.extend(trim_edges(u.audio) for u in utterances)
        labels.extend([index] * len(utterances))
        voices.extend(u.variant for u in utterances)
    return LidCorpus(audio, np.asarray(labels, dtype=np.int64), voices)


def warp_audio(wav: np.ndarray, rng: np.random.Generator, recipe: LidRecipe) -> np.ndarray:
    """Resamples by a random factor and plays back at 16 kHz: tempo, pitch and formants all move.

    Shifting formants imitates a different vocal tract, i.e. a voice the synthesiser never had;
    new voices are what language ID meets in use.
    """
    if rng.random() >= recipe.warp_probability:
        return wav
    import soxr

    factor = rng.uniform(*recipe.warp)
    return soxr.resample(wav, SAMPLE_RATE, int(SAMPLE_RATE * factor)).astype(np.float32, copy=False)


def augment_audio(wav: np.ndarray, rng: np.random.Generator, recipe: LidRecipe) -> np.ndarray:
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


def crop_audio(wav: np.ndarray, length: int, rng: np.random.Generator | None) -> np.ndarray:
    """A window of `length` samples: at speech onset for evaluation (as the router asks), else random."""
    if len(wav) <= length:
        return wav
    start = 0 if rng is None or rng.random() < 0.3 else int(rng.integers(0, len(wav) - length + 1))
    return wav[start : start + length]


def draw_crop_length(crop_seconds: tuple[float, float], rng: np.random.Generator, recipe: LidRecipe) -> int:
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


def collate(wavs: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-pads to the longest and returns SpeechBrain's relative lengths."""
    longest = max(len(w) for w in wavs)
    out = torch.zeros(len(wavs), longest)
    for i, w in enumerate(wavs):
        out[i, : len(w)] = torch.from_numpy(w)
    return out, torch.tensor([len(w) / longest for w in wavs])


Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def batch_plan(
    train: LidCorpus, crop_seconds: tuple[float, float], rng: np.random.Generator, recipe: LidRecipe
) -> Iterator[Batch]:
    """Endless training batches (waveforms, relative lengths, labels), all of one crop length."""
    while True:
        length = draw_crop_length(crop_seconds, rng, recipe)
        picks = rng.integers(0, len(train.audio), size=recipe.batch_size)
        wavs = [
            augment_audio(crop_audio(warp_audio(train.audio[i], rng, recipe), length, rng), rng, recipe)
            for i in picks
        ]
        x, lens = collate(wavs)
        yield x, lens, torch.from_numpy(train.labels[picks]).unsqueeze(1)


class BatchStream(torch.utils.data.IterableDataset):
    """`batch_plan` in loader worker processes, each drawing from its own generator.

    A GPU takes an update in milliseconds, far less than one CPU core needs to warp, crop and
    noise a batch, so on a GPU the batches are made by every other core at once. Each worker's
    generator is seeded by (seed, worker), so a run's data depends on its seed and worker count.
    """

    def __init__(
        self, train: LidCorpus, crop_seconds: tuple[float, float], seed: int, recipe: LidRecipe
    ) -> None:
        super().__init__()
        self.train, self.crop_seconds, self.seed, self.recipe = train, crop_seconds, seed, recipe

    def __iter__(self) -> Iterator[Batch]:
        info = torch.utils.data.get_worker_info()
        rng = np.random.default_rng([self.seed, info.id if info is not None else 0])
        return batch_plan(self.train, self.crop_seconds, rng, self.recipe)


def batch_stream(
    train: LidCorpus, crop_seconds: tuple[float, float], seed: int, recipe: LidRecipe, device: torch.device
) -> Iterator[Batch]:
    """Batches made in this process from one generator of `seed` on the CPU (the draws of the
    bundled recipe, one after another), or by a pool of loader workers when the updates run on a GPU."""
    if device.type == "cpu":
        return batch_plan(train, crop_seconds, np.random.default_rng(seed), recipe)
    workers = max(1, usable_cores() - 1)
    loader = torch.utils.data.DataLoader(
        BatchStream(train, crop_seconds, seed, recipe),
        batch_size=None,
        num_workers=workers,
        pin_memory=True,
        prefetch_factor=4,
    )
    log.info("making batches in loader workers", extra={"workers": workers})
    return iter(loader)
