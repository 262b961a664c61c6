"""Admission control: past its limits the router refuses new work at once, with retry-after, and
what it admitted finishes. A stack of its own with tight limits: 3 streams, 2 jobs per language,
one worker (2 jobs at once) serving en and es."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc
import numpy as np
import pytest

from lidroute.audio import float_to_pcm16
from lidroute.client import Client
from tests.conftest import EXTERNAL_ROUTER, make_stack

pytestmark = [
    pytest.mark.integration,
    pytest.mark.faults,
    pytest.mark.skipif(bool(EXTERNAL_ROUTER), reason="sets the router's limits: needs its own stack"),
]


TOKEN = "admitted-token"


@pytest.fixture(scope="module")
def tight_stack(models_dir: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """The router also wants a token (health checks, which start-up waits on, do not)."""
    tokens = tmp_path_factory.mktemp("tokens") / "tokens"
    tokens.write_text(f"{TOKEN}\n")
    stack = make_stack(models_dir, [["en", "es"]])
    stack.config.router_args = [
        *stack.config.router_args,
        *("--max-streams", "3", "--max-queue-depth", "2", "--auth-tokens-file", str(tokens)),
    ]
    with stack:
        yield stack


@pytest.fixture
async def client(tight_stack):  # type: ignore[no-untyped-def]
    async with Client(tight_stack.router_address, token=TOKEN) as c:
        yield c


async def test_the_router_serves_only_callers_with_a_token(tight_stack) -> None:  # type: ignore[no-untyped-def]
    for token in ("", "wrong"):
        async with Client(tight_stack.router_address, token=token) as stranger:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stranger.list_languages()
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def refused(call) -> grpc.aio.AioRpcError:  # type: ignore[no-untyped-def]
    started = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    # At once: not after the queue timeout (20 s here) or the deadline.
    assert time.monotonic() - started < 2.0
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, err.value.details()
    return err.value


async def test_past_max_streams_a_request_is_refused_at_once_and_those_admitted_finish(
    client: Client,
) -> None:
    silence = float_to_pcm16(np.zeros(16000 * 2, np.float32))
    # Three streams of silence, sent in real time: in flight, each looking for speech, no job yet.
    admitted = [
        asyncio.create_task(client.transcribe_pcm(silence, 16000, realtime=True, timeout=60))
        for _ in range(3)
    ]
    await asyncio.sleep(0.7)
    error = await refused(client.transcribe_pcm(silence, 16000, timeout=30))
    assert "max_streams" in (error.details() or "")
    assert ("retry-after", "1") in list(error.trailing_metadata() or ())
    assert [r.source for r in await asyncio.gather(*admitted)] == ["NO_SPEECH"] * 3
    # The slots are free again.
    assert (await client.transcribe_pcm(silence[:6400], 16000, timeout=30)).source == "NO_SPEECH"


async def test_past_max_queue_depth_a_language_refuses_new_jobs_and_its_queue_drains(
    client: Client, speech
) -> None:
    utt = speech["es"][0]
    slow = float_to_pcm16(np.concatenate([utt.audio, np.zeros(16000, np.float32)]))
    # Two jobs in progress on the one worker (concurrency 2): the 'es' queue is at its limit.
    admitted = [
        asyncio.create_task(client.transcribe_pcm(slow, 16000, language="es", realtime=True, timeout=60))
        for _ in range(2)
    ]
    await asyncio.sleep(1.0)
    error = await refused(client.transcribe_pcm(slow, 16000, language="es", timeout=30))
    assert "'es' jobs are waiting or in progress" in (error.details() or "")
    assert ("retry-after", "2") in list(error.trailing_metadata() or ())
    assert all(r.transcript for r in await asyncio.gather(*admitted))
    assert (await client.transcribe_pcm(slow, 16000, language="es", timeout=60)).transcript


def test_the_command_line_passes_a_token_and_says_in_one_line_when_it_lacks_one(tight_stack) -> None:  # type: ignore[no-untyped-def]
    from tests.test_cli import run

    address = ["--address", tight_stack.router_address]
    with_token = run(["languages", *address, "--token", TOKEN], {})
    assert with_token.returncode == 0 and "es " in with_token.stdout, with_token
    without = run(["languages", *address], {"LIDROUTE_TOKEN": ""})
    assert without.returncode == 1 and "wants a token" in without.stderr and "Traceback" not in without.stderr


async def test_at_four_times_capacity_each_request_completes_or_is_refused_at_once(
    client: Client, speech
) -> None:
    """12 streams at once against a limit of 3 (and 2 jobs per language): every one either gets its
    transcript or RESOURCE_EXHAUSTED, the refusals come at once, and no admitted request fails."""
    clip = float_to_pcm16(np.concatenate([speech["en"][0].audio, np.zeros(8000, np.float32)]))

    async def one() -> tuple[str, float]:
        started = time.monotonic()
        try:
            result = await client.transcribe_pcm(clip, 16000, realtime=True, timeout=60)
        except grpc.aio.AioRpcError as exc:
            return exc.code().name, time.monotonic() - started
        return ("OK" if result.transcript else "EMPTY"), time.monotonic() - started

    outcomes = await asyncio.gather(*(one() for _ in range(12)))
    codes = sorted({code for code, _ in outcomes})
    assert set(codes) <= {"OK", "RESOURCE_EXHAUSTED"}, outcomes
    assert sum(code == "OK" for code, _ in outcomes) >= 2, outcomes
    assert all(seconds < 2.0 for code, seconds in outcomes if code == "RESOURCE_EXHAUSTED"), outcomes


async def test_a_full_redis_gets_resource_exhausted_with_retry_after_never_internal(
    tight_stack, client: Client, speech
) -> None:  # type: ignore[no-untyped-def]
    """Redis at its maxmemory refuses writes: the request that meets it, and those the router then
    refuses before trying (it samples Redis's memory every 2 s), get RESOURCE_EXHAUSTED; service
    returns when memory does."""
    import redis.asyncio as aioredis

    clip = float_to_pcm16(speech["es"][0].audio)
    r = aioredis.Redis.from_url(tight_stack.redis_url)
    try:
        await r.config_set("maxmemory", 1)  # every write refused from now
        for wait in (0.0, 2.5):  # the write refused, then the router's own refusal
            await asyncio.sleep(wait)
            error = await refused(client.transcribe_pcm(clip, 16000, language="es", timeout=30))
            assert "Redis" in (error.details() or ""), error.details()
            assert float(dict(error.trailing_metadata() or ())["retry-after"]) > 0
    finally:
        await r.config_set("maxmemory", 0)
        await r.aclose()
    # The workers' heartbeats were refused too: service returns with their next ones.
    for _ in range(40):
        await asyncio.sleep(0.5)
        try:
            assert (await client.transcribe_pcm(clip, 16000, language="es", timeout=60)).transcript
            return
        except grpc.aio.AioRpcError as exc:
            assert exc.code() in (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.FAILED_PRECONDITION)
    raise AssertionError("not served within 20 s of Redis having memory again")


async def test_a_long_running_recognition_past_max_streams_is_refused_at_once_not_in_its_operation(
    tight_stack, client: Client
) -> None:  # type: ignore[no-untyped-def]
    from google.longrunning import operations_pb2

    from router.google import G_LongRunningRecognizeRequest, G_RecognitionConfig

    silence = float_to_pcm16(np.zeros(16000 * 2, np.float32))
    admitted = [
        asyncio.create_task(client.transcribe_pcm(silence, 16000, realtime=True, timeout=60))
        for _ in range(3)
    ]
    await asyncio.sleep(0.7)
    request = G_LongRunningRecognizeRequest(
        config=G_RecognitionConfig(encoding=G_RecognitionConfig.LINEAR16, sample_rate_hertz=16000)
    )
    request.audio.content = silence
    async with grpc.aio.insecure_channel(tight_stack.router_address) as channel:
        start = channel.unary_unary(
            "/google.cloud.speech.v1.Speech/LongRunningRecognize",
            request_serializer=G_LongRunningRecognizeRequest.SerializeToString,
            response_deserializer=operations_pb2.Operation.FromString,
        )
        error = await refused(start(request, metadata=(("authorization", f"Bearer {TOKEN}"),), timeout=30))
    assert "max_streams" in (error.details() or "")
    assert [r.source for r in await asyncio.gather(*admitted)] == ["NO_SPEECH"] * 3
