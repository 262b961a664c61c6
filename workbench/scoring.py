"""What `lidroute evaluate` prints: error rates, micro-WER, language-ID accuracy, speed, as tables.

Metrics are corpus-level (jiwer: total edits over total reference length) per language, pooled
over all utterances (`all`), and averaged over languages (`mean`, the figure targets are stated
in). Text is normalised as the recognizers are trained (`asr_worker.recipes.ctc.normalize_text`:
NFC, lowercase, single spaces), without punctuation at the edges of words.

**Micro-WER** is the word error rate restricted to the reference words that carry a number or a
name, the words a transcript is most often read for and that a recognizer trained on common
words gets wrong:

* *number words*: a token with a digit, or a word that num2words produces when spelling numbers
  in the language (`lidroute.train.synth.number_words`, over 0-1000 and the thousands up to a million,
  the range `make_number_sentences` draws from), or a concatenation of such words (German,
  Italian and Turkish write 43 211 as one word). A word that only ever joins the parts of a
  spelled number ("and", "y", "et", "e") counts only between two number words;
* *names*: a word capitalised in the raw reference that does not start a sentence (real
  transcripts such as Common Voice's are cased; the synthetic corpus is lowercase, so there only
  numbers count; German capitalises every noun, so there this set is wider than names).

A key word is wrong when the alignment (jiwer's, of the whole normalised utterance) substitutes
or deletes it; micro-WER = wrong key words / key words. Insertions belong to no reference word
and are left out, so micro-WER is a miss rate on the key words.

Real-time factor is processing seconds over audio seconds: recognizer inference in-process
(after one warm-up call, as a long-running worker is warm), the whole request's wall time
through a router.
"""

from __future__ import annotations

import re
import unicodedata
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import cache
from typing import Any

from lidroute.train import CONFIDENT

#: Window lengths (s of speech after onset) that language ID is scored on in-process.
DEFAULT_WINDOWS = (0.5, 1.0, 3.0)


#: Label of the router's growing-window decision (in-process) or the router's detection.
ROUTER = "router"


#: Values whose spellings make the number-word vocabulary: everything `make_number_sentences` says
#: is one of these or a concatenation of them (a compound of thousands and a rest below 1000).
_NUMBER_VALUES = (*range(0, 1001), *range(2000, 1_000_000, 1000), 1_000_000)


_PUNCT = re.compile(r"^\W+|\W+$")


_SENTENCE_END = (".", "!", "?", "…")


def normalize(text: str) -> str:
    """`asr_worker.recipes.ctc.normalize_reference` (lazy import: it pulls in torch)."""
    from asr_worker.recipes.ctc import normalize_reference

    return normalize_reference(text)


@cache
def number_vocabulary(lang: str) -> tuple[frozenset[str], frozenset[str]]:
    """(number words, connectives) of `lang`; both empty where num2words cannot spell the language.

    A connective is a word that appears in spellings only between two other words ("one hundred
    *and* five"), never at an end: alone it is an ordinary word, so it counts only inside a number.
    """
    from lidroute.train import synth

    if lang not in synth.LANGUAGES or not synth.supports_numbers(lang):
        return frozenset(), frozenset()
    words: set[str] = set()
    ends: set[str] = set()
    for value in _NUMBER_VALUES:
        spelled = synth.number_words(lang, value)
        words.update(spelled)
        if spelled:
            ends.update((spelled[0], spelled[-1]))
    connectives = words - ends
    return frozenset(words - connectives), frozenset(connectives)


def _is_compound(word: str, parts: frozenset[str]) -> bool:
    """True when `word` is a concatenation of two or more number words (`dreiundvierzigtausend|elf`)."""
    n = len(word)
    reachable = [True] + [False] * n  # reachable[i]: word[:i] splits into number words
    for end in range(1, n + 1):
        reachable[end] = any(reachable[start] and word[start:end] in parts for start in range(end))
    return reachable[n]


