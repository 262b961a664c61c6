"""The synthetic corpus: sentences drawn per split, spoken by espeak-ng (and Kokoro), degraded,
and written as FLAC plus JSONL manifests (`lidroute corpus synth`).

Everything is drawn from one seed, utterance by utterance, so a corpus can be made again from the
`corpus.json` recipe written beside it (`synth_command`); `lidroute.train.extra_splits` reads that
recipe back to add splits spoken and degraded as the corpus's own are.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lidroute import wordlist
from lidroute.train import synth
from lidroute.train.augment import (
    RT60,
    add_noise,
    draw_codec,
    reverberate,
    room_response,
    set_peak,
    telephone,
    through_codec,
)
from lidroute.train.budget import usable_cores
from lidroute.train.example import CorpusError
from lidroute.train.kokoro import Kokoro, speak_with_kokoro
from lidroute.train.manifest import write_manifest, write_utterance

SPLITS = ("train", "dev", "test", "test_hard")


@dataclass(frozen=True)
class SynthPlan:
    """How `synth_corpus` speaks and degrades each split; the defaults are the documented recipe.

    Train, dev and test share one voice pool and speed range, so dev and test measure
    generalisation to new sentences; `test_hard` uses voice variants and speeds that no other
    split has, noise at `hard_snr_db`, and a telephone channel (8 kHz, back up to 16 kHz), so it
    measures what a model does on speech unlike its training data.
    """

    speeds: tuple[int, int] = (130, 185)
    hard_speeds: tuple[tuple[int, int], ...] = ((105, 125), (195, 220))
    pitches: tuple[int, int] = (30, 70)
    hard_pitches: tuple[int, int] = (20, 80)
    #: Share of the voice variants held out of train/dev/test for `test_hard`.
    hard_voice_share: float = 0.25
    #: Share of sentences built around a number spelled by num2words, where it covers the language.
    numbers: float = 0.2
    min_words: int = 2
    max_words: int = 5
    #: Noise augmentation of train/dev/test (with --noise): share of utterances and SNR range.
    noise_share: float = 0.5
    noise_snr_db: tuple[float, float] = (10.0, 30.0)
    #: Level augmentation (with --level): peak level range in dBFS.
    level_db: tuple[float, float] = (-24.0, -1.0)
    hard_snr_db: tuple[float, float] = (10.0, 20.0)
    telephone_rate: int = 8000
    #: Share of every split's utterances spoken by Kokoro-82M's neural voices, a new speaker each
    #: (`lidroute.train.kokoro`), instead of espeak-ng: speech of a second, more natural kind.
    kokoro: float = 0.0
    kokoro_speeds: tuple[float, float] = (0.8, 1.25)
    #: Share of sentences that are running text (`synth.make_running_text`: 6-14 common words drawn
    #: by how often the language uses them) rather than CLDR names, where wordfreq has the language.
    running: float = 0.0
    #: Shares of train/dev/test utterances heard in a simulated room (`augment.room_response`, a
    #: reverberation time drawn from `rt60` s) and through a lossy codec (`augment.CODECS`, one
    #: drawn), before the level is set: what recorded speech brings. Off by default, and then not
    #: drawn, so corpora made before them are made again sample for sample.
    rooms: float = 0.0
    rt60: tuple[float, float] = RT60
    codecs: float = 0.0


def split_voices(seed: int, share: float) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Voice variants for (train/dev/test, test_hard), disjoint, drawn from the seed."""
    order = np.random.default_rng([seed, synth.stable_hash("held-out voices")]).permutation(
        len(synth.VARIANTS)
    )
    held = max(1, round(share * len(order)))
    seen = tuple(sorted(synth.VARIANTS[i] for i in order[held:]))
    hard = tuple(sorted(synth.VARIANTS[i] for i in order[:held]))
    return seen, hard


