"""The training commands that make the offline models: what they write, and how they fail."""

from __future__ import annotations

import itertools
import re
import subprocess
import sys
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest
import torch

from asr_worker.model import CtcModel
from asr_worker.recipes.ctc import (
    TRAINING_WORDS,
    Perturbation,
    error_rate,
    perturb,
    train_ctc,
    training_words,
    transcribe,
)
from lid_service.model import LanguageIdModel
from lidroute.audio import speech_segments
from lidroute.registry import ModelSpec, kind_of
from lidroute.train.synth import synth_utterances


def test_error_rate_is_corpus_level() -> None:
    # 1 substitution + 3 deletions over 9 reference characters (spaces count).
    assert error_rate(["abc de", "xyz"], ["abd de", ""]) == pytest.approx(4 / 9)
    assert error_rate(["abc de"], ["abc"], words=True) == pytest.approx(0.5)


def test_a_short_ctc_run_writes_a_directory_the_worker_loads(tmp_path: Path) -> None:
    out = tmp_path / "sw"
    metrics = train_ctc(out, "sw", seed=1, max_train_seconds=3, vocab_words=12, n_train=16, n_eval=4)
    assert {"cer", "wer", "params", "steps", "train_seconds"} <= set(metrics)
    assert metrics["steps"] >= 1
    words = training_words(out)
    assert words is not None and len(words) == 12
    assert (out / TRAINING_WORDS).exists() and (out / "README.md").exists()
    assert "CER" in (out / "README.md").read_text()
    model = CtcModel("sw", ModelSpec(uri=str(out)))
    audio = synth_utterances("sw", 1, seed=5, vocab=words)[0].audio
    assert isinstance(model.transcribe(audio).text, str)


def test_a_short_lid_run_of_a_chosen_width_on_every_voice_writes_what_the_service_loads(
    tmp_path: Path,
) -> None:
    from lid_service.recipes.ecapa import train_lid
    from lid_service.recipes.recipe import CALIBRATION_VARIANTS, EVAL_VARIANTS
    from lidroute.train.synth import EXTRA_VARIANTS, VARIANTS

    out = tmp_path / "lid"
    metrics = train_lid(
        out,
        ["en", "sw"],
        utterances_per_language=8,
        max_train_seconds=None,
        max_steps=2,
        channels=16,
        extra_voices=True,
        batch_size=4,
    )
    assert metrics["steps"] == 2 and 0.0 <= metrics["acc_1.0"] <= 1.0
    assert "channels: [16, 16, 16, 16, 48]" in (out / "hyperparams.yaml").read_text()
    card = (out / "README.md").read_text()
    assert "channels=16, extra_voices=True, batch_size=4)" in card and "batches of 4 random crops" in card
    # Stored in half precision (the card's scores are measured on these files), loaded as float32.
    stored = torch.load(out / "embedding_model.ckpt")
    assert {v.dtype for v in stored.values() if v.is_floating_point()} == {torch.float16}
    voices = len({*VARIANTS, *EXTRA_VARIANTS} - {*EVAL_VARIANTS, *CALIBRATION_VARIANTS})
    assert f"{voices} espeak-ng voice variants" in card
    lid = LanguageIdModel(str(out), savedir=tmp_path / "loaded")
    assert set(lid.codes) == {"en", "sw"}