def is_number_word(word: str, lang: str) -> bool:
    """A token with a digit, a number word of `lang`, or a compound of number words."""
    bare = _PUNCT.sub("", word.lower())
    if not bare:
        return False
    if any(c.isdigit() for c in bare):
        return True
    numbers, _ = number_vocabulary(lang)
    return bare in numbers or (len(bare) > 3 and _is_compound(bare, numbers))


def key_words(raw_reference: str, lang: str) -> list[bool]:
    """For each word of the normalised reference: does micro-WER count it (number or name)?

    Normalisation changes case, spacing and punctuation at word edges, so the raw reference's
    whitespace tokens are the normalised reference's words, one for one; capitalisation is read
    from the raw tokens.
    """

    raw = unicodedata.normalize("NFC", raw_reference).split()
    numbers = [is_number_word(token, lang) for token in raw]
    _, connectives = number_vocabulary(lang)
    flags = []
    for i, token in enumerate(raw):
        bare = _PUNCT.sub("", token)
        starts_sentence = i == 0 or raw[i - 1].endswith(_SENTENCE_END)
        name = bool(bare) and bare[0].isupper() and not starts_sentence
        joins = bare.lower() in connectives and 0 < i < len(raw) - 1 and numbers[i - 1] and numbers[i + 1]
        flags.append(numbers[i] or name or joins)
    return flags


@dataclass(frozen=True)
class ErrorCounts:
    """Corpus-level error rates of a set of utterances; a rate is None when there is no reference."""

    cer: float | None
    wer: float | None
    micro_wer: float | None
    reference_words: int
    reference_chars: int
    key_words: int
    key_word_errors: int


def error_counts(
    references: Sequence[str], hypotheses: Sequence[str], flags: Sequence[Sequence[bool]] | None = None
) -> ErrorCounts:
    """CER, WER (jiwer, corpus-level) and micro-WER over normalised `references`/`hypotheses`.

    `flags[i][j]` says whether word j of reference i is a key word (see `key_words`); without flags
    no word is, and micro-WER is None.
    """
    import jiwer

    refs, hyps = list(references), list(hypotheses)
    n_words = sum(len(r.split()) for r in refs)
    n_chars = sum(len(r) for r in refs)
    if not refs or n_chars == 0:
        return ErrorCounts(None, None, None, n_words, n_chars, 0, 0)
    chars = jiwer.process_characters(refs, hyps)
    words = jiwer.process_words(refs, hyps)
    n_key = wrong = 0
    if flags is not None:
        for sentence_flags, alignment in zip(flags, words.alignments, strict=True):
            missed = {
                i
                for chunk in alignment
                if chunk.type in ("substitute", "delete")
                for i in range(chunk.ref_start_idx, chunk.ref_end_idx)
            }
            n_key += sum(sentence_flags)
            wrong += sum(1 for i, key in enumerate(sentence_flags) if key and i in missed)
    return ErrorCounts(
        cer=float(chars.cer),
        wer=float(words.wer) if n_words else None,
        micro_wer=wrong / n_key if n_key else None,
        reference_words=n_words,
        reference_chars=n_chars,
        key_words=n_key,
        key_word_errors=wrong,
    )


@dataclass
class UtteranceResult:
    """What happened to one utterance; `hypothesis` is None when it was not transcribed (no model)."""

    id: str
    language: str
    reference: str
    hypothesis: str | None
    audio_seconds: float
    #: Seconds that count in the real-time factor (recognizer inference, or the whole request).
    processing_seconds: float = 0.0
    #: Language decided per window label (`0.5s`, ..., `router`).
    detected: dict[str, str] = field(default_factory=dict)
    #: Per window label, the probability the language-ID model gave the language it decided.
    probability: dict[str, float] = field(default_factory=dict)
    lid_seconds: float = 0.0
    error: str = ""
    #: Per window label, the other candidate languages whose voice speaks that window exactly as
    #: this one is spoken (`find_alike`); None when not looked for.
    alike: dict[str, list[str]] | None = None


