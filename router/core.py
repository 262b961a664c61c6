"""The router's logic, free of gRPC transport so that it is tested without a network.

One request: validate the config, pick the candidate languages (served = registered with a
live worker, or registered at all with `scale_from_zero`; intersected with what the request
allows and what the language-ID model knows),
decode audio as it arrives, detect the language on a window after the speech onset, enqueue
the job, forward the buffered and then the live audio to the job's stream, and relay the
worker's events back. Whatever ends the request early (error, deadline, client cancel) tells
the worker to stop through a cancel marker on the audio stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import replace
from typing import Any

import grpc
import numpy as np
import redis.asyncio as aioredis
import redis.exceptions
from prometheus_client import Counter, Gauge, Histogram
from pydantic import Field, field_validator

from lidroute.audio import TARGET_RATE, AudioLimits, StreamDecoder, duration, float_to_pcm16
from lidroute.auth import AccessSettings
from lidroute.errors import (
    AudioTimeout,
    DeadlineExceeded,
    InvalidArgument,
    LanguageNotFound,
    LanguageNotServed,
    LidrouteError,
    ResourceExhausted,
    Unavailable,
)
from lidroute.jobs import EventBatch, EventReader, Job, JobQueue, join_results
from lidroute.keys import Keys
from lidroute.registry import Registry, check_language_code
from lidroute.settings import FloatList, QueueSettings
from lidroute.v1 import language_id_pb2 as lid_pb
from lidroute.v1 import language_id_pb2_grpc as lid_grpc
from lidroute.v1 import transcriber_pb2 as pb
from lidroute.vad import VadPool
from router.detection import AudioBuffer, Decision, NoSpeech, OnsetDetector, detect_language

log = logging.getLogger(__name__)

Source = pb.LanguageDetected.Source
Encoding = pb.RecognitionConfig.AudioEncoding
Undetermined = pb.RecognitionConfig.UndeterminedAction

DETECTIONS = Counter("lidroute_router_detections_total", "Language decisions", ["language", "source"])
LID_LATENCY = Histogram("lidroute_router_language_id_seconds", "Time to decide the language")
STREAMS = Gauge("lidroute_router_streams_in_flight", "Requests being served now")
AUDIO_SECONDS = Counter("lidroute_router_audio_seconds_total", "Seconds of audio received", ["language"])
QUEUE_DEPTH = Gauge(
    "lidroute_router_queue_depth", "Jobs waiting or in progress, by language (sampled)", ["language"]
)
LID_WINDOW = Histogram(
    "lidroute_router_lid_window_seconds",
    "Speech used for the decision",
    buckets=(0.1, 0.25, 0.5, 1.0, 2.0, 3.0),
)


#: The most audio in one entry of a job's audio stream (10 s, 320 kB): a whole file sent at once
#: reaches its worker in pieces, which it can give final results of and let go one by one.
FORWARD_SAMPLES = 10 * TARGET_RATE
#: The most of a request's audio sent on beyond what its worker's final results cover (2 min).
MAX_BACKLOG = 120 * TARGET_RATE


class RouterSettings(QueueSettings, AccessSettings):
    """Router: the public Transcriber API."""

    listen_address: str = Field("[::]:50051", description="gRPC listen address")
    lid_address: str = Field("localhost:50052", description="language-ID service address")
    lid_timeout_seconds: float = Field(5.0, gt=0, description="timeout of one language-ID call")
    lid_windows: FloatList = Field([0.5, 1.0], description="growing windows of speech (s)")
    lid_threshold: float = Field(0.9, ge=0, le=1, description="probability that ends detection early")
    lid_min_probability: float = Field(
        0.0,
        ge=0,
        le=1,
        description="a detection less probable than this is UNDETERMINED (0: off; set it from the"
        " calibration of the LID model on real speech)",
    )
    max_onset_search_seconds: float = Field(5.0, gt=0, description="how long to look for speech")
    vad_threshold: float = Field(0.5, gt=0, lt=1, description="VAD speech probability threshold")
    max_audio_seconds: float = Field(
        4 * 3600.0,
        gt=0,
        description="longest audio accepted (a stream of any length is transcribed in bounded memory,"
        " a final result per stretch; a whole file sent at once is held whole)",
    )
    max_audio_bytes: int = Field(
        64 * 1024 * 1024,
        gt=0,
        description="most audio bytes per request (64 MiB: an hour of compressed speech, or of 8 kHz"
        " LINEAR16, in one Recognize call)",
    )
    max_chunk_bytes: int = Field(1024 * 1024, gt=0, description="most bytes in one streamed message")
    min_sample_rate: int = Field(8000, gt=0, description="lowest sample rate accepted")
    max_sample_rate: int = Field(48000, gt=0, description="highest sample rate accepted")
    max_request_seconds: float = Field(
        4 * 3600.0 + 600.0,
        gt=0,
        description="deadline when the client sets none (a stream in real time takes as long as its audio)",
    )
    queue_timeout_seconds: float = Field(30.0, gt=0, description="wait for a worker to start a job")
    scale_from_zero: bool = Field(
        False,
        description="serve every registered language even with no live worker: queue its jobs and wait "
        "queue_timeout_seconds for a worker to start (for worker pools autoscaled from zero)",
    )
    operation_ttl_seconds: int = Field(
        86400, ge=60, description="how long a long-running recognition's result is kept (Google API)"
    )
    first_audio_timeout_seconds: float = Field(
        10.0, gt=0, description="longest wait from a stream's config to its first audio (then OUT_OF_RANGE)"
    )
    audio_idle_timeout_seconds: float = Field(
        10.0, gt=0, description="longest gap between a stream's audio messages (then OUT_OF_RANGE)"
    )
    min_audio_rate: float = Field(
        0.25,
        ge=0,
        description="slowest raw audio a stream may send, in seconds of audio per second, once"
        " audio_rate_grace_seconds have passed (0: any); slower streams end with OUT_OF_RANGE",
    )
    min_container_bytes_per_second: float = Field(
        250.0,
        ge=0,
        description="slowest a stream of a container encoding (FLAC, OGG, MP3...) may send, in bytes"
        " per second, once audio_rate_grace_seconds have passed (0: any): its audio is known only"
        " when it ends, and 250 B/s (2 kbit/s) is under every speech codec's rate",
    )
    audio_rate_grace_seconds: float = Field(
        10.0, ge=0, description="stream time before min_audio_rate applies"
    )
    max_streams: int = Field(
        64,
        ge=1,
        description="requests served at once; one more gets RESOURCE_EXHAUSTED at once, with retry-after",
    )
    max_queue_depth: int = Field(
        64,
        ge=1,
        description="jobs waiting or in progress per language past which requests get RESOURCE_EXHAUSTED",
    )
    redis_memory_limit: float = Field(
        0.9,
        gt=0,
        le=1,
        description="share of Redis maxmemory past which new requests get RESOURCE_EXHAUSTED",
    )
    max_connection_age_seconds: float = Field(300.0, ge=0, description="rebalance clients (0: never)")
    grace_seconds: float = Field(10.0, ge=0, description="drain time on SIGTERM")

    @field_validator("lid_windows")
    @classmethod
    def _windows_grow(cls, windows: list[float]) -> list[float]:
        if not windows or any(not 0.1 <= w <= 10 for w in windows) or windows != sorted(windows):
            raise ValueError("lid_windows must be ascending seconds between 0.1 and 10")
        return windows

    def redis_connections(self) -> int:
        """The Redis pool's size: a stream holds at most one connection at once (its audio
        forwarding), the event reader one for all streams, and a few serve the registry, admission
        and operations."""
        return self.max_streams + 16

    def audio_limits(self) -> AudioLimits:
        return AudioLimits(
            max_seconds=self.max_audio_seconds,
            max_bytes=self.max_audio_bytes,
            max_chunk_bytes=self.max_chunk_bytes,
            min_sample_rate=self.min_sample_rate,
            max_sample_rate=self.max_sample_rate,
        )


async def config_and_audio(requests: AsyncIterator[Any]) -> tuple[Any, AsyncIterator[bytes]]:
    """A streaming call's first message's `streaming_config`, and the audio of the later ones.

    The native and Google's streaming requests share this shape (a oneof of `streaming_config`
    and `audio_content`), so both APIs are held to the same rules here.
    """
    requests = aiter(requests)
    try:
        first = await anext(requests)
    except StopAsyncIteration:
        raise InvalidArgument("empty stream: the first message must carry streaming_config") from None
    if not first.HasField("streaming_config"):
        raise InvalidArgument("the first message must carry streaming_config, not audio")

    async def audio() -> AsyncIterator[bytes]:
        async for request in requests:
            if request.HasField("streaming_config"):
                raise InvalidArgument("streaming_config may be sent only in the first message")
            yield request.audio_content

    return first.streaming_config, audio()


def _detected(decision: Decision, source: int) -> pb.LanguageDetected:
    return pb.LanguageDetected(
        language_code=decision.language,
        probability=decision.probability,
        alternatives=[
            pb.LanguageAlternative(language_code=c, probability=p) for c, p in decision.alternatives
        ],
        source=source,  # type: ignore[arg-type]
        speech_onset=duration(decision.onset / TARGET_RATE),
        detection_window=duration(decision.window / TARGET_RATE),
    )


def _empty_final(seconds: float, timing: pb.Timing) -> pb.RecognitionResult:
    """The final result of audio with no speech: an empty transcript over all of it."""
    return pb.RecognitionResult(
        alternatives=[pb.SpeechRecognitionAlternative(transcript="")],
        is_final=True,
        result_end_offset=duration(seconds),
        timing=timing,
    )


def _no_speech_final(buffer: AudioBuffer, lid_seconds: float, started: float) -> pb.RecognitionResult:
    """`_empty_final` over all the audio of a request that began at `started` (monotonic)."""
    seconds = buffer.size / TARGET_RATE
    timing = pb.Timing(
        audio_seconds=seconds,
        language_id_seconds=lid_seconds,
        total_seconds=time.monotonic() - started,
    )
    return _empty_final(seconds, timing)


def _job(
    request_id: str, language: str, deadline: float, streaming_config: pb.StreamingRecognitionConfig
) -> Job:
    """The request's job, leased: the router renews the lease while it relays the results."""
    config = streaming_config.config
    return Job(
        job_id=request_id,
        language=language,
        deadline=deadline,
        enqueued_at=time.time(),
        interim_results=streaming_config.interim_results,
        word_time_offsets=config.enable_word_time_offsets,
        word_confidence=config.enable_word_confidence,
        leased=True,
    )


