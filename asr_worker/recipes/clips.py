"""The clips a CTC recipe trains and scores on: a language's utterances of a corpus, as audio."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from lidroute.train.corpus import (
    CorpusError,
    Example,
    read_examples,
)


def take_clips(
    examples: Sequence[Example],
    *,
    seed: int,
    minutes: float | None = None,
    limit: int | None = None,
) -> list[tuple[str, np.ndarray]]:
    """(transcript, audio) pairs for training: a seeded random subset of at most `minutes` of
    speech and `limit` utterances, decoded once and held in memory for the whole run.

    The subset is a prefix of one seeded order, so the subset for a smaller budget is part of the
    one for a larger budget ("10 minutes" is in "60 minutes", as in a real data collection).
    """
    order = np.random.default_rng([seed, 104729]).permutation(len(examples))
    clips: list[tuple[str, np.ndarray]] = []
    total = 0.0
    for i in order:
        if limit is not None and len(clips) >= limit:
            break
        audio = examples[int(i)].audio()
        if minutes is not None and total + len(audio) / 16000 > minutes * 60:
            break
        clips.append((examples[int(i)].text, audio))
        total += len(audio) / 16000
    return clips


def language_examples(source: str | Path, split: str, language: str) -> list[Example]:
    examples = [e for e in read_examples(source, split=split, language=language) if e.language == language]
    if not examples:
        raise CorpusError(f"{source} has no {split} examples in language {language!r}")
    return examples


def seconds_of(clips: Iterable[tuple[str, np.ndarray]]) -> float:
    return sum(len(audio) for _, audio in clips) / 16000


def safe_examples(data: str | Path, split: str, language: str) -> list[Example]:
    try:
        return language_examples(data, split, language)
    except CorpusError:
        return []


def held_out(data: str | Path, splits: Sequence[str], language: str, limit: int | None) -> list[Example]:
    """Up to `limit` utterances of the language from `splits` in order, for tuning the LM fusion;
    a split the data lacks gives none."""
    return [e for split in splits for e in safe_examples(data, split, language)][:limit]
