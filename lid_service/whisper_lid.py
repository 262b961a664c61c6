"""Language ID read from Whisper base's language token, as a SpeechBrain `EncoderClassifier`.

A model folder's `hyperparams.yaml` names these modules, so `EncoderClassifier.from_hparams`
loads it like `speechbrain/lang-id-voxlingua107-ecapa` and the service serves it the same way.
The folder holds no pretrained weight: the embedding module reads Whisper's encoder and decoder
from the installed packages (`lidroute.whisper`) and stores nothing; the classifier holds the
calibration chosen on held-out real speech, one softmax temperature.

Whisper decides a language on 30 s windows, speech then silence, and reads a short window best
padded with silence (on 1 s of FLEURS speech: 40 % alone, 64 % padded to 3 s, 78 % to 30 s).
Padding to 30 s costs thirty times the encoder; windows here are padded to `min_seconds`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from lidroute.whisper import HOP, SAMPLE_RATE, LanguageToken, load_encoder, native_bfloat16, read_weights


class Unchanged(nn.Module):
    """SpeechBrain's feature-normalisation slot, left as it is: Whisper's features are already
    normalised to each utterance's peak."""

    def forward(self, features: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        return features


class WhisperLanguageLogits(nn.Module):
    """(batch, 80, frames) log-mel features and relative lengths -> (batch, 1, languages) logits.

    Each window goes on in silence to `min_seconds` (or to the batch's longest window), as the
    zeros Whisper pads with would: every frame past its end at the floor Whisper's features put
    2 under the window's loudest frame.
    """

    def __init__(self, languages: Sequence[str], min_seconds: float = 3.0, precision: str = "auto") -> None:
        """`precision` "auto": bfloat16 where the CPU computes it natively (`native_bfloat16`)."""
        super().__init__()
        if precision not in ("auto", "float32", "bfloat16"):
            raise ValueError(f"precision {precision!r}: auto, float32 or bfloat16")
        self.languages = tuple(languages)
        self.min_frames = round(min_seconds * SAMPLE_RATE / HOP)
        self.bfloat16 = precision == "bfloat16" or (precision == "auto" and native_bfloat16())
        weights = read_weights()  # once for both; what neither keeps is freed with it
        self.encoder = load_encoder(weights=weights)
        self.token = LanguageToken(self.languages, weights=weights)

    def state_dict(self, *args: object, **kwargs: object) -> dict:  # type: ignore[override]
        """Nothing to store: every weight is Whisper's and comes from the installed packages."""
        return {}

    def load_state_dict(self, state_dict: object, strict: bool = True, assign: bool = False) -> object:
        """Loads nothing (see `state_dict`), and so misses nothing."""
        return nn.modules.module._IncompatibleKeys([], [])

    def forward(self, features: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        batch, total = features.shape[0], features.shape[-1]
        frames = torch.full((batch,), total, device=features.device)
        if lengths is not None:
            frames = (lengths * total).round().long().clamp(1, total)
        width = max(total, self.min_frames)
        inside = torch.arange(width, device=features.device)[None, None] < frames[:, None, None]
        features = nn.functional.pad(features, (0, width - total))
        loudest = features.masked_fill(~inside, float("-inf")).amax(dim=(1, 2), keepdim=True)
        features = torch.where(inside, features, loudest - 2.0)
        lower = self.bfloat16 and features.device.type == "cpu"
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=lower):
            encoded = self.encoder(features)
            logits = self.token(encoded)
        return logits.float().unsqueeze(1)


class Calibration(nn.Module):
    """Language logits -> log-posteriors at a temperature chosen on held-out real speech, so that
    a probability says how often such decisions are right."""

    def __init__(self) -> None:
        super().__init__()
        self.log_temperature = nn.Parameter(torch.zeros(()))

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(logits / self.log_temperature.exp(), dim=-1)
