"""The OpenAI-compatible REST gateway, driven by OpenAI's own Python SDK and by plain HTTP.

Integration tests start the gateway as its own process in front of the suite's router (en + es,
sw); the response formats are tested without a network.
"""

from __future__ import annotations

import functools
import io
import json
import random
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import openai
import pytest
import requests
import soundfile as sf

from lidroute import client as transcripts
from lidroute.client import Transcription
from rest_gateway import formats
from tests.test_transcribe import of_this_audio, pad, wav
from workbench.stack import free_port, wait_http


def transcription(words: list[tuple[str, float, float, float]], **fields: object) -> Transcription:
    text = " ".join(w[0] for w in words)
    return Transcription(transcript=text, words=words, timing={"audio": 9.0}, **fields)  # type: ignore[arg-type]


# ---------------------------------------------------------------------- formats, no network
def test_segments_break_at_pauses_and_before_they_grow_too_long() -> None:
    words = [("a", 0.0, 0.4, 0.9), ("b", 0.5, 0.9, 0.8), ("c", 2.0, 2.3, 0.9), ("d", 2.4, 2.8, 0.9)]
    parts = transcripts.segments(transcription(words))
    assert [(s.start, s.end, s.text) for s in parts] == [(0.0, 0.9, "a b"), (2.0, 2.8, "c d")]
    steady = [(f"w{i}", i * 0.5, i * 0.5 + 0.4, 0.9) for i in range(40)]  # 20 s without a pause
    assert all(s.end - s.start <= 15.0 for s in transcripts.segments(transcription(steady)))
    assert transcripts.segments(Transcription()) == []
    whole = transcripts.segments(Transcription(transcript="x y", timing={"audio": 2.5}, confidence=0.5))
    assert [(s.start, s.end, s.text) for s in whole] == [(0.0, 2.5, "x y")]


def test_subtitles_are_numbered_cues_with_their_clock_format() -> None:
    parts = transcripts.segments(transcription([("hola", 0.25, 0.5, 0.9), ("amigo", 3661.0, 3661.5, 0.9)]))
    assert transcripts.srt(parts) == (
        "1\n00:00:00,250 --> 00:00:00,500\nhola\n\n2\n01:01:01,000 --> 01:01:01,500\namigo\n\n"
    )
    assert transcripts.vtt(parts).startswith("WEBVTT\n\n00:00:00.250 --> 00:00:00.500\nhola\n\n01:01:01.000")


def test_verbose_json_names_the_language_and_gives_what_was_asked() -> None:
    result = transcription(
        [("habari", 0.1, 0.6, 0.5), ("yako", 0.7, 1.0, 1.0)], language="sw", source="DETECTED"
    )
    parts = transcripts.segments(result)
    body = formats.verbose_json(result, parts, ["word"])
    assert (body["language"], body["duration"], body["text"]) == ("swahili", 9.0, "habari yako")
    assert "segments" not in body and [w["word"] for w in body["words"]] == ["habari", "yako"]
    (segment,) = formats.verbose_json(result, parts, [])["segments"]
    assert segment["text"] == " habari yako" and segment["no_speech_prob"] == 0.0
    assert segment["avg_logprob"] == pytest.approx(np.log(0.5) / 2)
    assert formats.verbose_json(Transcription(language="xx"), [], [])["language"] == "xx"


# ---------------------------------------------------------------------- the gateway process
@contextmanager
def running_gateway(router_addr: str, folder: Path, *flags: str) -> Iterator[str]:
    """A REST gateway process in front of `router_addr`, with `flags`; yields its base URL once
    its health check (which needs no key) says the router is serving."""
    port = free_port()
    log_path = folder / "gateway.log"
    command = [
        sys.executable,
        "-m",
        "rest_gateway",
        "--http-port",
        str(port),
        "--router-address",
        router_addr,
    ]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [*command, "--log-format", "text", *flags], stdout=log, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/healthz", 60, proc, log_path)
        yield url
    finally:
        proc.terminate()
        proc.wait(30)


