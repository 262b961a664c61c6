"""Fast checks of synthetic speech: real in-script words, deterministic sentences, sane audio."""

from __future__ import annotations

import shutil
import unicodedata

import numpy as np
import pytest

from lidroute.train import synth

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")


@pytest.mark.parametrize(("lang", "script"), [("en", "LATIN"), ("ru", "CYRILLIC"), ("hi", "DEVANAGARI"),
                                              ("mr", "DEVANAGARI")])  # fmt: skip
def test_vocabulary_is_large_and_in_script(lang: str, script: str) -> None:
    words = synth.vocabulary(lang)
    assert len(words) > 300, f"{lang}: only {len(words)} words"
    assert words == sorted(set(words))
    for word in words:
        assert word == unicodedata.normalize("NFC", word).lower()
        assert all(unicodedata.category(c)[0] in "LM" for c in word), word
        assert all(unicodedata.name(c).startswith(script + " ") for c in word), word


def test_devanagari_words_keep_their_vowel_signs() -> None:
    # Vowel signs are marks (category Mc/Mn): a str.isalpha filter would have dropped these words.
    words = synth.vocabulary("hi")
    with_marks = [w for w in words if any(unicodedata.category(c).startswith("M") for c in w)]
    assert len(with_marks) > len(words) // 2


def test_vocabulary_does_not_depend_on_what_was_read_before() -> None:
    # Babel 2.18 can hand back another locale's stand-alone calendar names once that locale has
    # been read; the vocabulary reads `format` names only, so the order must not matter.
    synth._vocabulary.cache_clear()
    german_first = synth.vocabulary("de")
    synth._vocabulary.cache_clear()
    synth.vocabulary("sw")
    synth.vocabulary("tr")
    assert synth.vocabulary("de") == german_first


def test_every_language_has_words_and_a_voice() -> None:
    assert {"en", "es", "fr", "de", "pt", "it", "ru", "hi", "sw", "tr", "mr", "qu"} <= set(synth.LANGUAGES)
    for code, spec in synth.LANGUAGES.items():
        assert spec.code == code
        assert synth.vocabulary(code), code


def test_unknown_language_is_a_clear_error() -> None:
    with pytest.raises(KeyError, match="known"):
        synth.vocabulary("xx")


def test_sentences_are_deterministic_distinct_and_seeded() -> None:
    a = synth.make_sentences("sw", 50, seed=3)
    assert a == synth.make_sentences("sw", 50, seed=3)
    assert a != synth.make_sentences("sw", 50, seed=4)
    assert a != synth.make_sentences("tr", 50, seed=3)
    assert len(set(a)) == 50
    vocab = set(synth.vocabulary("sw"))
    for sentence in a:
        words = sentence.split()
        assert 2 <= len(words) <= 5
        assert set(words) <= vocab


def test_running_text_draws_common_words_by_use_and_refuses_a_language_without_a_list() -> None:
    words, shares = synth.common_words("fr")
    assert len(words) > 15000 and shares.sum() == pytest.approx(1.0) and words[0] == "de"
    assert "l" not in words and "à" in words  # an elided consonant is no word; a vowel can be
    texts = synth.make_running_text("fr", 50, seed=1)
    assert texts == synth.make_running_text("fr", 50, seed=1) != synth.make_running_text("fr", 50, seed=2)
    assert len(set(texts)) == 50 and all(6 <= len(t.split()) <= 14 for t in texts)
    with pytest.raises(ValueError, match="no word list of 'qu'"):
        synth.make_running_text("qu", 1, seed=0)


def test_sentences_from_a_restricted_vocabulary() -> None:
    vocab = synth.vocabulary("es")[:10]
    sentences = synth.make_sentences("es", 30, seed=0, vocab=vocab, min_words=1, max_words=3)
    assert all(set(s.split()) <= set(vocab) for s in sentences)
    with pytest.raises(ValueError, match="distinct"):
        synth.make_sentences("es", 100, seed=0, vocab=vocab[:2], min_words=1, max_words=1)


