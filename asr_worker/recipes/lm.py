"""A recognizer's word LM: trained on its language's text, its fusion weights tuned on held-out speech."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from asr_worker.decoding import DEFAULT_BEAM, BeamSettings, CtcTokens, WordLM, beam_search
from asr_worker.recipes.ctc import (
    PERTURBATION,
    Perturbation,
    decode,
    error_rate,
    frame_log_probs,
    normalize_text,
    perturb,
)
from lidroute.train.corpus import (
    Example,
)

log = logging.getLogger(__name__)

#: How far (relative) above the best dev CER + WER a lighter LM may read and still be chosen (`tune`).
TUNING_TOLERANCE = 0.05
#: `tune` scores every setting on this many utterances first; beyond it, only those within
#: `RACE_MARGIN` of that round's best hear the rest.
RACE_UTTERANCES = 150
RACE_MARGIN = 0.25


def tune(
    lm: WordLM,
    log_probs: Sequence[np.ndarray],
    references: Sequence[str],
    tokens: CtcTokens,
    weights: Sequence[float] = (0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0),
    bonuses: Sequence[float] = (0.0, 2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 14.0, 17.0, 20.0, 24.0),
    oov_penalties: Sequence[float] = (1.0, 2.0, 3.0),
    beam: int = DEFAULT_BEAM,
    tolerance: float = TUNING_TOLERANCE,
    race: int = RACE_UTTERANCES,
    race_margin: float = RACE_MARGIN,
) -> tuple[WordLM, float, float]:
    """`lm` with the fusion weights and unseen-word penalty that read held-out speech best.

    The grid reaches far: the recognizers here lose word boundaries, and a large word bonus is
    what puts them back, so with bonuses up to 10 every bundled model chose 10, the edge. The
    choice minimises the sum of character and word error rates: by letters alone a bonus that
    splits words can win on dev by a fraction of a point, and English chose one that read
    `test_hard` at 68 % WER (28.9 % CER) where the choice by both reads it at 51 % (27.6 %).
    Of the settings within `tolerance` (relative) of the best sum, the lightest LM is kept: the
    dev sentences draw on the words the LM was trained on, so dev rewards trusting it more than
    speech with new words does, and a few per cent is within the noise of 150 utterances. At
    width 64 English's best on dev (weight 2.5, bonus 17) read "manchu ao" for "manchu wayuu
    yao", dropping the speech it had no word for, where weight 2 and bonus 14, 4 % behind on
    dev, read "manchu wayuu".

    The letter penalty of unseen words is tuned with the weights because it is a different
    trust: the weight says how much the LM's ranking of known words counts, the penalty how
    little a made-up word is believed. On noisy speech the acoustic model spells fragments
    between words ("carib eanurapeanfittyecunha"), and at penalty 1 only a heavy weight keeps
    them out, which also overrules the speech among known words. English, tuned with penalty 1,
    2 or 3 (choosing weight 2.5 / bonus 17, then 1.5 / 8, then 1 / 4), read 300 + 300 new
    utterances at 8.4 / 7.5 / 7.5 % CER on `test` and 21.9 / 20.6 / 20.3 % on `test_hard`;
    penalty 5 pushed the weight to the grid's floor and read dev worse. "Lightest" orders by
    penalty first, then weight, then bonus. Each setting costs one beam search over the already
    computed frames; the 231 settings over 150 utterances made `asr_worker lm` (with its
    re-scoring) take 26-32 minutes, two such runs beside a training run on 2 cores.

    More held-out speech makes the choice steadier but the grid dearer, so beyond `race`
    utterances it is raced: every setting reads `race` of them (every k-th, so clean and
    augmented hearings alike), and only the settings within `race_margin` (relative) of that
    round's best CER + WER read the rest; the choice is made on all utterances among those. With
    `race` or fewer utterances every setting reads them all, as before. Returns the tuned LM and
    its CER and WER.
    """
    n = len(references)
    hearing = _Hearing([lm] * n, log_probs, list(references), [tokens] * n, beam)
    grid = [(p, w, b) for p in oov_penalties for w in weights for b in bonuses]
    (penalty, weight, bonus), cer, wer = hearing.choose(grid, race, race_margin, tolerance)
    return lm.with_fusion(penalty=penalty, weight=weight, bonus=bonus), cer, wer


def tune_together(
    heard: Sequence[tuple[WordLM, CtcTokens, Sequence[np.ndarray], Sequence[str]]],
    weights: Sequence[float] = (0.5, 0.75, 1.0, 1.5),
    bonuses: Sequence[float] = (0.0, 2.0, 4.0, 6.0),
    oov_penalties: Sequence[float] = (2.0, 3.0, 4.0, 5.0),
    beam: int = DEFAULT_BEAM,
) -> tuple[list[WordLM], float, float]:
    """`tune` for several recognizers at once, each with its own LM and held-out speech (`heard`:
    LM, tokens, frame log-probabilities, references): one fusion setting chosen on all their
    utterances pooled, for recognizers whose held-out speech is too little to choose alone (two
    German sentences) but whose LMs are alike (word lists of one source and size). The default
    grid is for such word lists: unlike a transcript LM they know most words a speaker says, so
    an unseen word is dearer and the LM is trusted less. Returns the LMs with that setting, and
    the pooled CER and WER; the LMs keep `beam`, for the worker to search as wide as they were tuned."""
    lms = [lm for lm, tokens, frames, _ in heard for _ in frames]
    tokens = [tokens for _, tokens, frames, _ in heard for _ in frames]
    log_probs = [lp for *_, frames, _ in heard for lp in frames]
    references = [r for *_, refs in heard for r in refs]
    hearing = _Hearing(lms, log_probs, references, tokens, beam)
    grid = [(p, w, b) for p in oov_penalties for w in weights for b in bonuses]
    (penalty, weight, bonus), cer, wer = hearing.choose(grid, RACE_UTTERANCES, RACE_MARGIN, TUNING_TOLERANCE)
    fused = [lm.with_fusion(penalty=penalty, weight=weight, bonus=bonus, beam=beam) for lm, *_ in heard]
    return fused, cer, wer


#: A fusion setting `tune` tries: the unseen-word letter penalty, the LM weight, the word bonus.
_Setting = tuple[float, float, float]


@dataclass(frozen=True)
class _Hearing:
    """The held-out frames `tune` decodes under each setting (each utterance with its
    recognizer's LM and tokens), and the references it scores them against."""

    lms: Sequence[WordLM]
    log_probs: Sequence[np.ndarray]
    references: list[str]
    tokens: Sequence[CtcTokens]
    beam: int

    def choose(
        self, grid: Sequence[_Setting], race: int, margin: float, tolerance: float
    ) -> tuple[_Setting, float, float]:
        """The lightest setting within `tolerance` of the best CER + WER (`tune`), and its CER and WER."""
        heard = self.raced(grid, race, margin)
        scored = [(*setting, *self.errors(hyps)) for setting, hyps in heard.items()]
        best = min(cer + wer for *_, cer, wer in scored)
        near = [s for s in scored if s[3] + s[4] <= best * (1 + tolerance) + 1e-12]
        penalty, weight, bonus, cer, wer = min(near, key=lambda s: s[:3])
        return (penalty, weight, bonus), cer, wer

    def read(self, setting: _Setting, which: Sequence[int]) -> dict[int, str]:
        """The transcripts of the utterances `which` by the beam search under `setting`."""
        penalty, weight, bonus = setting
        settings = BeamSettings(beam=self.beam, lm_weight=weight, word_bonus=bonus)
        fused = {id(lm): lm.with_fusion(penalty=penalty, weight=weight, bonus=bonus) for lm in self.lms}
        return {
            i: beam_search(self.log_probs[i], self.tokens[i], fused[id(self.lms[i])], settings).text
            for i in which
        }

    def errors(self, hyps: dict[int, str]) -> tuple[float, float]:
        """CER and WER of transcripts of some of the utterances, against their references."""
        import jiwer

        order = sorted(hyps)
        truth, said = [self.references[i] for i in order], [hyps[i] for i in order]
        return float(jiwer.cer(truth, said)), float(jiwer.wer(truth, said))

    def raced(self, grid: Sequence[_Setting], race: int, margin: float) -> dict[_Setting, dict[int, str]]:
        """Every setting's transcripts of every k-th utterance (`race` of them), then those of the rest
        by the settings within `margin` (relative) of that round's best CER + WER alone."""
        stride = max(1, math.ceil(len(self.references) / race))
        first = list(range(0, len(self.references), stride))
        heard = {setting: self.read(setting, first) for setting in grid}
        rest = sorted(set(range(len(self.references))) - set(first))
        if not rest:
            return heard
        sums = {setting: sum(self.errors(hyps)) for setting, hyps in heard.items()}
        cut = min(sums.values()) * (1 + margin) + 1e-12
        return {s: hyps | self.read(s, rest) for s, hyps in heard.items() if sums[s] <= cut}


def fit_word_lm(
    texts: Iterable[str],
    out_dir: Path,
    tokens: CtcTokens,
    log_probs: Sequence[np.ndarray] = (),
    references: Sequence[str] = (),
    grid: Mapping[str, Sequence[float]] | None = None,
) -> tuple[WordLM, dict[str, Any]]:
    """The word LM of `texts`, its fusion weights tuned by `tune` (over `grid` where given) on the
    frame log-probabilities of held-out speech against their `references` (none: the default
    weights stay), saved in `out_dir`: what every recognizer recipe does for its LM, whatever
    acoustic model made the log-probabilities. Returns the LM and its vocabulary, weights and
    dev CER/WER."""
    lm = WordLM.train(texts)
    summary: dict[str, Any] = {"words": lm.vocabulary_size}
    if references:
        lm, cer, wer = tune(lm, log_probs, references, tokens, **(grid or {}))
        summary |= {"dev_cer": cer, "dev_wer": wer}
    summary |= {
        "lm_weight": lm.lm_weight,
        "word_bonus": lm.word_bonus,
        "oov_letter_penalty": lm.oov_letter_penalty,
    }
    lm.save(out_dir)
    return lm, summary


def add_word_lm(
    model: Wav2Vec2ForCTC,
    processor: Wav2Vec2Processor,
    out_dir: Path,
    texts: Iterable[str],
    dev: Sequence[Example],
    *,
    heard: Perturbation = PERTURBATION,
    copies: int = 2,
    grid: Mapping[str, Sequence[float]] | None = None,
    splits: Sequence[str] = ("dev",),
) -> tuple[WordLM, dict[str, Any]]:
    """Trains the word LM of a recognizer on `texts`, tunes its fusion weights on `dev`, saves it.

    The LM learns only from training transcripts, never from the speech it is scored on; `dev`
    (held-out speech, may be empty: then the default weights stay) picks how much the decoder
    trusts it. The fusion is tuned on `dev` heard clean and `copies` more times through `heard`
    (the noise, channel, tempo and pauses the recognizers are trained to withstand, drawn from a
    fixed seed), because one weight serves all traffic: tuned on clean synthetic speech alone it
    fits the acoustic model at its surest, trusts the LM too little for noisy or telephone
    speech, and 50 clean utterances are too few to choose well (a Turkish recognizer: 1.8 % /
    12.3 % CER on `test` / `test_hard` tuned on clean dev, 1.3 % / 11.8 % tuned this way).
    `grid` narrows `tune`'s (its `weights`, `bonuses`, `oov_penalties`) where a few minutes of
    search are too many, as in tests. `splits` names the splits `dev` came from, for the card.
    Returns the LM and what it did: vocabulary size, dev CER greedy and with the LM, dev WER.
    """
    if copies < 0:
        raise ValueError(f"copies must not be negative, got {copies}")
    summary: dict[str, Any] = {
        "tuned_on": len(dev),
        "tuned_splits": list(splits),
        "heard_copies": copies,
        "beam": DEFAULT_BEAM,
        "tolerance": TUNING_TOLERANCE,
    }
    log_probs: list[np.ndarray] = []
    references: list[str] = []
    if dev:
        clean = [e.audio() for e in dev]
        rng = np.random.default_rng(0)
        heard_audio = clean + [perturb(audio, rng, heard) for _ in range(copies) for audio in clean]
        log_probs = frame_log_probs(model, processor, heard_audio)
        references = [normalize_text(e.text) for e in dev] * (1 + copies)
        summary["dev_cer_greedy"] = error_rate(references, decode(processor, log_probs))
    texts = (normalize_text(t) for t in texts)
    lm, fitted = fit_word_lm(texts, out_dir, CtcTokens.of(processor), log_probs, references, grid)
    summary = fitted | summary
    log.info("word LM", extra=summary)
    return lm, summary


if TYPE_CHECKING:
    from transformers import Wav2Vec2ForCTC, Wav2Vec2Processor
