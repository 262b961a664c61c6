"""CTC inference with word timings and confidences from the CTC alignment.

Two kinds of model (the registry's `kind`): `ctc`, a whole wav2vec2 / XLS-R model loaded with
`from_pretrained(uri, revision=...)` (a hub id of a fine-tuned XLS-R or a local directory made
by `asr_worker finetune`), and `head`, a per-language CTC head on Whisper base's encoder, which
every head in the process shares (`asr_worker.heads`). A local directory with a word LM beside
the weights (`lm.json`) is decoded by beam search with that LM, anything else greedily.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from transformers import Wav2Vec2CTCTokenizer, Wav2Vec2ForCTC, Wav2Vec2Processor
from transformers.utils import logging as hf_logging

from asr_worker.decoding import DEFAULT_BEAM, CtcTokens, WordLM, beam_search
from asr_worker.heads import WhisperCtc
from lidroute.audio import TARGET_RATE, speech_segments
from lidroute.registry import ModelSpec

log = logging.getLogger(__name__)
# A worker's stderr is its structured log: no progress bar of every model load in it.
hf_logging.disable_progress_bar()


@dataclass(frozen=True)
class WordTiming:
    word: str
    start: float
    end: float
    confidence: float


@dataclass(frozen=True)
class Transcript:
    text: str
    confidence: float
    words: list[WordTiming] = field(default_factory=list)
    inference_seconds: float = 0.0


#: One decoded part of a request: its words (timed from the part's start) and the top
#: probabilities of its frames that emit a character.
Part = tuple[list[WordTiming], torch.Tensor]


class CtcModel:
    def __init__(
        self,
        language: str,
        spec: ModelSpec,
        device: str = "cpu",
        beam: int = DEFAULT_BEAM,
        pause_split: float = 0.5,
    ) -> None:
        """`beam` 0: greedy even when the model has a word LM; `pause_split` 0: audio decoded in one piece."""
        self.language = language
        self.spec = spec
        self.acoustic = _acoustic(spec, device)
        self.tokenizer = self.acoustic.tokenizer
        self.frame_seconds = self.acoustic.frame_seconds
        self.min_samples = self.acoustic.min_samples
        self.lm = WordLM.load(spec.uri) if beam and Path(spec.uri).is_dir() else None
        self.beam = beam
        self.pause_split = pause_split
        self.tokens = CtcTokens.of(self.tokenizer)
        log.info(
            "ASR model loaded",
            extra={
                "language": language,
                "uri": spec.uri,
                "params": self.acoustic.parameters(),
                "decoder": (
                    f"beam {self.lm.settings(beam).beam} with a {self.lm.vocabulary_size}-word LM"
                    if self.lm
                    else "greedy"
                ),
            },
        )

    def parts(self, audio: np.ndarray) -> list[tuple[int, int]]:
        """The pieces of `audio` recognised one by one: between pauses of `pause_split` s, or whole."""
        if not self.pause_split:
            return [(0, len(audio))]
        return [(int(a), int(b)) for a, b in speech_segments(audio, min_pause=self.pause_split)]

    def padded(self, piece: np.ndarray) -> np.ndarray:
        """A piece as the acoustic model reads it: shorter than the model's minimum, padded to it."""
        return np.pad(piece, (0, self.min_samples - len(piece))) if len(piece) < self.min_samples else piece

    @torch.inference_mode()
    def transcribe(self, audio: np.ndarray, decoded: dict[tuple[int, int], Part] | None = None) -> Transcript:
        """Greedy or LM beam-search decoding of each part between `pause_split` s pauses (`speech_segments`).

        A word's confidence is the mean top probability over its frames; the transcript's, over
        all frames that emit a character. Word times count from the start of `audio`. `decoded`
        keeps the parts decoded so far for a caller whose `audio` only grows (interim results of
        a stream): a part already decoded is not decoded again, so a long stream costs about its
        length once rather than once per interim result. The parts not yet decoded go through the
        acoustic model in one batch; the worker batches them with other jobs' (`batch_logits`).
        """
        started = time.perf_counter()
        decoded = {} if decoded is None else decoded
        parts, missing = self.pending(audio, decoded)
        logits = batch_logits([item for _, item in missing])
        decoded.update(zip((part for part, _ in missing), map(self.decode, logits), strict=True))
        return self.assemble(parts, decoded, started)

    def pending(
        self,
        audio: np.ndarray,
        decoded: dict[tuple[int, int], Part],
        parts: list[tuple[int, int]] | None = None,
    ) -> tuple[list[tuple[int, int]], list[tuple[tuple[int, int], tuple[Acoustic, np.ndarray]]]]:
        """The parts of `audio` (`parts`, when the caller found them already), and those not in
        `decoded` each with what its logits are computed from (`batch_logits`)."""
        parts = self.parts(audio) if parts is None else parts
        return parts, [
            ((a, b), (self.acoustic, self.padded(audio[a:b]))) for a, b in parts if (a, b) not in decoded
        ]

    def assemble(
        self, parts: list[tuple[int, int]], decoded: dict[tuple[int, int], Part], started: float
    ) -> Transcript:
        """The transcript of decoded `parts`, word times from the start of the audio."""
        words: list[WordTiming] = []
        emitting: list[torch.Tensor] = [torch.zeros(0)]
        for start, end in parts:
            part_words, part_emitting = decoded[start, end]
            offset = start / TARGET_RATE
            words += [replace(w, start=w.start + offset, end=w.end + offset) for w in part_words]
            emitting.append(part_emitting)
        frames = torch.cat(emitting)
        return Transcript(
            text=" ".join(w.word for w in words),
            confidence=float(frames.mean()) if len(frames) and words else 0.0,
            words=words,
            inference_seconds=time.perf_counter() - started,
        )

    @torch.inference_mode()
    def decode(self, logits: torch.Tensor) -> Part:
        """One part's CTC logits -> its words and the top probabilities of its frames that emit a
        character. Pure CPU work on small arrays: the worker runs it off the model's batch."""
        log_probs = torch.log_softmax(logits.float().cpu(), dim=-1)
        top_prob, ids = log_probs.exp().max(dim=-1)
        if self.lm is not None:
            found = beam_search(log_probs.numpy(), self.tokens, self.lm, self.lm.settings(self.beam)).words
        else:
            offsets = self.tokenizer.decode(ids, output_word_offsets=True).word_offsets
            found = [(item["word"], int(item["start_offset"]), int(item["end_offset"])) for item in offsets]
        words = [
            WordTiming(
                word,
                start * self.frame_seconds,
                end * self.frame_seconds,
                float(top_prob[start : max(end, start + 1)].mean()),
            )
            for word, start, end in found
        ]
        return words, top_prob[ids != self.tokenizer.pad_token_id]