def corpus_sentences(
    lang: str, counts: Mapping[str, int], *, seed: int, plan: SynthPlan, vocab: Sequence[str] | None = None
) -> dict[str, list[tuple[str, bool]]]:
    """Distinct sentences for each split (disjoint across splits), each flagged True when it holds a number.

    All splits are cut from one pool of distinct sentences, which is what makes them disjoint.
    """
    total = sum(counts.values())
    n_numbers = round(plan.numbers * total) if synth.supports_numbers(lang) else 0
    numbers = synth.make_number_sentences(lang, n_numbers, seed=seed, vocab=vocab) if n_numbers else []
    n_running = round(plan.running * total) if wordlist.has_words(lang) else 0
    running = synth.make_running_text(lang, n_running, seed=seed) if n_running else []
    # Extra word sentences cover any that collide with a number sentence.
    words = synth.make_sentences(
        lang,
        total - n_numbers - n_running + n_numbers // 10 + 10,
        seed=seed,
        min_words=plan.min_words,
        max_words=plan.max_words,
        vocab=vocab,
    )
    pool: dict[str, bool] = dict.fromkeys(numbers, True)
    for sentence in [*running, *words]:
        if len(pool) == total:
            break
        pool.setdefault(sentence, False)
    if len(pool) < total:
        raise CorpusError(f"{lang}: could make only {len(pool)} distinct sentences of {total}")
    items = list(pool.items())
    order = synth._rng(seed, lang, "split order").permutation(len(items))
    shuffled = [items[i] for i in order]
    out: dict[str, list[tuple[str, bool]]] = {}
    start = 0
    for split, count in counts.items():
        out[split] = shuffled[start : start + count]
        start += count
    return out


def synth_corpus(
    out: str | Path,
    languages: Sequence[str],
    *,
    train: int,
    dev: int,
    test: int,
    test_hard: int | None = None,
    seed: int = 0,
    noise: bool = False,
    level: bool = False,
    vocab_words: int | None = None,
    plan: SynthPlan = SynthPlan(),
    workers: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Path]:
    """Speaks a corpus into `out`: `SPLIT/LANG/ID.flac` and one `SPLIT.jsonl` manifest per split.

    Everything (sentences, voices, speeds, pitches, noise, levels) is drawn from `seed`, and the
    draws for one utterance depend only on seed, language, split and position, so the corpus is
    the same whatever the thread pool's timing. `vocab_words` keeps only that many of each
    language's words (a fixed random subset), for small models that must learn fast. Returns
    the manifest of each split; `corpus.json` beside them records the recipe.
    """
    out = Path(out)
    for lang in languages:
        synth.get_language(lang)  # an unknown language fails before any audio is made
    counts = {"train": train, "dev": dev, "test": test, "test_hard": test if test_hard is None else test_hard}
    if any(n < 0 for n in counts.values()):
        raise CorpusError(f"split sizes must not be negative: {counts}")
    seen_voices, hard_voices = split_voices(seed, plan.hard_voice_share)
    workers = workers or usable_cores()
    rows: dict[str, list[dict[str, Any]]] = {split: [] for split in counts}
    started = time.monotonic()
    for lang in languages:
        vocab = vocab_subset(lang, vocab_words, seed)
        sentences = corpus_sentences(lang, counts, seed=seed, plan=plan, vocab=vocab)
        for split, items in sentences.items():
            if not items:
                continue
            utterances = _speak_split(
                lang, split, [s for s, _ in items], seed, plan, seen_voices, hard_voices, workers
            )
            rows[split] += write_spoken(
                out, split, lang, utterances, items, seed, plan, noise=noise, level=level
            )
            if progress:
                progress(f"{lang} {split}: {len(items)} utterances ({time.monotonic() - started:.0f} s)")
    manifests = {split: write_manifest(out / f"{split}.jsonl", lines) for split, lines in rows.items()}
    recipe = _recipe(languages, counts, seed, noise, level, vocab_words, plan, (seen_voices, hard_voices))
    write_recipe(out, recipe)
    return manifests


def _recipe(
    languages: Sequence[str],
    counts: Mapping[str, int],
    seed: int,
    noise: bool,
    level: bool,
    vocab_words: int | None,
    plan: SynthPlan,
    voices: tuple[Sequence[str], Sequence[str]],
) -> dict[str, Any]:
    """What `corpus.json` records: every choice the corpus was drawn with, so that it can be made
    again (`synth_command`) and splits added to it speak and degrade as its own do (`read_recipe`)."""
    return {
        "seed": seed,
        "languages": list(languages),
        "counts": counts,
        "noise": noise,
        "level": level,
        "vocab_words": vocab_words,
        "voices": {"train_dev_test": list(voices[0]), "test_hard": list(voices[1])},
        "plan": asdict(plan),
        "numbers_languages": [lang for lang in languages if synth.supports_numbers(lang)],
    }