def test_a_further_lid_run_starts_from_the_earlier_model_at_its_width_and_its_card_lists_both_runs(
    tmp_path: Path,
) -> None:
    from lid_service.recipes.ecapa import train_lid

    tiny = {"utterances_per_language": 4, "max_train_seconds": None, "max_steps": 1, "batch_size": 4}
    first, further = tmp_path / "first", tmp_path / "further"
    train_lid(first, ["en", "sw"], channels=16, **tiny)
    # At a vanishing learning rate the further run's weights are the earlier ones: it started there.
    train_lid(further, ["en", "sw"], seed=1, init=first, lr=1e-9, **tiny)
    assert "channels: [16, 16, 16, 16, 48]" in (further / "hyperparams.yaml").read_text()
    for name in ("embedding_model.ckpt", "classifier.ckpt"):
        before, after = torch.load(first / name), torch.load(further / name)
        # Batch-norm statistics move in any training pass, and the temperature is fitted again.
        kept = [k for k in before if "running_" not in k and "num_batches" not in k and k != "1.weight"]
        assert kept and all(torch.equal(before[k], after[k]) for k in kept)
    card = (further / "README.md").read_text()
    assert card.count("`lid_service.recipes.ecapa.train_lid(") == 2 and "2 runs, each from the model" in card
    assert "seed=1, utterances_per_language=4, max_train_seconds=None, max_steps=1" in card
    assert f"init={str(first)!r}, lr=1e-09)" in card
    lid = LanguageIdModel(str(further), savedir=tmp_path / "loaded")
    assert set(lid.codes) == {"en", "sw"}

    with pytest.raises(ValueError, match=r"knows \['en: English', 'sw: Swahili'\]"):
        train_lid(tmp_path / "other", ["sw", "en"], init=first, **tiny)
    with pytest.raises(ValueError, match="has width 16"):
        train_lid(tmp_path / "other", ["en", "sw"], init=first, channels=32, **tiny)
    assert not (tmp_path / "other").exists()


def test_lid_batches_made_by_loader_workers_differ_between_workers_and_repeat_with_the_seed() -> None:
    from lid_service.recipes.data import BatchStream, make_corpus
    from lid_service.recipes.recipe import RECIPE
    from lidroute.train.synth import VARIANTS

    corpus = make_corpus(["en", "sw"], 6, 0, VARIANTS[:3])

    def first_batches(seed: int) -> list[torch.Tensor]:
        stream = BatchStream(corpus, (0.25, 1.0), seed, RECIPE)
        loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=2)
        batches = iter(loader)
        return [next(batches)[0] for _ in range(2)]  # one from each worker, in turn

    def same(a: torch.Tensor, b: torch.Tensor) -> bool:
        return a.shape == b.shape and torch.equal(a, b)

    one, again, other = first_batches(3), first_batches(3), first_batches(4)
    assert all(same(a, b) for a, b in zip(one, again, strict=True))
    assert not same(one[0], one[1])
    assert not any(same(a, b) for a, b in zip(one, other, strict=True))