@torch.inference_mode()
def padded_logits(
    model: Wav2Vec2ForCTC, processor: Wav2Vec2Processor, audios: Sequence[np.ndarray]
) -> list[torch.Tensor]:
    """The CTC logits of clips in one padded batch, each cut to its own frames: the frames over
    another clip's padding are the model listening to digital silence, which it never heard in
    training, and what it writes there is not in the audio. For layer-normed feature encoders,
    which honour the attention mask."""
    device = next(model.parameters()).device
    features = processor.feature_extractor(
        list(audios), sampling_rate=TARGET_RATE, padding=True, return_attention_mask=True, return_tensors="pt"
    )
    mask = features.attention_mask.to(device)
    logits = model(features.input_values.to(device), attention_mask=mask).logits
    frames = model._get_feat_extract_output_lengths(mask.sum(dim=-1)).cpu()
    return [row[: int(n)] for row, n in zip(logits, frames, strict=True)]


def _by_length(lengths: Sequence[int], max_padding: float = 1.5) -> list[list[int]]:
    """The indices of `lengths`, shortest first, in runs whose longest is at most `max_padding`
    times their shortest: padded batches that waste little."""
    groups: list[list[int]] = []
    for i in sorted(range(len(lengths)), key=lengths.__getitem__):
        if groups and lengths[i] <= max_padding * lengths[groups[-1][0]]:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


