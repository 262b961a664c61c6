"""Synthetic speech from real words, so that models can be trained on a machine with no model hub.

No machine here reaches a model hub or a speech corpus, yet the system must come with working
language-ID and speech-recognition models. This module makes labelled speech for them:

* the words are real words of each language, read at run time from Babel's CLDR data
  (names of territories, languages, scripts, currencies, days, months, time zones, units...),
  never from word lists kept in the repository;
* the audio is spoken by espeak-ng, which covers about a hundred languages, with voice variants,
  speeds and pitches drawn at random so that models do not learn one voice.

The output is deterministic for a given seed, which is what makes model cards reproducible.
"""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import unicodedata
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache

import numpy as np

from lidroute import wordlist

ESPEAK = "espeak-ng"
ESPEAK_RATE_FALLBACK = 22050


@dataclass(frozen=True)
class SynthLanguage:
    """How one language is spoken and where its words come from.

    `code` is the ISO 639 code the rest of the system routes on; `espeak_voice` and
    `babel_locale` are the names the two tools know the language by (they differ for some).
    `script` is the Unicode script every word must be written in: CLDR names in a language
    also contain foreign names, and a wrong-script word would teach a model nonsense.
    """

    code: str
    name: str
    espeak_voice: str
    babel_locale: str
    script: str = "LATIN"


LANGUAGES: dict[str, SynthLanguage] = {
    lang.code: lang
    for lang in (
        SynthLanguage("en", "English", "en-us", "en"),
        SynthLanguage("es", "Spanish", "es", "es"),
        SynthLanguage("fr", "French", "fr-fr", "fr"),
        SynthLanguage("de", "German", "de", "de"),
        SynthLanguage("pt", "Portuguese", "pt", "pt"),
        SynthLanguage("it", "Italian", "it", "it"),
        SynthLanguage("ru", "Russian", "ru", "ru", "CYRILLIC"),
        SynthLanguage("hi", "Hindi", "hi", "hi", "DEVANAGARI"),
        SynthLanguage("sw", "Swahili", "sw", "sw"),
        SynthLanguage("tr", "Turkish", "tr", "tr"),
        SynthLanguage("mr", "Marathi", "mr", "mr", "DEVANAGARI"),
        SynthLanguage("qu", "Quechua", "qu", "qu"),
    )
}
#: The languages with the most labelled speech in the world's public corpora, which is why a real
#: deployment has them and the long tail does not: what the multilingual backbone learns from.
HIGH_RESOURCE = ("en", "es", "fr", "de", "pt", "it", "ru")

# espeak-ng voice variants (`espeak-ng --voices=variant`, used as `-v VOICE+VARIANT`): male,
# female and Klatt-synthesiser voices of different timbres. Novelty voices (whisper, robots,
# "Demonic") are left out: they are not what a language-ID model should learn to expect.
VARIANTS: tuple[str, ...] = (
    "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8",
    "f1", "f2", "f3", "f4", "f5",
    "klatt", "klatt2", "klatt3", "klatt4", "klatt6",
    "Andy", "Annie", "Denis", "Gene", "Lee", "Mario", "Michael", "adam", "anika", "croak",
    "david", "linda", "max", "paul", "quincy", "rob", "steph", "travis", "victor", "zac",
)  # fmt: skip
#: The rest of espeak-ng's speaking (not novelty) variants. Language ID learns from them too, as
#: new timbres are what it meets in use; the corpus keeps to `VARIANTS`, so that its draws and
#: the scores recorded for the bundled recognizers stay reproducible.
EXTRA_VARIANTS: tuple[str, ...] = (
    "Alex", "Alicia", "Andrea", "AnxiousAndy", "Diogo", "Gene2", "Henrique", "Hugo", "Jacky",
    "Marco", "Mike", "Nguyen", "RicishayMax", "RicishayMax2", "RicishayMax3", "Storm", "announcer",
    "antonio", "aunty", "belinda", "benjamin", "boris", "caleb", "ed", "edward", "edward2",
    "grandma", "grandpa", "gustave", "iven", "iven2", "iven3", "iven4", "john", "kaukovalta",
    "klatt5", "marcelo", "michel", "miguel", "norbert", "pablo", "pedro", "robert", "sandro",
    "shelby", "steph2", "steph3",
)  # fmt: skip


