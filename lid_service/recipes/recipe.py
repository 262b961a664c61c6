"""The LID recipe's settings and the voices it trains and scores on."""

from __future__ import annotations

from dataclasses import dataclass

from lidroute.train.synth import (
    get_language,
)

SAMPLE_RATE = 16000


EVAL_CROPS: tuple[float, ...] = (0.25, 0.5, 1.0)


# Voice variants kept out of training: the first group measures accuracy, the second calibrates
# the posterior temperature. Both are unseen by training, so the scores speak of new voices.
EVAL_VARIANTS: tuple[str, ...] = ("m3", "f4", "klatt4", "Denis")


CALIBRATION_VARIANTS: tuple[str, ...] = ("f2", "Gene")


@dataclass(frozen=True)
class LidRecipe:
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


RECIPE = LidRecipe()


def language_label(code: str) -> str:
    """VoxLingua107's label style, `code: Name`; the service maps labels back to codes."""
    return f"{code}: {get_language(code).name}"