def _allowed(config: pb.RecognitionConfig) -> list[str]:
    """The languages the request restricts detection to (none: any), each checked to be a code."""
    return [check_language_code(c) for c in config.alternative_language_codes]


def _langs(codes: Sequence[str]) -> str:
    return ", ".join(codes) if codes else "none"


class Router:
    def __init__(
        self, settings: RouterSettings, client: aioredis.Redis, lid_channel: grpc.aio.Channel
    ) -> None:
        self.settings = settings
        keys = Keys(settings.key_prefix)
        self.registry = Registry(client, keys, worker_ttl=settings.worker_ttl_seconds)
        self.queue = JobQueue(client, keys, stream_ttl=settings.stream_ttl_seconds)
        self.events = EventReader(self.queue)
        self.lid = lid_grpc.LanguageIdentifierStub(lid_channel)
        self.limits = settings.audio_limits()
        self.vad = VadPool()
        self._lid_languages: tuple[float, frozenset[str]] = (0.0, frozenset())
        self.client = client
        #: requests being served now, and whether Redis is near its maxmemory (`watch_redis`)
        self.in_flight = 0
        self.redis_full = False
        #: jobs whose clients left while Redis could not be told, and since when (`keep_abandoning`)
        self.unabandoned: dict[str, float] = {}

    async def close(self) -> None:
        """Stops the event reader (the requests are over: the server has shut down)."""
        await self.events.close()

    # ------------------------------------------------------------------ languages
    async def detectable_languages(self) -> frozenset[str]:
        expires, langs = self._lid_languages
        if time.monotonic() < expires:
            return langs
        reply = await self._call_lid(self.lid.ListModelLanguages, lid_pb.ListModelLanguagesRequest(), None)
        langs = frozenset(reply.language_codes)
        self._lid_languages = (time.monotonic() + 30.0, langs)
        return langs

    def _served(self, models: Mapping[str, object], workers: Mapping[str, int]) -> list[str]:
        """Languages the router routes to: those with a live worker, or with `scale_from_zero` every
        registered one, because a pool at zero replicas only starts once a job waits in its queue."""
        return sorted(lang for lang in models if self.settings.scale_from_zero or workers.get(lang, 0) > 0)

    async def list_languages(self) -> pb.ListLanguagesResponse:
        models, workers = await self.registry.served()
        served = set(self._served(models, workers))
        try:
            detectable = await self.detectable_languages()
        except Unavailable:
            detectable = frozenset()
        return pb.ListLanguagesResponse(
            languages=[
                pb.ServedLanguage(
                    language_code=lang,
                    model=pb.ModelInfo(
                        language_code=lang, uri=spec.name, revision=spec.revision, kind=spec.kind
                    ),
                    live_workers=workers.get(lang, 0),
                    served=lang in served,
                    detectable=lang in detectable,
                )
                for lang, spec in sorted(models.items())
            ]
        )

    async def plan(self, config: pb.RecognitionConfig) -> tuple[str | None, list[str]]:
        """The hinted language, or the candidates to detect among; errors name what is served."""
        models, workers = await self.registry.served()
        served = self._served(models, workers)
        if config.language_code:
            lang = check_language_code(config.language_code)
            if lang not in models:
                raise LanguageNotFound(f"language {lang!r} has no registered model; served: {_langs(served)}")
            if lang not in served:
                raise LanguageNotServed(f"no live worker serves {lang!r} right now; served: {_langs(served)}")
            return lang, [lang]
        allowed = _allowed(config)
        if not served:
            if not models:
                raise LanguageNotServed("no language is served: no model is registered")
            raise LanguageNotServed("no language is served right now (no live workers)")
        candidates = [lang for lang in served if not allowed or lang in allowed]
        if not candidates:
            raise LanguageNotServed(
                f"none of the allowed languages ({_langs(allowed)}) is served; served: {_langs(served)}"
            )
        if len(candidates) > 1:
            detectable = await self.detectable_languages()
            known = [lang for lang in candidates if lang in detectable]
            if not known:
                raise LanguageNotServed(
                    f"the language-ID model knows none of {_langs(candidates)}; pass language_code"
                )
            candidates = known
        return None, candidates

    async def detection_candidates(self, config: pb.RecognitionConfig) -> list[str]:
        """What language ID chooses among: every language it knows that the request allows, served or
        not, so that speech in a language nobody serves is said to be so rather than mistaken."""
        allowed = _allowed(config)
        return sorted(lang for lang in await self.detectable_languages() if not allowed or lang in allowed)

    @staticmethod
    def check_undetermined_action(config: pb.RecognitionConfig, candidates: Sequence[str]) -> None:
        """Refuses, before any audio is read, an on_undetermined that could not be carried out."""
        action, fallback = config.on_undetermined, config.fallback_language_code
        if action not in Undetermined.values():
            raise InvalidArgument(f"on_undetermined {action} is not one of {', '.join(Undetermined.keys())}")
        if action == Undetermined.FALLBACK:
            if not fallback:
                raise InvalidArgument("on_undetermined FALLBACK needs fallback_language_code")
            if check_language_code(fallback) not in candidates:
                raise InvalidArgument(
                    f"fallback_language_code {fallback!r} is not served; served: {_langs(candidates)}"
                )
        elif fallback:
            raise InvalidArgument("fallback_language_code is used only with on_undetermined FALLBACK")

    def undetermined(
        self, decision: Decision, served: Sequence[str], config: pb.RecognitionConfig
    ) -> Decision:
        """What the request asked for when language ID could not decide; the candidates stay."""
        best, p = decision.language, decision.probability
        floor = self.settings.lid_min_probability
        why = (
            f"its best language, {best!r} (p={p:.2f}), is not served"
            if best not in served
            else f"its best language, {best!r}, has p={p:.2f}, under lid_min_probability {floor:g}"
        )
        if config.on_undetermined == Undetermined.FAIL:
            top = ", ".join(f"{c} {q:.2f}" for c, q in decision.alternatives[:3])
            raise LanguageNotServed(
                f"language ID could not decide: {why} (best: {top}); served: {_langs(served)}"
            )
        if config.on_undetermined == Undetermined.FALLBACK:
            lang = config.fallback_language_code
        else:
            lang = next((c for c, _ in decision.alternatives if c in served), served[0])
        return replace(decision, language=lang, probability=dict(decision.alternatives).get(lang, 0.0))

    async def watch_redis(self, every: float = 2.0) -> None:
        """Keeps each language's queue-depth gauge current, and `redis_full` (admission refuses new
        work while Redis is near its maxmemory, before Redis refuses the writes of work admitted)."""
        while True:
            with contextlib.suppress(redis.exceptions.RedisError, OSError):
                memory = await self.client.info("memory")
                limit = int(memory.get("maxmemory", 0))
                self.redis_full = (
                    bool(limit) and memory["used_memory"] > self.settings.redis_memory_limit * limit
                )
                langs = list(await self.registry.models())
                for lang, depth in zip(langs, await self.queue.queue_depths(langs), strict=True):
                    QUEUE_DEPTH.labels(lang).set(depth)
            await asyncio.sleep(every)

    def admit(self, coming: int = 0) -> None:
        """Refuses a new request, at once, when serving it would put admitted work at risk
        (`coming`: requests about to start that `in_flight` does not count yet)."""
        if self.in_flight + coming > self.settings.max_streams:
            raise ResourceExhausted(
                f"the router is serving {self.settings.max_streams} requests, its limit (max_streams); "
                "retry shortly or use another router",
                retry_after=1.0,
            )
        if self.redis_full:
            raise ResourceExhausted(
                "the job store (Redis) is nearly full (redis_memory_limit of its maxmemory); retry shortly",
                retry_after=5.0,
            )

    # ------------------------------------------------------------------ language ID calls
    async def _call_lid(self, method, request, deadline: float | None):  # type: ignore[no-untyped-def]
        timeout = self.settings.lid_timeout_seconds
        if deadline is not None:
            timeout = min(timeout, deadline - time.time())
            if timeout <= 0:
                raise DeadlineExceeded("deadline exceeded before language identification")
        try:
            return await method(request, timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
                raise InvalidArgument(exc.details()) from None
            if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED and deadline and deadline <= time.time():
                raise DeadlineExceeded("deadline exceeded during language identification") from None
            raise Unavailable(
                f"language identification service unavailable: {exc.code().name}: {exc.details()}"
            ) from None

    async def identify(
        self, audio: np.ndarray, candidates: Sequence[str], deadline: float
    ) -> list[tuple[str, float]]:
        request = lid_pb.IdentifyRequest(
            audio_content=float_to_pcm16(audio), candidate_language_codes=candidates
        )
        reply = await self._call_lid(self.lid.Identify, request, deadline)
        return [(s.language_code, s.probability) for s in reply.languages]

    # ------------------------------------------------------------------ requests
    def decoder(self, config: pb.RecognitionConfig) -> StreamDecoder:
        encoding = config.encoding
        if encoding in (Encoding.LINEAR16, Encoding.MULAW):
            if not config.sample_rate_hertz:
                raise InvalidArgument(f"sample_rate_hertz is required for {Encoding.Name(encoding)} audio")
            return StreamDecoder.raw(
                config.sample_rate_hertz,
                config.audio_channel_count or 1,
                self.limits,
                mulaw=encoding == Encoding.MULAW,
            )
        if encoding in (Encoding.ENCODING_UNSPECIFIED, Encoding.FLAC, Encoding.OGG_OPUS, Encoding.MP3):
            if config.sample_rate_hertz:
                self.limits.check_rate(config.sample_rate_hertz)
            return StreamDecoder.for_container(self.limits, config.sample_rate_hertz)
        name = Encoding.Name(encoding) if encoding in Encoding.values() else str(encoding)
        raise InvalidArgument(
            f"encoding {name} is not supported "
            "(LINEAR16, MULAW, FLAC, OGG_OPUS, MP3, or ENCODING_UNSPECIFIED for any audio file)"
        )

    async def transcribe(
        self,
        streaming_config: pb.StreamingRecognitionConfig,
        chunks: AsyncIterator[bytes],
        time_remaining: float | None,
    ) -> AsyncIterator[pb.TranscribeResponse]:
        """One request, as a stream of responses; every request ends in one access-log line."""
        request_id = uuid.uuid4().hex
        record: dict[str, object] = {"request_id": request_id, "language": "", "audio_s": 0.0}
        started = time.monotonic()
        outcome = "error"
        self.in_flight += 1
        STREAMS.set(self.in_flight)
        try:
            self.admit()
            async for response in self._transcribe(
                request_id, streaming_config, chunks, time_remaining, record
            ):
                yield response
            outcome = "ok"
        except (asyncio.CancelledError, GeneratorExit):
            outcome = "cancelled"
            raise
        except LidrouteError as exc:
            outcome = exc.code.name
            raise
        finally:
            self.in_flight -= 1
            STREAMS.set(self.in_flight)
            AUDIO_SECONDS.labels(record["language"] or "none").inc(float(record["audio_s"]))  # type: ignore[arg-type]
            log.info(
                "request",
                extra={**record, "outcome": outcome, "seconds": round(time.monotonic() - started, 3)},
            )

    async def _transcribe(
        self,
        request_id: str,
        streaming_config: pb.StreamingRecognitionConfig,
        chunks: AsyncIterator[bytes],
        time_remaining: float | None,
        record: dict[str, object],
    ) -> AsyncIterator[pb.TranscribeResponse]:
        started = time.monotonic()
        config = streaming_config.config
        budget = self.settings.max_request_seconds
        deadline = time.time() + (min(time_remaining, budget) if time_remaining is not None else budget)
        decoder = self.decoder(config)
        hint, candidates = await self.plan(config)
        self.check_undetermined_action(config, candidates)
        await self.admit_languages(hint, candidates)
        buffer = AudioBuffer()
        pump = asyncio.create_task(self._pump(chunks, decoder, buffer), name=f"pump-{request_id}")
        forward: asyncio.Task[None] | None = None
        job: Job | None = None
        finished = False
        try:
            decision, source = await self._decide(hint, candidates, config, buffer, pump, deadline)
            record.update(language=decision.language, source=Source.Name(source))
            lid_seconds = time.monotonic() - started
            DETECTIONS.labels(decision.language, Source.Name(source)).inc()
            yield pb.TranscribeResponse(request_id=request_id, language_detected=_detected(decision, source))
            if source == Source.NO_SPEECH:
                # Nothing to recognise: the final result comes from here, and no worker is woken.
                result = _no_speech_final(buffer, lid_seconds, started)
                yield pb.TranscribeResponse(request_id=request_id, result=result)
                finished = True
                return
            job = _job(request_id, decision.language, deadline, streaming_config)
            await self._enqueue(job)
            forward = asyncio.create_task(self._forward(job.job_id, buffer, pump), name=f"fwd-{request_id}")
            async for result in self._relay(job, forward):
                result.timing.language_id_seconds = lid_seconds
                result.timing.total_seconds = time.monotonic() - started
                yield pb.TranscribeResponse(request_id=request_id, result=result)
            finished = True  # the relay ends with the last final result
        finally:
            record["audio_s"] = round(buffer.size / TARGET_RATE, 3)
            await self._wind_up(pump, forward, job, finished)

    async def _wind_up(
        self, pump: asyncio.Task[None], forward: asyncio.Task[None] | None, job: Job | None, finished: bool
    ) -> None:
        """However the request ended: its tasks stopped, and its job (if one was queued) forgotten
        once finished or abandoned if not, so the worker stops; neither may hide why it ended."""
        for task in (pump, forward):
            if task is not None:
                task.cancel()
        if job is not None and not finished:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.shield(self._abandon(job.job_id))
        elif job is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.shield(self.queue.forget(job.job_id))

    async def _decide(
        self,
        hint: str | None,
        candidates: list[str],
        config: pb.RecognitionConfig,
        buffer: AudioBuffer,
        pump: asyncio.Task[None],
        deadline: float,
    ) -> tuple[Decision, int]:
        if hint is not None:
            return Decision(hint, 1.0, [], 0, 0), Source.HINT
        if len(candidates) == 1:
            return Decision(candidates[0], 1.0, [(candidates[0], 1.0)], 0, 0), Source.SINGLE_CANDIDATE
        detector = OnsetDetector(self.vad, threshold=self.settings.vad_threshold)
        with LID_LATENCY.time():
            detection = asyncio.create_task(
                detect_language(
                    buffer,
                    await self.detection_candidates(config),
                    lambda audio, cands: self.identify(audio, cands, deadline),
                    detector,
                    windows=self.settings.lid_windows,
                    threshold=self.settings.lid_threshold,
                    max_onset_search=self.settings.max_onset_search_seconds,
                )
            )
            try:
                decision = await self._unless_pump_fails(detection, pump, deadline)
            except NoSpeech:
                return Decision("", 0.0, [], buffer.size, 0), Source.NO_SPEECH
            finally:
                detection.cancel()
        LID_WINDOW.observe(decision.window / TARGET_RATE)
        if decision.language not in candidates or decision.probability < self.settings.lid_min_probability:
            return self.undetermined(decision, candidates, config), Source.UNDETERMINED
        return decision, Source.DETECTED

    @staticmethod
    async def _unless_pump_fails(
        task: asyncio.Task[Decision], pump: asyncio.Task[None], deadline: float
    ) -> Decision:
        """Waits for `task`, but a bad chunk from the client (the pump failing) ends the wait at once."""
        waiting = {task, pump}
        while task in waiting:
            timeout = deadline - time.time()
            if timeout <= 0:
                raise DeadlineExceeded("deadline exceeded during language identification")
            done, _ = await asyncio.wait(waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            if pump in done:
                pump.result()  # raises the client's audio error, if any
                waiting.discard(pump)
            if task in done:
                return task.result()
        return task.result()

    def _check_rate(self, decoder: StreamDecoder, elapsed: float) -> None:
        """Ends a stream whose audio comes far slower than speech once the grace has passed: raw
        audio by its seconds, a container (decoded only when it ends) by its bytes."""
        settings = self.settings
        if elapsed <= settings.audio_rate_grace_seconds:
            return
        if decoder.container:
            rate = decoder.bytes_in / elapsed
            if rate < settings.min_container_bytes_per_second:
                raise AudioTimeout(
                    f"encoded audio arrives at {rate:.0f} bytes/s ({decoder.bytes_in} bytes in"
                    f" {elapsed:.0f} s); at least {settings.min_container_bytes_per_second:g} is needed"
                    " (min_container_bytes_per_second)"
                )
        elif decoder.seconds < settings.min_audio_rate * elapsed:
            spoken = decoder.seconds
            raise AudioTimeout(
                f"audio arrives at {spoken / elapsed:.2f}x real time ({spoken:.1f} s in {elapsed:.0f} s);"
                f" at least {settings.min_audio_rate:g}x is needed (min_audio_rate)"
            )

    async def _pump(self, chunks: AsyncIterator[bytes], decoder: StreamDecoder, buffer: AudioBuffer) -> None:
        """Decodes the client's audio into `buffer` as it comes. A client that sends nothing, stops
        sending, or sends audio far slower than speech (holding a worker's slot, whether by fault
        or on purpose) ends the request with OUT_OF_RANGE."""
        settings = self.settings
        requests = aiter(chunks)
        opened = time.monotonic()
        first: float | None = None
        while True:
            wait = (
                settings.first_audio_timeout_seconds - (time.monotonic() - opened)
                if first is None
                else settings.audio_idle_timeout_seconds
            )
            try:
                chunk = await asyncio.wait_for(anext(requests), max(wait, 0.001))
            except StopAsyncIteration:
                break
            except TimeoutError:
                what, limit, waited = (
                    ("no audio came", "first_audio_timeout_seconds", settings.first_audio_timeout_seconds)
                    if first is None
                    else ("no more audio came", "audio_idle_timeout_seconds", wait)
                )
                raise AudioTimeout(
                    f"{what} for {waited:g} s ({limit}): send audio close to real time, and end the"
                    " stream when done"
                ) from None
            now = time.monotonic()
            first = first or now
            buffer.append(decoder.feed(chunk))
            self._check_rate(decoder, now - first)
            await buffer.room(3 * FORWARD_SAMPLES)
        if decoder.container:  # a file: decoded a block at a time, no faster than it is sent on
            blocks = decoder.rest()
            while (block := await asyncio.to_thread(next, blocks, None)) is not None:
                buffer.append(block)
                await buffer.room(3 * FORWARD_SAMPLES)
        else:
            buffer.append(decoder.finish())
        if buffer.size == 0:
            raise InvalidArgument("no audio received: the stream ended before any audio content")
        buffer.end()

    async def _forward(self, job_id: str, buffer: AudioBuffer, pump: asyncio.Task[None]) -> None:
        """Sends what is buffered, then every later chunk as it arrives, then the end marker; what
        is sent is let go (`AudioBuffer.take`). A long file uploaded at once goes on no faster than
        its worker gives final results of it (`MAX_BACKLOG`): Redis holds a few minutes of a
        request's audio at most, however long the file."""
        forwarded = committed = 0  # samples sent on, and samples the worker's final results cover
        while True:
            if pump.done() and pump.exception() is not None:
                raise pump.exception()  # type: ignore[misc]
            if buffer.chunks:
                audio = np.concatenate(buffer.take())
                for start in range(0, len(audio), FORWARD_SAMPLES):
                    while forwarded - committed > MAX_BACKLOG:
                        await asyncio.sleep(0.25)
                        committed = (await self.queue.progress(job_id)).committed
                    piece = audio[start : start + FORWARD_SAMPLES]
                    await self.queue.append_audio(job_id, float_to_pcm16(piece))
                    forwarded += len(piece)
            elif buffer.ended:
                await self.queue.end_audio(job_id)
                return
            else:
                waiter = asyncio.ensure_future(buffer.wait_change())
                await asyncio.wait({waiter, pump}, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()

    async def _relay(self, job: Job, forward: asyncio.Task[None]) -> AsyncIterator[pb.RecognitionResult]:
        """The job's results as its worker writes them, read by the router's one `EventReader`."""
        events = await self.events.watch(job.job_id)
        try:
            async for result in self._results(job, forward, events):
                yield result
        finally:
            self.events.forget(job.job_id)

    async def _results(
        self, job: Job, forward: asyncio.Task[None], events: asyncio.Queue[EventBatch]
    ) -> AsyncIterator[pb.RecognitionResult]:
        started = False
        queue_limit = time.time() + self.settings.queue_timeout_seconds
        renew_every = self.settings.client_lease_seconds / 3
        renewed = time.monotonic()
        while True:
            if time.monotonic() - renewed >= renew_every:
                await self.queue.renew_lease(job.job_id, self.settings.client_lease_seconds)
                renewed = time.monotonic()
            if forward.done() and not forward.cancelled() and forward.exception() is not None:
                raise forward.exception()  # type: ignore[misc]
            now = time.time()
            if now >= job.deadline:
                raise DeadlineExceeded("deadline exceeded while waiting for the transcript")
            if not started and now >= queue_limit:
                raise Unavailable(await self._queue_timeout_message(job.language))
            wait = min(0.25, min(job.deadline, queue_limit if not started else math.inf) - now)
            try:
                batch = await asyncio.wait_for(events.get(), max(wait, 0.001))
            except TimeoutError:
                continue
            if isinstance(batch, BaseException):
                raise batch
            for _, event in batch:
                if event.kind == "started":
                    started = True
                elif event.kind == "error":
                    raise LidrouteError.from_status(event.code, event.message)
                elif event.result is not None and (event.result.is_final or job.interim_results):
                    # A long stream's stretches come as `segment` final results; `final` is the last.
                    started = True
                    yield event.result
                    if event.kind == "final":
                        return

    async def admit_languages(self, hint: str | None, candidates: list[str]) -> None:
        """Refuses a request before it sends its audio when every language it may go to has a full
        queue: its hint, or all the candidates detection chooses among (one pipelined read of
        their lengths). Where one candidate has room the request goes on, and `_enqueue` checks
        again, in one step with the add, once the language is known."""
        langs = [hint] if hint is not None else candidates
        if langs and min(await self.queue.queue_depths(langs)) >= self.settings.max_queue_depth:
            raise self._queue_full(*langs)

    def _queue_full(self, *langs: str) -> ResourceExhausted:
        limit = self.settings.max_queue_depth
        if len(langs) == 1:
            what = f"{limit} {langs[0]!r} jobs are waiting or in progress"
        else:
            what = f"the queues of every language this request may go to ({_langs(langs)}) hold {limit} jobs"
        return ResourceExhausted(f"{what}, the limit (max_queue_depth); retry shortly", retry_after=2.0)

    async def _enqueue(self, job: Job) -> None:
        """Queues the job under its client's lease, unless its language's queue is full."""
        if self.settings.scale_from_zero:
            # KEDA's lag trigger reads the workers' consumer group: a language registered by
            # hand whose pool is at zero has none until this, and would never wake.
            await self.queue.ensure_group(job.language)
        await self.queue.renew_lease(job.job_id, self.settings.client_lease_seconds)
        if await self.queue.enqueue(job, self.settings.max_queue_depth) is None:
            raise self._queue_full(job.language)

    async def _abandon(self, job_id: str) -> None:
        """Tells the worker the client is gone: the cancel marker, and the lease dropped. Where
        Redis cannot be told now (down, paused), `keep_abandoning` tells it once it answers: a job
        that survived in Redis's AOF would otherwise hold a worker's slot until its lease lapsed."""
        try:
            await self._tell_gone(job_id)
        except (redis.exceptions.RedisError, OSError):
            self.unabandoned[job_id] = time.monotonic()
            raise

    async def _tell_gone(self, job_id: str) -> None:
        """The cancel marker, and the lease dropped even where the marker could not be written."""
        try:
            await self.queue.cancel(job_id, "request ended early")
        finally:
            await self.queue.drop_lease(job_id)

    async def keep_abandoning(self, every: float = 0.25) -> None:
        """Abandons again, as soon as Redis answers, the jobs `_abandon` could not; those whose
        lease has lapsed meanwhile (client_lease_seconds) are left: no worker keeps them now."""
        while True:
            await asyncio.sleep(every)
            lapsed = time.monotonic() - self.settings.client_lease_seconds
            for job_id, since in list(self.unabandoned.items()):
                if since < lapsed:
                    del self.unabandoned[job_id]
                    continue
                try:
                    await self._tell_gone(job_id)
                except (redis.exceptions.RedisError, OSError):
                    break  # still unreachable: the next round
                del self.unabandoned[job_id]

    async def _queue_timeout_message(self, lang: str) -> str:
        """Says whether no worker exists (a pool that did not start in time) or all are busy."""
        waited = f"within {self.settings.queue_timeout_seconds:g} s (queue_timeout_seconds)"
        try:
            live = (await self.registry.live_workers([lang]))[lang]
        except (redis.exceptions.RedisError, OSError):  # a second failure must not hide the timeout
            live = -1
        if live == 0:
            return f"no worker for {lang!r} started {waited}: {lang!r} has no live worker"
        if live > 0:
            return f"no worker for {lang!r} picked the job up {waited}: its {live} live worker(s) are busy"
        return f"no worker for {lang!r} picked the job up {waited}"

    async def recognize(
        self, config: pb.RecognitionConfig, data: bytes, time_remaining: float | None
    ) -> pb.RecognizeResponse:
        """A whole file's recognition: the streaming path fed from memory, its events gathered."""
        if not data:
            raise InvalidArgument("audio_content is empty")
        self.limits.check_total_bytes(len(data))
        step = self.limits.max_chunk_bytes

        async def pieces() -> AsyncIterator[bytes]:
            for i in range(0, len(data), step):
                yield data[i : i + step]

        response = pb.RecognizeResponse()
        streaming = pb.StreamingRecognitionConfig(config=config)
        async for event in self.transcribe(streaming, pieces(), time_remaining):
            response.request_id = event.request_id
            if event.HasField("language_detected"):
                response.language_detected.CopyFrom(event.language_detected)
            elif event.result.is_final:
                response.segments.append(event.result)
        response.result.CopyFrom(join_results(response.segments))
        return response