def get_language(lang: str) -> SynthLanguage:
    """Looks a language up, with an error that lists the ones that can be synthesized."""
    try:
        return LANGUAGES[lang]
    except KeyError:
        raise KeyError(
            f"no synthetic-speech recipe for language {lang!r}; known: {', '.join(LANGUAGES)}"
        ) from None


def stable_hash(text: str) -> int:
    """A hash that, unlike `hash()`, is the same in every process (no PYTHONHASHSEED salt)."""
    return zlib.crc32(text.encode("utf-8"))


# --------------------------------------------------------------------------- vocabulary


def _strings(node: object) -> Iterator[str]:
    """Every string under a (possibly nested) CLDR mapping or sequence."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, Mapping):
        for value in node.values():
            yield from _strings(value)
    elif isinstance(node, Iterable):
        for value in node:
            yield from _strings(value)


def _cldr_names(locale_name: str) -> Iterator[str]:
    """Natural-language names from a locale's CLDR data.

    Only the `format` context of calendar names is read: Babel 2.18 can return another locale's
    `stand-alone` day and month names once a different locale has been read in the process.
    Abbreviated and narrow forms are skipped: they are not words.
    """
    from babel import Locale

    locale = Locale.parse(locale_name)
    data = locale._data  # no public accessor for date fields and plural currency names
    yield from locale.territories.values()
    yield from locale.languages.values()
    yield from locale.scripts.values()
    yield from locale.currencies.values()
    yield from _strings(data.get("currency_names_plural", {}))
    for calendar_part in (locale.days, locale.months, locale.quarters):
        yield from _strings(calendar_part.get("format", {}).get("wide", {}))
    yield from _strings(locale.day_periods.get("format", {}).get("wide", {}))
    yield from _strings(locale.eras.get("wide", {}))
    for zone in locale.meta_zones.values():
        yield from _strings(zone.get("long", {}))
    for unit in locale.unit_display_names.values():
        yield from _strings(unit.get("long", ""))
    date_fields = data.get("date_fields", {})
    for key, field in date_fields.items():
        if not key.endswith(("-short", "-narrow")):
            yield from _strings(field)


_SPLIT = re.compile(r"[\s\-‐‑–—/]+")
_STRIP = "\"'’‘“”«»„.,;:!?()[]{}¿¡…"


def _in_script(word: str, script: str) -> bool:
    """True when every character is a letter or mark (category L* / M*) of `script`.

    Marks count as letters: Devanagari vowel signs are marks, so `str.isalpha` would drop most
    Hindi and Marathi words.
    """
    if not word:
        return False
    for char in word:
        if unicodedata.category(char)[0] not in "LM":
            return False
        if not unicodedata.name(char, "").startswith(script + " "):
            return False
    return True


@cache
def _vocabulary(lang: str) -> tuple[str, ...]:
    spec = get_language(lang)
    words: set[str] = set()
    for name in _cldr_names(spec.babel_locale):
        for token in _SPLIT.split(unicodedata.normalize("NFC", name)):
            word = token.strip(_STRIP).lower()
            if len(word) >= 2 and _in_script(word, spec.script):
                words.add(word)
    if not words:
        raise RuntimeError(f"Babel's CLDR data gave no {spec.name} words for locale {spec.babel_locale!r}")
    return tuple(sorted(words))


def vocabulary(lang: str) -> list[str]:
    """Real words of `lang`, sorted, read from Babel's CLDR data at run time (cached per process).

    Words are NFC-normalised and lowercased; every character is a letter or mark of the
    language's script, so foreign names in another script never slip in.
    """
    return list(_vocabulary(lang))


# --------------------------------------------------------------------------- sentences


def _rng(seed: int, lang: str, purpose: str) -> np.random.Generator:
    """A generator that depends on seed, language and purpose, so that streams never coincide."""
    return np.random.default_rng([seed, stable_hash(lang), stable_hash(purpose)])


def _distinct(n: int, make: Callable[[], str], what: str) -> list[str]:
    """The first `n` distinct strings `make` returns, in order; an error when it keeps repeating
    itself (a vocabulary too small for `n`), rather than looping for ever."""
    found: dict[str, None] = {}
    for _ in range(100 * n + 1000):
        if len(found) >= n:
            break
        found.setdefault(make())
    if len(found) < n:
        raise ValueError(f"could only make {len(found)} distinct {what}")
    return list(found)


def make_sentences(
    lang: str,
    n: int,
    *,
    seed: int,
    min_words: int = 2,
    max_words: int = 5,
    vocab: Sequence[str] | None = None,
) -> list[str]:
    """`n` distinct word sequences of `min_words`..`max_words` words, deterministic in `seed` and `lang`.

    The "sentences" are not grammatical: they exist to give a model real phonotactics and
    spelling of the language. `vocab` restricts the words (e.g. to a small set so that a small
    recognizer learns fast); by default all of `vocabulary(lang)`.
    """
    if not 1 <= min_words <= max_words:
        raise ValueError(f"need 1 <= min_words <= max_words, got {min_words}, {max_words}")
    words = list(vocab) if vocab is not None else vocabulary(lang)
    if not words:
        raise ValueError("empty vocabulary")
    rng = _rng(seed, lang, "sentences")

    def sentence() -> str:
        picks = rng.integers(0, len(words), size=int(rng.integers(min_words, max_words + 1)))
        return " ".join(words[i] for i in picks)

    return _distinct(n, sentence, f"sentences of {n} from {len(words)} words")


#: How many of a language's commonest words running text draws on (`make_running_text`).
COMMON_WORDS = 20_000
_VOWELS = "aeiouy"


@cache
def _common_words(lang: str, size: int) -> tuple[tuple[str, ...], tuple[float, ...]]:
    if not wordlist.has_words(lang):
        return (), ()
    script = get_language(lang).script
    # A lone consonant is an elided article or pronoun cut from its word (French "l'", "d'"),
    # which a synthesizer would spell out.
    kept = [
        (w, share)
        for w, share in wordlist.common_words(lang, size)
        if _in_script(w, script) and (len(w) > 1 or unicodedata.normalize("NFD", w)[0] in _VOWELS)
    ]
    return tuple(w for w, _ in kept), tuple(share for _, share in kept)


def common_words(lang: str, size: int = COMMON_WORDS) -> tuple[list[str], np.ndarray]:
    """The `size` commonest words of `lang` in the installed `wordfreq` package (data CC BY-SA
    4.0) that are spelt in its script, and the share of use of each (summing to 1); none where
    wordfreq has no list of the language. Read at run time, as Babel's CLDR names are."""
    words, frequencies = _common_words(lang, size)
    shares = np.array(frequencies, dtype=np.float64)
    return list(words), shares / shares.sum() if len(shares) else shares


