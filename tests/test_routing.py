"""The router's routing decisions against a real Redis registry, without models or a LID service.

`scale_from_zero` is what lets a worker pool autoscaled to zero replicas wake up: the router must
queue a job for a registered language that has no live worker (KEDA starts a pod on the queued job)
and wait for a worker, instead of refusing the language. With the setting off, a language without a
live worker is refused at once, as before.
"""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import numpy as np
import pytest
import redis.asyncio as aioredis
import soundfile as sf

from lidroute.audio import StreamDecoder
from lidroute.errors import AudioTimeout, LanguageNotFound, LanguageNotServed, ResourceExhausted, Unavailable
from lidroute.jobs import Event, JobQueue
from lidroute.keys import WORKER_GROUP, Keys
from lidroute.registry import ModelSpec, Registry
from lidroute.v1 import language_id_pb2 as lid_pb
from lidroute.v1 import transcriber_pb2 as pb
from router.core import Router, RouterSettings
from router.detection import AudioBuffer
from workbench.stack import RedisServer

Encoding = pb.RecognitionConfig.AudioEncoding
MakeRouter = Callable[..., Router]


class KnowsLanguages:
    """Stands in for the LID stub: only the languages it knows matter to planning."""

    def __init__(self, codes: list[str]) -> None:
        self.codes = codes

    async def ListModelLanguages(self, request: object, timeout: float) -> lid_pb.ListModelLanguagesResponse:
        return lid_pb.ListModelLanguagesResponse(language_codes=self.codes)


@pytest.fixture
async def make_router(
    redis_server: RedisServer, redis_client: aioredis.Redis, keys: Keys
) -> AsyncIterator[MakeRouter]:
    """A router on the test Redis; `en` is registered with a live worker, `sw` with none."""
    registry = Registry(redis_client, keys)
    await registry.register("en", ModelSpec(uri="/models/asr/en"))
    await registry.register("sw", ModelSpec(uri="/models/asr/sw"))
    await registry.heartbeat("worker-en", ["en"])
    channel = grpc.aio.insecure_channel("127.0.0.1:1")  # never dialled: planning is all that runs
    made: list[tuple[Router, aioredis.Redis]] = []

    def make(**settings: Any) -> Router:
        client = aioredis.Redis.from_url(redis_server.url)
        router = Router(
            RouterSettings(redis_url=redis_server.url, key_prefix=keys.prefix, **settings), client, channel
        )
        router.lid = KnowsLanguages(["en", "sw", "de"])  # type: ignore[assignment]
        made.append((router, client))
        return router

    yield make
    for router, client in made:
        await router.close()
        await client.aclose()
    await channel.close()


def config(language: str = "", allowed: tuple[str, ...] = ()) -> pb.RecognitionConfig:
    return pb.RecognitionConfig(
        encoding=Encoding.LINEAR16,
        sample_rate_hertz=16000,
        language_code=language,
        alternative_language_codes=list(allowed),
    )


async def test_without_scale_from_zero_a_language_with_no_live_worker_is_refused(
    make_router: MakeRouter,
) -> None:
    router = make_router()
    with pytest.raises(LanguageNotServed, match="no live worker serves 'sw'"):
        await router.plan(config("sw"))
    assert await router.plan(config()) == (None, ["en"])
    with pytest.raises(LanguageNotServed, match="none of the allowed languages"):
        await router.plan(config(allowed=("sw",)))
    listed = {lang.language_code: lang.served for lang in (await router.list_languages()).languages}
    assert listed == {"en": True, "sw": False}


async def test_scale_from_zero_routes_to_every_registered_language(make_router: MakeRouter) -> None:
    router = make_router(scale_from_zero=True)
    assert await router.plan(config("sw")) == ("sw", ["sw"])
    assert await router.plan(config()) == (None, ["en", "sw"])  # detection candidates too
    assert await router.plan(config(allowed=("sw", "de"))) == (None, ["sw"])
    with pytest.raises(LanguageNotFound, match="'de' has no registered model"):
        await router.plan(config("de"))  # known to LID but not registered: still not served
    listed = {
        lang.language_code: (lang.served, lang.live_workers)
        for lang in (await router.list_languages()).languages
    }
    assert listed == {"en": (True, 1), "sw": (True, 0)}


async def test_scale_from_zero_with_an_empty_registry_says_nothing_is_registered(
    make_router: MakeRouter, redis_client: aioredis.Redis, keys: Keys
) -> None:
    await redis_client.delete(keys.models)
    with pytest.raises(LanguageNotServed, match="no model is registered"):
        await make_router(scale_from_zero=True).plan(config())