@needs_espeak
@pytest.mark.parametrize("lang", ["en", "hi", "sw"])
def test_synthesize_returns_16k_float32_of_plausible_length(lang: str) -> None:
    text = " ".join(synth.make_sentences(lang, 1, seed=0, min_words=3, max_words=3))
    audio = synth.synthesize(text, lang)
    assert audio.dtype == np.float32
    assert audio.ndim == 1
    seconds = len(audio) / 16000
    assert 0.5 < seconds < 8.0, seconds
    assert np.abs(audio).max() <= 1.0
    assert np.abs(audio).max() > 0.05  # not silence


@needs_espeak
def test_synthesize_rate_speed_and_variant() -> None:
    text = synth.make_sentences("es", 1, seed=0, min_words=3, max_words=3)[0]
    slow = synth.synthesize(text, "es", speed=100)
    fast = synth.synthesize(text, "es", speed=250)
    assert len(slow) > 1.5 * len(fast)
    at_8k = synth.synthesize(text, "es", speed=100, sample_rate=8000)
    assert abs(len(at_8k) * 2 - len(slow)) < 100
    assert not np.array_equal(synth.synthesize(text, "es", variant="f2"), synth.synthesize(text, "es"))


@needs_espeak
def test_text_that_looks_like_an_option_is_spoken() -> None:
    assert len(synth.synthesize("--help", "en")) > 1600


@needs_espeak
def test_synth_utterances_are_deterministic() -> None:
    a = synth.synth_utterances("tr", 6, seed=1, variants=("m1", "f2", "klatt"))
    b = synth.synth_utterances("tr", 6, seed=1, variants=("m1", "f2", "klatt"))
    assert [(u.text, u.variant, u.speed, u.pitch) for u in a] == [
        (u.text, u.variant, u.speed, u.pitch) for u in b
    ]
    assert all(np.array_equal(x.audio, y.audio) for x, y in zip(a, b, strict=True))
    assert all(u.lang == "tr" and u.variant in {"m1", "f2", "klatt"} for u in a)
    assert all(130 <= u.speed <= 190 and 30 <= u.pitch <= 70 for u in a)


def test_missing_espeak_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(synth.shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match="espeak-ng is not installed"):
        synth.synthesize("hello", "en")


# ---------------------------------------------------------------------- Kokoro's neural voices
def test_phonemize_keeps_stress_marks_for_a_synthesizer_only() -> None:
    plain, stressed = (
        synth.phonemize(["hermoso"], "es")[0],
        synth.phonemize(["hermoso"], "es", stress=True)[0],
    )
    assert "ˈ" in stressed and "ˈ" not in plain and stressed.replace("ˈ", "") == plain


def test_kokoro_speaks_every_language_in_new_voices_drawn_from_the_seed() -> None:
    """One Kokoro voice per utterance, blended anew; the same seed gives the same speech."""
    from lidroute.train.kokoro import Kokoro, kokoro_utterances

    kokoro = Kokoro()
    spoken = {lang: kokoro_utterances(lang, 2, seed=3, kokoro=kokoro) for lang in ("sw", "mr")}
    for lang, utterances in spoken.items():
        texts = synth.make_sentences(lang, 2, seed=3)
        assert [u.text for u in utterances] == texts  # the same sentences espeak-ng would speak
        for u in utterances:
            seconds = len(u.audio) / 16000
            assert u.audio.dtype == np.float32 and 0.3 < seconds < 15 and np.abs(u.audio).max() > 0.05
            assert u.variant.startswith("kokoro[") and 80 <= u.speed <= 125
        assert utterances[0].variant != utterances[1].variant
    again = kokoro_utterances("sw", 2, seed=3, kokoro=kokoro)
    assert [u.variant for u in again] == [u.variant for u in spoken["sw"]]
    np.testing.assert_array_equal(again[0].audio, spoken["sw"][0].audio)