def make_running_text(lang: str, n: int, *, seed: int, min_words: int = 6, max_words: int = 14) -> list[str]:
    """`n` distinct sequences of `min_words`..`max_words` of the language's common words, each
    drawn as often as the language uses it: the short function words between longer ones that
    read speech runs together and sequences of CLDR names lack. Not grammatical either."""
    words, shares = common_words(lang)
    if not words:
        raise ValueError(f"no word list of {lang!r} to draw running text from")
    rng = _rng(seed, lang, "running text")

    def sentence() -> str:
        picks = rng.choice(len(words), size=int(rng.integers(min_words, max_words + 1)), p=shares)
        return " ".join(words[i] for i in picks)

    return _distinct(n, sentence, f"running texts of {n} from {len(words)} words")


def supports_numbers(lang: str) -> bool:
    """True when num2words can spell numbers in `lang` (of the 12: not hi, sw, mr, qu)."""
    spec = get_language(lang)
    try:
        number_words(spec.code, 1)
    except (ImportError, NotImplementedError):
        return False
    return True


def number_words(lang: str, value: int) -> list[str]:
    """`value` spelled out in `lang` by num2words, as lowercase in-script words.

    Punctuation and hyphens ("thirty-four", "mille, deux") become word breaks, the same
    tokenisation as the CLDR vocabulary, so a recognizer's alphabet stays letters and spaces.
    Raises NotImplementedError where num2words does not know the language.
    """
    from num2words import num2words

    spec = get_language(lang)
    spelled = unicodedata.normalize("NFC", num2words(value, lang=spec.code))
    words = [token.strip(_STRIP).lower() for token in _SPLIT.split(spelled)]
    return [word for word in words if word and _in_script(word, spec.script)]