@dataclass(frozen=True)
class GroupMetrics:
    """The numbers of one table row: a language, `all` utterances pooled, or the `mean` of languages."""

    utterances: int
    transcribed: int
    failed: int
    audio_seconds: float
    cer: float | None
    wer: float | None
    micro_wer: float | None
    reference_words: int
    key_words: int
    lid_accuracy: dict[str, float]
    rtf: float | None
    #: With `--lid-twins`, per window label: how many windows another candidate speaks alike, the
    #: best accuracy any model can expect (each such window is a coin among its alike languages),
    #: and the accuracy on the other windows.
    lid_alike: dict[str, int] = field(default_factory=dict)
    lid_ceiling: dict[str, float] = field(default_factory=dict)
    lid_accuracy_rest: dict[str, float] = field(default_factory=dict)
    #: Calibration, per window label: the share of decisions made with p >= CONFIDENT, and how
    #: many of those were right. A calibrated model is right on about CONFIDENT of them.
    lid_confident_share: dict[str, float] = field(default_factory=dict)
    lid_confident_accuracy: dict[str, float] = field(default_factory=dict)


def group_metrics(results: Sequence[UtteranceResult]) -> GroupMetrics:
    done = [r for r in results if r.hypothesis is not None]
    counts = error_counts(
        [normalize(r.reference) for r in done],
        [normalize(r.hypothesis or "") for r in done],
        [key_words(r.reference, r.language) for r in done],
    )
    windows: dict[str, list[bool]] = defaultdict(list)
    for r in results:
        for label, lang in r.detected.items():
            windows[label].append(lang == r.language)
    confident: dict[str, list[bool]] = defaultdict(list)
    for r in results:
        for label, p in r.probability.items():
            if p >= CONFIDENT and label in r.detected:
                confident[label].append(r.detected[label] == r.language)
    audio = sum(r.audio_seconds for r in done)
    alike: dict[str, int] = defaultdict(int)
    ceiling: dict[str, list[float]] = defaultdict(list)
    rest: dict[str, list[bool]] = defaultdict(list)
    for r in results:
        for label, others in (r.alike or {}).items():
            alike[label] += bool(others)
            ceiling[label].append(1 / (1 + len(others)))
            if not others and label in r.detected:
                rest[label].append(r.detected[label] == r.language)
    return GroupMetrics(
        utterances=len(results),
        transcribed=len(done),
        failed=sum(1 for r in results if r.error),
        audio_seconds=round(sum(r.audio_seconds for r in results), 3),
        cer=counts.cer,
        wer=counts.wer,
        micro_wer=counts.micro_wer,
        reference_words=counts.reference_words,
        key_words=counts.key_words,
        lid_accuracy={label: sum(hits) / len(hits) for label, hits in windows.items()},
        rtf=sum(r.processing_seconds for r in done) / audio if audio else None,
        lid_alike=dict(alike),
        lid_ceiling={label: sum(v) / len(v) for label, v in ceiling.items()},
        lid_accuracy_rest={label: sum(v) / len(v) for label, v in rest.items() if v},
        lid_confident_share={label: len(confident[label]) / len(hits) for label, hits in windows.items()},
        lid_confident_accuracy={label: sum(v) / len(v) for label, v in confident.items() if v},
    )


