"""wav2vec2 / XLS-R CTC inference with word timings and confidences from the CTC alignment.

Models load with `from_pretrained(uri, revision=...)`: a hub id of a fine-tuned XLS-R or a
local `save_pretrained` directory made by `asr_worker finetune`; nothing else differs.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from transformers import Wav2Vec2ForCTC, Wav2Vec2Processor

from lidroute.audio import TARGET_RATE
from lidroute.registry import ModelSpec

log = logging.getLogger(__name__)


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


class CtcModel:
    def __init__(self, language: str, spec: ModelSpec, device: str = "cpu") -> None:
        revision = spec.revision or None
        self.language = language
        self.spec = spec
        self.processor = Wav2Vec2Processor.from_pretrained(spec.uri, revision=revision)
        self.model = Wav2Vec2ForCTC.from_pretrained(spec.uri, revision=revision).eval().to(device)
        self.device = device
        self.frame_seconds = self.model.config.inputs_to_logits_ratio / TARGET_RATE
        # The shortest input the convolutional front end turns into at least one frame.
        self.min_samples = int(self.model.config.inputs_to_logits_ratio * 1.5)
        log.info(
            "ASR model loaded",
            extra={
                "language": language,
                "uri": spec.uri,
                "params": sum(p.numel() for p in self.model.parameters()),
            },
        )

    @torch.inference_mode()
    def transcribe(self, audio: np.ndarray) -> Transcript:
        """Greedy CTC decoding; a word's confidence is the mean top probability over its frames."""
        started = time.perf_counter()
        if len(audio) < self.min_samples:
            audio = np.pad(audio, (0, self.min_samples - len(audio)))
        inputs = self.processor(audio, sampling_rate=TARGET_RATE, return_tensors="pt")
        logits = self.model(inputs.input_values.to(self.device)).logits[0].float().cpu()
        probs = torch.softmax(logits, dim=-1)
        top_prob, ids = probs.max(dim=-1)
        decoded = self.processor.decode(ids, output_word_offsets=True)
        words = []
        for item in decoded.word_offsets:
            start, end = int(item["start_offset"]), int(item["end_offset"])
            conf = float(top_prob[start : max(end, start + 1)].mean())
            words.append(WordTiming(item["word"], start * self.frame_seconds, end * self.frame_seconds, conf))
        blank = self.processor.tokenizer.pad_token_id
        emitting = top_prob[ids != blank]
        confidence = float(emitting.mean()) if len(emitting) and words else 0.0
        return Transcript(
            text=" ".join(w.word for w in words),
            confidence=confidence,
            words=words,
            inference_seconds=time.perf_counter() - started,
        )