def _number_value(rng: np.random.Generator) -> int:
    """A number of the kinds speech is full of: small counts, round hundreds, years, larger amounts."""
    kind = int(rng.integers(4))
    if kind == 0:
        return int(rng.integers(0, 100))
    if kind == 1:
        return int(rng.integers(1, 100)) * 100
    if kind == 2:
        return int(rng.integers(1900, 2051))
    return int(rng.integers(100, 100_000))


def make_number_sentences(
    lang: str,
    n: int,
    *,
    seed: int,
    max_words: int = 2,
    vocab: Sequence[str] | None = None,
) -> list[str]:
    """`n` distinct "numbers and names" sentences: 0..`max_words` CLDR words around a spelled-out number.

    Numbers are what recognizers trained on names alone get wrong, and what a numbers-and-names
    error rate measures; num2words spells them at run time, so no text is kept in the repository.
    """
    if not supports_numbers(lang):
        raise ValueError(f"num2words cannot spell numbers in {get_language(lang).name} ({lang})")
    words = list(vocab) if vocab is not None else vocabulary(lang)
    rng = _rng(seed, lang, "numbers")

    def sentence() -> str:
        before = [words[i] for i in rng.integers(0, len(words), size=int(rng.integers(0, max_words + 1)))]
        after = [words[i] for i in rng.integers(0, len(words), size=int(rng.integers(0, 2)))]
        return " ".join([*before, *number_words(lang, _number_value(rng)), *after])

    return _distinct(n, sentence, f"number sentences of {n}")


# --------------------------------------------------------------------------- speech


def _espeak() -> str:
    path = shutil.which(ESPEAK)
    if path is None:
        raise RuntimeError(
            "espeak-ng is not installed or not on PATH; install it (Debian: apt-get install espeak-ng)"
        )
    return path


def synthesize(
    text: str,
    lang: str,
    *,
    variant: str | None = None,
    speed: int = 165,
    pitch: int = 50,
    sample_rate: int = 16000,
) -> np.ndarray:
    """Speaks `text` in `lang` with espeak-ng; float32 mono in [-1, 1] at `sample_rate`.

    The text goes through stdin (`-b 1`: UTF-8), never the command line, so a word that starts
    with `-` cannot be taken for an option and no shell is involved.
    """
    import soundfile as sf
    import soxr

    spec = get_language(lang)
    voice = f"{spec.espeak_voice}+{variant}" if variant else spec.espeak_voice
    command = [_espeak(), "-b", "1", "-v", voice, "-s", str(int(speed)), "-p", str(int(pitch)), "--stdout"]
    result = subprocess.run(command, input=text.encode("utf-8"), capture_output=True, check=False)
    if result.returncode != 0 or not result.stdout:
        message = result.stderr.decode("utf-8", "replace").strip()
        raise RuntimeError(f"espeak-ng failed for voice {voice!r} (exit {result.returncode}): {message}")
    audio, rate = sf.read(io.BytesIO(result.stdout), dtype="float32", always_2d=True)
    audio = audio.mean(axis=1)
    if rate != sample_rate:
        audio = soxr.resample(audio, rate, sample_rate)
    return np.clip(audio, -1.0, 1.0).astype(np.float32, copy=False)


#: espeak-ng's stress marks: left out of phoneme transcripts, which keep phones, length and word breaks.
_STRESS = str.maketrans("", "", "ˈˌ")


