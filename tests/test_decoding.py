"""CTC beam search with a word LM: what it reads, what the LM changes, and the LM's file."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from asr_worker import decoding
from asr_worker.decoding import DEFAULT_BEAM, LM_FILE, BeamSettings, CtcTokens, WordLM, beam_search
from asr_worker.recipes import lm as lm_tuning
from asr_worker.recipes.lm import tune

TOKENS = CtcTokens(["<pad>", "|", "c", "a", "o", "t", "d", "g", "s"], blank=0, delimiter=1)


def _frames(*columns: dict[str, float]) -> np.ndarray:
    """Log-probabilities for frames given as {token: probability}; the rest share what is left."""
    rows = []
    for column in columns:
        row = np.full(len(TOKENS.tokens), 1e-6)
        for token, p in column.items():
            row[TOKENS.tokens.index(token)] = p
        row /= row.sum()
        rows.append(np.log(row))
    return np.array(rows)


def _spell(text: str) -> list[dict[str, float]]:
    """Confident frames that spell `text`, a blank between letters, `|` between words."""
    frames: list[dict[str, float]] = []
    for i, word in enumerate(text.split()):
        if i:
            frames.append({"|": 0.99})
        for letter in word:
            frames += [{letter: 0.99}, {"<pad>": 0.99}]
    return frames


def test_without_an_lm_the_search_reads_confident_frames_as_greedy_decoding_does() -> None:
    log_probs = _frames(*_spell("cat dog"))
    assert beam_search(log_probs, TOKENS, None).text == "cat dog"


def test_a_doubled_letter_needs_a_blank_between_its_two_frames() -> None:
    held = _frames({"c": 0.99}, {"a": 0.99}, {"t": 0.99}, {"t": 0.99})
    doubled = _frames({"c": 0.99}, {"a": 0.99}, {"t": 0.99}, {"<pad>": 0.99}, {"t": 0.99})
    assert beam_search(held, TOKENS, None).text == "cat"
    assert beam_search(doubled, TOKENS, None).text == "catt"


def test_the_word_lm_turns_a_slightly_likelier_misspelling_into_the_known_word() -> None:
    """'o' is a little likelier than 'a' in the middle frame; only 'cat' is a word the LM knows."""
    log_probs = _frames({"c": 0.99}, {"<pad>": 0.99}, {"o": 0.52, "a": 0.46}, {"<pad>": 0.99}, {"t": 0.99})
    lm = WordLM.train(["the cat sat", "a cat"])
    assert beam_search(log_probs, TOKENS, None).text == "cot"
    assert beam_search(log_probs, TOKENS, lm).text == "cat"


def test_a_word_the_lm_never_saw_is_still_written_when_the_speech_is_clear() -> None:
    lm = WordLM.train(["cat cat", "the cat"])
    assert beam_search(_frames(*_spell("dog")), TOKENS, lm).text == "dog"


def test_each_word_comes_with_the_frames_it_was_spoken_in() -> None:
    # frames: c _ a _ t _ | d _ o _ g _
    decoded = beam_search(_frames(*_spell("cat dog")), TOKENS, WordLM.train(["cat dog"]))
    assert decoded.words == [("cat", 0, 5), ("dog", 7, 12)]


def test_stretches_of_certain_silence_only_move_the_words_in_time() -> None:
    """Frames where nothing but blank is likely skip the search's bookkeeping; the reading is the same."""
    silence = [{"<pad>": 0.999}] * 5
    ambiguous = [{"c": 0.99}, {"<pad>": 0.99}, {"o": 0.52, "a": 0.46}, {"<pad>": 0.99}, {"t": 0.99}]
    lm = WordLM.train(["the cat sat", "a cat"])
    plain = beam_search(_frames(*ambiguous), TOKENS, lm)
    padded = beam_search(_frames(*silence, *ambiguous[:3], *silence, *ambiguous[3:], *silence), TOKENS, lm)
    assert plain.words == [("cat", 0, 5)]
    assert padded.words == [("cat", 5, 15)]


def test_a_narrow_beam_loses_a_word_to_the_bonus_for_closing_one_early() -> None:
    """A faint word boundary after 'ca' earns the word bonus at once, while 'cat' earns it only
    when its last letter is heard: one beam keeps the early boundary and writes 'ca t', two keep both."""
    lm = WordLM.train(["cat", "a cat", "the cat"])
    frames = _frames(
        {"c": 0.99}, {"<pad>": 0.99}, {"a": 0.99}, {"<pad>": 0.97, "|": 0.02}, {"t": 0.99}, {"<pad>": 0.99}
    )

    def read(beam: int, bonus: float) -> str:
        return beam_search(frames, TOKENS, lm, BeamSettings(beam=beam, lm_weight=1.0, word_bonus=bonus)).text

    assert read(1, 0.0) == read(2, 10.0) == "cat"
    assert read(1, 10.0) == "ca t"
    assert BeamSettings().beam == DEFAULT_BEAM == lm.settings().beam > 16


