"""The ECAPA-TDNN network the LID recipe trains, with a cosine head calibrated to probabilities."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from lid_service.recipes.data import collate
from lid_service.recipes.recipe import LidRecipe


class LidNetwork(torch.nn.Module):
    def __init__(self, n_classes: int, recipe: LidRecipe) -> None:
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
            feats = mask_spectrogram(feats)
        return self.classifier(self.embedding_model(feats, lens))


def mask_spectrogram(feats: torch.Tensor) -> torch.Tensor:
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


def cosine_scores(model: LidNetwork, wavs: Sequence[np.ndarray], batch_size: int = 64) -> torch.Tensor:
    device = next(model.parameters()).device
    model.eval()
    outs = []
    with torch.inference_mode():
        for i in range(0, len(wavs), batch_size):
            x, lens = collate(wavs[i : i + batch_size])
            outs.append(model(x.to(device), lens.to(device)).squeeze(1).cpu())
    model.train()
    return torch.cat(outs)


def calibrate_scale(cosines: torch.Tensor, labels: torch.Tensor) -> float:
    """The softmax temperature that minimises NLL on unseen voices, so router thresholds mean something.

    Training uses AAM scale 30, which makes posteriors far too sure of themselves on new voices.
    """
    grid = torch.linspace(1.0, 60.0, 119)
    nll = torch.stack(
        [torch.nn.functional.cross_entropy(s * cosines, labels) for s in grid]
    )  # one scalar: a grid is exact enough and cannot diverge
    return float(grid[int(nll.argmin())])
