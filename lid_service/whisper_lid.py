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

from collections.abc import Mapping, Sequence
from typing import Any

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

    def encode(
        self, features: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The encoder's states of each window gone on in silence, and each window's own frames
        among them (50 a second): what the language token and the gate of `GatedLanguageLogits` read."""
        batch, total = features.shape[0], features.shape[-1]
        frames = torch.full((batch,), total, device=features.device)
        if lengths is not None:
            frames = (lengths * total).round().long().clamp(1, total)
        width = max(total, self.min_frames)
        inside = torch.arange(width, device=features.device)[None, None] < frames[:, None, None]
        features = nn.functional.pad(features, (0, width - total))
        loudest = features.masked_fill(~inside, float("-inf")).amax(dim=(1, 2), keepdim=True)
        features = torch.where(inside, features, loudest - 2.0)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self._lower(features)):
            encoded = self.encoder(features)
        return encoded, (frames + 1) // 2

    def _lower(self, x: torch.Tensor) -> bool:
        return self.bfloat16 and x.device.type == "cpu"

    def forward(self, features: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        encoded, _ = self.encode(features, lengths)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self._lower(encoded)):
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


def pooled(encoded: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
    """Mean and standard deviation of each window's own encoder states (not its silence): what
    tells one kind of voice from another, whatever the words."""
    inside = (torch.arange(encoded.shape[1], device=encoded.device)[None] < frames[:, None])[..., None]
    count = frames[:, None].clamp(min=1).to(encoded.dtype)
    mean = (encoded * inside).sum(1) / count
    spread = (((encoded - mean[:, None]) ** 2) * inside).sum(1) / (count - 1).clamp(min=1)
    return torch.cat([mean, spread.sqrt()], dim=-1)


class GatedLanguageLogits(nn.Module):
    """Language ID for recorded and synthetic speech alike, as SpeechBrain's embedding slot:
    (batch, samples) waveforms -> (batch, 1, languages) log-posteriors.

    Two experts, each where it was trained: Whisper's language token (calibrated) hears people;
    the ECAPA models trained on espeak-ng's voices hear those and nothing else (12 % of recorded
    1 s windows, often with p > 0.9). A logistic gate on Whisper's encoder states, which tells
    espeak-ng from recorded and neural speech almost without error, chooses between them: with
    `hard`, each window's posterior is one expert's, never a blend, because an expert off its
    own speech is confidently wrong and a blend would carry that confidence into the answer;
    otherwise the two are mixed by the gate's weight. The ECAPA models run only when some window
    of the batch sounds like espeak-ng. Languages Whisper lacks (Quechua) come
    from the ECAPA models alone. The folder's `embedding_model.ckpt` holds the ECAPA models, the
    gate and the temperature; Whisper's weights come from the installed packages.
    """

    def __init__(
        self,
        languages: Sequence[str],
        whisper_languages: Sequence[str],
        ecapa: Mapping[str, Any],
        min_seconds: float = 3.0,
        precision: str = "auto",
        experts: int = 3,
        n_mels: int = 40,
        hop_ms: float = 10.0,
        emb_dim: int = 96,
        hard: bool = True,
    ) -> None:
        """`ecapa`, `n_mels`, `hop_ms`, `emb_dim`: the ECAPA models' shape, as their own folders
        declare it (`ECAPA_TDNN`'s keyword arguments, the filterbank, the embedding width)."""
        from speechbrain.lobes.features import Fbank
        from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN, Classifier
        from speechbrain.nnet.activations import Softmax
        from speechbrain.processing.features import InputNormalization

        from lidroute.whisper import LogMel

        super().__init__()
        self.languages = tuple(languages)
        unknown = [code for code in whisper_languages if code not in self.languages]
        if unknown:
            raise ValueError(f"Whisper's languages {', '.join(unknown)} are not among {', '.join(languages)}")
        self.mel = LogMel()
        self.whisper = WhisperLanguageLogits(whisper_languages, min_seconds, precision)
        rows = torch.tensor([self.languages.index(c) for c in whisper_languages])
        self.register_buffer("whisper_rows", rows, persistent=False)
        self.register_buffer("temperature", torch.ones(()))
        self.gate = nn.Linear(2 * self.whisper.encoder.norm.normalized_shape[0], 1)
        self.fbank = Fbank(n_mels=n_mels, hop_length=hop_ms)
        self.norm = InputNormalization(norm_type="sentence", std_norm=False)
        n = len(self.languages)
        self.experts = nn.ModuleList(ECAPA_TDNN(n_mels, lin_neurons=emb_dim, **ecapa) for _ in range(experts))
        self.heads = nn.ModuleList(
            nn.Sequential(
                Classifier(emb_dim, out_neurons=n), nn.Linear(n, n, bias=False), Softmax(apply_log=True)
            )
            for _ in range(experts)
        )
        self.hard = hard
        #: Below this gate weight in every window of a batch, the ECAPA models are not run.
        self.skip_below = 1e-3

    def load_state_dict(
        self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False
    ) -> Any:
        """Whisper's part is not in the checkpoint (see `WhisperLanguageLogits.state_dict`)."""
        result = super().load_state_dict(state_dict, strict=False, assign=assign)
        missing = [k for k in result.missing_keys if not k.startswith("whisper.")]
        if strict and (missing or result.unexpected_keys):
            raise RuntimeError(f"checkpoint mismatch: missing {missing}, unexpected {result.unexpected_keys}")
        return nn.modules.module._IncompatibleKeys(missing, result.unexpected_keys)

    def espeak_weight(self, encoded: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        """The gate: how much each window sounds like espeak-ng (0 to 1)."""
        return torch.sigmoid(self.gate(pooled(encoded.float(), frames))).squeeze(-1)

    def forward(self, wavs: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        encoded, frames = self.whisper.encode(self.mel(wavs), lengths)
        weight = self.espeak_weight(encoded, frames)
        if self.hard:
            weight = (weight > 0.5).float()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.whisper._lower(encoded)):
            logits = self.whisper.token(encoded).float()
        heard = torch.full((wavs.shape[0], len(self.languages)), -1e4, device=wavs.device)
        heard[:, self.whisper_rows] = torch.log_softmax(logits / self.temperature, dim=-1)
        if bool((weight < self.skip_below).all()):
            return heard.unsqueeze(1)
        features = self.norm(self.fbank(wavs), lengths)
        espeak = torch.stack(
            [
                head(expert(features, lengths)).squeeze(1)
                for expert, head in zip(self.experts, self.heads, strict=True)
            ]
        )
        espeak = torch.log_softmax(espeak.mean(0), dim=-1)  # the experts' product, as the service averages
        mixed = torch.logaddexp(weight.log()[:, None] + espeak, torch.log1p(-weight)[:, None] + heard)
        return mixed.unsqueeze(1)
