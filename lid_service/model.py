"""Language identification with a SpeechBrain `EncoderClassifier`.

The model is loaded by `EncoderClassifier.from_hparams(source=...)` whether the source is a
hub id such as `speechbrain/lang-id-voxlingua107-ecapa` or a local directory in the same
format, so the service never special-cases where a model came from.

Several sources, comma-separated, are served as one model whose log-posteriors are the mean of
theirs (a product of experts). Two differently built models err on different windows: the
bundled model and a wider one trained on a GPU, each alone at 92.9 and 94.4 % on 0.5 s of the
12-language test corpora, read 94.9 % together, and 99.2 % on 1 s where each read 98.7 and
98.3 % (the history of docs/models.md).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from lidroute.errors import InvalidArgument

if TYPE_CHECKING:
    from speechbrain.inference.classifiers import EncoderClassifier

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
        sources = [s.strip() for s in source.split(",") if s.strip()]
        if not sources:
            raise ValueError("no language-ID model given")
        self.classifiers: list[EncoderClassifier] = []
        for i, one in enumerate(sources):
            # Each source its own savedir: two hub models must not fetch into one folder.
            where = Path(savedir) if len(sources) == 1 else Path(savedir) / str(i)
            classifier = EncoderClassifier.from_hparams(
                source=one, savedir=str(where), run_opts={"device": device}
            )
            if classifier is None:
                raise RuntimeError(f"could not load a language-ID model from {one!r}")
            classifier.eval()
            self.classifiers.append(classifier)
        member_codes = [self._codes(c) for c in self.classifiers]
        self.codes = member_codes[0]
        for one, codes in zip(sources[1:], member_codes[1:], strict=True):
            if sorted(codes) != sorted(self.codes):
                raise ValueError(
                    f"{one!r} knows {', '.join(codes)}; {sources[0]!r} knows {', '.join(self.codes)}:"
                    " models served together must know the same languages"
                )
        self.index = {code: i for i, code in enumerate(self.codes)}
        # Each member's outputs in the first member's order of languages.
        self._orders = [torch.tensor([codes.index(code) for code in self.codes]) for codes in member_codes]
        self.device = device
        log.info(
            "language-ID model loaded",
            extra={"source": source, "models": len(sources), "languages": len(self.codes)},
        )

    @staticmethod
    def _codes(classifier: EncoderClassifier) -> list[str]:
        encoder = classifier.hparams.label_encoder
        return [label_to_code(encoder.ind2lab[i]) for i in range(len(encoder.ind2lab))]

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
        wavs, rel = wavs.to(self.device), rel.to(self.device)
        log_post = torch.stack(
            [
                classifier.classify_batch(wavs, rel)[0].reshape(len(requests), -1).float().cpu()[:, order]
                for classifier, order in zip(self.classifiers, self._orders, strict=True)
            ]
        ).mean(0)
        results = []
        for i, r in enumerate(requests):
            idx = self.resolve_candidates(r.candidates)
            probs = torch.softmax(log_post[i, idx], dim=-1)
            order = torch.argsort(probs, descending=True)
            results.append([(self.codes[idx[j]], float(probs[j])) for j in order.tolist()])
        return results
