"""The Whisper-base anchor: joined from its installed packages, scored exactly as lidroute's models are."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lidroute.cli import BUNDLED_MODELS, model_dirs
from lidroute.train.teacher import whisper_base_dir
from lidroute.whisper import part_paths
from workbench.cli import main


def test_whisper_base_is_joined_once_from_the_two_installed_parts(tmp_path: Path) -> None:
    folder = whisper_base_dir(tmp_path)
    model = folder / "model.bin"
    parts = part_paths()
    assert model.stat().st_size == sum(p.stat().st_size for p in parts)
    with model.open("rb") as whole, parts[1].open("rb") as second:
        whole.seek(parts[0].stat().st_size)
        assert whole.read(1 << 16) == second.read(1 << 16)
    assert {"config.json", "tokenizer.json", "vocabulary.json"} <= {p.name for p in folder.iterdir()}
    joined = model.stat().st_mtime_ns
    assert whisper_base_dir(tmp_path) == folder and model.stat().st_mtime_ns == joined


@pytest.mark.skipif(
    not {"en", "es"} <= set(model_dirs(BUNDLED_MODELS)[1]), reason="needs the bundled en and es models"
)
def test_the_anchor_runs_beside_the_models_on_the_same_utterances_and_windows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from lidroute.train.corpus import synth_corpus

    synth_corpus(tmp_path / "corpus", ["en", "es"], train=0, dev=0, test=1, test_hard=0, seed=3, workers=1)
    out = tmp_path / "report.json"
    argv = ["evaluate", str(tmp_path / "corpus"), "--models-dir", str(BUNDLED_MODELS), "--quiet"]
    assert main([*argv, "--lid-windows", "1,3", "--anchor", "whisper-base", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Whisper base (faster-whisper, int8)" in printed
    assert "lidroute | whisper-base, side by side" in printed
    report = json.loads(out.read_text())
    ours, anchor = report["utterances"], report["anchor"]["utterances"]
    assert [u["id"] for u in anchor] == [u["id"] for u in ours]
    for utterance in anchor:
        # Whisper's 99 languages, restricted to the candidates as the router restricts lidroute's.
        assert set(utterance["detected"]) == {"1s", "3s", "router"}
        assert set(utterance["detected"].values()) <= {"en", "es"}
        assert utterance["hypothesis"].strip() and utterance["processing_seconds"] > 0
    assert set(report["anchor"]["metrics"]) == {"en", "es", "all", "mean"}
    assert report["settings"]["anchor"]["name"] == "Whisper base (faster-whisper, int8)"
