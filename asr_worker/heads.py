"""Recognizers as a small CTC head on Whisper base's frozen encoder: one backbone, a head per language.

Whisper's encoder learned from hundreds of thousands of hours of recorded speech what no model
trained here from synthetic voices can learn: real voices, rooms and microphones. A head of a
few million weights on its hidden states turns them into the characters of one language.

A head folder holds `head.json` (its shape and which encoder layers it reads), `head.safetensors`
(the head's weights only), the CTC tokenizer (`vocab.json`, `tokenizer_config.json`) and, for
beam search, a word LM (`lm.json`). The encoder's weights come from the installed Whisper-base
packages when the head loads, and every head in a process shares one encoder.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from transformers import Wav2Vec2CTCTokenizer

from lidroute.registry import HEAD_FILE
from lidroute.whisper import (
    HOP,
    MAX_FRAMES,
    SAMPLE_RATE,
    LogMel,
    WhisperEncoder,
    load_encoder,
    native_bfloat16,
)

HEAD_WEIGHTS = "head.safetensors"
#: Whisper's encoder emits one frame per 20 ms.
FRAME_SECONDS = 2 * HOP / SAMPLE_RATE
#: The longest piece the encoder reads at once (its positions end at 30 s).
WINDOW_SAMPLES = MAX_FRAMES * HOP


@dataclass(frozen=True)
class HeadConfig:
    """A head's shape: `layers` are the encoder's hidden states it reads (0 the convolutions'
    output, 6 the last layer), concatenated; then a projection to `width` and `blocks`
    residual convolutions over `kernel` frames, each seeing 100 ms more context."""

    vocab_size: int
    layers: tuple[int, ...]
    width: int
    blocks: int
    kernel: int
    dropout: float
    encoder_width: int = 512

    def __post_init__(self) -> None:
        if not self.layers or min(self.layers) < 0 or max(self.layers) > 6:
            raise ValueError(f"layers are Whisper base's hidden states 0-6, not {self.layers}")
        if self.vocab_size < 2 or self.width < 1 or self.blocks < 0 or self.kernel % 2 == 0:
            raise ValueError("a head needs a vocabulary of 2 or more, a positive width and an odd kernel")

    @classmethod
    def load(cls, folder: Path) -> HeadConfig:
        fields = json.loads((folder / HEAD_FILE).read_text(encoding="utf-8"))
        fields.pop("backbone", None)
        return cls(**fields | {"layers": tuple(fields["layers"])})

    def save(self, folder: Path) -> None:
        text = json.dumps({"backbone": "whisper-base encoder"} | asdict(self), indent=1)
        (folder / HEAD_FILE).write_text(text + "\n", encoding="utf-8")


class _Block(nn.Module):
    def __init__(self, width: int, kernel: int, dropout: float) -> None:
        super().__init__()
        self.conv = nn.Conv1d(width, width, kernel, padding=kernel // 2)
        self.norm = nn.LayerNorm(width)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = nn.functional.gelu(self.conv(x.transpose(1, 2)).transpose(1, 2))
        return self.norm(x + self.dropout(y))


class CtcHead(nn.Module):
    """(batch, frames, encoder width x layers) hidden states -> (batch, frames, vocabulary) logits.

    Convolutions rather than a recurrent layer: on two CPU cores they train several times
    faster per epoch and read as well (measured on held-out speakers)."""

    def __init__(self, config: HeadConfig) -> None:
        super().__init__()
        self.config = config
        inputs = config.encoder_width * len(config.layers)
        self.inp = nn.Sequential(
            nn.LayerNorm(inputs), nn.Dropout(config.dropout), nn.Linear(inputs, config.width), nn.GELU()
        )
        self.blocks = nn.Sequential(
            *(_Block(config.width, config.kernel, config.dropout) for _ in range(config.blocks))
        )
        self.out = nn.Linear(config.width, config.vocab_size)

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        return self.out(self.blocks(self.inp(states)))

    def save(self, folder: Path) -> None:
        from safetensors.torch import save_file

        folder.mkdir(parents=True, exist_ok=True)
        self.config.save(folder)
        # Half precision on disk (half the bundle); the head computes in float32.
        weights = {k: v.half().contiguous() for k, v in self.state_dict().items()}
        save_file(weights, str(folder / HEAD_WEIGHTS))

    @classmethod
    def load(cls, folder: Path) -> CtcHead:
        from safetensors.torch import load_file

        head = cls(HeadConfig.load(folder))
        head.load_state_dict({k: v.float() for k, v in load_file(str(folder / HEAD_WEIGHTS)).items()})
        return head.eval()


class HiddenStates(nn.Module):
    """Audio -> the encoder's hidden states a head reads, the encoder cut above the highest one."""

    def __init__(self, layers: tuple[int, ...], encoder: WhisperEncoder | None = None) -> None:
        super().__init__()
        self.layers = layers
        self.mel = LogMel()
        self.encoder = encoder if encoder is not None else load_encoder(max(1, *layers))
        self.bfloat16 = native_bfloat16()

    @torch.inference_mode()
    def forward(self, audio: np.ndarray) -> torch.Tensor:
        """Mono 16 kHz audio of any length -> (frames, width x layers), one frame per 20 ms;
        audio past 30 s is read in 30 s windows."""
        return self.many([audio])[0]

    @torch.inference_mode()
    def many(self, audios: Sequence[np.ndarray]) -> list[torch.Tensor]:
        """`forward` of several clips: windows of the same length (30 s windows of long audio,
        clips of one length) share an encoder call, the rest run one by one. Padding shorter rows
        would need the attention mask (`WhisperEncoder.forward`'s `frames`), and on a CPU the
        masked batch costs more per clip than clips alone (38 ms alone, 50-55 ms in a masked batch
        of 2-8 five-second clips on two cores, bfloat16); unmasked batches of equal length cost
        15-25 % less per clip."""
        owners: list[int] = []  # the clip of each window
        wavs: list[torch.Tensor] = []
        for i, audio in enumerate(audios):
            for start in range(0, max(len(audio), 1), WINDOW_SAMPLES):
                piece = audio[start : start + WINDOW_SAMPLES]
                wav = torch.from_numpy(np.ascontiguousarray(piece, np.float32))
                if len(wav) < 2 * HOP:  # the convolutions need two mel frames
                    wav = nn.functional.pad(wav, (0, 2 * HOP - len(wav)))
                wavs.append(wav)
                owners.append(i)
        states: list[torch.Tensor] = [torch.empty(0)] * len(wavs)
        for group in same_lengths([len(w) for w in wavs]):
            # Log-mel per row: each row's level floor is its own peak's, as when it runs alone.
            mel = torch.cat([self.mel(wavs[w][None]) for w in group])
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bfloat16):
                hidden = self.encoder(mel, hidden=True)
            for row, w in enumerate(group):
                states[w] = torch.cat([hidden[i][row] for i in self.layers], dim=-1).float()
        return [
            torch.cat([s for s, owner in zip(states, owners, strict=True) if owner == i])
            for i in range(len(audios))
        ]