async def test_a_request_is_refused_before_its_audio_only_when_every_language_it_may_go_to_is_full(
    make_router: MakeRouter, redis_client: aioredis.Redis, keys: Keys
) -> None:
    """With a hint, that language's queue decides; without, detection could pick any candidate, so the
    request waits for its audio while one of them has room."""
    router = make_router(max_queue_depth=2, scale_from_zero=True)
    hint, candidates = await router.plan(config())
    assert (hint, candidates) == (None, ["en", "sw"])
    for _ in range(2):
        await redis_client.xadd(keys.jobs("en"), {"job": "{}"})
    await router.admit_languages(None, candidates)  # sw has room
    with pytest.raises(ResourceExhausted, match="2 'en' jobs are waiting or in progress") as refused:
        await router.admit_languages("en", ["en"])
    assert refused.value.retry_after == 2.0
    await redis_client.xadd(keys.jobs("sw"), {"job": "{}"})
    await router.admit_languages(None, candidates)  # one place left
    await redis_client.xadd(keys.jobs("sw"), {"job": "{}"})
    with pytest.raises(ResourceExhausted, match=r"every language this request may go to \(en, sw\) hold 2"):
        await router.admit_languages(None, candidates)


async def _audio(seconds: float) -> AsyncIterator[bytes]:
    yield b"\x00\x10" * int(16000 * seconds)


async def _collect(router: Router, language: str, timeout: float = 30.0) -> list[pb.TranscribeResponse]:
    streaming = pb.StreamingRecognitionConfig(config=config(language))
    return [r async for r in router.transcribe(streaming, _audio(0.5), timeout)]


async def test_a_job_for_a_language_at_zero_waits_in_its_queue_until_a_worker_starts(
    make_router: MakeRouter, redis_client: aioredis.Redis, keys: Keys
) -> None:
    """The queued job is what KEDA's lag trigger sees; a worker that starts later gets it."""
    router = make_router(scale_from_zero=True, queue_timeout_seconds=20)
    request = asyncio.ensure_future(_collect(router, "sw"))
    queue = JobQueue(redis_client, keys)

    async def lag() -> int:
        """Jobs queued and not yet delivered, as KEDA's lag trigger reads them."""
        if not await redis_client.exists(keys.jobs("sw")):
            return 0
        groups = await redis_client.xinfo_groups(keys.jobs("sw"))
        # The router created the group itself: KEDA needs it, and no worker or sync had made it.
        assert [g["name"].decode() for g in groups] == [WORKER_GROUP]
        return int(groups[0]["lag"])

    deadline = time.monotonic() + 10
    while await lag() != 1:
        assert time.monotonic() < deadline and not request.done(), "the job was never queued"
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.5)  # a cold start: the job keeps waiting, the request stays open
    assert not request.done()

    [delivery] = await queue.next_jobs(["sw"], "late-worker", 1, 1000)
    await queue.emit(delivery.job.job_id, Event("started", worker_id="late-worker"))
    result = pb.RecognitionResult(
        alternatives=[pb.SpeechRecognitionAlternative(transcript="habari")],
        is_final=True,
        language_code="sw",
    )
    await queue.emit(delivery.job.job_id, Event("final", result=result, worker_id="late-worker"))
    responses = await asyncio.wait_for(request, 10)
    assert responses[0].language_detected.language_code == "sw"
    assert responses[-1].result.is_final and responses[-1].result.alternatives[0].transcript == "habari"


async def test_when_no_worker_starts_in_time_the_error_says_so_and_names_the_language(
    make_router: MakeRouter,
) -> None:
    router = make_router(scale_from_zero=True, queue_timeout_seconds=0.5)
    started = time.monotonic()
    with pytest.raises(Unavailable) as err:
        await _collect(router, "sw")
    assert time.monotonic() - started < 5
    assert str(err.value) == (
        "no worker for 'sw' started within 0.5 s (queue_timeout_seconds): 'sw' has no live worker"
    )


async def _sent(chunks: list[tuple[float, bytes]]) -> AsyncIterator[bytes]:
    """Each chunk after its pause: a client that is slow, stops, or never starts."""
    for pause, chunk in chunks:
        await asyncio.sleep(pause)
        yield chunk


SLOT_LIMITS = {
    "first_audio_timeout_seconds": 0.3,
    "audio_idle_timeout_seconds": 0.3,
    "audio_rate_grace_seconds": 0.5,
    "min_audio_rate": 0.25,
}
TENTH = b"\x00\x10" * 1600  # 0.1 s at 16 kHz