def phonemize(texts: Sequence[str], lang: str, *, stress: bool = False) -> list[str]:
    """IPA transcripts of `texts` by espeak-ng's own letter-to-sound rules, one per text, words
    kept apart by spaces and stress marks dropped (kept with `stress`, for a synthesizer).

    This is what makes a phoneme-target backbone trainable on any labelled speech (real
    transcripts too): espeak-ng knows the spelling rules of about a hundred languages. A
    language espeak-ng lacks under our code is tried under its code as a voice name.
    """
    voice = LANGUAGES[lang].espeak_voice if lang in LANGUAGES else lang
    lines = [" ".join(t.split()) for t in texts]
    command = [_espeak(), "-q", "--ipa", "-b", "1", "-v", voice]
    result = subprocess.run(command, input="\n".join(lines).encode("utf-8"), capture_output=True, check=False)
    output = result.stdout.decode("utf-8", "replace").splitlines()
    if result.returncode != 0:
        message = result.stderr.decode("utf-8", "replace").strip()
        raise RuntimeError(f"espeak-ng cannot phonemize {lang!r} (voice {voice!r}): {message}")
    if len(output) != len(lines):
        # espeak-ng split or merged a line (a clause break inside it): phonemize one by one.
        output = [
            phonemize([line], lang, stress=stress)[0] if len(lines) > 1 else " ".join(output)
            for line in lines
        ]
    return [" ".join((line if stress else line.translate(_STRESS)).split()) for line in output]


@dataclass
class Utterance:
    """One synthesized utterance and how it was spoken (so held-out voices can be chosen)."""

    text: str
    lang: str
    audio: np.ndarray
    variant: str
    speed: int
    pitch: int


def synth_utterances(
    lang: str,
    n: int,
    *,
    seed: int,
    variants: Sequence[str] = VARIANTS,
    speeds: tuple[int, int] = (130, 190),
    pitches: tuple[int, int] = (30, 70),
    vocab: Sequence[str] | None = None,
    min_words: int = 2,
    max_words: int = 5,
    sample_rate: int = 16000,
    workers: int = 4,
) -> list[Utterance]:
    """`n` utterances of distinct sentences (see `make_sentences`), spoken by `speak_texts`."""
    sentences = make_sentences(lang, n, seed=seed, min_words=min_words, max_words=max_words, vocab=vocab)
    return speak_texts(
        sentences,
        lang,
        seed=seed,
        variants=variants,
        speeds=speeds,
        pitches=pitches,
        sample_rate=sample_rate,
        workers=workers,
    )


def speak_texts(
    texts: Sequence[str],
    lang: str,
    *,
    seed: int,
    variants: Sequence[str] = VARIANTS,
    speeds: tuple[int, int] = (130, 190),
    pitches: tuple[int, int] = (30, 70),
    sample_rate: int = 16000,
    workers: int = 4,
) -> list[Utterance]:
    """Speaks given texts, each with a variant, speed and pitch drawn deterministically from `seed`.

    All random draws happen up front in this thread, so the result is deterministic however
    the espeak-ng subprocesses are scheduled; they run in a thread pool because each is a
    separate process and the machine's cores would otherwise idle.
    """
    if not variants:
        raise ValueError("need at least one voice variant")
    rng = _rng(seed, lang, "voices")
    plans = [
        (
            text,
            str(variants[int(rng.integers(len(variants)))]),
            int(rng.integers(speeds[0], speeds[1] + 1)),
            int(rng.integers(pitches[0], pitches[1] + 1)),
        )
        for text in texts
    ]

    def speak(plan: tuple[str, str, int, int]) -> Utterance:
        text, variant, speed, pitch = plan
        audio = synthesize(text, lang, variant=variant, speed=speed, pitch=pitch, sample_rate=sample_rate)
        return Utterance(text=text, lang=lang, audio=audio, variant=variant, speed=speed, pitch=pitch)

    _espeak()  # fail once, clearly, before starting the pool
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return list(pool.map(speak, plans))