def same_lengths(lengths: Sequence[int], most: int = 64) -> list[list[int]]:
    """The indices of `lengths` in groups of equal length (at most `most` each), in order of first
    appearance: batches that need no padding."""
    groups: dict[int, list[list[int]]] = {}
    for i, length in enumerate(lengths):
        runs = groups.setdefault(length, [[]])
        if len(runs[-1]) >= most:
            runs.append([])
        runs[-1].append(i)
    return [run for runs in groups.values() for run in runs]


_shared: dict[tuple[int, ...], HiddenStates] = {}
_shared_lock = threading.Lock()


def shared_states(layers: tuple[int, ...]) -> HiddenStates:
    """One encoder per process for every head that reads the same layers (a worker serving
    several languages holds Whisper's encoder once, not once per language)."""
    with _shared_lock:
        if layers not in _shared:
            _shared[layers] = HiddenStates(layers)
        return _shared[layers]


class WhisperCtc:
    """A head folder as the worker's acoustic model (`asr_worker.model.Acoustic`): audio -> CTC
    logits, and the tokenizer that reads them. CPU only."""

    frame_seconds = FRAME_SECONDS
    #: Shorter audio is padded to two mel frames; nothing is too short.
    min_samples = 2 * HOP

    def __init__(self, folder: Path) -> None:
        self.head = CtcHead.load(folder)
        self.states = shared_states(self.head.config.layers)
        self.tokenizer = Wav2Vec2CTCTokenizer.from_pretrained(str(folder))

    @property
    def batch_key(self) -> object:
        """Heads on one encoder compute together: the encoder's batch, then each clip's head."""
        return self.states

    @torch.inference_mode()
    def logits(self, audio: np.ndarray) -> torch.Tensor:
        return self.head(self.states(audio)[None])[0]

    @torch.inference_mode()
    def logits_together(self, items: Sequence[tuple[object, np.ndarray]]) -> list[torch.Tensor]:
        states = self.states.many([audio for _, audio in items])
        heads = [acoustic.head for acoustic, _ in items if isinstance(acoustic, WhisperCtc)]
        if len(heads) != len(items):
            raise TypeError("only heads on the same encoder compute together")
        return [head(s[None])[0] for head, s in zip(heads, states, strict=True)]

    def parameters(self) -> int:
        return sum(p.numel() for p in self.head.parameters())
