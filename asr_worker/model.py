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

    @torch.inference_mode()
    def transcribe(self, audio: np.ndarray, decoded: dict[tuple[int, int], Part] | None = None) -> Transcript:
        """Greedy or LM beam-search decoding of each part between `pause_split` s pauses (`speech_segments`).

        A word's confidence is the mean top probability over its frames; the transcript's, over
        all frames that emit a character. Word times count from the start of `audio`. `decoded`
        keeps the parts decoded so far for a caller whose `audio` only grows (interim results of
        a stream): a part already decoded is not decoded again, so a long stream costs about its
        length once rather than once per interim result.
        """
        started = time.perf_counter()
        decoded = {} if decoded is None else decoded
        words: list[WordTiming] = []
        emitting: list[torch.Tensor] = []
        parts = speech_segments(audio, min_pause=self.pause_split) if self.pause_split else [(0, len(audio))]
        for start, end in parts:
            if (start, end) not in decoded:
                decoded[start, end] = self._decode(audio[start:end])
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

    def _decode(self, audio: np.ndarray) -> Part:
        """One part's words and the top probabilities of its frames that emit a character."""
        if len(audio) < self.min_samples:
            audio = np.pad(audio, (0, self.min_samples - len(audio)))
        logits = self.acoustic.logits(audio).float().cpu()
        log_probs = torch.log_softmax(logits, dim=-1)
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


class Acoustic(Protocol):
    """Audio -> CTC logits, and the tokenizer that reads them."""

    tokenizer: Wav2Vec2CTCTokenizer
    frame_seconds: float
    min_samples: int

    def logits(self, audio: np.ndarray) -> torch.Tensor: ...

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

    def logits(self, audio: np.ndarray) -> torch.Tensor:
        inputs = self.processor(audio, sampling_rate=TARGET_RATE, return_tensors="pt")
        return self.model(inputs.input_values.to(self.device)).logits[0]

    def parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())


def _acoustic(spec: ModelSpec, device: str) -> Acoustic:
    return WhisperCtc(Path(spec.uri)) if spec.kind == "head" else _Wav2Vec2(spec, device)