def write_recipe(folder: Path, recipe: Mapping[str, Any]) -> None:
    """Writes `corpus.json`, indented and unescaped, for people to read as well as programs."""
    (folder / "corpus.json").write_text(
        json.dumps(recipe, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )


def read_recipe(folder: Path) -> tuple[dict[str, Any], SynthPlan]:
    """The `corpus.json` that `synth_corpus` wrote in `folder`, and its plan."""
    try:
        recipe = json.loads((folder / "corpus.json").read_text(encoding="utf-8"))
        recipe["seed"] = int(recipe["seed"])
        if not {"train_dev_test", "test_hard"} <= set(recipe["voices"]):
            raise KeyError("voices")
        plan = SynthPlan(**{k: json_tuples(v) for k, v in recipe["plan"].items()})
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CorpusError(f"{folder}: not a corpus made by `lidroute corpus synth` ({exc})") from None
    return recipe, plan


def json_tuples(value: Any) -> Any:
    """JSON lists back to the tuples that a frozen recipe dataclass (`SynthPlan`) holds."""
    return tuple(json_tuples(v) for v in value) if isinstance(value, list) else value


def write_spoken(
    out: Path,
    split: str,
    lang: str,
    utterances: Sequence[synth.Utterance],
    items: Sequence[tuple[str, bool]],
    seed: int,
    plan: SynthPlan,
    *,
    noise: bool,
    level: bool,
) -> list[dict[str, Any]]:
    """Degrades (`_degrade`) and writes one language's spoken split; returns its manifest rows."""
    rows = []
    for index, (utt, (_, has_number)) in enumerate(zip(utterances, items, strict=True)):
        audio, effects = _degrade(utt.audio, lang, split, index, seed, plan, noise=noise, level=level)
        fields = {"voice": utt.variant, "speed": utt.speed, "pitch": utt.pitch, "numbers": has_number}
        rows.append(write_utterance(out, split, lang, index, audio, utt.text, fields | effects))
    return rows


def vocab_subset(lang: str, size: int | None, seed: int) -> list[str] | None:
    """A fixed random `size` of the language's words (all when None): small models learn a small
    vocabulary fast, and the same seed must give the same words to every split drawn later."""
    if size is None:
        return None
    words = synth.vocabulary(lang)
    if size >= len(words):
        return words
    picks = synth._rng(seed, lang, "vocabulary").choice(len(words), size=size, replace=False)
    return sorted(words[i] for i in picks)


def split_seed(seed: int, split: str) -> int:
    """The seed of one split's (or condition's) speaking: a stream of its own, so no two splits
    are spoken with the same draws."""
    return synth.stable_hash(f"{seed}:{split}")


@functools.cache
def _kokoro(threads: int) -> Kokoro:
    """One Kokoro session for a whole corpus, not one per language and split."""
    return Kokoro(threads=threads)


def _speak_split(
    lang: str,
    split: str,
    texts: list[str],
    seed: int,
    plan: SynthPlan,
    seen_voices: Sequence[str],
    hard_voices: Sequence[str],
    workers: int,
) -> list[synth.Utterance]:
    """Speaks one split; `test_hard` alternates between a slow and a fast speed range outside
    training's. A `plan.kokoro` share of the utterances, drawn from the seed, Kokoro speaks."""
    # A stream of its own: `speak_with_kokoro` draws the speakers from (split seed, lang, "kokoro").
    draw = np.random.default_rng(
        [split_seed(seed, split), synth.stable_hash(lang), synth.stable_hash("kokoro share")]
    )
    neural = {int(i) for i in np.flatnonzero(draw.random(len(texts)) < plan.kokoro)}
    rest = [text for i, text in enumerate(texts) if i not in neural]
    if split != "test_hard":
        spoken = speak(lang, split, rest, seed, seen_voices, (plan.speeds,), plan.pitches, workers)
    else:
        spoken = speak(lang, split, rest, seed, hard_voices, plan.hard_speeds, plan.hard_pitches, workers)
    if not neural:
        return spoken
    by_kokoro = iter(
        speak_with_kokoro(
            [texts[i] for i in sorted(neural)],
            lang,
            seed=split_seed(seed, split),
            speeds=plan.kokoro_speeds,
            kokoro=_kokoro(workers),
        )
    )
    by_espeak = iter(spoken)
    return [next(by_kokoro) if i in neural else next(by_espeak) for i in range(len(texts))]


def speak(
    lang: str,
    split: str,
    texts: list[str],
    seed: int,
    voices: Sequence[str],
    speed_ranges: Sequence[tuple[int, int]],
    pitches: tuple[int, int],
    workers: int,
) -> list[synth.Utterance]:
    """Speaks `texts` with `voices`, utterance i in speed range i mod len(speed_ranges)."""
    if len(speed_ranges) == 1:
        return synth.speak_texts(
            texts,
            lang,
            seed=split_seed(seed, split),
            variants=voices,
            speeds=speed_ranges[0],
            pitches=pitches,
            workers=workers,
        )
    spoken: dict[int, synth.Utterance] = {}
    for r, speeds in enumerate(speed_ranges):
        positions = range(r, len(texts), len(speed_ranges))
        if not positions:
            continue
        utterances = synth.speak_texts(
            [texts[i] for i in positions],
            lang,
            seed=split_seed(seed, f"{split}:{r}"),
            variants=voices,
            speeds=speeds,
            pitches=pitches,
            workers=workers,
        )
        spoken.update(zip(positions, utterances, strict=True))
    return [spoken[i] for i in range(len(texts))]


def _degrade(
    audio: np.ndarray,
    lang: str,
    split: str,
    index: int,
    seed: int,
    plan: SynthPlan,
    *,
    noise: bool,
    level: bool,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Room, noise, channel, codec and level for one utterance, drawn from its own generator;
    returns what was done."""
    rng = np.random.default_rng([seed, synth.stable_hash(lang), synth.stable_hash(split), index])
    # Every key is on every line, so a manifest is one table for `datasets`.
    effects: dict[str, Any] = {"snr_db": None, "telephone": False, "peak_db": None}
    if plan.rooms or plan.codecs:
        effects |= {"rt60": None, "codec": None}
    if split != "test_hard" and plan.rooms and rng.random() < plan.rooms:
        effects["rt60"] = round(float(rng.uniform(*plan.rt60)), 2)
        audio = reverberate(audio, room_response(rng, effects["rt60"]))
    if split == "test_hard":
        effects["snr_db"] = round(float(rng.uniform(*plan.hard_snr_db)), 2)
        audio = telephone(add_noise(audio, effects["snr_db"], rng), plan.telephone_rate)
        effects["telephone"] = True
    elif noise and rng.random() < plan.noise_share:
        effects["snr_db"] = round(float(rng.uniform(*plan.noise_snr_db)), 2)
        audio = add_noise(audio, effects["snr_db"], rng)
    if split != "test_hard" and plan.codecs and rng.random() < plan.codecs:
        effects["codec"] = draw_codec(rng)
        audio = through_codec(audio, effects["codec"])
    if level:
        effects["peak_db"] = round(float(rng.uniform(*plan.level_db)), 2)
        audio = set_peak(audio, effects["peak_db"])
    return audio.astype(np.float32, copy=False), effects


def synth_command(folder: str | Path) -> str | None:
    """The `lidroute corpus synth` call that makes `folder` again (from its corpus.json), for model
    cards; None when the folder is not a synthetic corpus."""
    try:
        recipe = json.loads((Path(folder) / "corpus.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    counts = recipe["counts"]
    flags = [
        f"--out {folder}",
        f"--languages {','.join(recipe['languages'])}",
        *(f"--{split.replace('_', '-')} {counts[split]}" for split in SPLITS),
        f"--seed {recipe['seed']}",
    ]
    flags += [f"--{flag}" for flag in ("noise", "level") if recipe.get(flag)]
    if recipe.get("vocab_words"):
        flags.append(f"--vocab-words {recipe['vocab_words']}")
    numbers = recipe.get("plan", {}).get("numbers", SynthPlan.numbers)
    if numbers != SynthPlan.numbers:
        flags.append(f"--numbers {numbers}")
    for name in ("running", "rooms", "codecs"):
        share = recipe.get("plan", {}).get(name, getattr(SynthPlan, name))
        if share != getattr(SynthPlan, name):
            flags.append(f"--{name} {share}")
    return "lidroute corpus synth " + " ".join(flags)
