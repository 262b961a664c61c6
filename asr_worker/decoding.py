"""CTC beam search with a word language model, the decoding a production recognizer uses.

Greedy decoding writes each frame's likeliest letter, so a word with one unsure letter comes out
misspelt. A beam search keeps the likeliest few transcripts and, at every word boundary, weighs
them by how likely the word is in the language (shallow fusion): a misspelling that is no word
loses to the word. The language model is a word bigram over the fine-tuning transcripts, or the
commonest words of the language from an installed word list (`Lexicon`), or both, stored beside
the recognizer (`lm.json`), with a letter-count penalty for words it never saw, so names and new
words can still be written.

Written here rather than taken from a library: the CTC decoders on the package index either need
a compiled KenLM/flashlight or pin numpy below 2.
"""

from __future__ import annotations

import bisect
import copy
import functools
import itertools
import json
import math
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lidroute.wordlist import common_words

if TYPE_CHECKING:
    from transformers import Wav2Vec2CTCTokenizer, Wav2Vec2Processor

LM_FILE = "lm.json"
#: Beam width of the worker, `lidroute evaluate` and the LM tuning. Wide because the fusion's large
#: word bonus makes a word boundary and the word it closes compete with the same word still being
#: spelt, and a narrow beam drops the right one: on the bundled recognizers, with the fusion
#: weights tuned at width 16, widths 16 / 32 / 64 / 128 read `test_hard` at 14.1 / 13.0 / 12.3 /
#: 12.0 % mean CER (English 27.6 / 25.5 / 24.8 / 24.1 %) for a median 0.004 / 0.008 / 0.016 /
#: 0.039 of real time spent searching; 64 takes most of the gain at under half the time of 128.
DEFAULT_BEAM = 64
_BOS = "<s>"
APOSTROPHE = "'"
#: Partial words whose answer `WordLM.is_prefix` keeps (then it starts again): a few MB.
_PREFIX_ANSWERS = 100_000
_EOS = "</s>"
_NEG_INF = -math.inf


def _logsumexp(a: float, b: float) -> float:
    if a == _NEG_INF:
        return b
    if b == _NEG_INF:
        return a
    hi, lo = (a, b) if a > b else (b, a)
    return hi + math.log1p(math.exp(lo - hi))


@dataclass(frozen=True)
class Lexicon:
    """A language's commonest words and how often each is used, from the installed `wordfreq`
    package (its data CC BY-SA 4.0: Wikipedia, subtitles, books, the web). An LM names its lexicon
    in `lm.json` and reads the words when it loads, as the heads read Whisper's weights: a model
    folder holds what this project made, not a copy of another project's data.

    Transcripts of a few hours of speech know a few thousand words, and the held-out speakers of
    a speech pack read the same prompts as its training speakers; a word list of the language
    knows the words of speech nobody here transcribed."""

    language: str
    size: int
    #: The characters the recognizer writes: a word with any other can never be spelt.
    alphabet: str
    source: str = "wordfreq"
    #: Counts per unit of frequency: the rarest of 50,000 words (about 1e-7) counts about 10.
    scale: float = 1e8

    def __post_init__(self) -> None:
        if self.source != "wordfreq" or self.size < 1:
            raise ValueError(f"a lexicon is wordfreq's commonest words, not {self.source!r} x {self.size}")

    def counts(self) -> dict[str, int]:
        """The words (those spelt with `alphabet` alone) and their counts."""
        return dict(_lexicon_counts(self))


@functools.cache
def _lexicon_counts(lexicon: Lexicon) -> tuple[tuple[str, int], ...]:
    letters = set(lexicon.alphabet)
    return tuple(
        (word, max(1, round(share * lexicon.scale)))
        for word, share in common_words(lexicon.language, lexicon.size)
        if set(word) <= letters
    )