def test_witten_bell_probabilities_of_every_word_and_the_unknown_sum_to_one() -> None:
    lm = WordLM.train(["a cat sat", "a dog sat", "the cat"])
    lm.oov_letter_penalty = 0.0
    for history in ("<s>", "a", "cat", "never-seen"):
        total = sum(math.exp(lm.log_prob(history, w)) for w in lm.unigrams)
        total += math.exp(lm.log_prob(history, "zzz"))  # the one <unk> type
        assert total == pytest.approx(1.0), history
    assert lm.log_prob("a", "cat") > lm.log_prob("a", "the")  # seen after "a" beats unseen after "a"


def test_unknown_words_cost_more_the_longer_they_are() -> None:
    lm = WordLM.train(["a cat"])
    assert lm.log_prob("a", "zz") > lm.log_prob("a", "zzzzzz")


def test_the_lm_file_keeps_the_tuned_weights_and_a_broken_one_is_refused(tmp_path: Path) -> None:
    lm = WordLM.train(["a cat sat"])
    lm.lm_weight, lm.word_bonus = 1.5, 3.0
    lm.save(tmp_path)
    loaded = WordLM.load(tmp_path)
    assert loaded is not None and loaded.unigrams == lm.unigrams and loaded.bigrams == lm.bigrams
    assert loaded.settings(beam=8) == BeamSettings(beam=8, lm_weight=1.5, word_bonus=3.0)
    assert WordLM.load(tmp_path / "elsewhere") is None
    (tmp_path / LM_FILE).write_text('{"unigrams": [1, 2]}')
    with pytest.raises(ValueError, match="is not a word LM"):
        WordLM.load(tmp_path)


def test_tuning_keeps_the_weights_that_read_held_out_speech_best() -> None:
    """A dev set whose middle letters lean the wrong way rewards trusting the LM."""
    lm = WordLM.train(["the cat sat", "a cat", "cat"])
    ambiguous = _frames({"c": 0.99}, {"<pad>": 0.99}, {"o": 0.52, "a": 0.46}, {"<pad>": 0.99}, {"t": 0.99})
    tuned, cer, wer = tune(lm, [ambiguous] * 3, ["cat"] * 3, TOKENS, weights=(0.0, 1.0), bonuses=(0.0,))
    assert (tuned.lm_weight, tuned.word_bonus, cer, wer) == (1.0, 0.0, 0.0, 0.0)
    assert tuned.unigrams == lm.unigrams


def test_of_settings_that_read_dev_about_as_well_tuning_keeps_the_lightest_lm() -> None:
    """Weights 1 and 2 both read the dev frames perfectly; the lighter one trusts the LM less
    where speech has words it never saw, so it is kept whichever the grid tries first."""
    lm = WordLM.train(["the cat sat", "a cat", "cat"])
    ambiguous = _frames({"c": 0.99}, {"<pad>": 0.99}, {"o": 0.52, "a": 0.46}, {"<pad>": 0.99}, {"t": 0.99})
    tuned, cer, wer = tune(lm, [ambiguous] * 3, ["cat"] * 3, TOKENS, weights=(2.0, 1.0), bonuses=(4.0, 0.0))
    assert (tuned.lm_weight, tuned.word_bonus, cer, wer) == (1.0, 0.0, 0.0, 0.0)
    # A setting worse by more than the tolerance is not kept for being lighter: no LM reads 'cot'.
    tuned, _, _ = tune(lm, [ambiguous] * 3, ["cat"] * 3, TOKENS, weights=(0.0, 1.0), bonuses=(0.0,))
    assert tuned.lm_weight == 1.0


