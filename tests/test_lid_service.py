"""The language-ID service serving several models as one: their mean log-posterior in-process,
and the real service process answering with it or refusing models of different languages."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grpc
import numpy as np
import pytest

from lid_service.model import LanguageIdModel, LidRequest
from lidroute.audio import float_to_pcm16
from lidroute.train.synth import synth_utterances
from lidroute.v1 import language_id_pb2 as pb
from lidroute.v1 import language_id_pb2_grpc as pb_grpc
from workbench.stack import free_port, wait_serving


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """Two models of English and Swahili (in other orders and widths) and one of English and Spanish."""
    from lid_service.recipes.ecapa import train_lid

    root = tmp_path_factory.mktemp("lid-models")
    tiny = {"utterances_per_language": 4, "max_train_seconds": None, "max_steps": 2, "batch_size": 4}
    a, b, other = root / "a", root / "b", root / "other"
    train_lid(a, ["en", "sw"], channels=16, **tiny)
    train_lid(b, ["sw", "en"], seed=1, channels=24, **tiny)
    train_lid(other, ["en", "es"], seed=2, channels=16, **tiny)
    return a, b, other


@pytest.fixture(scope="module")
def window() -> np.ndarray:
    return synth_utterances("sw", 1, seed=3)[0].audio[:16000]


def test_several_models_are_served_as_one_whose_log_posteriors_are_their_mean(
    tiny_models: tuple[Path, Path, Path], window: np.ndarray, tmp_path: Path
) -> None:
    a, b, other = tiny_models
    alone = [LanguageIdModel(str(m), savedir=tmp_path / f"alone-{m.name}") for m in (a, b)]
    both = LanguageIdModel(f"{a}, {b}", savedir=tmp_path / "both")
    assert both.codes == ["en", "sw"] and both.source == f"{a}, {b}"

    request = [LidRequest(window, ())]
    singles = [dict(m.identify(request)[0]) for m in alone]
    assert singles[0] != singles[1]  # two different models, or the test proves nothing
    geometric = {code: float(np.sqrt(singles[0][code] * singles[1][code])) for code in ("en", "sw")}
    expected = {code: p / sum(geometric.values()) for code, p in geometric.items()}
    assert dict(both.identify(request)[0]) == pytest.approx(expected, abs=1e-5)
    assert both.identify([LidRequest(window, ("sw",))])[0] == [("sw", pytest.approx(1.0))]

    with pytest.raises(ValueError, match="must know the same languages"):
        LanguageIdModel(f"{a},{other}", savedir=tmp_path / "mixed")


def _serve(source: str, tmp_path: Path, name: str) -> tuple[subprocess.Popen[bytes], str, Path]:
    address = f"127.0.0.1:{free_port()}"
    log = tmp_path / f"{name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "lid_service",
                "serve",
                "--listen-address",
                address,
                "--lid-model",
                source,
                "--lid-savedir",
                str(tmp_path / name),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return proc, address, log


def test_the_service_process_answers_with_several_models_and_refuses_models_of_other_languages(
    tiny_models: tuple[Path, Path, Path], window: np.ndarray, tmp_path: Path
) -> None:
    a, b, other = tiny_models
    source = f"{a},{b}"
    proc, address, log = _serve(source, tmp_path, "pair")
    try:
        wait_serving(address, 120, proc, log)
        with grpc.insecure_channel(address) as channel:
            stub = pb_grpc.LanguageIdentifierStub(channel)
            listed = stub.ListModelLanguages(pb.ListModelLanguagesRequest(), timeout=30)
            assert listed.model == source and list(listed.language_codes) == ["en", "sw"]
            reply = stub.Identify(pb.IdentifyRequest(audio_content=float_to_pcm16(window)), timeout=30)
        assert reply.model == source and {s.language_code for s in reply.languages} == {"en", "sw"}
        assert sum(s.probability for s in reply.languages) == pytest.approx(1.0, abs=1e-5)
    finally:
        proc.terminate()
        proc.wait(30)

    refused, _, refused_log = _serve(f"{a},{other}", tmp_path, "mixed")
    assert refused.wait(120) != 0
    assert "models served together must know the same languages" in refused_log.read_text(errors="replace")