@pytest.fixture(scope="module")
def gateway(router_addr: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_gateway(
        router_addr, tmp_path_factory.mktemp("gateway"), "--max-upload-bytes", "1500000"
    ) as url:
        yield url


@pytest.fixture(scope="module")
def sdk(gateway: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{gateway}/v1", api_key="unused", max_retries=0, timeout=60) as client:
        yield client


@pytest.mark.integration
def test_the_openai_sdk_transcribes_a_wav_unchanged(sdk: openai.OpenAI, speech) -> None:
    utt = speech["es"][0]
    result = sdk.audio.transcriptions.create(
        model="whisper-1", file=("hola.wav", wav(pad(utt.audio, 0.3, 0.3)))
    )
    assert of_this_audio(utt, result.text, speech), (utt.text, result.text)
    assert [m.id for m in sdk.models.list()] == ["lidroute"]


@pytest.mark.integration
def test_verbose_json_has_segments_and_words_with_times(sdk: openai.OpenAI, speech) -> None:
    utt = speech["en"][1]
    audio = pad(np.concatenate([utt.audio, np.zeros(16000, np.float32), utt.audio]), 0.3, 0.3)
    result = sdk.audio.transcriptions.create(
        model="lidroute",
        file=("two.wav", wav(audio)),
        response_format="verbose_json",
        timestamp_granularities=["word", "segment"],
    )
    assert result.language == "english" and result.duration == pytest.approx(len(audio) / 16000, abs=0.01)
    assert len(result.segments) >= 2, "a one-second pause starts a segment"
    assert result.words and all(w.start <= w.end <= result.duration for w in result.words)
    assert result.segments[0].start <= result.words[0].start


@pytest.mark.integration
def test_a_language_pins_the_worker_and_subtitles_come_as_text(sdk: openai.OpenAI, speech) -> None:
    utt = speech["sw"][0]
    buf = io.BytesIO()
    sf.write(buf, pad(utt.audio, 0.3, 0.3), 16000, format="FLAC")
    srt = sdk.audio.transcriptions.create(
        model="whisper-1", file=("a.flac", buf.getvalue()), language="sw", response_format="srt"
    )
    assert srt.startswith("1\n00:00:00,") and " --> " in srt
    text = sdk.audio.transcriptions.create(model="x", file=("a.wav", wav(utt.audio)), response_format="text")
    assert of_this_audio(utt, text.strip(), speech)


@pytest.mark.integration
def test_errors_come_in_openais_shape_as_the_sdks_exceptions(
    sdk: openai.OpenAI, gateway: str, speech
) -> None:
    clip = wav(speech["en"][0].audio)
    with pytest.raises(openai.NotFoundError, match="'xx' has no registered model"):
        sdk.audio.transcriptions.create(model="whisper-1", file=("a.wav", clip), language="xx")
    with pytest.raises(openai.BadRequestError, match="not a file lidroute reads") as bad:
        sdk.audio.transcriptions.create(model="whisper-1", file=("a.wav", b"garbage" * 100))
    assert bad.value.body["type"] == "invalid_request_error"
    with pytest.raises(openai.BadRequestError, match="response_format"):
        sdk.audio.transcriptions.create(model="whisper-1", file=("a.wav", clip), response_format="mp4")
    url = f"{gateway}/v1/audio/transcriptions"
    too_big = requests.post(
        url, files={"file": ("a.wav", b"\0" * 1_600_000)}, data={"model": "m"}, timeout=30
    )
    assert too_big.status_code == 413 and "1500000" in too_big.json()["error"]["message"]
    missing = requests.post(url, data={"model": "m"}, timeout=30)
    assert missing.status_code == 400 and missing.json()["error"]["param"] == "file"
    assert (
        requests.get(f"{gateway}/v1/nothing", timeout=30).json()["error"]["type"] == "invalid_request_error"
    )


@pytest.mark.integration
def test_curl_form_upload_as_the_readme_shows(gateway: str, speech, tmp_path: Path) -> None:
    utt = speech["en"][0]
    path = tmp_path / "clip.wav"
    path.write_bytes(wav(pad(utt.audio, 0.3, 0.3)))
    done = subprocess.run(
        ["curl", "-sS", f"{gateway}/v1/audio/transcriptions", "-F", f"file=@{path}", "-F", "model=lidroute"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert of_this_audio(utt, json.loads(done.stdout)["text"], speech)


def test_a_router_at_its_limit_is_429_with_the_routers_retry_after() -> None:
    import grpc

    from rest_gateway.server import _from_grpc

    exc = grpc.aio.AioRpcError(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.aio.Metadata(),
        grpc.aio.Metadata(("retry-after", "2")),
        details="3 'es' jobs are waiting or in progress, the limit (max_queue_depth); retry shortly",
    )
    response = _from_grpc(exc)
    assert (response.status_code, response.headers["retry-after"]) == (429, "2")
    assert json.loads(response.body)["error"]["type"] == "rate_limit_error"


def _hostile_upload(rng: random.Random, clip: bytes) -> dict[str, Any]:
    """One malformed request to the transcriptions endpoint: a body that does not parse, a form
    field of the wrong type or encoding, or a file that is not audio (or audio cut short)."""
    kind = rng.randrange(6)
    fields: dict[str, Any] = {"model": "whisper-1"}
    file = ("a.wav", clip)
    if kind == 0:  # a body that is not the form it claims to be
        boundary = "x" * rng.randrange(1, 20)
        return {
            "data": rng.randbytes(rng.randrange(0, 400)),
            "headers": {"content-type": f"multipart/form-data; boundary={boundary}"},
        }
    if kind == 1:  # JSON, or nothing, where a form is expected
        return {"json": {"file": rng.randbytes(8).hex(), "model": rng.random()}}
    if kind == 2:  # form fields of the wrong type or out of range
        fields |= rng.choice(
            [
                {"temperature": "hot"},
                {"response_format": rng.randbytes(6).hex()},
                {"timestamp_granularities[]": "word"},
                {"language": "x" * rng.randrange(1, 300)},
                {"language": "zz-ZZ"},
                {"model": ""},
            ]
        )
    elif kind == 3:  # a language code that is not valid UTF-8 or has control characters
        fields["language"] = rng.choice([b"\xff\xfe", b"e\x00s", b"\xc3"])
    elif kind == 4:  # a file that is not audio, or audio cut short
        file = (
            "a.wav",
            rng.choice([rng.randbytes(rng.randrange(1, 2000)), clip[: rng.randrange(len(clip))]]),
        )
    else:  # audio with bytes flipped in its header
        buf = bytearray(clip)
        for _ in range(rng.randrange(1, 6)):
            buf[rng.randrange(64)] = rng.randrange(256)
        file = ("a.wav", bytes(buf))
    return {"files": {"file": file}, "data": fields}


@pytest.mark.integration
def test_hostile_uploads_get_a_4xx_in_openais_shape_never_a_server_error(
    router_addr: str, tmp_path: Path
) -> None:
    """300 malformed uploads, 8 at a time: each is refused as the client's error, with OpenAI's
    error body, and the gateway logs no traceback."""
    rng = random.Random(7)
    noise = np.random.default_rng(0).normal(0, 0.001, 4000).astype(np.float32)
    clip = wav(noise)
    uploads = [_hostile_upload(rng, clip) for _ in range(300)]

    def send(url: str, upload: dict[str, Any]) -> tuple[int, Any]:
        response = requests.post(url, timeout=60, **upload)
        return response.status_code, response.json() if response.status_code >= 400 else None

    with running_gateway(router_addr, tmp_path) as gateway, ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(functools.partial(send, f"{gateway}/v1/audio/transcriptions"), uploads))
    server_errors = [(status, body) for status, body in answers if status >= 500]
    assert not server_errors, server_errors[:5]
    refused = [body for status, body in answers if status >= 400]
    assert len(refused) > 200 and all(body["error"]["type"] == "invalid_request_error" for body in refused)
    assert "Traceback" not in (tmp_path / "gateway.log").read_text(errors="replace")
