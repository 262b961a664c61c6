"""Language identification with a SpeechBrain `EncoderClassifier`.

The model is loaded by `EncoderClassifier.from_hparams(source=...)` whether the source is a
hub id such as `speechbrain/lang-id-voxlingua107-ecapa` or a local directory in the same
format, so the service never special-cases where a model came from.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lidroute.errors import InvalidArgument

log = logging.getLogger(__name__)

MIN_SECONDS = 0.1


def label_to_code(label: str) -> str:
    """VoxLingua107 labels look like `sw: Swahili`; plain `sw` labels are accepted as well."""
    return label.split(":", 1)[0].strip()


@dataclass(frozen=True)
class LidRequest:
    audio: np.ndarray  # 16 kHz mono float32
    candidates: tuple[str, ...]  # empty: all languages


class LanguageIdModel:
    def __init__(self, source: str, savedir: Path, device: str = "cpu") -> None:
        from speechbrain.inference.classifiers import EncoderClassifier

        self.source = source
        self.classifier = EncoderClassifier.from_hparams(
            source=source, savedir=str(savedir), run_opts={"device": device}
        )
        if self.classifier is None:
            raise RuntimeError(f"could not load a language-ID model from {source!r}")
        self.classifier.eval()
        encoder = self.classifier.hparams.label_encoder
        labels = [encoder.ind2lab[i] for i in range(len(encoder.ind2lab))]
        self.codes = [label_to_code(label) for label in labels]
        self.index = {code: i for i, code in enumerate(self.codes)}
        self.device = device
        log.info("language-ID model loaded", extra={"source": source, "languages": len(self.codes)})

    def resolve_candidates(self, candidates: Sequence[str]) -> list[int]:
        if not candidates:
            return list(range(len(self.codes)))
        known = [self.index[c] for c in dict.fromkeys(candidates) if c in self.index]
        if not known:
            raise InvalidArgument(
                f"none of the candidate languages {', '.join(candidates)} is known to the language-ID model"
            )
        return known

    @torch.inference_mode()
    def identify(self, requests: Sequence[LidRequest]) -> list[list[tuple[str, float]]]:
        """Scores a batch of windows; each result is every candidate with its probability, best first.

        The model outputs log-posteriors over all its languages; restricting to candidates and
        renormalising is a softmax over the candidates' log-posteriors.
        """
        lengths = [len(r.audio) for r in requests]
        longest = max(lengths)
        wavs = torch.zeros(len(requests), longest)
        for i, r in enumerate(requests):
            wavs[i, : len(r.audio)] = torch.from_numpy(r.audio)
        rel = torch.tensor([n / longest for n in lengths])
        log_post = self.classifier.classify_batch(wavs.to(self.device), rel.to(self.device))[0]
        log_post = log_post.reshape(len(requests), -1).float().cpu()
        results = []
        for i, r in enumerate(requests):
            idx = self.resolve_candidates(r.candidates)
            probs = torch.softmax(log_post[i, idx], dim=-1)
            order = torch.argsort(probs, descending=True)
            results.append([(self.codes[idx[j]], float(probs[j])) for j in order.tolist()])
        return results