@dataclass
class WordLM:
    """Interpolated Witten-Bell word bigram with an open vocabulary.

    Witten-Bell because it needs no held-out data to set its discounts: a history that was
    followed by many different words leaves more room for unseen ones. A word outside the
    vocabulary costs `log p(<unk>)` plus `oov_letter_penalty` per letter, so short made-up words
    are cheap and long ones dear, as in a character model; how dear is tuned with the fusion
    weights (`tune`).
    """

    #: Word counts of the LM's own text (its training transcripts); `counts` adds the lexicon's.
    unigrams: dict[str, int]
    bigrams: dict[str, dict[str, int]]
    oov_letter_penalty: float = 1.0
    #: The fusion weights that suit this LM with its recognizer, tuned on held-out speech.
    lm_weight: float = 1.0
    word_bonus: float = 2.0
    lexicon: Lexicon | None = None
    #: The beam width its fusion weights were tuned at, which the search keeps to where the
    #: worker's is wider (None: the worker's).
    beam: int | None = None
    #: Every word's count: `unigrams` and the lexicon's.
    counts: dict[str, int] = field(default_factory=dict, init=False, repr=False)
    #: Every word in order, for `is_prefix` (a set of every prefix would hold twice the strings).
    _sorted: list[str] = field(default_factory=list, init=False, repr=False)
    #: `is_prefix`'s answers: a search asks about the same partial words hundreds of times.
    _prefix_answers: dict[str, bool] = field(default_factory=dict, init=False, repr=False)
    _total: int = field(default=0, init=False, repr=False)

    def __post_init__(self) -> None:
        self.counts = dict(self.unigrams)
        for word, count in self.lexicon.counts().items() if self.lexicon else ():
            self.counts[word] = self.counts.get(word, 0) + count
        self._total = sum(self.counts.values())
        self._sorted = sorted(self.counts)

    def with_fusion(self, *, penalty: float, weight: float, bonus: float, beam: int | None = None) -> WordLM:
        """This LM with other fusion weights (tuned at `beam`, where given), sharing its tables
        (a copy costs nothing)."""
        fused = copy.copy(self)
        fused.oov_letter_penalty, fused.lm_weight, fused.word_bonus = penalty, weight, bonus
        fused.beam = beam if beam is not None else self.beam
        return fused

    @classmethod
    def train(cls, texts: Iterable[str]) -> WordLM:
        unigrams: Counter[str] = Counter()
        bigrams: dict[str, Counter[str]] = defaultdict(Counter)
        for text in texts:
            words = [_BOS, *text.split(), _EOS]
            unigrams.update(words[1:])
            for prev, word in itertools.pairwise(words):
                bigrams[prev][word] += 1
        return cls(dict(unigrams), {h: dict(c) for h, c in bigrams.items()})

    def save(self, directory: Path) -> Path:
        path = Path(directory) / LM_FILE
        data = {
            "kind": "word-bigram-witten-bell",
            "lm_weight": self.lm_weight,
            "word_bonus": self.word_bonus,
            "oov_letter_penalty": self.oov_letter_penalty,
            "unigrams": self.unigrams,
            "bigrams": self.bigrams,
        }
        if self.lexicon:
            data["lexicon"] = asdict(self.lexicon)
        if self.beam:
            data["beam"] = self.beam
        path.write_text(json.dumps(data, ensure_ascii=False, sort_keys=True), encoding="utf-8")
        return path

    @classmethod
    def load(cls, directory: str | Path) -> WordLM | None:
        """The LM stored beside a model, or None when the model has none (a hub checkpoint)."""
        path = Path(directory) / LM_FILE
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(
                data["unigrams"],
                data["bigrams"],
                lm_weight=float(data.get("lm_weight", cls.lm_weight)),
                word_bonus=float(data.get("word_bonus", cls.word_bonus)),
                oov_letter_penalty=float(data.get("oov_letter_penalty", cls.oov_letter_penalty)),
                lexicon=Lexicon(**data["lexicon"]) if data.get("lexicon") else None,
                beam=int(data["beam"]) if data.get("beam") else None,
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"{path} is not a word LM: {exc}") from exc

    def settings(self, beam: int = DEFAULT_BEAM) -> BeamSettings:
        """The search this LM was tuned for, `beam` wide at most."""
        width = min(beam, self.beam) if self.beam else beam
        return BeamSettings(beam=width, lm_weight=self.lm_weight, word_bonus=self.word_bonus)

    @property
    def vocabulary_size(self) -> int:
        """Distinct words known (the end-of-sentence token is not one)."""
        return len(self.counts) - (_EOS in self.counts)

    def is_prefix(self, partial: str) -> bool:
        """Whether some known word (or known words joined by apostrophes) begins with `partial`."""
        answer = self._prefix_answers.get(partial)
        if answer is None:
            if len(self._prefix_answers) >= _PREFIX_ANSWERS:
                self._prefix_answers.clear()
            answer = self._prefix_answers[partial] = self._is_prefix(partial)
        return answer

    def _is_prefix(self, partial: str) -> bool:
        if self._begins_a_word(partial):
            return True
        *joined, last = partial.split(APOSTROPHE)
        return bool(joined) and all(piece in self.counts for piece in joined) and self._begins_a_word(last)

    def _begins_a_word(self, partial: str) -> bool:
        at = bisect.bisect_left(self._sorted, partial)
        return at < len(self._sorted) and self._sorted[at].startswith(partial)

    def _pieces(self, word: str) -> list[str] | None:
        """The known words that an unknown word joins with apostrophes, or None.

        Word lists count an elided article or pronoun as a word of its own (French "l'amérique"
        is "l" and "amérique" to them, Italian "dell'anno" is "dell" and "anno"): without this, a
        recognizer that writes the apostrophe would pay the unseen-word penalty for the commonest
        words of the language, and be pushed to split them with a space."""
        pieces = word.split(APOSTROPHE)
        if len(pieces) < 2 or not all(piece in self.counts for piece in pieces):
            return None
        return pieces

    def _unigram(self, word: str) -> float:
        # Add-one over the seen types plus one <unk> type.
        return (self.counts.get(word, 0) + 1) / (self._total + len(self.counts) + 1)

    def log_prob(self, prev: str, word: str) -> float:
        """log P(word | prev); `word` may be `</s>`; an unseen word is scored as `<unk>` plus its
        letters, unless it is known words joined by apostrophes (`_pieces`): then as those words."""
        known = word in self.counts
        pieces = None if known else self._pieces(word)
        if pieces:
            befores = [prev, *pieces[:-1]]
            return sum(self.log_prob(before, piece) for before, piece in zip(befores, pieces, strict=True))
        lower = self._unigram(word if known else "")
        following = self.bigrams.get(prev)
        if following:
            seen = sum(following.values())
            types = len(following)
            prob = (following.get(word, 0) + types * lower) / (seen + types)
        else:
            prob = lower
        penalty = 0.0 if known else self.oov_letter_penalty * len(word)
        return math.log(prob) - penalty


