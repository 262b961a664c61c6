"""The target alphabet of a fine-tune: which characters the transcripts use and which the backbone knew."""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from asr_worker.recipes.ctc import (
    characters,
)

if TYPE_CHECKING:
    from transformers import Wav2Vec2Processor


@dataclass(frozen=True)
class AlphabetReport:
    """What the target vocabulary covers, so that an alphabet mismatch is seen before training.

    A character that the transcripts use and the vocabulary lacks can never be written by the
    model: it is trained (and scored) as `<unk>`, a silent error floor. That happens when a
    vocabulary is reused from another language (`--vocab backbone`: Turkish `ı` under an
    English head), or when test text has letters the few training minutes never showed.
    """

    vocabulary: tuple[str, ...]
    #: Characters of the text checked that the vocabulary lacks, with their counts.
    missing: dict[str, int]
    #: Share of all characters (training and checked text) that are missing.
    missing_share: float
    #: Characters the backbone's old head did not have: their output weights start from nothing.
    new_to_backbone: tuple[str, ...]
    #: Transcripts that Unicode NFC normalisation changed (decomposed accents and the like).
    normalised: int
    #: Characters seen fewer than 5 times in training: expect them to be guessed poorly.
    rare: dict[str, int] = field(default_factory=dict)

    def lines(self) -> list[str]:
        out = [f"vocabulary: {len(self.vocabulary)} characters: {''.join(self.vocabulary)}"]
        if self.normalised:
            out.append(f"{self.normalised} transcripts changed by NFC normalisation")
        if self.missing:
            names = ", ".join(f"{c!r} {_char_name(c)} x{n}" for c, n in sorted(self.missing.items()))
            out.append(
                f"ALPHABET MISMATCH: the text has characters the vocabulary lacks ({names}); "
                f"{100 * self.missing_share:.2f} % of characters will be <unk>"
            )
        if self.new_to_backbone:
            out.append(f"new to the backbone's head: {''.join(self.new_to_backbone)}")
        if self.rare:
            out.append(
                "rare in training (<5): " + ", ".join(f"{c!r} x{n}" for c, n in sorted(self.rare.items()))
            )
        return out


def _char_name(char: str) -> str:
    return unicodedata.name(char, f"U+{ord(char):04X}")


def alphabet_report(
    vocabulary: Sequence[str],
    train_text: Sequence[str],
    check_text: Sequence[str],
    backbone_vocabulary: Sequence[str] | None,
) -> AlphabetReport:
    """Checks training and evaluation transcripts against the vocabulary the head will have."""
    known = set(vocabulary)
    counts = characters([*train_text, *check_text])
    missing = {c: n for c, n in counts.items() if c not in known}
    trained = characters(train_text)
    return AlphabetReport(
        vocabulary=tuple(vocabulary),
        missing=missing,
        missing_share=sum(missing.values()) / max(1, sum(counts.values())),
        new_to_backbone=tuple(
            c for c in vocabulary if backbone_vocabulary is not None and c not in backbone_vocabulary
        ),
        normalised=sum(1 for t in [*train_text, *check_text] if unicodedata.normalize("NFC", t) != t),
        rare={c: n for c, n in trained.items() if n < 5 and c in known},
    )


def processor_vocabulary(processor: Wav2Vec2Processor) -> list[str]:
    """The characters of a processor's tokenizer (special tokens and the word delimiter left out)."""
    tokenizer = processor.tokenizer
    specials = set(tokenizer.all_special_tokens) | {tokenizer.word_delimiter_token}
    return sorted(t for t in tokenizer.get_vocab() if t not in specials and len(t) == 1)


def backbone_vocabulary(backbone: str) -> list[str] | None:
    """The old head's characters, or None when the backbone has no tokenizer (a pretraining checkpoint)."""
    from transformers import Wav2Vec2Processor

    try:
        return processor_vocabulary(Wav2Vec2Processor.from_pretrained(backbone))
    except (OSError, ValueError, TypeError):
        return None