def test_tuning_raises_the_unseen_word_penalty_when_dev_speech_leans_to_a_made_up_word(
    tmp_path: Path,
) -> None:
    """The speech says 'cot' firmly; only 'cat' is a word. At weight 1 a made-up word free of its
    letter penalty outscores the LM's word, with the penalty it does not, and tuning keeps the
    penalty (the lightest that reads dev right), which the LM's file then carries."""
    lm = WordLM.train(["the cat sat", "a cat", "cat"])
    leaning = _frames({"c": 0.99}, {"<pad>": 0.99}, {"o": 0.97, "a": 0.02}, {"<pad>": 0.99}, {"t": 0.99})
    fusion = BeamSettings(beam=16, lm_weight=1.0, word_bonus=0.0)
    assert beam_search(leaning, TOKENS, replace(lm, oov_letter_penalty=0.0), fusion).text == "cot"
    penalties = (2.0, 1.0, 0.0)
    tuned, cer, _ = tune(
        lm, [leaning] * 3, ["cat"] * 3, TOKENS, weights=(1.0,), bonuses=(0.0,), oov_penalties=penalties
    )
    assert (tuned.oov_letter_penalty, cer) == (1.0, 0.0)
    tuned.save(tmp_path)
    loaded = WordLM.load(tmp_path)
    assert loaded is not None and loaded.oov_letter_penalty == 1.0


CLEAR_CAT = _frames({"c": 0.99}, {"<pad>": 0.99}, {"a": 0.99}, {"<pad>": 0.99}, {"t": 0.99})
LEANING_COT = _frames({"c": 0.99}, {"<pad>": 0.99}, {"o": 0.52, "a": 0.46}, {"<pad>": 0.99}, {"t": 0.99})


def test_raced_tuning_reads_the_rest_only_with_the_settings_the_first_round_kept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every other utterance makes the first round; without the LM 'cat' is read 'cot' there, so
    weight 0 is dropped and never searches the other half."""
    lm = WordLM.train(["the cat sat", "a cat", "cat"])
    searched: list[float] = []

    def counting(
        frames: np.ndarray, tokens: CtcTokens, word_lm: WordLM, settings: BeamSettings
    ) -> decoding.Decoded:
        searched.append(settings.lm_weight)
        return beam_search(frames, tokens, word_lm, settings)

    monkeypatch.setattr(lm_tuning, "beam_search", counting)
    frames = [LEANING_COT, CLEAR_CAT] * 2
    grid = {"weights": (0.0, 1.0), "bonuses": (0.0,), "oov_penalties": (1.0,)}
    tuned, cer, _ = tune(lm, frames, ["cat"] * 4, TOKENS, race=2, **grid)  # type: ignore[arg-type]
    assert (tuned.lm_weight, cer) == (1.0, 0.0)
    assert (searched.count(0.0), searched.count(1.0)) == (2, 4)


def test_raced_tuning_chooses_on_every_utterance_among_the_settings_kept() -> None:
    """Both weights read the first round's clear speech right; the other half leans to 'cot',
    which only the LM corrects, so the heavier weight wins though the lighter tied at first."""
    lm = WordLM.train(["the cat sat", "a cat", "cat"])
    frames = [CLEAR_CAT, LEANING_COT] * 2
    tuned, cer, _ = tune(lm, frames, ["cat"] * 4, TOKENS, weights=(0.0, 1.0), bonuses=(0.0,), race=2)
    assert (tuned.lm_weight, cer) == (1.0, 0.0)


def test_tuning_weighs_words_as_well_as_letters() -> None:
    """Both settings misread one letter in nine; the LM's also splits a word in two, so it loses.

    Without the LM the vowel comes out wrong ('cot'); with it the vowel is right, but the
    compound 'catdog' is cut into the two words the LM knows: as many letters wrong, twice the words.
    """
    lm = WordLM.train(["cat dog", "cat", "dog", "a cat", "at"])
    vowel = _frames(
        {"c": 0.99}, {"<pad>": 0.99}, {"o": 0.55, "a": 0.43}, {"|": 0.45, "<pad>": 0.55}, {"t": 0.99}
    )
    compound = _frames(
        *({letter: 0.99} for letter in ("c", "<pad>", "a", "t")),
        {"|": 0.3, "<pad>": 0.7},
        *({letter: 0.99} for letter in "dog"),
    )
    frames, references = [vowel, compound], ["cat", "catdog"]
    with_lm = BeamSettings(beam=16, lm_weight=0.5, word_bonus=0.0)
    assert [beam_search(f, TOKENS, lm, with_lm).text for f in frames] == ["cat", "cat dog"]
    tuned, cer, wer = tune(lm, frames, references, TOKENS, weights=(0.5, 0.0), bonuses=(0.0,))
    assert tuned.lm_weight == 0.0 and (cer, wer) == pytest.approx((1 / 9, 0.5))


def test_words_joined_by_an_apostrophe_are_scored_as_the_known_words_they_join() -> None:
    """Word lists count French "l'" as the word "l": "l'amérique" is no unknown word to them."""
    lm = WordLM({"l": 50, "amérique": 5, "est": 20}, {})
    assert lm.log_prob("<s>", "l'amérique") == pytest.approx(
        lm.log_prob("<s>", "l") + lm.log_prob("l", "amérique")
    )
    assert lm.log_prob("<s>", "l'amériqu") < lm.log_prob("<s>", "l'amérique") - 5
    assert lm.is_prefix("l'am") and lm.is_prefix("l'") and not lm.is_prefix("x'am")


def test_a_lexicon_lm_reads_the_installed_word_list_when_it_loads_and_stores_no_word(tmp_path: Path) -> None:
    lexicon = decoding.Lexicon("fr", 2000, alphabet="abcdefghijklmnopqrstuvwxyzéèàç'")
    lm = WordLM({}, {}, lexicon=lexicon)
    assert 1500 < lm.vocabulary_size <= 2000 and lm.counts["de"] > lm.counts["maison"] > 0
    assert all(set(word) <= set(lexicon.alphabet) for word in lm.counts)  # none it could not spell
    lm.with_fusion(penalty=3.0, weight=0.75, bonus=4.0).save(tmp_path)
    stored = (tmp_path / LM_FILE).read_text(encoding="utf-8")
    assert "maison" not in stored and '"unigrams": {}' in stored
    loaded = WordLM.load(tmp_path)
    assert loaded is not None and loaded.counts == lm.counts and loaded.lexicon == lexicon
    assert (loaded.oov_letter_penalty, loaded.lm_weight, loaded.word_bonus) == (3.0, 0.75, 4.0)


def test_a_lexicon_of_a_language_the_word_list_lacks_is_refused_not_replaced(tmp_path: Path) -> None:
    """wordfreq answers for Swahili with English's words; the LM must not take them."""
    with pytest.raises(ValueError, match="no word list of 'sw'"):
        WordLM({}, {}, lexicon=decoding.Lexicon("sw", 100, alphabet="abc"))
    WordLM({}, {}, lexicon=decoding.Lexicon("es", 100, alphabet="abcdefghijklmnopqrstuvwxyz")).save(tmp_path)
    (tmp_path / LM_FILE).write_text((tmp_path / LM_FILE).read_text().replace('"es"', '"sw"'))
    with pytest.raises(ValueError, match="is not a word LM: wordfreq has no word list"):
        WordLM.load(tmp_path)


