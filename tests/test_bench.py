"""The benchmark's report (`make bench` itself runs the whole stack and is not a test)."""

from __future__ import annotations

from pathlib import Path

from workbench.bench import (
    ADMISSION_LIMIT,
    ALTERNATIVES,
    Served,
    admission,
    admission_rows,
    breakdown,
    cpu_rows,
    long_stream,
    long_stream_rows,
    naive_rows,
    naive_server,
)


def test_the_breakdown_splits_a_request_into_the_parts_router_and_worker_timed() -> None:
    parts = {
        "language_id": [0.020, 0.030, 0.025],
        "queue": [0.002, 0.004, 0.003],
        "inference": [0.050, 0.060, 0.055],
        "total": [0.100, 0.110, 0.105],
    }
    rows = dict(line.strip("|").rsplit("|", 1) for line in breakdown([0.120, 0.125, 0.130], parts)[2:])
    got = {name.strip(): float(value) for name, value in rows.items()}
    assert got["language ID (onset VAD, LID service call)"] == 25.0
    assert got["queue (enqueued to a worker's pick-up)"] == 3.0
    assert got["worker: model and decoding"] == 55.0
    assert got["router besides: enqueue, audio and event relays"] == 105.0 - 83.0
    assert got["client and gRPC"] == 125.0 - 105.0
    assert got["end to end, at the client"] == 125.0


def test_the_alternatives_serve_the_same_clip_and_the_report_sets_them_beside_lidroute(
    models_dir: Path, speech
) -> None:  # type: ignore[no-untyped-def]
    """The server a user would write and the Whisper-base anchor, real processes on the same clip:
    each hears a language, every request of each level is answered and costs CPU, and the report
    gives lidroute's ratio to each and the CPU each spends a request."""
    audio = speech["es"][0].audio
    others = {system: naive_server(models_dir, audio, "1,2", system) for system in ALTERNATIVES}
    assert others["naive"].heard == "es" and others["whisper-base"].heard
    for served in others.values():
        assert set(served.rates) == set(served.cpu) == {"c1", "c2"}
        assert all(rps > 0 and 0 < median <= p95 for rps, median, p95 in served.rates.values())
        assert all(seconds > 0 for seconds in served.cpu.values())
    ours = {"c1": (2.0, 0.5, 0.7), "c2": (3.0, 0.6, 0.9)}
    made_up = {
        "naive": Served({"c1": (4.0, 0.25, 0.3), "c2": (6.0, 0.3, 0.4)}, "es", {"c1": 0.2, "c2": 0.25}),
        "whisper-base": Served({"c1": (1.0, 1.0, 1.2), "c2": (1.5, 1.3, 1.5)}, "es", {"c1": 1.0, "c2": 1.1}),
    }
    report = naive_rows(ours, made_up)
    assert "| 1 | 2.00 / 4.00 / 1.00 | 0.50x | 2.00x | 500 / 250 / 1000 | 700 / 300 / 1200 |" in report
    assert "naive server 'es', Whisper base 'es'" in report
    cpu = cpu_rows(
        {"c1": {"router": 0.01, "worker-1": 0.1}, "c2": {"router": 0.02, "worker-1": 0.1}}, made_up
    )
    assert "| 1 | 10 | 100 | 110 | 200 | 1000 |" in cpu and "lidroute worker-1" in cpu


def test_twice_the_capacity_is_measured_on_a_router_at_its_limit(models_dir: Path, speech) -> None:  # type: ignore[no-untyped-def]
    """A real stack serving ADMISSION_LIMIT requests, sent twice as many at once: some refused,
    every admitted one transcribed, none failing otherwise; the report gives the refusals' times
    (how fast they are is the benchmark's to say, not a test's)."""
    outcomes = admission(models_dir, speech["es"][0].audio, waves=1)
    assert (
        outcomes["failed"] == []
        and len(outcomes["refused"]) + len(outcomes["admitted"]) == 2 * ADMISSION_LIMIT
    )
    assert outcomes["refused"] and len(outcomes["admitted"]) >= ADMISSION_LIMIT // 2
    report = admission_rows({"admitted": [1.0, 2.0], "refused": [0.004, 0.006, 0.010], "failed": []})
    assert "| refused, RESOURCE_EXHAUSTED | 3 | 6.0 |" in report and "| failed otherwise | 0 |" in report


def test_the_real_size_stand_ins_have_the_real_models_sizes_and_load_as_served_models_do(
    models_dir: Path, tmp_path: Path
) -> None:
    """Counted on the meta device (nothing allocated): XLS-R 300M's and the VoxLingua107 ECAPA's
    weights. Built small, the same code writes folders that the worker's `CtcModel` and the LID
    service's model load and run, as the full-size ones do in `make bench`."""
    import numpy as np
    import torch
    from transformers import Wav2Vec2ForCTC

    from asr_worker.model import CtcModel
    from lid_service.model import LanguageIdModel, LidRequest
    from lidroute.cli import model_dirs
    from lidroute.registry import ModelSpec, kind_of
    from workbench import standins

    alphabet = next(p for p in model_dirs(models_dir)[1].values() if kind_of(str(p)) == "ctc")
    with torch.device("meta"):
        asr = sum(p.numel() for p in Wav2Vec2ForCTC(standins.asr_config(alphabet)).parameters())
        lid = sum(p.numel() for p in standins.lid_network()[0].parameters())
    assert 310e6 < asr < 320e6 and 19e6 < lid < 23e6, (asr, lid)
    labels = standins.lid_labels()
    assert len(labels) == len(set(labels)) == 107 and {"en", "sw", "mr", "qu"} <= set(labels)

    small_asr = {**standins.ASR_SHAPE, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2}
    small_asr |= {"intermediate_size": 64, "conv_dim": [32] * 7, "num_conv_pos_embedding_groups": 2}
    small_lid = {**standins.LID_SHAPE, "channels": (32, 32, 32, 32, 96), "attention_channels": 8}
    small_lid |= {"se_channels": 8, "lin_neurons": 16}
    asr_dir = standins.build_asr(tmp_path / "asr", alphabet, shape=small_asr)
    lid_dir = standins.build_lid(tmp_path / "lid", shape=small_lid)
    audio = np.random.default_rng(0).normal(0, 0.1, 16000).astype(np.float32)
    assert isinstance(CtcModel("mr", ModelSpec(uri=str(asr_dir))).transcribe(audio).text, str)
    (scores,) = LanguageIdModel(str(lid_dir), tmp_path / "sb").identify([LidRequest(audio, ())])
    assert len(scores) == 107 and abs(sum(p for _, p in scores) - 1) < 1e-3
    assert "random weights" in (asr_dir / "README.md").read_text()


def test_a_long_stream_is_measured_beside_a_one_minute_one(models_dir: Path) -> None:
    """Both streams through one real stack: the long one in several final results, every process's
    peak memory after each, and the report's rows from them."""
    result = long_stream(models_dir, "es", 2)
    short, long = result["1 min"], result["2 min"]
    assert short["finals"] >= 1 and long["finals"] >= 2 and long["model_s"] > 0  # type: ignore[index]
    assert set(short["peak_mb"]) == set(long["peak_mb"]) >= {"router", "lid"}  # type: ignore[index]
    report = long_stream_rows(result)
    assert "| router |" in report and f"2 min: {long['finals']} final results" in report  # type: ignore[index]