@dataclass(frozen=True)
class BeamSettings:
    """Shallow-fusion weights; `lm_weight` 0 and `word_bonus` 0 make it a plain CTC beam search."""

    beam: int = DEFAULT_BEAM
    lm_weight: float = 1.0
    word_bonus: float = 2.0
    #: A letter whose frame probability is below this is not tried at that frame.
    prune: float = 1e-3


Span = tuple[int, int]


@dataclass
class _Beam:
    """One prefix: its complete words, the word being spelt and the frames each was spoken in."""

    words: tuple[str, ...]
    partial: str
    last: int  # the last token id emitted, -1 before any
    spans: tuple[Span, ...] = ()
    partial_span: Span | None = None
    blank: float = _NEG_INF  # log prob of the prefix with its paths ending in blank
    nonblank: float = _NEG_INF  # ... and ending in its last token
    lm: float = 0.0  # fused LM score and word bonuses of the complete words

    @property
    def acoustic(self) -> float:
        return _logsumexp(self.blank, self.nonblank)


_Key = tuple[tuple[str, ...], str, int]


def _extend(
    nxt: dict[_Key, _Beam], old: _Beam, words: tuple[str, ...], partial: str, last: int, **fields: object
) -> _Beam:
    """The next frame's beam for this prefix, made from `old` with `fields` if it is new."""
    key = (words, partial, last)
    beam = nxt.get(key)
    if beam is None:
        base = {"spans": old.spans, "partial_span": old.partial_span, "lm": old.lm}
        beam = nxt[key] = _Beam(words, partial, last, **(base | fields))  # type: ignore[arg-type]
    return beam


@dataclass(frozen=True)
class Decoded:
    text: str
    #: (word, first frame, frame after the last) per word
    words: list[tuple[str, int, int]]


def beam_search(
    log_probs: np.ndarray, vocab: CtcTokens, lm: WordLM | None, settings: BeamSettings = BeamSettings()
) -> Decoded:
    """The best transcript of one utterance, with the frames of each word.

    `log_probs` is (frames, tokens) log-softmax output over `vocab`. Beams are prefixes, merged when equal,
    scored by acoustic log prob plus `lm_weight` x LM log prob plus `word_bonus` per word.
    """
    beams: dict[_Key, _Beam] = {((), "", -1): _Beam((), "", -1, blank=0.0)}
    blank = vocab.blank
    threshold = math.log(settings.prune)
    for t, row in enumerate(log_probs):
        candidates = [int(c) for c in np.nonzero(row >= threshold)[0]] or [int(row.argmax())]
        if candidates == [blank]:
            # Frames of certain silence between letters: every prefix only ends in blank once more.
            # Each score moves by the same amount, so no prefix is added, merged or reordered.
            p = float(row[blank])
            for beam in beams.values():
                beam.blank, beam.nonblank = beam.acoustic + p, _NEG_INF
            continue
        nxt = _step(beams, row, t, candidates, vocab, lm, settings)
        ranked = sorted(nxt.items(), key=lambda kv: _rank(kv[1], lm, settings), reverse=True)
        beams = dict(ranked[: settings.beam])
    return _best(beams, lm, settings, len(log_probs))