def test_recognizers_tuned_together_share_the_setting_that_reads_all_their_speech_best() -> None:
    """Two recognizers, each with its own LM and alphabet order: one setting for both."""
    other = CtcTokens(["<pad>", "|", "a", "c", "o", "t", "d", "g", "s"], blank=0, delimiter=1)
    ambiguous = _frames({"c": 0.99}, {"<pad>": 0.99}, {"o": 0.52, "a": 0.46}, {"<pad>": 0.99}, {"t": 0.99})
    swapped = ambiguous[:, [0, 1, 3, 2, 4, 5, 6, 7, 8]]  # the same frames in the other alphabet's order
    first, second = WordLM.train(["the cat sat"]), WordLM.train(["a cat"])
    tuned, cer, wer = lm_tuning.tune_together(
        [(first, TOKENS, [ambiguous] * 2, ["cat"] * 2), (second, other, [swapped], ["cat"])],
        weights=(0.0, 1.0),
        bonuses=(0.0,),
        oov_penalties=(1.0,),
    )
    assert [lm.lm_weight for lm in tuned] == [1.0, 1.0] and (cer, wer) == (0.0, 0.0)
    assert tuned[0].unigrams == first.unigrams and tuned[1].unigrams == second.unigrams


def test_an_lm_tuned_at_a_narrow_beam_is_searched_that_wide_and_no_wider_than_the_worker_asks(
    tmp_path: Path,
) -> None:
    lm = WordLM.train(["a cat"]).with_fusion(penalty=2.0, weight=0.5, bonus=1.0, beam=16)
    lm.save(tmp_path)
    loaded = WordLM.load(tmp_path)
    assert loaded is not None and loaded.beam == 16
    assert loaded.settings(beam=64) == BeamSettings(beam=16, lm_weight=0.5, word_bonus=1.0)
    assert loaded.settings(beam=8).beam == 8
    assert WordLM.train(["a cat"]).settings(beam=64).beam == 64  # tuned at the worker's width