@torch.inference_mode()
def batch_logits(items: Sequence[tuple[Acoustic, np.ndarray]]) -> list[torch.Tensor]:
    """The CTC logits of each (acoustic model, audio), in one forward pass per group of models that
    share a `batch_key` (heads on one encoder, or one wav2vec2 model): the worker's batcher gives
    it the parts of every job waiting at once."""
    groups: dict[object, list[int]] = {}
    for i, (acoustic, _) in enumerate(items):
        groups.setdefault(acoustic.batch_key, []).append(i)
    results: list[torch.Tensor] = [torch.empty(0)] * len(items)
    for members in groups.values():
        together = items[members[0]][0].logits_together([items[i] for i in members])
        for i, logits in zip(members, together, strict=True):
            results[i] = logits
    return results


class Acoustic(Protocol):
    """Audio -> CTC logits, and the tokenizer that reads them."""

    tokenizer: Wav2Vec2CTCTokenizer
    frame_seconds: float
    min_samples: int

    @property
    def batch_key(self) -> object:
        """Models with the same key compute together (`batch_logits`)."""
        ...

    def logits(self, audio: np.ndarray) -> torch.Tensor: ...

    def logits_together(self, items: Sequence[tuple[Acoustic, np.ndarray]]) -> list[torch.Tensor]:
        """The logits of each (model, audio); every model of `items` has this one's `batch_key`."""
        ...

    def parameters(self) -> int: ...


class _Wav2Vec2:
    """A `Wav2Vec2ForCTC` (a hub XLS-R or a folder `asr_worker finetune` wrote) on raw audio."""

    def __init__(self, spec: ModelSpec, device: str) -> None:
        revision = spec.revision or None
        self.processor = Wav2Vec2Processor.from_pretrained(spec.uri, revision=revision)
        self.tokenizer = self.processor.tokenizer
        self.model = Wav2Vec2ForCTC.from_pretrained(spec.uri, revision=revision).eval().to(device)
        self.device = device
        self.frame_seconds = self.model.config.inputs_to_logits_ratio / TARGET_RATE
        self.min_samples = self._shortest_input()

    @torch.inference_mode()
    def _shortest_input(self) -> int:
        """The fewest samples the whole network accepts, found by trying it: the convolutional front
        end needs its receptive field, and a configuration may add convolutions after it (a
        positional convolution of few frames) that need more. Shorter audio is padded to this."""

        def runs(n: int) -> bool:
            try:
                self.logits(np.zeros(n, np.float32))
            except RuntimeError:
                return False
            return True

        low, high = 0, int(self.model.config.inputs_to_logits_ratio)
        while not runs(high):
            low, high = high, high * 2
            if high > 30 * TARGET_RATE:
                raise RuntimeError(f"{self.model.config.name_or_path}: runs on no input up to 30 s")
        while high - low > 1:
            middle = (low + high) // 2
            low, high = (low, middle) if runs(middle) else (middle, high)
        return high

    @property
    def batch_key(self) -> object:
        return self

    def logits(self, audio: np.ndarray) -> torch.Tensor:
        inputs = self.processor(audio, sampling_rate=TARGET_RATE, return_tensors="pt")
        return self.model(inputs.input_values.to(self.device)).logits[0]

    def logits_together(self, items: Sequence[tuple[Acoustic, np.ndarray]]) -> list[torch.Tensor]:
        """Clips in one padded batch where the model masks padding (layer-normed feature encoders:
        XLS-R, this project's recipes), in runs of similar length (`_by_length`); one by one
        where it cannot (group-normed ones such as wav2vec2-base, whose normalisation would see
        the padding)."""
        audios = [audio for _, audio in items]
        if self.model.config.feat_extract_norm != "layer":
            return [self.logits(audio) for audio in audios]
        results: list[torch.Tensor] = [torch.empty(0)] * len(audios)
        for group in _by_length([len(a) for a in audios]):
            if len(group) == 1:  # alone, no mask: the model's fastest path
                results[group[0]] = self.logits(audios[group[0]])
                continue
            together = padded_logits(self.model, self.processor, [audios[i] for i in group])
            for i, logits in zip(group, together, strict=True):
                results[i] = logits
        return results

    def parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())


def _acoustic(spec: ModelSpec, device: str) -> Acoustic:
    return WhisperCtc(Path(spec.uri)) if spec.kind == "head" else _Wav2Vec2(spec, device)
