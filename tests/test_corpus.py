"""The synthetic corpus and the data readers: every source reads into the same 16 kHz examples."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from lidroute.audio import rms
from lidroute.train import corpus, synth
from workbench.cli import main as lidroute_main

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")

SIZES = {"train": 4, "dev": 2, "test": 2, "test_hard": 4}


def _make(out: Path, seed: int = 5, **kwargs: object) -> dict[str, Path]:
    return corpus.synth_corpus(
        out,
        ["en", "sw"],
        train=SIZES["train"],
        dev=SIZES["dev"],
        test=SIZES["test"],
        test_hard=SIZES["test_hard"],
        seed=seed,
        workers=2,
        **kwargs,  # type: ignore[arg-type]
    )


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    out = tmp_path_factory.mktemp("corpus")
    _make(out, noise=True)
    return out


def _rows(manifest: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in manifest.read_text(encoding="utf-8").splitlines()]


def _share_above(audio: np.ndarray, hz: float) -> float:
    power = np.abs(np.fft.rfft(audio)) ** 2
    freqs = np.fft.rfftfreq(len(audio), 1 / 16000)
    return float(power[freqs > hz].sum() / power.sum())


# --------------------------------------------------------------------------- the synthetic corpus


def test_number_sentences_are_spelled_words_where_num2words_knows_the_language() -> None:
    assert synth.supports_numbers("en") and synth.supports_numbers("tr")
    assert not synth.supports_numbers("sw")
    sentences = synth.make_number_sentences("de", 20, seed=1)
    assert sentences == synth.make_number_sentences("de", 20, seed=1)
    assert len(set(sentences)) == 20
    assert all(not any(c.isdigit() for c in s) for s in sentences)
    with pytest.raises(ValueError, match="num2words"):
        synth.make_number_sentences("qu", 3, seed=1)


def test_manifests_have_the_fields_and_relative_paths_that_exist(made: Path) -> None:
    for split, size in SIZES.items():
        rows = _rows(made / f"{split}.jsonl")
        assert len(rows) == 2 * size
        assert {r["language"] for r in rows} == {"en", "sw"}
        for row in rows:
            assert {"audio", "text", "language", "duration", "split", "voice", "speed", "pitch"} <= set(row)
            assert row["split"] == split
            path = Path(str(row["audio"]))
            assert not path.is_absolute()
            info = sf.info(made / path)
            assert info.samplerate == 16000 and info.channels == 1 and info.format == "FLAC"
            assert abs(info.frames / 16000 - float(row["duration"])) < 1e-3  # type: ignore[arg-type]
    recipe = json.loads((made / "corpus.json").read_text())
    assert not set(recipe["voices"]["train_dev_test"]) & set(recipe["voices"]["test_hard"])


def test_splits_have_disjoint_sentences(made: Path) -> None:
    texts = {split: [r["text"] for r in _rows(made / f"{split}.jsonl")] for split in SIZES}
    for split, split_texts in texts.items():
        assert len(set(split_texts)) == len(split_texts), split
    for a in SIZES:
        for b in SIZES:
            if a < b:
                assert not set(texts[a]) & set(texts[b]), (a, b)


def test_sentence_pool_is_disjoint_and_flags_numbers_at_scale() -> None:
    counts = {"train": 300, "dev": 50, "test": 50, "test_hard": 50}
    split = corpus.corpus_sentences("en", counts, seed=2, plan=corpus.SynthPlan(numbers=0.3))
    all_texts = [t for items in split.values() for t, _ in items]
    assert len(all_texts) == len(set(all_texts)) == 450
    assert {k: len(v) for k, v in split.items()} == counts
    assert sum(flag for items in split.values() for _, flag in items) == round(0.3 * 450)


def test_running_text_takes_its_share_of_the_pool_where_the_word_list_has_the_language() -> None:
    counts = {"train": 200, "dev": 20, "test": 20, "test_hard": 20}
    plan = corpus.SynthPlan(numbers=0.0, running=0.5)
    english = corpus.corpus_sentences("en", counts, seed=3, plan=plan)
    texts = [t for items in english.values() for t, _ in items]
    running = [t for t in texts if len(t.split()) >= 6]  # word sentences have 2-5 words
    assert len(texts) == len(set(texts)) == 260 and len(running) == 130
    words = [w for t in running for w in t.split()]
    assert words.count("the") > len(words) / 40  # drawn as often as English uses them
    swahili = corpus.corpus_sentences("sw", counts, seed=3, plan=plan)  # no word list: names alone
    assert all(len(t.split()) <= 5 for items in swahili.values() for t, _ in items)


@needs_espeak
def test_same_seed_same_corpus_other_seed_other_corpus(made: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    _make(again, noise=True)
    for split in SIZES:
        assert _rows(again / f"{split}.jsonl") == _rows(made / f"{split}.jsonl")
    first = _rows(made / "train.jsonl")[0]["audio"]
    a, _ = sf.read(made / str(first), dtype="int16")
    b, _ = sf.read(again / str(first), dtype="int16")
    assert np.array_equal(a, b)
    other = tmp_path / "other"
    _make(other, seed=6)
    assert [r["text"] for r in _rows(other / "train.jsonl")] != [
        r["text"] for r in _rows(made / "train.jsonl")
    ]


def test_test_hard_is_band_limited_noisy_and_spoken_differently(made: Path) -> None:
    hard = _rows(made / "test_hard.jsonl")
    easy = _rows(made / "train.jsonl") + _rows(made / "test.jsonl")
    recipe = json.loads((made / "corpus.json").read_text())
    assert {r["voice"] for r in hard} <= set(recipe["voices"]["test_hard"])
    assert not {r["voice"] for r in hard} & {r["voice"] for r in easy}
    low, high = corpus.SynthPlan().speeds
    assert all(not low <= int(r["speed"]) <= high for r in hard)  # type: ignore[call-overload]
    assert all(r["telephone"] and 10 <= float(r["snr_db"]) <= 20 for r in hard)  # type: ignore[arg-type]
    for row in hard:
        assert _share_above(corpus.read_audio(made / str(row["audio"])), 4100) < 1e-3
    clean = [r for r in easy if r["snr_db"] is None]
    assert clean, "the noise share left no clean utterance"
    assert max(_share_above(corpus.read_audio(made / str(r["audio"])), 4100) for r in clean) > 0.01


def test_condition_splits_change_one_thing_each_on_the_test_sentences(
    made: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = shutil.copytree(made, tmp_path / "corpus")
    assert lidroute_main(["corpus", "conditions", str(folder), "--per-language", "1", "--workers", "2"]) == 0
    assert "cond_noise_telephone" in capsys.readouterr().out
    recipe = json.loads((made / "corpus.json").read_text())
    seen, held_out = set(recipe["voices"]["train_dev_test"]), set(recipe["voices"]["test_hard"])
    test = {r["language"]: r for r in reversed(_rows(made / "test.jsonl"))}  # the first of each language
    low, high = corpus.SynthPlan().speeds
    splits = {cond: _rows(folder / f"{cond}.jsonl") for cond in corpus.CONDITIONS}
    for cond, rows in splits.items():
        twice = cond == "cond_pauses"  # with one per language, the next sentence is the same one
        assert sorted((r["language"], r["text"]) for r in rows) == sorted(
            (lang, f"{r['text']} {r['text']}" if twice else r["text"]) for lang, r in test.items()
        ), cond
        for row in rows:
            audio = corpus.read_audio(folder / str(row["audio"]))
            clean = corpus.read_audio(made / str(test[str(row["language"])]["audio"]))
            telephone = cond in ("cond_telephone", "cond_noise_telephone")
            assert row["telephone"] is telephone, cond
            if telephone:
                assert _share_above(audio, 4100) < 1e-3
            noisy = cond in ("cond_noise", "cond_noise_telephone")
            assert (row["snr_db"] is not None and 10 <= float(row["snr_db"]) <= 20) is noisy, cond  # type: ignore[arg-type]
            if cond == "cond_voices":
                assert row["voice"] in held_out and low <= int(row["speed"]) <= high  # type: ignore[call-overload]
            elif cond == "cond_speeds":
                assert row["voice"] in seen and not low <= int(row["speed"]) <= high  # type: ignore[call-overload]
            elif twice:
                pause = float(row["pause_seconds"])  # type: ignore[arg-type]
                assert 1 <= pause <= 3 and len(audio) == 2 * len(clean) + round(pause * 16000)
                middle = audio[len(clean) + 800 : len(clean) + round(pause * 16000) - 800]
                assert np.sqrt(np.mean(middle**2)) < 0.01 * np.sqrt(np.mean(clean**2))  # silence or a hiss
            else:  # the test utterance itself, degraded
                assert row["voice"] == test[str(row["language"])]["voice"] and len(audio) == len(clean)
    assert lidroute_main(["corpus", "conditions", str(tmp_path / "nothing")]) == 2
    assert "not a corpus made by" in capsys.readouterr().err


def test_a_tune_split_adds_new_sentences_spoken_as_dev_and_leaves_the_corpus_as_it_was(
    made: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = shutil.copytree(made, tmp_path / "corpus")
    before = {split: (folder / f"{split}.jsonl").read_bytes() for split in corpus.SPLITS}
    assert lidroute_main(["corpus", "tune", str(folder), "--per-language", "3", "--workers", "2"]) == 0
    assert "--dev-splits dev,tune" in capsys.readouterr().out
    assert {split: (folder / f"{split}.jsonl").read_bytes() for split in corpus.SPLITS} == before
    rows = _rows(folder / "tune.jsonl")
    assert sorted(r["language"] for r in rows) == ["en"] * 3 + ["sw"] * 3
    had = {(r["language"], r["text"]) for split in corpus.SPLITS for r in _rows(folder / f"{split}.jsonl")}
    assert not had & {(r["language"], r["text"]) for r in rows}
    recipe = json.loads((folder / "corpus.json").read_text())
    low, high = corpus.SynthPlan().speeds
    for row in rows:
        assert row["voice"] in recipe["voices"]["train_dev_test"] and low <= int(row["speed"]) <= high  # type: ignore[call-overload]
        assert not row["telephone"] and len(corpus.read_audio(folder / str(row["audio"]))) > 8000
    assert recipe["tune"] == {"languages": ["en", "sw"], "per_language": 3}
    assert lidroute_main(["corpus", "tune", str(folder), "--languages", "fr"]) == 2
    assert "the corpus has no fr" in capsys.readouterr().err
    assert lidroute_main(["corpus", "tune", str(tmp_path / "nothing")]) == 2
    assert "not a corpus made by" in capsys.readouterr().err


def test_a_pause_shorter_than_one_sample_is_empty_in_both_noise_colours() -> None:
    # Seeds 2 and 3 draw the pink colour, whose inverse FFT cannot take zero points.
    for seed in range(4):
        rng = np.random.default_rng(seed)
        assert corpus.silence(1e-5, 0.1, rng).shape == (0,)
        assert corpus._noise(np.random.default_rng(seed), 0).shape == (0,)
        speech = np.ones(1600, np.float32)
        assert corpus.add_pauses(speech, np.random.default_rng(seed), (0.0, 1e-5)).size == 1600


def test_noise_lowers_the_snr_it_claims() -> None:
    rng = np.random.default_rng(0)
    tone = np.sin(np.arange(16000) * 2 * np.pi * 440 / 16000).astype(np.float32)
    noisy = corpus.add_noise(tone, 10.0, rng)
    snr = 10 * np.log10(np.mean(tone**2) / np.mean((noisy - tone) ** 2))
    assert abs(snr - 10.0) < 0.1


@needs_espeak
def test_manifests_load_with_datasets_json(made: Path, tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    loaded = datasets.load_dataset(
        "json",
        data_files={split: str(made / f"{split}.jsonl") for split in SIZES},
        cache_dir=str(tmp_path / "hf-cache"),
    )
    assert {split: len(loaded[split]) for split in SIZES} == {k: 2 * v for k, v in SIZES.items()}
    assert {"audio", "text", "language", "duration"} <= set(loaded["test_hard"].column_names)


def test_unknown_language_fails_before_any_audio(tmp_path: Path) -> None:
    with pytest.raises(KeyError, match="known"):
        corpus.synth_corpus(tmp_path / "c", ["en", "xx"], train=1, dev=1, test=1)
    assert not (tmp_path / "c").exists()
    assert lidroute_main(["corpus", "synth", "--out", str(tmp_path / "c"), "--languages", "en,zz"]) == 2


@needs_espeak
def test_cli_synth_and_stats(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    argv = ["corpus", "synth", "--out", str(out), "--languages", "tr", "--seed", "3", "--workers", "2"]
    assert lidroute_main([*argv, "--train", "2", "--dev", "1", "--test", "1", "--level"]) == 0
    capsys.readouterr()
    assert lidroute_main(["corpus", "stats", str(out), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert {split: stats[split]["tr"]["utterances"] for split in SIZES} == {
        "train": 2,
        "dev": 1,
        "test": 1,
        "test_hard": 1,
    }
    assert stats["train"]["tr"]["hours"] > 0
    assert lidroute_main(["corpus", "stats", str(tmp_path / "nothing")]) == 1


# --------------------------------------------------------------------------- readers


def _tone(seconds: float, rate: int, hz: float = 300.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def test_manifest_reader_round_trips_the_synthetic_corpus(made: Path) -> None:
    examples = corpus.read_manifest(made / "dev.jsonl")
    assert len(examples) == 2 * SIZES["dev"]
    first = examples[0]
    row = _rows(made / "dev.jsonl")[0]
    assert (first.text, first.language, first.split, first.id) == (
        row["text"],
        row["language"],
        "dev",
        row["id"],
    )
    assert first.meta["voice"] == row["voice"]
    audio = first.audio()
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert abs(len(audio) / 16000 - float(first.duration or 0)) < 1e-3
    assert [e.id for e in corpus.read_examples(made, split="dev")] == [e.id for e in examples]


def test_manifest_reader_names_the_missing_field(tmp_path: Path) -> None:
    manifest = tmp_path / "bad.jsonl"
    manifest.write_text(json.dumps({"audio": "a.flac", "text": "x", "duration": 1.0}) + "\n")
    with pytest.raises(corpus.CorpusError, match=r"bad\.jsonl:1: missing field.*language"):
        corpus.read_manifest(manifest)
    with pytest.raises(corpus.CorpusError, match="not found"):
        corpus.read_manifest(tmp_path / "absent.jsonl")


def _common_voice(folder: Path) -> None:
    (folder / "clips").mkdir(parents=True)
    header = "client_id\tpath\tsentence\tup_votes\tlocale\n"
    lines = {"train": [], "dev": [], "test": []}  # type: dict[str, list[str]]
    for i, (split, rate, fmt) in enumerate(
        [("train", 48000, "WAV"), ("train", 22050, "FLAC"), ("dev", 16000, "WAV"), ("test", 8000, "FLAC")]
    ):
        name = f"common_voice_sw_{i}.{fmt.lower()}"
        stereo = np.stack([_tone(0.5 + 0.25 * i, rate)] * 2, axis=1)
        sf.write(folder / "clips" / name, stereo, rate, format=fmt)
        # A quote mark inside a sentence is text: Common Voice TSVs are not CSV-quoted.
        lines[split].append(f'c{i}\t{name}\tclip "{i}" said\t2\tsw\n')
    for split, rows in lines.items():
        (folder / f"{split}.tsv").write_text(header + "".join(rows), encoding="utf-8")
    names = sorted(p.name for p in (folder / "clips").iterdir())
    (folder / "clip_durations.tsv").write_text(
        "clip\tduration[ms]\n" + "".join(f"{name}\t{500 + 250 * i}\n" for i, name in enumerate(names))
    )


def test_common_voice_reader_decodes_any_rate_to_16k_mono(tmp_path: Path) -> None:
    folder = tmp_path / "sw"
    _common_voice(folder)
    examples = corpus.read_common_voice(folder)
    assert [e.split for e in examples] == ["train", "train", "dev", "test"]
    assert all(e.language == "sw" for e in examples)
    assert examples[0].text == 'clip "0" said'
    assert examples[0].meta["client_id"] == "c0"
    assert [e.duration for e in examples] == [0.5, 0.75, 1.0, 1.25]
    for i, example in enumerate(examples):
        audio = example.audio()
        assert audio.dtype == np.float32 and audio.ndim == 1
        assert abs(len(audio) - int((0.5 + 0.25 * i) * 16000)) <= 2
        assert 0.25 < np.abs(audio).max() < 0.35
    only_test = corpus.read_examples(folder, split="test", language="sw")
    assert [e.id for e in only_test] == ["common_voice_sw_3"]


def test_common_voice_reader_errors_name_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(corpus.CorpusError, match="no clips/ folder"):
        corpus.read_common_voice(tmp_path / "nowhere")
    folder = tmp_path / "sw"
    _common_voice(folder)
    (folder / "dev.tsv").write_text("path\ttext\nx.wav\thello\n")
    with pytest.raises(corpus.CorpusError, match=r"dev\.tsv lacks column.*sentence"):
        corpus.read_common_voice(folder)
    (folder / "test.tsv").unlink()
    with pytest.raises(corpus.CorpusError, match=r"test\.tsv not found"):
        corpus.read_common_voice(folder, splits=["test"])


@pytest.mark.skipif("MP3" not in sf.available_formats(), reason="this libsndfile has no MP3")
def test_common_voice_mp3_clips_decode(tmp_path: Path) -> None:
    # Common Voice ships MP3; the libsndfile bundled with soundfile's wheels reads it.
    folder = tmp_path / "sw"
    _common_voice(folder)
    sf.write(folder / "clips" / "extra.mp3", _tone(1.0, 48000), 48000, format="MP3")
    (folder / "test.tsv").write_text("path\tsentence\nextra.mp3\tmoja\n", encoding="utf-8")
    (example,) = corpus.read_common_voice(folder, splits=["test"])
    audio = example.audio()
    assert abs(len(audio) / 16000 - 1.0) < 0.1
    assert 0.2 < np.abs(audio).max() < 0.4


def test_a_local_source_that_is_missing_is_not_looked_up_on_the_hub(tmp_path: Path) -> None:
    with pytest.raises(corpus.CorpusError, match="not found"):
        corpus.read_examples(tmp_path / "absent", language="sw")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(corpus.CorpusError, match=r"not a \.jsonl manifest"):
        corpus.read_examples(tmp_path / "notes.txt", language="sw")


def test_unreadable_clip_is_a_corpus_error(tmp_path: Path) -> None:
    clip = tmp_path / "broken.mp3"
    clip.write_bytes(b"not audio at all")
    with pytest.raises(corpus.CorpusError, match="cannot decode"):
        corpus.read_audio(clip)


def test_hf_dataset_reader_round_trips_save_to_disk(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    clips = []
    for i, rate in enumerate([16000, 44100, 8000]):
        path = tmp_path / f"clip{i}.wav"
        sf.write(path, _tone(0.5 + 0.5 * i, rate), rate)
        clips.append(str(path))
    texts = ["moja", "mbili", "tatu"]
    table = datasets.Dataset.from_dict({"speech": clips, "transcript": texts, "lang": ["sw"] * 3})
    table = table.cast_column("speech", datasets.Audio())
    saved = tmp_path / "hf"
    datasets.DatasetDict({"train": table, "test": table.select([2])}).save_to_disk(str(saved))
    for path in clips:
        Path(path).unlink()  # the saved dataset must carry its own audio
    examples = corpus.read_hf_dataset(
        saved, split="train", audio_column="speech", text_column="transcript", language_column="lang"
    )
    assert [(e.text, e.language, e.split) for e in examples] == [(t, "sw", "train") for t in texts]
    for i, example in enumerate(examples):
        audio = example.audio()
        assert audio.dtype == np.float32 and abs(len(audio) - int((0.5 + 0.5 * i) * 16000)) <= 2
    test = corpus.read_examples(
        saved, split="test", language="sw", audio_column="speech", text_column="transcript"
    )
    assert [e.text for e in test] == ["tatu"]


def test_hf_dataset_reader_accepts_in_memory_arrays_and_names_bad_columns(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    rows = {"audio": [{"array": _tone(1.0, 22050).tolist(), "sampling_rate": 22050}], "text": ["hello"]}
    saved = tmp_path / "plain"
    datasets.Dataset.from_dict(rows).save_to_disk(str(saved))
    (example,) = corpus.read_hf_dataset(saved, language="en")
    assert abs(len(example.audio()) - 16000) <= 2
    with pytest.raises(corpus.CorpusError, match=r"no column.*sentence.*it has audio, text"):
        corpus.read_hf_dataset(saved, language="en", text_column="sentence")
    with pytest.raises(corpus.CorpusError, match="language"):
        corpus.read_hf_dataset(saved)
    with pytest.raises(corpus.CorpusError, match="no split 'dev'"):
        datasets.DatasetDict({"train": datasets.load_from_disk(str(saved))}).save_to_disk(
            str(tmp_path / "dd")
        )
        corpus.read_hf_dataset(tmp_path / "dd", split="dev", language="en")


def test_example_needs_exactly_one_audio_source() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        corpus.Example(text="x", language="en", split="train")
    example = corpus.Example.from_array(_tone(1.0, 48000), 48000, text="x", language="en", split="train")
    assert example.duration == pytest.approx(1.0, abs=1e-3)
    assert len(example.audio()) == pytest.approx(16000, abs=2)


def test_change_speed_plays_audio_faster_or_slower_and_the_pitch_follows() -> None:
    rate = 16000
    tone = np.sin(2 * np.pi * 440 * np.arange(rate) / rate).astype(np.float32)
    faster = corpus.change_speed(tone, 1.1)
    slower = corpus.change_speed(tone, 0.9)
    assert abs(len(faster) - rate / 1.1) <= 2 and abs(len(slower) - rate / 0.9) <= 2
    assert faster.dtype == np.float32
    peak = np.argmax(np.abs(np.fft.rfft(faster))) * rate / len(faster)
    assert abs(peak - 440 * 1.1) < 5  # played faster, so higher, as speed perturbation is


def test_add_pauses_puts_silence_into_the_gap_between_words_and_around_them_without_cutting_a_word() -> None:
    rate = 16000
    t = np.arange(rate * 2) / rate
    # Two 0.9 s "words" with a 0.2 s gap between them (0.9-1.1 s): the pause belongs in the gap.
    words = np.where((t < 0.9) | (t >= 1.1), np.sin(2 * np.pi * 300 * t), 0.0).astype(np.float32)
    rng = np.random.default_rng(0)
    zeros = 0
    for _ in range(40):
        out = corpus.add_pauses(words, rng, (0.5, 2.0))
        assert out.dtype == np.float32 and np.isfinite(out).all()
        loud = np.abs(out) > 0.1  # above any hiss
        start, end = np.flatnonzero(loud)[[0, -1]]
        assert start <= rate and len(out) - 1 - end <= rate  # up to half the longest pause (2 s)
        # Both words come through whole: as many loud samples as before, in two runs.
        assert abs(int(loud.sum()) - int((np.abs(words) > 0.1).sum())) < 0.01 * rate
        quiet = ~loud[start:end]
        runs = np.diff(np.flatnonzero(np.diff(np.concatenate(([0], quiet.astype(np.int8), [0])))))[::2]
        gap = runs.max() / rate
        assert 0.5 + 0.2 - 0.05 < gap < 2.0 + 0.2 + 0.05  # the drawn pause plus the gap it went into
        zeros += int(np.count_nonzero(out[:start]) == 0 and start > 0)
        if start > 0 and np.count_nonzero(out[:start]):
            assert np.sqrt(np.mean(out[:start] ** 2)) < 0.01 * np.sqrt(np.mean(words**2))  # a faint hiss
    assert 5 < zeros < 35  # some pauses are digital silence, some an open line


def test_change_tempo_changes_duration_but_keeps_pitch_order_and_a_clean_tone() -> None:
    rate = 16000
    t = np.arange(rate) / rate
    # 440 Hz for the first half second, then 660 Hz: a tempo change must keep both and their order.
    audio = np.where(t < 0.5, np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 660 * t)).astype(np.float32)
    for factor in (0.7, 1.4):
        out = corpus.change_tempo(audio, factor)
        assert out.dtype == np.float32 and abs(len(out) - rate / factor) <= 1
        half = len(out) // 2
        for part, hz in ((out[: half - 800], 440), (out[half + 800 :], 660)):
            spectrum = np.abs(np.fft.rfft(part * np.hanning(len(part)))) ** 2
            freqs = np.fft.rfftfreq(len(part), 1 / rate)
            assert abs(freqs[np.argmax(spectrum)] - hz) < 5  # same pitch, unlike change_speed
            # Windows that line up with the waveform leave a pure tone, not a warble or clicks.
            assert spectrum[np.abs(freqs - hz) < 30].sum() > 0.98 * spectrum.sum()
    with pytest.raises(ValueError, match="positive"):
        corpus.change_tempo(audio, 0.0)


def test_change_timbre_colours_the_spectrum_but_keeps_length_level_and_is_seeded() -> None:
    clip = np.random.default_rng(3).standard_normal(16000).astype(np.float32)  # flat spectrum

    def band_db(audio: np.ndarray) -> np.ndarray:
        power = np.abs(np.fft.rfft(audio)) ** 2
        return 10 * np.log10([band.mean() for band in np.array_split(power[100:7000], 12)])

    coloured = corpus.change_timbre(clip, np.random.default_rng(0), max_db=6.0)
    assert coloured.dtype == np.float32 and len(coloured) == len(clip)
    assert abs(rms(coloured) - rms(clip)) < 1e-3 * rms(clip)
    change = band_db(coloured) - band_db(clip)
    assert np.ptp(change) > 3.0, "some bands louder than others"
    assert np.abs(change - change.mean()).max() < 4 * 6.0, "within a tilt and three bands of 6 dB"
    again = corpus.change_timbre(clip, np.random.default_rng(0), max_db=6.0)
    other = corpus.change_timbre(clip, np.random.default_rng(1), max_db=6.0)
    assert np.array_equal(coloured, again) and not np.allclose(coloured, other)
    assert len(corpus.change_timbre(np.zeros(0, np.float32), np.random.default_rng(0))) == 0


def test_a_share_of_the_corpus_is_spoken_by_kokoro_voices_and_none_by_default(tmp_path: Path) -> None:
    from lidroute.train.corpus import SynthPlan, synth_corpus

    def voices(plan: SynthPlan, out: Path) -> list[str]:
        synth_corpus(out, ["sw"], train=6, dev=0, test=0, test_hard=0, seed=1, plan=plan, workers=1)
        return [json.loads(line)["voice"] for line in (out / "train.jsonl").read_text().splitlines()]

    mixed = voices(SynthPlan(kokoro=0.5), tmp_path / "mixed")
    assert 0 < sum(v.startswith("kokoro[") for v in mixed) < len(mixed)
    assert not any(v.startswith("kokoro[") for v in voices(SynthPlan(), tmp_path / "plain"))


def test_a_room_reverberates_speech_past_its_end_at_its_level_with_its_words_in_place() -> None:
    """An impulse response of a simulated room (image sources): the level kept, the onset where it
    was (aligned on the direct sound), energy carried past the end of the sound, seeded."""
    t = np.arange(32000) / 16000
    burst = (0.3 * np.sin(2 * np.pi * 300 * t) * (t < 1.0)).astype(np.float32)
    response = corpus.room_response(np.random.default_rng(0), rt60=0.55)
    assert np.array_equal(response, corpus.room_response(np.random.default_rng(0), rt60=0.55))
    wet = corpus.reverberate(burst, response)
    assert wet.dtype == np.float32 and len(wet) == len(burst)
    assert abs(rms(wet) - rms(burst)) < 1e-3 * rms(burst)
    assert rms(wet[17600:20800]) > 0.01 * rms(burst) and rms(burst[17600:]) == 0  # 0.1-0.3 s after
    assert np.abs(wet[:800]).max() > 0.3 * np.abs(burst[:800]).max()  # starts when the sound does


@pytest.mark.parametrize("codec", ["ulaw", "gsm", "opus"])
def test_a_codec_round_trip_keeps_length_and_words_and_telephone_codecs_cut_the_band(codec: str) -> None:
    rng = np.random.default_rng(1)
    speechlike = rng.standard_normal(24000).astype(np.float32) * 0.1
    decoded = corpus.through_codec(speechlike, codec)
    assert decoded.dtype == np.float32 and len(decoded) == len(speechlike) and np.isfinite(decoded).all()
    assert not np.allclose(decoded, speechlike, atol=1e-3), "a lossy codec changes the audio"
    power = np.abs(np.fft.rfft(decoded)) ** 2
    freqs = np.fft.rfftfreq(len(decoded), 1 / 16000)
    high = power[freqs > 4300].sum() / power.sum()
    if codec in ("ulaw", "gsm"):
        assert high < 0.01, "8 kHz telephony keeps nothing above 4 kHz"
    else:
        tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(24000) / 16000)).astype(np.float32)
        heard = corpus.through_codec(tone, codec)
        assert np.corrcoef(heard[2000:-2000], tone[2000:-2000])[0, 1] > 0.9


def test_rooms_and_codecs_are_drawn_only_where_a_perturbation_asks_for_them() -> None:
    """Off by default and then not drawn: recipes from before them reproduce draw for draw."""
    from dataclasses import asdict

    from asr_worker.recipes.ctc import Perturbation, perturb

    clip = (0.2 * np.sin(2 * np.pi * 200 * np.arange(16000) / 16000)).astype(np.float32)
    plain = Perturbation(pause_share=0, tempo_share=0, speed_share=0, noise_share=0, telephone_share=0)
    rng, fresh = np.random.default_rng(5), np.random.default_rng(5)
    assert np.array_equal(perturb(clip, rng, plain), clip)
    fresh.random(5)  # the five shares drawn, none for rooms or codecs
    assert rng.random() == fresh.random()
    both = Perturbation(**{**asdict(plain), "reverb_share": 1.0, "codec_share": 1.0})
    assert not np.allclose(perturb(clip, np.random.default_rng(5), both), clip, atol=1e-3)
    described = Perturbation.describe(asdict(both))
    assert "a room of reverberation time 0.2–0.9 s (100 %)" in described and "ulaw, gsm, opus" in described
    assert "room" not in Perturbation.describe(asdict(plain)) and "codec" not in Perturbation.describe(
        asdict(plain)
    )
    with pytest.raises(ValueError, match="share of clips"):
        Perturbation(codec_share=1.5)


def test_a_corpus_can_be_heard_in_rooms_and_through_codecs_and_its_command_says_so(
    made: Path, tmp_path: Path
) -> None:
    """Every train/dev/test line says its room and codec (None where it had none), test_hard keeps
    its own channel, the same seed makes the same corpus, and the card's command repeats it; a
    plan without them writes neither key, so older corpora are made again unchanged."""
    plan = corpus.SynthPlan(rooms=0.5, codecs=0.5)
    out = tmp_path / "rooms"
    _make(out, noise=True, plan=plan)
    easy = [r for split in ("train", "dev", "test") for r in _rows(out / f"{split}.jsonl")]
    hard = _rows(out / "test_hard.jsonl")
    assert all("rt60" in r and "codec" in r for r in easy + hard)
    assert any(r["rt60"] for r in easy) and any(r["codec"] for r in easy)
    assert all(r["rt60"] is None or 0.2 <= float(r["rt60"]) <= 0.9 for r in easy)  # type: ignore[arg-type]
    assert {r["codec"] for r in easy} <= {None, *corpus.CODECS}
    assert all(r["rt60"] is None and r["codec"] is None for r in hard)
    assert [r["text"] for r in easy] == [
        r["text"] for split in ("train", "dev", "test") for r in _rows(made / f"{split}.jsonl")
    ], "the same sentences and voices, heard otherwise"
    assert "--rooms 0.5 --codecs 0.5" in (corpus.synth_command(out) or "")
    assert all("rt60" not in r for r in _rows(made / "train.jsonl"))
    assert "--rooms" not in (corpus.synth_command(made) or "")