@pytest.mark.faults
@pytest.mark.parametrize(
    ("chunks", "match"),
    [
        ([(1.0, TENTH)], r"no audio came for 0\.3 s \(first_audio_timeout_seconds\)"),
        ([(0, TENTH), (1.0, TENTH)], r"no more audio came for 0\.3 s \(audio_idle_timeout_seconds\)"),
        # 10 ms every 0.2 s: 0.05x real time, a client holding a worker's slot while saying nothing
        ([(0.2, TENTH[:320])] * 6, r"audio arrives at 0\.0\dx real time .* at least 0\.25x .*min_audio_rate"),
    ],
)
async def test_a_client_that_sends_no_or_too_little_audio_is_ended_with_out_of_range(
    make_router: MakeRouter, chunks: list[tuple[float, bytes]], match: str
) -> None:
    router = make_router(**SLOT_LIMITS)
    streaming = pb.StreamingRecognitionConfig(config=config("en"))
    with pytest.raises(AudioTimeout, match=match) as err:
        async for _ in router.transcribe(streaming, _sent(chunks), 30.0):
            pass
    assert err.value.code == grpc.StatusCode.OUT_OF_RANGE


async def test_a_container_stream_far_slower_than_any_codec_is_ended_and_one_at_a_codecs_rate_is_not(
    make_router: MakeRouter,
) -> None:
    """FLAC or OGG is decoded only when it ends, so its rate is judged by its bytes: 64 bytes every
    0.2 s (320 B/s) is under a limit of 1,000 B/s; a FLAC file sent in parts 0.2 s apart is over it."""
    router = make_router(**SLOT_LIMITS, min_container_bytes_per_second=1000.0)
    slow = router._pump(
        _sent([(0.2, b"x" * 64)] * 6), StreamDecoder.for_container(router.limits), AudioBuffer()
    )
    with pytest.raises(AudioTimeout, match=r"encoded audio arrives at \d+ bytes/s .*min_container_bytes"):
        await slow
    buf = io.BytesIO()
    sf.write(buf, np.random.default_rng(0).normal(0, 0.1, 16000).astype(np.float32), 16000, format="FLAC")
    flac = buf.getvalue()
    parts = [flac[i : i + len(flac) // 5 + 1] for i in range(0, len(flac), len(flac) // 5 + 1)]
    assert len(flac) / (0.2 * len(parts)) > 1000
    audio = AudioBuffer()
    await router._pump(
        _sent([(0.2, part) for part in parts]), StreamDecoder.for_container(router.limits), audio
    )
    assert len(audio.array()) == 16000  # no AudioTimeout: the whole file, decoded


async def test_audio_at_half_real_time_is_slow_but_served(make_router: MakeRouter) -> None:
    router = make_router(**SLOT_LIMITS)
    pump = router._pump(_sent([(0.2, TENTH)] * 6), StreamDecoder.raw(16000, 1, router.limits), AudioBuffer())
    await pump  # no AudioTimeout: 0.5x is over min_audio_rate


async def test_a_long_file_goes_on_no_faster_than_its_worker_gives_final_results(
    make_router: MakeRouter, redis_client: aioredis.Redis, keys: Keys
) -> None:
    """Ten minutes uploaded at once: two minutes (and one entry) go on to Redis, and the rest only
    as the job's progress says its worker's final results cover more."""
    from lidroute.jobs import Progress
    from router.core import FORWARD_SAMPLES, MAX_BACKLOG

    router = make_router()
    buffer = AudioBuffer()
    buffer.append(np.zeros(600 * 16000, np.float32))
    buffer.end()
    pump = asyncio.ensure_future(asyncio.sleep(0))
    await pump
    forward = asyncio.ensure_future(router._forward("long-upload", buffer, pump))
    try:
        held_back = MAX_BACKLOG // FORWARD_SAMPLES + 1
        await asyncio.sleep(1.0)
        assert await redis_client.xlen(keys.audio("long-upload")) == held_back and not forward.done()
        event = Event("segment", result=pb.RecognitionResult(is_final=True))
        await JobQueue(redis_client, keys).commit("long-upload", event, Progress(committed=590 * 16000))
        await asyncio.wait_for(forward, 5)
        assert await redis_client.xlen(keys.audio("long-upload")) == 600 // 10 + 1  # and the end marker
    finally:
        forward.cancel()
