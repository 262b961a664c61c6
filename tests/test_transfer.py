"""Cross-lingual transfer: the backbone, the fine-tuning recipe, its alphabet report and the table.

The models here are tiny (one transformer layer, a couple of updates): these tests prove what the
commands do and write, not how well they learn; the transfer table in docs/models.md is that.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import subprocess
import sys
import unicodedata
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import redis
import torch
from transformers import Wav2Vec2ForCTC, Wav2Vec2Processor

from asr_worker.decoding import DEFAULT_BEAM, WordLM
from asr_worker.model import CtcModel
from asr_worker.recipes import lm as word_lm
from asr_worker.recipes.alphabet import alphabet_report
from asr_worker.recipes.backbone import pretrain_backbone
from asr_worker.recipes.cards import REPORT_FILE, _decoding_line
from asr_worker.recipes.clips import take_clips
from asr_worker.recipes.commands import finetune_main, lm_main, recipe_with
from asr_worker.recipes.ctc import PERTURBATION, CtcRecipe, Perturbation, normalize_text
from asr_worker.recipes.finetune import FinetuneRecipe, finetune, parse_replay
from asr_worker.recipes.lm import add_word_lm
from asr_worker.recipes.transfer import transfer_table
from lidroute.cli import model_dirs
from lidroute.keys import WORKER_GROUP, Keys
from lidroute.registry import ModelSpec
from lidroute.train import corpus
from lidroute.train.synth import phonemize

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
TINY = CtcRecipe(hidden_size=32, num_layers=1, num_heads=2, conv_dim=(16, 16, 16, 16, 16), batch_seconds=8.0)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    out = tmp_path_factory.mktemp("transfer-corpus")
    corpus.synth_corpus(out, ["es", "sw"], train=8, dev=0, test=3, test_hard=2, seed=3, workers=2)
    return out


@pytest.fixture(scope="module")
def backbone(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("backbone")
    pretrain_backbone(data, out, ["es"], utterances_per_language=8, max_steps=2, n_eval=2, recipe=TINY)
    return out


# --------------------------------------------------------------------------- pieces


def test_alphabet_report_names_the_characters_the_vocabulary_lacks_and_their_cer_floor() -> None:
    report = alphabet_report(list("abcikmrsu"), ["kasi", "rumi"], ["kişi"], backbone_vocabulary=list("abc"))
    assert report.missing == {"ş": 1}
    assert report.missing_share == pytest.approx(1 / 12)
    assert report.new_to_backbone == tuple("ikmrsu")
    lines = "\n".join(report.lines())
    assert "ALPHABET MISMATCH" in lines and "LATIN SMALL LETTER S WITH CEDILLA" in lines


def test_decomposed_text_is_normalised_to_the_composed_vocabulary_and_counted() -> None:
    decomposed = unicodedata.normalize("NFD", "niño")
    report = alphabet_report(list("inoñ"), [decomposed], [], backbone_vocabulary=None)
    assert report.missing == {} and report.normalised == 1
    assert report.new_to_backbone == ()


def test_replay_flag_is_language_and_share() -> None:
    assert parse_replay("en:0.1") == ("en", 0.1)
    assert parse_replay("es") == ("es", 0.1)
    for bad in ("en:1.5", "en:x", ":0.2"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_replay(bad)


def test_recipe_overrides_are_typed_and_unknown_fields_rejected() -> None:
    recipe = recipe_with(CtcRecipe(), ["hidden_size=96", "conv_dim=32,32,32,32,32", "lr=0.001"])
    assert recipe.hidden_size == 96 and recipe.conv_dim == (32,) * 5 and recipe.lr == 0.001
    with pytest.raises(ValueError, match="not FIELD=VALUE"):
        recipe_with(CtcRecipe(), ["depth=3"])
    with pytest.raises(ValueError, match="not a int"):
        recipe_with(CtcRecipe(), ["hidden_size=big"])
    augmentation = recipe_with(PERTURBATION, ["speed=0.8,1.25", "timbre_share=0.3"])
    assert augmentation.speed == (0.8, 1.25) and augmentation.timbre_share == 0.3


@needs_espeak
def test_phonemes_are_one_ipa_line_per_text_without_stress_marks() -> None:
    texts = ["habari ya leo", "kitabu", "asante sana rafiki"]
    ipa = phonemize(texts, "sw")
    assert len(ipa) == 3 and [len(t.split()) for t in ipa] == [3, 1, 3]
    assert not any(mark in "".join(ipa) for mark in "ˈˌ")


@needs_espeak
def test_a_smaller_budget_is_a_prefix_of_a_larger_one(data: Path) -> None:
    examples = corpus.read_examples(data, split="train")
    small = take_clips(examples, seed=1, minutes=0.1)
    large = take_clips(examples, seed=1, minutes=0.3)
    assert 0 < sum(len(a) for _, a in small) / 16000 <= 6.0 and len(large) > len(small)
    assert [t for t, _ in small] == [t for t, _ in large][: len(small)]
    assert len(take_clips(examples, seed=1, limit=3)) == 3


# --------------------------------------------------------------------------- the commands


@needs_espeak
def test_the_backbone_learns_phonemes_and_says_so(backbone: Path) -> None:
    report = json.loads((backbone / REPORT_FILE).read_text())
    assert report["targets"] == "phonemes" and report["steps"] == 2 and "es" in report["test"]
    vocab = json.loads((backbone / "vocab.json").read_text())
    assert set(vocab) & set("ɾβðɣ"), "an IPA inventory, not Spanish letters"
    assert "phoneme" in (backbone / "README.md").read_text()


@needs_espeak
def test_finetune_command_replaces_the_head_keeps_the_frozen_encoder_and_registers(
    data: Path, backbone: Path, tmp_path: Path, redis_server
) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "sw"
    prefix = "transfer-test:"
    command = [sys.executable, "-m", "asr_worker", "finetune", "--backbone", str(backbone)]
    command += [
        "--data",
        str(data),
        "--language",
        "sw",
        "--out",
        str(out),
        "--steps",
        "4",
        "--minutes",
        "0.3",
    ]
    command += ["--freeze-feature-encoder", "--eval-utterances", "2", "--register"]
    command += ["--redis-url", redis_server.url, "--key-prefix", prefix]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "registered sw" in done.stdout

    report = json.loads((out / REPORT_FILE).read_text())
    assert report["init"] == "backbone" and report["steps"] == 4 and report["device"] == "cpu"
    assert {"test", "test_hard"} <= set(report["scores"]) == set(report["scores_greedy"])
    # A word LM of the training transcripts goes beside it; with no dev split its weights stay the defaults.
    lm = WordLM.load(out)
    assert lm is not None and report["lm"]["words"] == lm.vocabulary_size > 0
    assert report["lm"]["tuned_on"] == 0
    card = (out / "README.md").read_text()
    assert card.startswith("# Swahili CTC speech recognizer")
    assert "## Alphabet" in card and "--freeze-feature-encoder" in card and "on the CPU" in card
    assert "the defaults (no dev split to tune them on)" in card and "| greedy CER | greedy WER |" in card
    assert f"`lidroute corpus synth --out {data} --languages es,sw --train 8 --dev 0" in card  # its data
    assert report["augmentation"] == json.loads(json.dumps(asdict(PERTURBATION)))  # recorded
    assert "Augmentation, drawn afresh each epoch: a pause of 0.3–2.5 s inside the speech" in card
    assert "tempo 0.7–1.4× with pitch kept (50 % of clips)" in card
    # A model trained before pauses existed has no pause fields in its report, and had none.
    earlier = {k: v for k, v in report["augmentation"].items() if not k.startswith("pause")}
    assert Perturbation.describe(earlier).startswith("tempo 0.7–1.4× with pitch kept")

    tuned = Wav2Vec2ForCTC.from_pretrained(out)
    base = Wav2Vec2ForCTC.from_pretrained(backbone)
    letters = json.loads((out / "vocab.json").read_text())
    assert tuned.lm_head.out_features == len(letters) != base.lm_head.out_features
    tuned_state, base_state = tuned.state_dict(), base.state_dict()
    encoder = [k for k in base_state if k.startswith("wav2vec2.feature_extractor.")]
    assert encoder and all(torch.equal(tuned_state[k], base_state[k]) for k in encoder)
    changed = [k for k in base_state if k.startswith("wav2vec2.encoder.")]
    assert any(not torch.equal(tuned_state[k], base_state[k]) for k in changed), "the body trains too"

    client = redis.Redis.from_url(redis_server.url)
    try:
        keys = Keys(prefix)
        spec = ModelSpec.from_json(client.hget(keys.models, "sw"))
        assert spec.uri == str(out.resolve())
        groups = client.xinfo_groups(keys.jobs("sw"))
        assert [g["name"].decode() for g in groups] == [WORKER_GROUP]
    finally:
        client.close()
    assert isinstance(
        CtcModel("sw", spec).transcribe(corpus.read_examples(data, split="test")[0].audio()).text, str
    )


def test_keep_head_trains_a_recognizer_further_and_its_card_gives_both_runs(
    data: Path, backbone: Path, tmp_path: Path
) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    finetune(str(backbone), data, "sw", first, max_steps=4, n_eval=1, lm=False)
    report = finetune(
        str(first),
        data,
        "sw",
        second,
        max_steps=2,
        seed=1,
        keep_head=True,
        n_eval=1,
        lm=False,
        recipe=FinetuneRecipe(lr=5e-4),
        augmentation=replace(PERTURBATION, timbre_share=0.5, speed=(0.8, 1.25)),
    )
    assert (report["init"], report["vocab"], report["steps"]) == ("recognizer", "backbone", 2)
    assert report["continues"]["steps"] == 4 and report["continues"]["init"] == "backbone"
    assert json.loads((second / "vocab.json").read_text()) == json.loads((first / "vocab.json").read_text())
    before, after = Wav2Vec2ForCTC.from_pretrained(first), Wav2Vec2ForCTC.from_pretrained(second)
    assert not torch.equal(before.lm_head.weight, after.lm_head.weight), "the kept head trains on"
    changed = [k for k, v in before.state_dict().items() if not torch.equal(v, after.state_dict()[k])]
    assert any(k.startswith("wav2vec2.encoder.") for k in changed), (
        "and so does the body, from the first update"
    )
    card = (second / "README.md").read_text()
    assert f"fine-tuned from the recognizer `{first}`, its head and alphabet kept" in card
    assert "2 updates (" in card and "after the 4 updates that made it" in card
    assert (
        f"Made by 2 runs: `python -m asr_worker finetune --backbone {backbone} --data {data} --language sw"
        f" --steps 4 --seed 0 --out {first}` (4 updates in "
    ) in card
    assert (
        f"then `python -m asr_worker finetune --backbone {first} --data {data} --language sw --steps 2"
        in card
    )
    flags = "--seed 1 --keep-head --lr 0.0005 --augmentation speed=0.8,1.25 --augmentation timbre_share=0.5"
    assert f"{flags} --out DIR`" in card  # the run's own augmentation is recorded and restated
    assert "speed 0.8–1.25× (30 %), a random equaliser of up to ±6 dB a band (50 %), noise" in card


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            ["--backbone", "BACKBONE", "--keep-head"],
            "BACKBONE is a backbone, not a sw recognizer to train further",
        ),
        (["--backbone", "ES", "--keep-head"], "ES recognises es, not sw"),
        (["--backbone", "ES", "--keep-head", "--random-init"], "keep_head trains a recognizer further"),
        (
            ["--backbone", "ES", "--augmentation", "colour=1"],
            "'colour=1': not FIELD=VALUE with a field of pause,",
        ),
        (
            ["--backbone", "ES", "--augmentation", "timbre_share=2"],
            "timbre_share is a share of clips between 0 and 1",
        ),
    ],
)
def test_keep_head_refuses_what_is_not_a_recognizer_of_the_language(
    data: Path,
    backbone: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    flags: list[str],
    message: str,
) -> None:
    es = tmp_path / "es"
    es.mkdir()
    (es / REPORT_FILE).write_text(json.dumps({"kind": "finetuned", "language": "es"}))
    paths = {"BACKBONE": str(backbone), "ES": str(es)}
    argv = [paths.get(f, f) for f in flags] + [
        "--data",
        str(data),
        "--language",
        "sw",
        "--out",
        str(tmp_path / "o"),
    ]
    with pytest.raises(SystemExit) as exit_info:
        finetune_main(argv)
    assert exit_info.value.code == 2
    expected = message.replace("BACKBONE", str(backbone)).replace("ES", str(es))
    assert expected in capsys.readouterr().err


@needs_espeak
def test_lm_command_gives_a_model_without_one_a_word_lm_and_rescores_it(
    data: Path, backbone: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "sw"
    report = finetune(str(backbone), data, "sw", out, max_steps=1, n_eval=2, lm=False)
    assert report["lm"] is None and WordLM.load(out) is None
    assert "greedy decoding, no language model" in (out / "README.md").read_text()

    lm_main(["--model", str(out), "--data", str(data), "--language", "sw", "--log-level", "WARNING"])
    lm = WordLM.load(out)
    sw_text = next(e.text for e in corpus.read_examples(data, split="train") if e.language == "sw")
    assert lm is not None and lm.unigrams.keys() >= set(normalize_text(sw_text).split())
    rescored = json.loads((out / REPORT_FILE).read_text())
    assert rescored["lm"]["words"] == lm.vocabulary_size
    cer = {split: s["cer"] for split, s in report["scores"].items()}
    assert {split: s["cer"] for split, s in rescored["scores_greedy"].items()} == cer
    assert set(rescored["scores"]) == set(cer)
    assert "| greedy CER | greedy WER |" in (out / "README.md").read_text()
    # Tuned on other held-out splits, at most as many utterances as asked, and the card says which
    # (over a narrow grid: a search over a one-update model's frames is slow and its choice moot).
    narrow = functools.partial(word_lm.tune, weights=(1.0,), bonuses=(4.0,), oov_penalties=(1.0,))
    monkeypatch.setattr(word_lm, "tune", narrow)
    argv = ["--model", str(out), "--data", str(data), "--language", "sw", "--log-level", "WARNING"]
    lm_main([*argv, "--dev-splits", "test,test_hard", "--dev-utterances", "3", "--heard-copies", "0"])
    retuned = json.loads((out / REPORT_FILE).read_text())["lm"]
    assert (retuned["tuned_splits"], retuned["tuned_on"]) == (["test", "test_hard"], 3)
    assert "tuned on 3 held-out utterances (`test` and `test_hard`)" in (out / "README.md").read_text()


@needs_espeak
def test_the_lm_fusion_is_tuned_on_dev_speech_heard_clean_and_through_the_training_augmentation(
    data: Path, models_dir: Path, tmp_path: Path
) -> None:
    recognizer = model_dirs(models_dir)[1]["sw"]
    model = Wav2Vec2ForCTC.from_pretrained(recognizer).eval()
    processor = Wav2Vec2Processor.from_pretrained(recognizer)
    texts = [e.text for e in corpus.read_examples(data, split="train", language="sw")]
    dev = corpus.read_examples(data, split="test", language="sw")

    def tuned(copies: int) -> dict[str, Any]:
        # A narrow grid: the tuning's choice is not what this test is about, its input is.
        grid = {"weights": (1.0, 2.0), "bonuses": (4.0, 12.0), "oov_penalties": (1.0, 3.0)}
        return add_word_lm(model, processor, tmp_path, texts, dev, copies=copies, grid=grid)[1]

    clean, heard = tuned(0), tuned(2)
    assert clean["tuned_on"] == heard["tuned_on"] == len(dev) and heard["heard_copies"] == 2
    # The noisy, telephone and stretched copies are harder for the acoustic model than the clean speech.
    assert heard["dev_cer_greedy"] > clean["dev_cer_greedy"]
    assert tuned(2) == heard, "the copies are drawn from a fixed seed"
    line = _decoding_line({"lm": heard})
    assert "heard clean and twice through the training augmentation, the lightest LM within 5 %" in line
    assert "within 5 % of the lowest CER + WER (dev CER" in line
    assert f"with the LM, WER {100 * heard['dev_wer']:.1f} %)" in line
    assert heard["beam"] == DEFAULT_BEAM and f"CTC beam search (width {DEFAULT_BEAM})" in line
    assert f"unseen-word penalty {heard['oov_letter_penalty']:g} a letter" in line
    assert WordLM.load(tmp_path).oov_letter_penalty == heard["oov_letter_penalty"]
    # Reports from before: the best by CER + WER at width 16, and before that by letters alone.
    best = {k: v for k, v in heard.items() if k not in ("tolerance", "beam")}
    assert "augmentation, for the lowest CER + WER" in _decoding_line({"lm": best})
    earlier = {
        k: v
        for k, v in clean.items()
        if k not in ("heard_copies", "dev_wer", "beam", "tolerance", "oov_letter_penalty")
    }
    old_line = _decoding_line({"lm": earlier})
    assert "heard" not in old_line and "WER" not in old_line and "(width 16)" in old_line
    assert "unseen-word penalty 1 a letter" in old_line, "before the penalty was tuned it was 1"
    with pytest.raises(ValueError, match="copies must not be negative"):
        tuned(-1)


@needs_espeak
def test_reusing_the_backbone_alphabet_is_reported_as_a_mismatch(
    data: Path, backbone: Path, tmp_path: Path
) -> None:
    report = finetune(str(backbone), data, "sw", tmp_path / "sw", max_steps=1, vocab="backbone", n_eval=1)
    missing = report["alphabet"]["missing"]
    assert "c" in missing and report["alphabet"]["missing_share"] > 0.05, "Swahili 'ch' is no IPA symbol"
    assert "ALPHABET MISMATCH" in (tmp_path / "sw" / "README.md").read_text()


@needs_espeak
def test_replay_mixes_in_the_other_language_and_scores_it(data: Path, backbone: Path, tmp_path: Path) -> None:
    report = finetune(
        str(backbone), data, "sw", tmp_path / "sw", max_steps=2, minutes=0.2, replay=[("es", 0.5)], n_eval=1
    )
    assert report["replay"] == ["es:0.5"]
    assert {"test", "es test"} <= set(report["scores"])


@needs_espeak
def test_random_initialisation_shares_the_architecture_and_none_of_the_weights(
    data: Path, backbone: Path, tmp_path: Path
) -> None:
    report = finetune(str(backbone), data, "sw", tmp_path / "sw", max_steps=1, random_init=True, n_eval=1)
    assert report["init"] == "random"
    fresh = Wav2Vec2ForCTC.from_pretrained(tmp_path / "sw").state_dict()
    base = Wav2Vec2ForCTC.from_pretrained(backbone).state_dict()
    convs = [k for k in base if k.endswith("conv.weight")]
    assert convs and not any(torch.equal(fresh[k], base[k]) for k in convs)


@needs_espeak
def test_transfer_table_has_every_budget_for_both_initialisations_and_zero_shot(
    data: Path, backbone: Path, tmp_path: Path
) -> None:
    rows = transfer_table(
        str(backbone), data, tmp_path, languages=["sw"], minutes=[0.1, 0.2], max_steps=1, n_eval=1
    )
    assert set(rows[0]) == {
        "language",
        "zero_shot",
        "0.1min backbone",
        "0.1min random",
        "0.2min backbone",
        "0.2min random",
    }
    table = (tmp_path / "transfer.md").read_text()
    assert "| sw |" in table and table.count("%") >= 10
    assert json.loads((tmp_path / "transfer.json").read_text())[0]["language"] == "sw"


def test_finetune_rejects_a_language_the_data_lacks(tmp_path: Path) -> None:
    manifest = tmp_path / "train.jsonl"
    manifest.write_text("")
    done = subprocess.run(
        [
            *(sys.executable, "-m", "asr_worker", "finetune", "--backbone", str(tmp_path)),
            *("--data", str(tmp_path), "--language", "qu", "--out", str(tmp_path / "out")),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2
    assert "no train examples in language 'qu'" in done.stderr


def test_models_build_shares_the_cores_and_memory_among_trainings(monkeypatch: pytest.MonkeyPatch) -> None:
    from workbench import build
    from workbench.build import TRAINING_MEMORY, BuildPlan

    eight = ("en", "es", "fr", "de", "sw", "tr", "mr", "qu")
    monkeypatch.setattr(os, "sched_getaffinity", lambda _: set(range(16)))
    monkeypatch.setattr(build, "_available_memory", lambda: 100 * TRAINING_MEMORY)
    assert BuildPlan(asr_languages=eight).workers() == (8, 2)  # no more processes than fine-tunes
    assert BuildPlan(asr_languages=eight, jobs=4).workers() == (4, 4)
    # One fine-tune still leaves language ID to train beside the backbone; a GPU takes one at a time.
    assert BuildPlan(asr_languages=("sw",)).workers() == (2, 8)
    assert BuildPlan(asr_languages=eight, device="cuda").workers() == (1, 16)
    monkeypatch.setattr(build, "_available_memory", lambda: 3 * TRAINING_MEMORY + 1)
    assert BuildPlan(asr_languages=eight).workers() == (3, 5)  # as many as the memory holds
    assert BuildPlan(asr_languages=eight, jobs=6).workers() == (6, 2)  # unless told


def test_models_build_gives_some_languages_more_updates_and_starts_them_first() -> None:
    from workbench.build import BuildPlan

    plan = BuildPlan(
        asr_languages=("sw", "fr", "de"),
        asr_steps=100,
        asr_steps_by_language=(("fr", 300),),
        asr_continue_by_language=(),  # no second runs: the default's would count too
        head_languages=(),  # all three fine-tuned, none a head on Whisper's encoder
    )
    assert [plan.steps(lang) for lang in ("sw", "fr", "de")] == [100, 300, 100]
    assert plan.finetune_order() == ["fr", "sw", "de"]
    # A language trained further counts every run's updates; one listed twice has a third run.
    plan = BuildPlan(
        asr_languages=("sw", "fr", "de"),
        asr_steps=100,
        asr_continue_by_language=(("de", 50), ("fr", 30), ("fr", 40)),
        head_languages=(),
    )
    assert [plan.continuations(lang) for lang in ("sw", "fr", "de")] == [(), (30, 40), (50,)]
    assert plan.finetune_order() == ["fr", "de", "sw"]


def test_models_build_step_flags_are_one_budget_in_one_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from workbench import build, cli

    plans: list[build.BuildPlan] = []
    monkeypatch.setattr(build, "build_models", lambda out, plan, work=None: plans.append(plan))
    default = build.BuildPlan()

    @dataclass(frozen=True)
    class EnglishLonger(build.BuildPlan):
        """A plan whose English budget differs from the others' and has a second run, as a plan may give."""

        asr_steps_by_language: tuple[tuple[str, int], ...] = (("en", 300),)
        asr_continue_by_language: tuple[tuple[str, int], ...] = (("en", 100),)

    monkeypatch.setattr(build, "BuildPlan", EnglishLonger)
    cli.main(["models", "build", "--out", "x", "--asr-steps", "50"])
    cli.main(["models", "build", "--out", "x"])
    assert plans[0].steps("en") == plans[0].steps("sw") == 50 and plans[0].continuations("en") == ()
    # Without the flag the plan's own budgets, longer for some languages, reach the build.
    assert plans[1].steps("en") == 300 and plans[1].steps("sw") == default.asr_steps
    assert plans[1].continuations("en") == (100,)
    # So with language ID: one number is one run; without it, the plan's further runs stay.
    cli.main(["models", "build", "--out", "x", "--lid-steps", "5"])
    assert (plans[2].lid_steps, plans[2].lid_continue_steps) == (5, ())
    assert plans[1].lid_continue_steps == default.lid_continue_steps
    # The LID models served with the first keep their crops and seeds, in one run of that budget too.
    assert [(m.name, m.steps) for m in plans[2].lid_members] == [(m.name, (5,)) for m in default.lid_members]
    assert plans[1].lid_members == default.lid_members