def _mean(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def summarize(results: Sequence[UtteranceResult]) -> dict[str, GroupMetrics]:
    """One row per language, then `all` (pooled) and `mean` (unweighted over languages) when several.

    A language without a number (no recognizer, no key words) is left out of that number's mean
    rather than counted as zero.
    """
    by_lang: dict[str, list[UtteranceResult]] = defaultdict(list)
    for r in results:
        by_lang[r.language].append(r)
    rows = {lang: group_metrics(by_lang[lang]) for lang in sorted(by_lang)}
    if len(rows) > 1:
        langs = list(rows.values())
        rows["all"] = group_metrics(results)
        rows["mean"] = GroupMetrics(
            utterances=sum(m.utterances for m in langs),
            transcribed=sum(m.transcribed for m in langs),
            failed=sum(m.failed for m in langs),
            audio_seconds=round(sum(m.audio_seconds for m in langs), 3),
            cer=_mean([m.cer for m in langs]),
            wer=_mean([m.wer for m in langs]),
            micro_wer=_mean([m.micro_wer for m in langs]),
            reference_words=sum(m.reference_words for m in langs),
            key_words=sum(m.key_words for m in langs),
            lid_accuracy=_means([m.lid_accuracy for m in langs]),
            rtf=_mean([m.rtf for m in langs]),
            lid_alike=rows["all"].lid_alike,
            lid_ceiling=_means([m.lid_ceiling for m in langs]),
            lid_accuracy_rest=_means([m.lid_accuracy_rest for m in langs]),
            # Calibration is a property of the decisions, not of a language: pooled, as `all`.
            lid_confident_share=rows["all"].lid_confident_share,
            lid_confident_accuracy=rows["all"].lid_confident_accuracy,
        )
    return rows


def _means(per_language: Sequence[Mapping[str, float]]) -> dict[str, float]:
    labels = sorted({label for m in per_language for label in m}, key=window_order)
    return {label: v for label in labels if (v := _mean([m.get(label) for m in per_language])) is not None}


def window_order(label: str) -> tuple[int, float]:
    """`0.5s` < `1s` < `3s` < `router`."""
    return (1, 0.0) if label == ROUTER else (0, float(label.rstrip("s")))


def window_label(seconds: float) -> str:
    return f"{seconds:g}s"


def pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def format_table(rows: Mapping[str, GroupMetrics]) -> str:
    """A fixed-width table: one line per language, then `all` and `mean`."""
    labels = sorted({label for m in rows.values() for label in m.lid_accuracy}, key=window_order)
    head = (
        f"{'lang':6} {'utts':>5} {'audio s':>8} {'CER':>7} {'WER':>7} {'microWER':>9} {'(words)':>7}"
        + "".join(f" {'LID@' + label:>10}" for label in labels)
        + f" {'RTF':>7}"
    )
    lines = [head, "-" * len(head)]
    for name, m in rows.items():
        failed = f"  ({m.failed} failed)" if m.failed else ""
        lines.append(
            f"{name:6} {m.utterances:5d} {m.audio_seconds:8.1f} {pct(m.cer):>7} {pct(m.wer):>7} "
            f"{pct(m.micro_wer):>9} {m.key_words:7d}"
            + "".join(f" {pct(m.lid_accuracy.get(label)):>10}" for label in labels)
            + f" {'-' if m.rtf is None else f'{m.rtf:.3f}':>7}{failed}"
        )
    return "\n".join(lines)


def format_side_by_side(
    first: Mapping[str, GroupMetrics], second: Mapping[str, GroupMetrics], names: tuple[str, str]
) -> str:
    """Two systems on the same utterances: each cell is `first | second`, per language, `all`, `mean`."""
    labels = sorted(
        {label for m in [*first.values(), *second.values()] for label in m.lid_accuracy}, key=window_order
    )
    columns = [*(f"LID@{label}" for label in labels), "CER", "WER", "RTF"]

    def cells(m: GroupMetrics | None) -> list[str]:
        if m is None:
            return ["-"] * len(columns)
        rtf = "-" if m.rtf is None else f"{m.rtf:.3f}"
        return [*(pct(m.lid_accuracy.get(label)) for label in labels), pct(m.cer), pct(m.wer), rtf]

    width = 17
    head = f"{'lang':6}" + "".join(f" {c:>{width}}" for c in columns)
    lines = [f"{names[0]} | {names[1]}, side by side", head, "-" * len(head)]
    for name in [*first, *(n for n in second if n not in first)]:
        pairs = zip(cells(first.get(name)), cells(second.get(name)), strict=True)
        lines.append(f"{name:6}" + "".join(f" {f'{a} | {b}':>{width}}" for a, b in pairs))
    return "\n".join(lines)


def format_calibration(rows: Mapping[str, GroupMetrics], name: str) -> str:
    """One line per window label: how often the model was sure (p >= CONFIDENT), and how often right then."""
    pooled = rows.get("all") or next(iter(rows.values()))
    lines = [f"{name}: decisions with p >= {CONFIDENT:g} (share of all, right among them)"]
    for label in sorted(pooled.lid_confident_share, key=window_order):
        right = pooled.lid_confident_accuracy.get(label)
        lines.append(f"  LID@{label:<7} {pct(pooled.lid_confident_share[label]):>7} {pct(right):>7}")
    return "\n".join(lines)


def format_alike(rows: Mapping[str, GroupMetrics]) -> str:
    """`--lid-twins`' table: per window, the windows another candidate speaks alike, the accuracy
    no model can beat, the accuracy measured, and the accuracy on the other windows. Languages
    with no such window are left out; `all` and `mean` are always there."""
    head = f"{'lang':6} {'window':>6} {'alike':>11} {'ceiling':>8} {'accuracy':>9} {'on the rest':>12}"
    lines = [
        "language ID on windows that another candidate language's voice speaks identically",
        head,
        "-" * len(head),
    ]
    for name, m in rows.items():
        if not any(m.lid_alike.values()) and name not in ("all", "mean"):
            continue
        for label in sorted(m.lid_ceiling, key=window_order):
            lines.append(
                f"{name:6} {label:>6} {f'{m.lid_alike.get(label, 0)}/{m.utterances}':>11} "
                f"{pct(m.lid_ceiling[label]):>8} {pct(m.lid_accuracy.get(label)):>9} "
                f"{pct(m.lid_accuracy_rest.get(label)):>12}"
            )
    return "\n".join(lines)


def confusion(results: Sequence[UtteranceResult], label: str) -> dict[str, dict[str, int]]:
    """Counts of (true language -> decided language) for one window label; undecided ones are left out."""
    matrix: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for r in results:
        if label in r.detected:
            matrix[r.language][r.detected[label]] += 1
    return {true: dict(row) for true, row in matrix.items()}


def format_confusion(results: Sequence[UtteranceResult]) -> str:
    """One matrix per window label: rows are the true languages, columns the decisions."""
    labels = sorted({label for r in results for label in r.detected}, key=window_order)
    blocks = []
    for label in labels:
        matrix = confusion(results, label)
        langs = sorted(set(matrix) | {d for row in matrix.values() for d in row})
        lines = [
            f"language ID at {label} (rows: spoken, columns: decided)",
            "      " + "".join(f"{c:>5}" for c in langs),
        ]
        lines += [
            f"{t:6}" + "".join(f"{matrix.get(t, {}).get(c, 0):5d}" for c in langs)
            for t in langs
            if t in matrix
        ]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def report(
    results: Sequence[UtteranceResult],
    settings: Mapping[str, Any],
    command: Sequence[str] = (),
    anchored: Sequence[UtteranceResult] = (),
) -> dict[str, Any]:
    """Everything `--json` writes: the command, the settings, the metrics and every utterance, and
    the anchor's metrics and utterances when one ran beside."""
    document = {
        "command": list(command),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "settings": dict(settings),
        "micro_wer": "WER on reference words that are numbers (digits, num2words words) or names "
        "(capitalised, not sentence-initial); substitutions + deletions of those words / their count",
        "metrics": {name: asdict(m) for name, m in summarize(results).items()},
        "utterances": [asdict(r) for r in results],
    }
    if anchored:
        document["anchor"] = {
            "metrics": {name: asdict(m) for name, m in summarize(anchored).items()},
            "utterances": [asdict(r) for r in anchored],
        }
    return document