def test_lid_training_refuses_a_gpu_it_does_not_have_and_an_empty_batch(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from lid_service.recipes.ecapa import main, train_lid

    with pytest.raises(ValueError, match="batch_size=0"):
        train_lid(tmp_path / "lid", ["en", "sw"], batch_size=0)
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(SystemExit) as stop:
        main(["--out", str(tmp_path / "lid"), "--languages", "en,sw", "--device", "cuda"])
    assert stop.value.code == 2
    assert "no CUDA GPU" in capsys.readouterr().err
    assert not (tmp_path / "lid").exists()


def test_the_models_in_use_load_as_the_services_load_them_and_have_cards(
    models_dir: Path, tmp_path: Path
) -> None:
    lid = LanguageIdModel(str(models_dir / "lid"), savedir=tmp_path)
    assert {"en", "es", "sw"} <= set(lid.codes)
    assert "| 1.0 s |" in (models_dir / "lid" / "README.md").read_text()
    for lang in ("en", "es", "sw"):
        folder = models_dir / "asr" / lang
        card = (folder / "README.md").read_text()
        if kind_of(str(folder)) == "head":  # a head on Whisper's encoder
            assert "python -m asr_worker head" in card and "held-out recorded speech" in card, lang
            continue
        # One run, or (English, trained further) several in order.
        assert re.search(r"Made by (\d runs: )?`python -m asr_worker finetune", card), lang
        assert "| CER | WER |" in card, lang


def test_a_recognizer_with_a_word_lm_beside_it_decodes_with_it_unless_beam_is_zero(models_dir: Path) -> None:
    spec = ModelSpec(uri=str(models_dir / "asr" / "sw"))
    audio = synth_utterances("sw", 1, seed=41, min_words=3, max_words=4)[0].audio
    with_lm, greedy = CtcModel("sw", spec), CtcModel("sw", spec, beam=0)
    assert with_lm.lm is not None and greedy.lm is None
    for model in (with_lm, greedy):
        result = model.transcribe(audio)
        assert result.text and [w.word for w in result.words] == result.text.split()
        assert all(0 <= w.start < w.end <= len(audio) / 16000 + 0.05 for w in result.words)
        assert all(a.end <= b.start for a, b in itertools.pairwise(result.words)), "words in order"
        assert all(0 < w.confidence <= 1 for w in result.words)


@pytest.mark.parametrize("lang", ["en", "sw"])
def test_a_long_pause_inside_a_request_costs_no_more_words_than_each_part_alone(
    models_dir: Path, speech, lang: str
) -> None:
    """Heard as one utterance, 3 s of silence cost the English recognizer half its characters (49 % CER)."""
    import jiwer

    utt = speech[lang][0]
    model = CtcModel(lang, ModelSpec(uri=str(models_dir / "asr" / lang)))
    alone = jiwer.cer(utt.text, model.transcribe(utt.audio).text)
    seconds = len(utt.audio) / 16000
    for pause in (np.zeros(3 * 16000, np.float32), np.full(3 * 16000, 1e-4, np.float32)):
        result = model.transcribe(np.concatenate([utt.audio, pause, utt.audio]))
        assert jiwer.cer(f"{utt.text} {utt.text}", result.text) <= alone + 0.1, result.text
        second = [w for w in result.words if w.start > seconds + 1.5]  # timed from the request's start
        assert second and second[0].start >= seconds + 3 - 0.3 and second[-1].end <= 2 * seconds + 3 + 0.05


def test_interim_results_of_a_growing_stream_decode_each_finished_part_once(
    models_dir: Path, speech, monkeypatch: pytest.MonkeyPatch
) -> None:
    utt = speech["sw"][0]
    model = CtcModel("sw", ModelSpec(uri=str(models_dir / "asr" / "sw")))
    audio = np.concatenate([utt.audio, np.zeros(2 * 16000, np.float32), utt.audio])
    expected = model.transcribe(audio)
    decodes: list[tuple[int, int]] = []  # the parts sent to the model, each time one is
    pending = model.pending

    def counted(audio: np.ndarray, decoded: dict):  # type: ignore[no-untyped-def]
        parts, missing = pending(audio, decoded)
        decodes.extend(part for part, _ in missing)
        return parts, missing

    monkeypatch.setattr(model, "pending", counted)
    decoded: dict = {}
    for end in range(16000, len(audio), 16000):  # an interim result a second
        model.transcribe(audio[:end], decoded)
    final = model.transcribe(audio, decoded)
    assert final.text == expected.text
    # The same words and times; confidences to rounding (alone, a part is not in a padded batch).
    assert [(w.word, w.start, w.end) for w in final.words] == [
        (w.word, w.start, w.end) for w in expected.words
    ]
    assert [w.confidence for w in final.words] == pytest.approx([w.confidence for w in expected.words])
    (start, end), second = speech_segments(audio)
    assert start == 0 and end < second[0]  # split at the pause
    assert decodes.count((0, end)) == 1  # the first sentence, once its pause came, was not decoded again


def test_batched_transcription_is_each_utterance_transcribed_alone(models_dir: Path) -> None:
    """Evaluation batches utterances of different lengths; padding must not add words to the short ones."""
    from transformers import Wav2Vec2ForCTC, Wav2Vec2Processor

    path = models_dir / "asr" / "sw"  # a whole wav2vec2 model, as fine-tuning makes them
    model, processor = Wav2Vec2ForCTC.from_pretrained(path), Wav2Vec2Processor.from_pretrained(path)
    audio = [u.audio for u in synth_utterances("sw", 4, seed=31, min_words=1, max_words=5)]
    assert max(map(len, audio)) > 2 * min(map(len, audio))  # real padding in the batch
    assert transcribe(model, processor, audio) == [transcribe(model, processor, [a])[0] for a in audio]


@pytest.mark.parametrize(
    ("command", "args", "message"),
    [
        ("asr_worker", ["train", "--out", "x", "--language", "xx"], "no synthetic-speech recipe"),
        ("lid_service", ["train", "--out", "x", "--languages", "en"], "at least two languages"),
        ("lid_service", ["train", "--out", "x", "--languages", "en,zz"], "no synthetic-speech recipe"),
        ("lid_service", ["train", "--out", "x", "--crops", "3,1"], "need 0 < shortest <= longest"),
        ("lid_service", ["train", "--out", "x", "--crops", "short"], "give two numbers"),
        ("lid_service", ["train", "--out", "x", "--channels", "4"], "need at least 8"),
        ("lid_service", ["train", "--out", "x", "--lr", "0"], "need a positive learning rate"),
        ("lid_service", ["train", "--out", "x", "--init", "nowhere"], "not a language-ID model written by"),
        ("asr_worker", ["pretrain", "--data", "x", "--out", "y", "--recipe", "depth=2"], "not FIELD=VALUE"),
        (
            "asr_worker",
            ["finetune", "--backbone", "b", "--data", "d", "--language", "sw", "--replay", "en:2"],
            "0 < SHARE < 1",
        ),
        (
            "asr_worker",
            ["lm", "--model", "nowhere", "--data", "d", "--language", "sw"],
            "nowhere is not a save_pretrained model directory",
        ),
    ],
)
def test_training_commands_reject_bad_input_clearly(
    command: str, args: list[str], message: str, tmp_path: Path
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", command, *args], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2, result
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_training_perturbation_adds_pauses_and_changes_tempo_noise_and_channel_in_the_stated_shares() -> None:
    rate = 16000
    t = np.arange(rate) / rate
    # A low and a high tone for 0.6 s, then silence: noise shows in the silence, the telephone
    # channel removes the high tone, a tempo or speed change alters the length.
    clip = np.where(t < 0.6, np.sin(2 * np.pi * 300 * t) + np.sin(2 * np.pi * 6000 * t), 0.0).astype(
        np.float32
    )
    rng = np.random.default_rng(0)
    draws = [perturb(clip, rng) for _ in range(300)]
    assert all(d.dtype == np.float32 and np.isfinite(d).all() for d in draws)
    changed = np.mean([len(d) != len(clip) for d in draws])
    noisy = np.mean([np.sqrt(np.mean(d[-len(d) // 10 :] ** 2)) > 1e-3 for d in draws])
    narrow = np.mean([_share_above(d[: len(d) // 2], 4100) < 1e-3 for d in draws])
    assert 0.65 < changed < 0.85  # 1 - 0.8 * 0.5 * 0.7 of the clips get pauses, tempo or speed
    assert 0.48 < noisy < 0.72  # 60 % get noise
    assert 0.18 < narrow < 0.42  # 30 % pass through the telephone channel


def test_the_equaliser_is_drawn_only_when_asked_so_earlier_models_reproduce_draw_for_draw() -> None:
    clip = np.random.default_rng(3).standard_normal(8000).astype(np.float32)
    nothing = Perturbation(pause_share=0, tempo_share=0, speed_share=0, noise_share=0, telephone_share=0)
    rng, reference = np.random.default_rng(0), np.random.default_rng(0)
    assert np.array_equal(perturb(clip, rng, nothing), clip)
    reference.random(5)  # the five other shares' coin flips, nothing else
    assert rng.random() == reference.random()
    timbre_only = replace(nothing, timbre_share=1.0)
    coloured = perturb(clip, np.random.default_rng(0), timbre_only)
    assert len(coloured) == len(clip) and not np.allclose(coloured, clip)
    assert "a random equaliser of up to ±6 dB a band (100 %)" in Perturbation.describe(asdict(timbre_only))
    assert "equaliser" not in Perturbation.describe(asdict(Perturbation()))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"timbre_share": 1.5}, "timbre_share is a share of clips between 0 and 1"),
        ({"noise_share": -0.1}, "noise_share is a share"),
        ({"speed": (1.2, 0.8)}, "speed is a range LOW,HIGH"),
        ({"tempo": (0.0, 1.4)}, "tempo and speed factors are positive"),
        ({"timbre_db": -3.0}, "timbre_db not negative"),
    ],
)
def test_an_augmentation_that_cannot_be_meant_is_refused(change: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Perturbation(**change)  # type: ignore[arg-type]


def _share_above(audio: np.ndarray, hz: float) -> float:
    power = np.abs(np.fft.rfft(audio)) ** 2
    return float(power[np.fft.rfftfreq(len(audio), 1 / 16000) > hz].sum() / power.sum())