@needs_espeak
def test_models_build_makes_lid_a_backbone_and_a_finetune_of_it_per_language(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from lidroute.cli import has_models, model_dirs
    from workbench.build import BuildPlan, LidMember, build_models

    plan = BuildPlan(
        lid_languages=("es", "sw"),
        asr_languages=("sw", "es"),
        asr_continue_by_language=(("es", 2), ("es", 1)),
        lid_steps=2,
        lid_continue_steps=(1,),
        lid_members=(LidMember("short", 7, (0.25, 1.0), (1, 1)),),
        lid_utterances=4,
        corpus_sizes=(6, 0, 2, 0),
        lm_tune_languages=("es",),
        tune_sentences=1,
        # One setting: a search over the frames of a model two updates old is slow and its choice moot.
        lm_grid=(("weights", (1.0,)), ("bonuses", (4.0,)), ("oov_penalties", (1.0,))),
        backbone_languages=("es",),
        backbone_steps=2,
        backbone_utterances=6,
        asr_steps=2,
        jobs=2,
        # No recorded speech to calibrate whisper-lid on (tests/test_whisper.py calibrates one).
        pack=str(tmp_path / "no-pack"),
    )
    out = tmp_path / "models"
    build_models(out, plan, work=tmp_path / "work")
    printed = capsys.readouterr().out
    assert f"no real-speech pack at {tmp_path / 'no-pack'}: whisper-lid/ left as it is" in printed
    assert "2 training process(es)" in printed and "(updates: es 2 + 2 + 1, sw 2)" in printed
    assert "; training it 2 updates further..." in printed and "; training it 1 updates further..." in printed
    assert "(lid: 2 + 1; lid-short: 1 + 1 updates)" in printed

    assert has_models(out)
    (lid, short), asr = model_dirs(out)
    assert (lid / "hyperparams.yaml").exists() and set(asr) == {"sw", "es"}
    # The further LID model: its own crops and seeds, its earlier run in the work folder.
    earlier_short = tmp_path / "work" / "earlier-runs" / "lid-short" / "1"
    card = (short / "README.md").read_text()
    assert short == out / "lid-short" and (earlier_short / "hyperparams.yaml").exists()
    assert "seed=7, utterances_per_language=4, max_train_seconds=10800, max_steps=1" in card
    further = (
        "seed=8, utterances_per_language=4, max_train_seconds=10800, max_steps=1, crop_seconds=(0.25, 1.0)"
    )
    assert f"{further}, channels={plan.lid_channels}, init={str(earlier_short)!r}" in card
    # Language ID trained on in a further run from the first run's model, on the next seed.
    earlier_lid = tmp_path / "work" / "earlier-runs" / "language-id" / "1"
    card = (lid / "README.md").read_text()
    assert (earlier_lid / "hyperparams.yaml").exists() and "2 runs, each from the model" in card
    assert "seed=1, utterances_per_language=4, max_train_seconds=10800, max_steps=1" in card
    assert f"init={str(earlier_lid)!r}, lr={plan.lid_continue_lr})" in card
    backbone = json.loads((out / "backbone" / REPORT_FILE).read_text())
    assert (backbone["kind"], backbone["targets"], backbone["languages"]) == ("backbone", "phonemes", ["es"])
    report = json.loads((asr["sw"] / REPORT_FILE).read_text())
    assert (report["kind"], report["init"], report["backbone"]) == (
        "finetuned",
        "backbone",
        str(out / "backbone"),
    )
    # Spanish, trained on in two further runs, each from the run before it with a seed of its own;
    # the earlier runs stay in the work folder without an LM.
    first_run, second_run = (tmp_path / "work" / "earlier-runs" / "es" / k for k in ("1", "2"))
    second = json.loads((second_run / REPORT_FILE).read_text())
    assert (second["init"], second["backbone"], second["seed"]) == ("recognizer", str(first_run), 1)
    assert second["steps"] == 2 and second["recipe"]["lr"] == plan.asr_continue_lr
    assert second["continues"]["backbone"] == str(out / "backbone")
    third = json.loads((asr["es"] / REPORT_FILE).read_text())
    assert (third["init"], third["backbone"], third["seed"], third["steps"]) == (
        "recognizer",
        str(second_run),
        2,
        1,
    )
    assert WordLM.load(asr["es"]) is not None
    assert WordLM.load(first_run) is None and WordLM.load(second_run) is None
    # Spanish's LM is tuned on the tune split the build adds (there is no dev split here).
    assert (third["lm"]["tuned_splits"], third["lm"]["tuned_on"]) == (["dev", "tune"], 1)
    card = (asr["es"] / "README.md").read_text()
    first = json.loads((first_run / REPORT_FILE).read_text())
    assert f"after the {first['steps'] + 2} updates that made it" in card and "3 runs: " in card
    assert "--lm-dev-splits dev,tune --lm-dev-utterances 1 " in card
    made = f"lidroute corpus tune {tmp_path / 'work' / 'corpus'} --languages es --per-language 1"
    assert f"the `tune` split made by `{made}`" in card
    # Swahili is not in `lm_tune_languages`: its LM is tuned on dev alone.
    assert json.loads((asr["sw"] / REPORT_FILE).read_text())["lm"]["tuned_splits"] == ["dev"]
    assert sorted(p.name for p in (tmp_path / "work" / "corpus" / "train").iterdir()) == ["es", "sw"]
    speech = corpus.read_examples(tmp_path / "work" / "corpus", split="test", language="sw")[0].audio()
    assert isinstance(CtcModel("sw", ModelSpec(uri=str(asr["sw"]))).transcribe(speech).text, str)
