"""`lidroute evaluate`: the metrics on hand-made transcripts, the micro-WER's key words, the table and
JSON output, failure accounting through a router, and one in-process run on the bundled models."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import pytest

from lidroute.cli import BUNDLED_MODELS, lid_source, model_dirs
from lidroute.train.corpus import Example
from workbench.cli import main
from workbench.evaluation import evaluate_through_router, select_examples
from workbench.scoring import (
    UtteranceResult,
    confusion,
    error_counts,
    format_confusion,
    format_table,
    is_number_word,
    key_words,
    report,
    summarize,
)

# --------------------------------------------------------------------------- error rates


def test_cer_and_wer_count_edits_over_reference_length() -> None:
    counts = error_counts(["ab c"], ["ab"])
    assert counts.cer == pytest.approx(2 / 4)  # " " and "c" deleted, of 4 reference characters
    assert counts.wer == pytest.approx(1 / 2)
    assert counts.micro_wer is None  # no key words without flags


def test_error_rates_are_corpus_level_not_a_mean_of_utterances() -> None:
    counts = error_counts(["a b c d", "e f"], ["a b c d", "x f"])
    assert counts.wer == pytest.approx(1 / 6)  # a per-utterance mean would say 0.25
    assert counts.reference_words == 6


def test_no_reference_text_gives_no_rates() -> None:
    counts = error_counts([], [])
    assert (counts.cer, counts.wer, counts.micro_wer) == (None, None, None)


# --------------------------------------------------------------------------- micro-WER


def test_micro_wer_counts_substituted_names_and_numbers_only() -> None:
    raw = "We met Anna at twenty one Baker street"
    flags = key_words(raw, "en")
    # "We" starts the sentence: capitalised but not a name.
    assert flags == [False, False, True, False, True, True, True, False]
    counts = error_counts([raw.lower()], ["we met ana at twenty won baker street"], [flags])
    assert counts.key_words == 4
    assert counts.key_word_errors == 2  # anna -> ana, one -> won
    assert counts.micro_wer == pytest.approx(0.5)
    assert counts.wer == pytest.approx(2 / 8)


def test_micro_wer_counts_deleted_key_words_but_not_insertions() -> None:
    assert error_counts(["five apples"], ["apples"], [key_words("five apples", "en")]).micro_wer == 1.0
    inserted = error_counts(["twenty one"], ["twenty uh one"], [key_words("twenty one", "en")])
    assert inserted.micro_wer == 0.0
    assert inserted.wer == pytest.approx(1 / 2)


def test_a_connective_counts_only_inside_a_spelled_number() -> None:
    assert key_words("one hundred and five", "en") == [True, True, True, True]
    assert key_words("bread and butter", "en") == [False, False, False]
    assert key_words("ten and bread", "en") == [True, False, False]
    assert key_words("mil novecientos sesenta y seis", "es") == [True] * 5


def test_number_words_include_compounds_and_digits_but_not_look_alikes() -> None:
    assert is_number_word("dreiundvierzigtausendzweihundertelf", "de")
    assert is_number_word("millenovecentonovantanove", "it")
    assert is_number_word("2019,", "sw")  # digits count in any language
    assert not is_number_word("often", "en")  # "of" + "ten": "of" is no number
    assert not is_number_word("kumi", "sw")  # num2words cannot spell Swahili: no number vocabulary


def test_names_are_capitalised_words_that_do_not_start_a_sentence() -> None:
    flags = key_words("Tulifika Nairobi mwaka 2019. Kisha Mombasa", "sw")
    assert flags == [False, True, False, True, False, True]
    assert key_words("lowercase synthetic text only", "en") == [False] * 4


# --------------------------------------------------------------------------- windows spoken alike


def _example(lang: str, n: int, text: str = "x", **meta: object) -> Example:
    """A row whose audio is never listened to; `meta` says how a synthetic one was spoken."""
    audio = np.zeros(1600, np.float32)
    return Example.from_array(audio, 16000, text=text, language=lang, split="test", id=str(n), meta=meta)


#: How the rows of the tests below were spoken, as a synthetic corpus's manifest records it.
_SPOKEN = {"voice": "m1", "speed": 160, "pitch": 50}


def test_windows_that_hindi_and_marathi_voices_speak_identically_are_found() -> None:
    from lidroute.train.synth import synthesize, vocabulary
    from workbench.evaluation import find_alike

    shared = sorted(set(vocabulary("hi")) & set(vocabulary("mr")))[:12]
    examples = [_example("hi", i, word, **_SPOKEN) for i, word in enumerate(shared)]
    examples.append(_example("es", 99, "hola", **_SPOKEN))
    windows = (0.25, 0.5, 3.0)
    found = find_alike(examples, ["en", "es", "hi", "mr"], windows)
    # Other scripts are never compared; Spanish has no Latin-script rival among the candidates
    # that espeak-ng reads its way.
    assert all(set(others) <= {"mr"} for alike in found[:-1] for others in alike.values())
    assert found[-1] == {"0.25s": [], "0.5s": [], "3s": []}
    # A longer window holds everything a shorter one does, so it can only be alike less often.
    for alike in found:
        assert set(alike["3s"]) <= set(alike["0.5s"]) <= set(alike["0.25s"])
    whole = [ex for ex, alike in zip(examples, found, strict=True) if alike["3s"]]
    assert whole, "some shared Devanagari words are spoken the same in Hindi and Marathi"
    for ex in whole:  # alike through the longest window: each sample the same (the words are short)
        spoken = {"variant": _SPOKEN["voice"], "speed": _SPOKEN["speed"], "pitch": _SPOKEN["pitch"]}
        assert np.array_equal(synthesize(ex.text, "hi", **spoken), synthesize(ex.text, "mr", **spoken))
    assert any(not alike["0.25s"] for alike in found[:-1]), "and some are not"


def test_windows_spoken_alike_need_a_synthetic_corpus_row() -> None:
    from lidroute.train.corpus import CorpusError
    from workbench.evaluation import find_alike

    with pytest.raises(CorpusError, match=r"no voice, speed and pitch.*synthetic corpus"):
        find_alike([_example("hi", 1)], ["hi", "mr"], (0.5,))


def test_a_window_spoken_alike_is_a_coin_toss_in_the_ceiling_and_left_out_of_the_rest() -> None:
    from workbench.scoring import format_alike

    results = [
        UtteranceResult(
            "1", "hi", "a", None, 1.0, detected={"0.5s": "hi", "1s": "hi"}, alike={"0.5s": ["mr"], "1s": []}
        ),
        UtteranceResult(
            "2", "hi", "b", None, 1.0, detected={"0.5s": "mr", "1s": "hi"}, alike={"0.5s": [], "1s": []}
        ),
        UtteranceResult(
            "3",
            "mr",
            "c",
            None,
            1.0,
            detected={"0.5s": "hi", "1s": "mr"},
            alike={"0.5s": ["hi"], "1s": ["hi"]},
        ),
        UtteranceResult(
            "4", "en", "d", None, 1.0, detected={"0.5s": "en", "1s": "en"}, alike={"0.5s": [], "1s": []}
        ),
    ]
    rows = summarize(results)
    hi, mr, en, pooled, mean = (rows[k] for k in ("hi", "mr", "en", "all", "mean"))
    assert hi.lid_alike == {"0.5s": 1, "1s": 0}
    assert hi.lid_ceiling == {"0.5s": 0.75, "1s": 1.0}
    assert hi.lid_accuracy_rest == {"0.5s": 0.0, "1s": 1.0}  # the one hit at 0.5 s was a coin toss
    assert mr.lid_accuracy_rest == {}  # every window of it spoken alike: none left to score
    assert en.lid_ceiling == {"0.5s": 1.0, "1s": 1.0}
    assert pooled.lid_alike == {"0.5s": 2, "1s": 1}
    assert pooled.lid_ceiling == {"0.5s": pytest.approx(0.75), "1s": pytest.approx(0.875)}
    assert pooled.lid_accuracy_rest == {"0.5s": 0.5, "1s": 1.0}
    assert mean.lid_ceiling["0.5s"] == pytest.approx((0.75 + 0.5 + 1.0) / 3)
    lines = format_alike(rows).splitlines()
    assert [line.split()[:2] for line in lines[3:]] == [
        [name, label] for name in ("hi", "mr", "all", "mean") for label in ("0.5s", "1s")
    ]  # English had no window spoken alike: no rows of its own
    assert lines[3].split()[2:] == ["1/2", "75.0%", "50.0%", "0.0%"]


def test_looking_for_windows_spoken_alike_is_refused_where_it_cannot_be_done(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import soundfile as sf

    sf.write(tmp_path / "a.wav", np.zeros(8000, np.float32), 16000)
    row = {"audio": "a.wav", "text": "नमस्ते", "language": "hi", "duration": 0.5}
    (tmp_path / "test.jsonl").write_text(json.dumps(row) + "\n", encoding="utf-8")
    assert main(["evaluate", str(tmp_path / "test.jsonl"), "--lid-twins", "--quiet"]) == 1
    assert "synthetic corpus" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path / "test.jsonl"), "--lid-twins", "--no-lid", "--quiet"]) == 1
    assert "--lid-twins needs in-process language ID" in capsys.readouterr().err


# --------------------------------------------------------------------------- rows, table, JSON


def _results() -> list[UtteranceResult]:
    return [
        UtteranceResult("a", "en", "ten cats", "ten bats", 2.0, 0.5, {"0.5s": "en", "router": "en"}),
        UtteranceResult("b", "en", "one dog", "one dog", 2.0, 0.5, {"0.5s": "es", "router": "en"}),
        UtteranceResult("c", "es", "dos gatos", "dos gatos", 4.0, 1.0, {"0.5s": "es", "router": "es"}),
        # Not transcribed (no recognizer): counts for language ID, not for error rates.
        UtteranceResult("d", "es", "tres perros", None, 3.0, 0.0, {"0.5s": "en", "router": "es"}),
    ]


def test_summary_has_a_row_per_language_then_pooled_and_mean_rows() -> None:
    rows = summarize(_results())
    assert list(rows) == ["en", "es", "all", "mean"]
    en, es, pooled, mean = rows.values()
    assert en.wer == pytest.approx(1 / 4)
    assert en.cer == pytest.approx(1 / 15)  # "ten cats" 1 edit of 8 chars, "one dog" 0 of 7
    assert (en.micro_wer, en.key_words) == (0.0, 2)  # "ten", "one" right; "cats" is no key word
    assert en.lid_accuracy == {"0.5s": 0.5, "router": 1.0}
    assert en.rtf == pytest.approx(1.0 / 4.0)
    assert (es.utterances, es.transcribed, es.wer) == (2, 1, 0.0)
    assert es.lid_accuracy == {"0.5s": 0.5, "router": 1.0}
    assert es.rtf == pytest.approx(1.0 / 4.0)  # the untranscribed utterance's audio is not counted
    assert pooled.wer == pytest.approx(1 / 6)
    assert pooled.lid_accuracy["0.5s"] == pytest.approx(2 / 4)
    assert mean.wer == pytest.approx(1 / 8)  # mean of languages, unlike the pooled 1/6
    assert mean.utterances == 4


def test_table_lists_windows_in_order_and_formats_percentages() -> None:
    table = format_table(summarize(_results()))
    header, _, *lines = table.splitlines()
    assert header.index("LID@0.5s") < header.index("LID@router")
    assert [line.split()[0] for line in lines] == ["en", "es", "all", "mean"]
    assert "25.0%" in lines[0] and "12.5%" in lines[3]
    assert all(len(line) <= len(header) for line in lines)


def test_json_report_holds_settings_command_metrics_and_utterances() -> None:
    data = json.loads(json.dumps(report(_results(), {"mode": "in-process"}, ["lidroute", "evaluate", "x"])))
    assert data["command"] == ["lidroute", "evaluate", "x"]
    assert data["settings"] == {"mode": "in-process"}
    assert data["metrics"]["en"]["wer"] == pytest.approx(0.25)
    assert data["metrics"]["mean"]["lid_accuracy"]["router"] == 1.0
    assert [u["id"] for u in data["utterances"]] == ["a", "b", "c", "d"]
    assert "numbers" in data["micro_wer"]


def test_the_recorded_command_line_repeats_the_run() -> None:
    from workbench.cli import build_parser
    from workbench.evaluation import command_line

    argv = [
        "evaluate",
        "corpus",
        "--languages",
        "en,sw",
        "--lid-windows",
        "0.25,1",
        "--no-lid",
        "--lid-model",
        "lid,lid-wide",
        "--json",
        "r.json",
    ]
    first = build_parser().parse_args(argv)
    line = command_line(first)
    assert line[:3] == ["lidroute", "evaluate", "corpus"]
    assert vars(build_parser().parse_args(line[1:])) == vars(first)


def test_examples_are_filtered_by_language_and_limited_per_language() -> None:
    examples = [_example(lang, i) for i, lang in enumerate(["en", "es", "en", "sw", "en", "es"])]
    chosen = select_examples(examples, ["en", "es"], limit=2)
    assert [(e.language, e.id) for e in chosen] == [("en", "0"), ("es", "1"), ("en", "2"), ("es", "5")]


async def test_a_failed_router_call_counts_as_an_empty_transcript() -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    results = await evaluate_through_router([_example("en", 0)], f"127.0.0.1:{port}", timeout=5)
    assert results[0].error.startswith("UNAVAILABLE")
    assert results[0].hypothesis == "" and results[0].detected == {}
    rows = summarize(results)
    assert (rows["en"].failed, rows["en"].wer) == (1, 1.0)


# --------------------------------------------------------------------------- end to end, in-process


def _bundled_languages() -> list[str]:
    lid, asr = model_dirs(BUNDLED_MODELS)
    return sorted(asr)[:2] if (lid[0] / "hyperparams.yaml").is_file() else []


needs_bundled = pytest.mark.skipif(
    len(_bundled_languages()) < 2,
    reason=f"needs the bundled LID model and two ASR models in {BUNDLED_MODELS} (lidroute models build)",
)


@needs_bundled
def test_in_process_run_on_synthetic_speech_prints_a_table_and_writes_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from lidroute.train.corpus import synth_corpus

    languages = _bundled_languages()
    synth_corpus(tmp_path / "corpus", languages, train=0, dev=0, test=2, test_hard=0, seed=11, workers=1)
    out = tmp_path / "eval.json"
    argv = [
        "evaluate",
        str(tmp_path / "corpus"),
        "--models-dir",
        str(BUNDLED_MODELS),
        "--lid-windows",
        "0.5,1",
        "--json",
        str(out),
        "--quiet",
    ]
    assert main(argv) == 0
    table = capsys.readouterr().out
    assert "LID@0.5s" in table and "LID@router" in table
    data = json.loads(out.read_text(encoding="utf-8"))
    assert data["command"][:3] == ["lidroute", "evaluate", str(tmp_path / "corpus")]
    assert data["command"][data["command"].index("--lid-windows") + 1] == "0.5,1"
    assert data["settings"]["mode"] == "in-process"
    assert data["settings"]["languages"] == languages
    # The JSON names the LID models that decided: all of the folder's, served as one.
    assert data["settings"]["lid_model"] == lid_source(model_dirs(BUNDLED_MODELS)[0])
    assert len(data["utterances"]) == 4
    for lang in languages:
        row = data["metrics"][lang]
        assert row["transcribed"] == 2
        assert 0.0 <= row["cer"] <= 2.0
        assert set(row["lid_accuracy"]) == {"0.5s", "1s", "router"}
        assert 0.0 < row["rtf"] < 5.0
    assert set(data["metrics"]) == {*languages, "all", "mean"}


@needs_bundled
def test_a_lid_model_named_by_source_replaces_the_models_folders_and_two_alike_decide_as_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from lidroute.train.corpus import synth_corpus

    languages = _bundled_languages()
    synth_corpus(tmp_path / "corpus", languages, train=0, dev=0, test=2, test_hard=0, seed=13, workers=1)
    common = [str(tmp_path / "corpus"), "--no-asr", "--lid-windows", "0.25,0.5", "--quiet", "--json"]
    lid = str(BUNDLED_MODELS / "lid")
    # The bundled folder's own LID models (lid, lid-*) give way to the one named.
    once = ["--models-dir", str(BUNDLED_MODELS), "--lid-model", lid]
    assert main(["evaluate", *common, str(tmp_path / "one.json"), *once]) == 0
    # The models folder has no lid/: only the named source can have decided.
    twice = ["--models-dir", str(tmp_path), "--lid-model", f"{lid},{lid}"]
    assert main(["evaluate", *common, str(tmp_path / "two.json"), *twice]) == 0
    one, two = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("one", "two"))
    assert (one["settings"]["lid_model"], two["settings"]["lid_model"]) == (lid, f"{lid},{lid}")
    assert [u["detected"] for u in two["utterances"]] == [u["detected"] for u in one["utterances"]]
    capsys.readouterr()
    assert (
        main(["evaluate", *common, str(tmp_path / "x.json"), "--address", "localhost:1", "--lid-model", lid])
        == 1
    )
    assert "--lid-model needs in-process language ID" in capsys.readouterr().err


def test_confusion_counts_spoken_against_decided_per_window() -> None:
    results = [
        UtteranceResult("1", "sw", "a", None, 1.0, detected={"0.5s": "sw", "1s": "sw"}),
        UtteranceResult("2", "sw", "a", None, 1.0, detected={"0.5s": "en", "1s": "sw"}),
        UtteranceResult("3", "en", "a", None, 1.0, detected={"0.5s": "en"}),
        UtteranceResult("4", "en", "a", None, 1.0, error="language ID: too short"),
    ]
    assert confusion(results, "0.5s") == {"sw": {"sw": 1, "en": 1}, "en": {"en": 1}}
    assert confusion(results, "1s") == {"sw": {"sw": 2}}
    assert format_confusion(results).splitlines() == [
        "language ID at 0.5s (rows: spoken, columns: decided)",
        "         en   sw",
        "en        1    0",
        "sw        1    1",
        "",
        "language ID at 1s (rows: spoken, columns: decided)",
        "         sw",
        "sw        2",
    ]


@needs_bundled
def test_evaluate_without_asr_prints_lid_accuracy_and_a_confusion_matrix_per_window(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from lidroute.train.corpus import synth_corpus

    languages = _bundled_languages()
    synth_corpus(tmp_path / "corpus", languages, train=0, dev=0, test=2, test_hard=0, seed=12, workers=1)
    argv = [
        str(tmp_path / "corpus"),
        "--models-dir",
        str(BUNDLED_MODELS),
        "--quiet",
        "--no-asr",
        "--confusion",
    ]
    assert main(["evaluate", *argv, "--lid-windows", "0.25,0.5,1,3"]) == 0
    out = capsys.readouterr().out
    for label in ("0.25s", "0.5s", "1s", "3s", "router"):
        assert f"LID@{label}" in out
        assert f"language ID at {label} (rows: spoken, columns: decided)" in out
    assert "CER" in out and " - " in out  # no recognizer ran: error rates are empty


# --------------------------------------------------------------------------- recorded speech as shipped


def _clip(path: Path, seconds: float = 1.0) -> None:
    import soundfile as sf

    sf.write(path, np.zeros(int(16000 * seconds), np.float32), 16000)


def test_transcript_tables_are_read_from_a_folder_and_from_each_of_its_subfolders(tmp_path: Path) -> None:
    from lidroute.train.corpus import read_examples

    (tmp_path / "fleurs").mkdir()
    (tmp_path / "leopard").mkdir()
    _clip(tmp_path / "fleurs" / "a.wav")
    _clip(tmp_path / "leopard" / "b.wav", 2.0)
    (tmp_path / "fleurs" / "manifest.tsv").write_text(
        "file\tlang\tduration_s\ttranscript\na.wav\tde\t1.0\tfür die besten aussichten\n", encoding="utf-8"
    )
    (tmp_path / "leopard" / "transcripts.tsv").write_text(
        'file\tlang\ttranscript\nb.wav\ten\tMr. Quilter is "the" apostle.\n', encoding="utf-8"
    )
    both = read_examples(tmp_path, split="test")
    assert [(e.id, e.language, e.text, e.duration) for e in both] == [
        ("fleurs/a", "de", "für die besten aussichten", 1.0),
        ("leopard/b", "en", 'Mr. Quilter is "the" apostle.', None),
    ]
    assert len(both[1].audio()) == 32000
    one = read_examples(tmp_path / "leopard")
    assert [e.id for e in one] == ["b"]


def test_a_transcript_table_that_lacks_a_column_or_a_clip_is_refused_by_name(tmp_path: Path) -> None:
    from lidroute.train.corpus import CorpusError, read_transcript_tables

    (tmp_path / "manifest.tsv").write_text("file\ttranscript\na.wav\thello\n", encoding="utf-8")
    with pytest.raises(CorpusError, match="lacks column"):
        read_transcript_tables(tmp_path)
    (tmp_path / "manifest.tsv").write_text("file\tlang\ttranscript\na.wav\ten\thello\n", encoding="utf-8")
    with pytest.raises(CorpusError, match=r"a\.wav not found"):
        read_transcript_tables(tmp_path)
    (tmp_path / "manifest.tsv").unlink()
    with pytest.raises(CorpusError, match=r"no manifest\.tsv or transcripts\.tsv"):
        read_transcript_tables(tmp_path)


def test_a_csv_or_tsv_table_of_clips_is_read_under_the_usual_column_names(tmp_path: Path) -> None:
    from lidroute.train.corpus import CorpusError, read_examples

    (tmp_path / "clips").mkdir()
    _clip(tmp_path / "clips" / "a.wav")
    (tmp_path / "mine.csv").write_text(
        'path,sentence,language\nclips/a.wav,"hola, mundo",es\n', encoding="utf-8"
    )
    (tmp_path / "mine.tsv").write_text("audio_filepath\ttext\nclips/a.wav\tjambo\n", encoding="utf-8")
    (csv_row,) = read_examples(tmp_path / "mine.csv", split="test")
    assert (csv_row.id, csv_row.language, csv_row.text) == ("a", "es", "hola, mundo")
    (tsv_row,) = read_examples(tmp_path / "mine.tsv", split="test", language="sw")
    assert (tsv_row.language, tsv_row.text, len(tsv_row.audio())) == ("sw", "jambo", 16000)
    with pytest.raises(CorpusError, match=r"language: lang or language or locale \(or pass the language\)"):
        read_examples(tmp_path / "mine.tsv", split="test")


def test_normalisation_drops_punctuation_at_word_edges_and_keeps_words_one_for_one() -> None:
    from workbench.scoring import normalize

    raw = "Mr. Quilter, côte d’ivoire — guinea-bissau. ¿Qué? पॉलिनेशिया।"
    assert normalize(raw) == "mr quilter côte d’ivoire — guinea-bissau qué पॉलिनेशिया"
    assert len(normalize(raw).split()) == len(raw.split()) == len(key_words(raw, "en"))
    # Sentence punctuation no CTC model writes costs nothing; a wrong word still does.
    assert error_counts([normalize("Hello, world.")], [normalize("hello world")]).cer == 0.0


def test_the_side_by_side_table_pairs_two_systems_per_language_and_overall() -> None:
    from workbench.scoring import format_side_by_side

    def result(lang: str, heard: str, decided: str) -> UtteranceResult:
        return UtteranceResult(lang, lang, "a b", heard, 1.0, 0.1, {"1s": decided, "router": decided})

    ours = summarize([result("en", "a b", "en"), result("de", "a", "en")])
    theirs = summarize([result("en", "a b", "en"), result("de", "a b", "de")])
    lines = format_side_by_side(ours, theirs, ("lidroute", "whisper-base")).splitlines()
    assert lines[0] == "lidroute | whisper-base, side by side"
    assert lines[1].split() == ["lang", "LID@1s", "LID@router", "CER", "WER", "RTF"]
    de = next(line for line in lines if line.startswith("de "))
    assert "0.0% | 100.0%" in de and "50.0% | 0.0%" in de  # LID, then WER: one of two words missed
    assert [line.split()[0] for line in lines[3:]] == ["de", "en", "all", "mean"]


@needs_bundled
def test_candidates_model_chooses_among_the_lid_model_s_languages_and_leaves_out_the_rest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from lidroute.train.corpus import synth_corpus

    lang = _bundled_languages()[0]
    synth_corpus(tmp_path / "corpus", [lang], train=0, dev=0, test=1, test_hard=0, seed=5, workers=1)
    row = json.loads((tmp_path / "corpus" / "test.jsonl").read_text().splitlines()[0])
    (tmp_path / "real").mkdir()
    for name in ("spoken.flac", "other.flac"):
        (tmp_path / "real" / name).write_bytes((tmp_path / "corpus" / row["audio"]).read_bytes())
    (tmp_path / "real" / "manifest.tsv").write_text(
        f"file\tlang\ttranscript\nspoken.flac\t{lang}\t{row['text']}\nother.flac\tja\t-\n", encoding="utf-8"
    )
    report_path = tmp_path / "report.json"
    argv = ["evaluate", str(tmp_path / "real"), "--models-dir", str(BUNDLED_MODELS), "--quiet", "--no-asr"]
    assert main([*argv, "--candidates", "model", "--json", str(report_path)]) == 0
    assert "left out (no candidate language): ja (1)" in capsys.readouterr().err
    written = json.loads(report_path.read_text())
    lid_languages = set(written["settings"]["languages"])
    assert lang in lid_languages and "ja" not in lid_languages and len(lid_languages) > 2
    assert [u["id"] for u in written["utterances"]] == ["spoken"]


def test_calibration_counts_the_sure_decisions_and_how_often_they_were_right() -> None:
    from workbench.scoring import format_calibration

    def decided(lang: str, said: str, p: float) -> UtteranceResult:
        return UtteranceResult(lang, lang, "a", "a", 1.0, 0.1, {"1s": said}, {"1s": p})

    rows = summarize(
        [
            decided("en", "en", 0.95),
            decided("en", "de", 0.99),
            decided("de", "de", 0.5),
            decided("de", "de", 0.91),
        ]
    )
    assert rows["all"].lid_confident_share == {"1s": 0.75}  # three of four decisions were sure
    assert rows["all"].lid_confident_accuracy == {"1s": pytest.approx(2 / 3)}  # one of them wrong
    assert rows["mean"].lid_confident_accuracy == rows["all"].lid_confident_accuracy
    assert format_calibration(rows, "lidroute").splitlines()[1].split() == ["LID@1s", "75.0%", "66.7%"]