def _step(
    beams: dict[_Key, _Beam],
    row: np.ndarray,
    t: int,
    candidates: list[int],
    vocab: CtcTokens,
    lm: WordLM | None,
    settings: BeamSettings,
) -> dict[_Key, _Beam]:
    """Frame `t`'s beams, before pruning: every beam extended by every candidate token, equal
    prefixes merged. One call a frame, so the loops over beams and tokens stay inline."""
    tokens, blank, delimiter = vocab.tokens, vocab.blank, vocab.delimiter
    nxt: dict[_Key, _Beam] = {}
    extend = functools.partial(_extend, nxt)
    scored = [(c, float(row[c])) for c in candidates]  # once a frame, not once a beam

    for beam in beams.values():
        total = beam.acoustic
        for c, p in scored:
            if c == blank:
                same = extend(beam, beam.words, beam.partial, beam.last)
                same.blank = _logsumexp(same.blank, total + p)
                continue
            source = total
            if c == beam.last:
                # The same token again with no blank between is the same token held longer.
                same = extend(beam, beam.words, beam.partial, beam.last)
                same.nonblank = _logsumexp(same.nonblank, beam.nonblank + p)
                if beam.partial_span is not None and c != delimiter:
                    same.partial_span = (same.partial_span or beam.partial_span)[0], t + 1
                source = beam.blank  # only after a blank is it a second token
                if source == _NEG_INF:
                    continue
            if c == delimiter:
                if not beam.partial:  # a boundary with no word before it adds nothing
                    same = extend(beam, beam.words, beam.partial, c)
                    same.nonblank = _logsumexp(same.nonblank, source + p)
                    continue
                new = extend(
                    beam,
                    (*beam.words, beam.partial),
                    "",
                    c,
                    spans=(*beam.spans, beam.partial_span or (t, t + 1)),
                    partial_span=None,
                    lm=beam.lm + _word_score(lm, beam.words, beam.partial, settings),
                )
            else:
                start = beam.partial_span[0] if beam.partial_span else t
                new = extend(beam, beam.words, beam.partial + tokens[c], c, partial_span=(start, t + 1))
            new.nonblank = _logsumexp(new.nonblank, source + p)
    return nxt


def _best(beams: dict[_Key, _Beam], lm: WordLM | None, settings: BeamSettings, frames: int) -> Decoded:
    """The best-scoring beam as a transcript, its unfinished word closed at the last frame."""
    best = max(beams.values(), key=lambda beam: _final(beam, lm, settings))
    words, spans = list(best.words), list(best.spans)
    if best.partial:
        words.append(best.partial)
        spans.append(best.partial_span or (frames - 1, frames))
    return Decoded(" ".join(words), [(w, s, e) for w, (s, e) in zip(words, spans, strict=True)])


def _word_score(lm: WordLM | None, history: tuple[str, ...], word: str, settings: BeamSettings) -> float:
    if lm is None:
        return 0.0
    prev = history[-1] if history else _BOS
    return settings.lm_weight * lm.log_prob(prev, word) + settings.word_bonus


def _final(beam: _Beam, lm: WordLM | None, settings: BeamSettings) -> float:
    """The whole transcript's score: the last word scored as a word, then the end of the sentence."""
    score = beam.acoustic + beam.lm
    words = beam.words
    if beam.partial:
        score += _word_score(lm, words, beam.partial, settings)
        words = (*words, beam.partial)
    if lm is not None:
        score += settings.lm_weight * lm.log_prob(words[-1] if words else _BOS, _EOS)
    return score


def _rank(beam: _Beam, lm: WordLM | None, settings: BeamSettings) -> float:
    """Pruning score: a partial word that begins no known word already pays the unseen-word letter
    penalty, so misspellings drop out before their word ends."""
    score = beam.acoustic + beam.lm
    if lm is not None and beam.partial and not lm.is_prefix(beam.partial):
        score -= settings.lm_weight * lm.oov_letter_penalty * len(beam.partial)
    return score


@dataclass(frozen=True)
class CtcTokens:
    """What the search needs from a CTC tokenizer: the id-to-token table, the blank and the word separator."""

    tokens: list[str]
    blank: int
    delimiter: int

    @classmethod
    def of(cls, processor: Wav2Vec2Processor | Wav2Vec2CTCTokenizer) -> CtcTokens:
        """From a processor or its tokenizer alone (a head on Whisper's encoder has no feature extractor)."""
        tokenizer = getattr(processor, "tokenizer", processor)
        tokens = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
        delimiter = tokenizer.convert_tokens_to_ids(tokenizer.word_delimiter_token)
        return cls(list(tokens), int(tokenizer.pad_token_id), int(delimiter))
