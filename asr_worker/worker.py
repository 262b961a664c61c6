"""The queue consumer: takes jobs of its languages, streams their audio in, writes events out.

Work is acknowledged only after the final event is written, so a worker that dies mid-job
loses nothing: its job stays pending and a live worker reclaims it. While a job is in
progress its idle time is reset every few seconds, so that only a dead worker's jobs look
idle. A job delivered `max_deliveries` times goes to the dead-letter stream and its client
gets an error instead of waiting forever.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import redis.asyncio as aioredis
import redis.exceptions
import torch
from prometheus_client import Counter, Gauge, Histogram
from pydantic import Field

from asr_worker.decoding import DEFAULT_BEAM
from asr_worker.model import Acoustic, CtcModel, Part, Transcript, batch_logits
from lidroute.audio import TARGET_RATE, duration, pcm16_to_float
from lidroute.batching import MicroBatcher
from lidroute.jobs import Delivery, Event, EventKind, JobQueue, Progress
from lidroute.keys import Keys
from lidroute.registry import Registry
from lidroute.server import GrpcServer, run_service, start_metrics
from lidroute.settings import CommaList, ComputeSettings, QueueSettings
from lidroute.v1 import transcriber_pb2 as pb
from lidroute.vad import Pauses, VadPool

log = logging.getLogger(__name__)

JOBS = Counter("lidroute_worker_jobs_total", "Jobs finished", ["language", "outcome"])
INFERENCE = Histogram(
    "lidroute_worker_inference_seconds", "Model and decoding time per final result", ["language"]
)
BATCH_SIZE = Histogram(
    "lidroute_worker_batch_size", "Audio parts per acoustic model call", buckets=(1, 2, 4, 8, 16, 32, 64)
)
ACTIVE = Gauge("lidroute_worker_active_jobs", "Jobs in progress")
#: What Redis may pass through and recover from: down, slow, at its maxmemory (noeviction refuses
#: writes, even XREADGROUP's), or a replica that is read-only during a failover.
REDIS_ERRORS = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.OutOfMemoryError,
    redis.exceptions.ReadOnlyError,
    OSError,
)


class WorkerSettings(QueueSettings, ComputeSettings):
    """ASR worker: serves the listed languages, or every registered one when none is listed."""

    languages: CommaList = Field(
        default_factory=list, description="languages to serve (empty: all registered)"
    )
    health_address: str = Field("[::]:50053", description="gRPC health/reflection listen address")
    worker_id: str = Field("", description="consumer name (default: host-pid-random)")
    device: str = Field("cpu", description="torch device")
    beam: int = Field(
        DEFAULT_BEAM,
        ge=0,
        le=512,
        description="beam width for models with a word LM (lm.json); 0: greedy decoding",
    )
    pause_split_seconds: float = Field(
        0.5,
        ge=0,
        description="a silence this long splits a request into parts recognised one by one (0: never)",
    )
    concurrency: int = Field(
        16,
        ge=1,
        le=256,
        description="jobs in progress at once (a streamed job holds its slot while its audio comes;"
        " their model calls share batches, so this bounds waiting streams, not compute)",
    )
    block_ms: int = Field(1000, ge=10, description="how long one queue read waits")
    reclaim_idle_seconds: float = Field(
        15.0, gt=0, description="a job idle this long belongs to a dead worker"
    )
    reclaim_interval_seconds: float = Field(2.0, gt=0, description="how often to look for such jobs")
    max_deliveries: int = Field(3, ge=1, description="deliveries before a job goes to the dead stream")
    heartbeat_seconds: float = Field(2.0, gt=0, description="heartbeat period")
    interim_interval_seconds: float = Field(1.0, gt=0, description="audio between two interim results")
    final_after_seconds: float = Field(
        30.0,
        gt=0,
        description="audio held past which the stretches a pause has closed are given as a final result"
        " and let go: a stream of any length is transcribed in bounded memory, a final result a stretch",
    )
    audio_idle_timeout_seconds: float = Field(30.0, gt=0, description="give up when audio stops arriving")
    grace_seconds: float = Field(30.0, ge=0, description="time to finish jobs in progress on SIGTERM")
    model_cache: Path = Field(Path.home() / ".cache/lidroute/hub", description="hub download cache")


#: Seconds before `final_after_seconds` from which a stretch is scanned for its last pause.
PAUSE_LOOK_SECONDS = 10.0


class HeldAudio:
    """A job's audio since its last final result, counted in samples from the start of the job's
    audio, and where its audio stream has been read to. A long stream's stretches are let go once
    given as final results (`let_go`), so what is held stays bounded however long the stream."""

    def __init__(self, progress: Progress) -> None:
        #: The first sample held: those before it are in final results already.
        self.base = progress.committed
        self.size = 0
        self.last_id = progress.after
        self._chunks: list[np.ndarray] = []
        self._read = progress.at  # samples in the audio stream up to last_id
        self._after, self._at = progress.after, progress.at
        #: (entry id, samples to its end) of the audio entries read since the last progress
        self._entries: collections.deque[tuple[str, int]] = collections.deque()

    def add(self, entry_id: str, pcm: np.ndarray) -> None:
        """An audio entry's samples; those a final result covers already (a job taken over) are skipped."""
        skip = min(len(pcm), max(0, self.base + self.size - self._read))
        if skip < len(pcm):
            self._chunks.append(pcm[skip:])
            self.size += len(pcm) - skip
        self._read += len(pcm)
        self.last_id = entry_id
        self._entries.append((entry_id, self._read))

    def audio(self) -> np.ndarray:
        if len(self._chunks) != 1:
            self._chunks = [np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.float32)]
        return self._chunks[0]

    def let_go(self, samples: int) -> Progress:
        """Drops the first `samples` held (given as a final result) and returns the job's progress:
        the last audio entry wholly before what is still held, for a worker that takes it over."""
        self._chunks = [self.audio()[samples:].copy()]
        self.base += samples
        self.size -= samples
        while self._entries and self._entries[0][1] <= self.base:
            self._after, self._at = self._entries.popleft()
        return Progress(committed=self.base, after=self._after, at=self._at)


@dataclass
class _Running:
    """A job in progress: what its steps (`_receive_audio`, `_give_stretch`, `_finish`) share."""

    delivery: Delivery
    model: CtcModel
    held: HeldAudio
    picked_up: float
    #: parts of the held audio decoded so far, for interim results (`CtcModel.transcribe`)
    decoded: dict[tuple[int, int], Part] = field(default_factory=dict)
    #: the VAD's pauses of a long stream, scanned once more than `final_after_seconds` is held
    pauses: Pauses | None = None


class AsrWorker:
    def __init__(self, settings: WorkerSettings, client: aioredis.Redis) -> None:
        self.settings = settings
        self.id = settings.worker_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        keys = Keys(settings.key_prefix)
        self.registry = Registry(client, keys, worker_ttl=settings.worker_ttl_seconds)
        self.queue = JobQueue(client, keys, stream_ttl=settings.stream_ttl_seconds)
        self.models: dict[str, CtcModel] = {}
        self.active: set[asyncio.Task[None]] = set()
        self.stopping = asyncio.Event()
        self._sync_lock = asyncio.Lock()
        # Every job's model calls go through one batcher: one model call at a time on the cores,
        # parts of jobs waiting together in one call (`batch_logits`), decoding beside it.
        self.batcher: MicroBatcher[tuple[Acoustic, np.ndarray], torch.Tensor] = MicroBatcher(
            batch_logits,
            max_batch=settings.max_batch,
            max_wait_s=settings.batch_wait_ms / 1000,
            on_batch=BATCH_SIZE.observe,
        )
        self.vad = VadPool()

    # ------------------------------------------------------------------ models
    def wants(self, lang: str) -> bool:
        return not self.settings.languages or lang in self.settings.languages

    async def sync_models(self) -> None:
        """Loads, reloads or drops models so that they match the registry; no restart needed."""
        async with self._sync_lock:
            specs = {lang: spec for lang, spec in (await self.registry.models()).items() if self.wants(lang)}
            for lang in list(self.models):
                if lang not in specs:
                    del self.models[lang]
                    await self.registry.leave(self.id, [lang])
                    log.info("language dropped", extra={"language": lang})
            for lang, spec in specs.items():
                current = self.models.get(lang)
                if current is not None and current.spec == spec:
                    continue
                try:
                    model = await asyncio.to_thread(
                        CtcModel,
                        lang,
                        spec,
                        self.settings.device,
                        self.settings.beam,
                        self.settings.pause_split_seconds,
                    )
                except Exception as exc:
                    log.error(
                        "could not load model", extra={"language": lang, "uri": spec.uri, "error": str(exc)}
                    )
                    continue
                await self.queue.ensure_group(lang)
                self.models[lang] = model
            missing = [lang for lang in self.settings.languages if lang not in specs]
            if missing:
                log.warning("no registered model for configured languages", extra={"languages": missing})

    async def watch_registry(self) -> None:
        async for _ in self.registry.changes():
            try:
                await self.sync_models()
                await self.registry.heartbeat(self.id, sorted(self.models))
            except REDIS_ERRORS as exc:
                log.warning("registry sync failed", extra={"error": str(exc)})

    async def heartbeat(self) -> None:
        while True:
            try:
                await self.registry.heartbeat(self.id, sorted(self.models))
            except REDIS_ERRORS as exc:
                log.warning("heartbeat failed", extra={"error": str(exc)})
            await asyncio.sleep(self.settings.heartbeat_seconds)

    # ------------------------------------------------------------------ taking jobs
    def free_slots(self) -> int:
        return self.settings.concurrency - len(self.active)

    def start_job(self, delivery: Delivery) -> None:
        task = asyncio.create_task(self.process(delivery), name=f"job-{delivery.job.job_id}")
        self.active.add(task)
        ACTIVE.set(len(self.active))
        task.add_done_callback(self._job_done)

    def _job_done(self, task: asyncio.Task[None]) -> None:
        self.active.discard(task)
        ACTIVE.set(len(self.active))

    async def consume(self) -> None:
        """New jobs into free slots; but first, about once a second, the jobs of dead workers, whose
        clients have waited longest (`adopt_orphans`)."""
        looked = 0.0
        while not self.stopping.is_set():
            if self.free_slots() <= 0 or not self.models:
                await asyncio.sleep(0.05)
                continue
            if time.monotonic() - looked >= 1.0:
                looked = time.monotonic()
                with contextlib.suppress(*REDIS_ERRORS):
                    await self.adopt_orphans()
                if self.free_slots() <= 0:
                    continue
            try:
                deliveries = await self.queue.next_jobs(
                    sorted(self.models), self.id, self.free_slots(), self.settings.block_ms
                )
            except REDIS_ERRORS as exc:
                log.warning("queue read failed; retrying", extra={"error": str(exc)})
                await asyncio.sleep(1.0)
                continue
            for delivery in deliveries:
                self.start_job(delivery)

    async def reclaim(self) -> None:
        """Takes over jobs left idle past reclaim_idle_seconds (a worker that died, whatever the
        registry says); retires those that keep failing."""
        min_idle_ms = int(self.settings.reclaim_idle_seconds * 1000)
        while not self.stopping.is_set():
            await asyncio.sleep(self.settings.reclaim_interval_seconds)
            for lang in sorted(self.models):
                if self.free_slots() <= 0:
                    break
                try:
                    await self._take(
                        lang, await self.queue.reclaim(lang, self.id, min_idle_ms, self.free_slots())
                    )
                except REDIS_ERRORS as exc:
                    log.warning("reclaim failed", extra={"error": str(exc)})

    async def adopt_orphans(self) -> None:
        """Takes over, before new work, the jobs of workers whose heartbeat stopped: no need to wait
        for reclaim_idle_seconds when the registry already says their worker is gone."""
        touched_ms = int(self.settings.reclaim_idle_seconds / 3 * 1000)  # how often keep_claimed touches
        for lang in sorted(self.models):
            if self.free_slots() <= 0:
                return
            live = await self.registry.live_ids(lang) | {self.id}
            claimed = await self.queue.claim_orphans(lang, self.id, live, 2 * touched_ms, self.free_slots())
            await self._take(lang, claimed)

    async def _take(self, lang: str, claimed: list[tuple[Delivery | None, str, int]]) -> None:
        for delivery, entry_id, times in claimed:
            if delivery is None:
                await self.queue.ack(lang, entry_id)
            elif times > self.settings.max_deliveries:
                await self.retire(delivery, times)
            else:
                log.info("reclaimed job", extra={"job_id": delivery.job.job_id, "deliveries": times})
                self.start_job(delivery)

    async def retire(self, delivery: Delivery, times: int) -> None:
        message = f"job failed after {times - 1} deliveries; giving up"
        log.error("job dead-lettered", extra={"job_id": delivery.job.job_id, "deliveries": times})
        error = Event("error", worker_id=self.id, code="ABORTED", message=message)
        await self.queue.dead_letter(delivery, times, error)
        JOBS.labels(delivery.language, "dead").inc()

    # ------------------------------------------------------------------ one job
    async def keep_claimed(self, delivery: Delivery) -> None:
        period = max(self.settings.reclaim_idle_seconds / 3, 0.2)
        while True:
            await asyncio.sleep(period)
            with contextlib.suppress(*REDIS_ERRORS):
                await self.queue.touch(delivery, self.id)

    async def process(self, delivery: Delivery) -> None:
        job, lang = delivery.job, delivery.language
        keeper = asyncio.create_task(self.keep_claimed(delivery))
        outcome = "error"
        try:
            outcome = await self._run_job(delivery)
        except asyncio.CancelledError:
            outcome = "interrupted"
            raise
        except REDIS_ERRORS as exc:
            log.warning(
                "job interrupted by Redis; it stays pending", extra={"job_id": job.job_id, "error": str(exc)}
            )
        except Exception:
            log.exception("job failed; it stays pending for another delivery", extra={"job_id": job.job_id})
        finally:
            keeper.cancel()
            JOBS.labels(lang, outcome).inc()

    async def _run_job(self, delivery: Delivery) -> str:
        job, lang = delivery.job, delivery.language
        picked_up = time.time()
        if job.seconds_left() <= 0:
            await self._fail(
                delivery, "DEADLINE_EXCEEDED", "the request's deadline passed before a worker was free"
            )
            return "expired"
        if await self.queue.client_gone(job):
            return await self._abandoned(delivery, "before it started")
        model = self.models.get(lang)
        if model is None:
            raise RuntimeError(f"no model loaded for {lang}")
        # A job taken over from a worker that died goes on where that worker's final results ended.
        held = HeldAudio(await self.queue.progress(job.job_id))
        await self.queue.emit(job.job_id, Event("started", worker_id=self.id))
        log.info("job started", extra={"job_id": job.job_id, "language": lang, "from_sample": held.base})
        run = _Running(delivery, model, held, picked_up)
        try:
            outcome = await self._receive_audio(run)
            if outcome is not None:
                return outcome
            return await self._finish(run)
        finally:
            if run.pauses is not None:
                run.pauses.close()

    async def _receive_audio(self, run: _Running) -> str | None:
        """Takes the job's audio as it streams in, sending interim results and, once more than
        `final_after_seconds` is held, final results of what pauses have closed; None once the
        audio has ended, else how the job ended otherwise (client gone, cancelled, deadline passed,
        audio stopped)."""
        job, held = run.delivery.job, run.held
        last_interim = 0
        interval = int(self.settings.interim_interval_seconds * TARGET_RATE)
        final_after = int(self.settings.final_after_seconds * TARGET_RATE)
        last_audio = checked = time.monotonic()
        while True:
            if time.monotonic() - checked >= 1.0:
                checked = time.monotonic()
                if await self.queue.client_gone(job):
                    return await self._abandoned(run.delivery, "while its audio was coming")
            block = int(min(1000, max(job.seconds_left(), 0.01) * 1000))
            entries = await self.queue.read_audio(job.job_id, held.last_id, block)
            if not entries:
                if job.seconds_left() <= 0:
                    await self._fail(
                        run.delivery, "DEADLINE_EXCEEDED", "deadline exceeded while waiting for audio"
                    )
                    return "expired"
                if time.monotonic() - last_audio > self.settings.audio_idle_timeout_seconds:
                    await self._fail(run.delivery, "DEADLINE_EXCEEDED", "no audio arrived for too long")
                    return "timeout"
                continue
            last_audio = time.monotonic()
            for entry_id, kind, payload in entries:
                if kind == "pcm":
                    held.add(entry_id, pcm16_to_float(payload))
                    if held.size >= final_after:  # each entry: a whole file's come in one read
                        await self._give_stretch(run)
                        last_interim = held.size
                    continue
                held.last_id = entry_id
                if kind == "cancel":
                    log.info(
                        "job cancelled by client", extra={"job_id": job.job_id, "reason": payload.decode()}
                    )
                    await self.queue.done(run.delivery)
                    return "cancelled"
                return None  # the end of the audio
            if job.interim_results and held.size - last_interim >= interval:
                last_interim = held.size
                partial = await self.transcribe(run.model, held.audio(), run.decoded)
                await self.queue.emit(job.job_id, self._event(run, partial, held.size, "partial"))

    async def _give_stretch(self, run: _Running) -> None:
        """The held audio up to the latest pause, as one final result, then let go; what follows it
        may still grow and stays. The pause is the latest that Silero VAD or the parts' level found
        (a level pause is near silence; the VAD finds those that steady noise fills too). The VAD
        scans a stretch from `PAUSE_LOOK_SECONDS` before `final_after_seconds` on, each frame once:
        the latest pause is near the end, and scanning all of a long stream would cost a tenth of
        its decoding. With no pause yet, nothing: a part is cut at 30 s of speech without one
        (`speech_segments`), so what is held stays bounded."""
        held = run.held
        audio = held.audio()
        if run.pauses is None:
            look = max(0.0, self.settings.final_after_seconds - PAUSE_LOOK_SECONDS)
            start = held.base + int(look * TARGET_RATE)
            run.pauses = Pauses(self.vad, start=start, min_pause=self.settings.pause_split_seconds or 0.5)
        await asyncio.to_thread(run.pauses.scan, audio, held.base)
        parts = run.model.parts(audio)
        cuts = [parts[-1][0]] if len(parts) > 1 else []
        if (pause := run.pauses.cut()) is not None and pause > held.base:
            cuts.append(pause - held.base)
        if not cuts:
            return
        cut = max(cuts)
        # The closed parts as found in all that is held, so that their interim decodings are
        # reused; one that runs past a pause only the VAD heard ends at it.
        closed = [(a, min(b, cut)) for a, b in parts if a < cut]
        result = await self.transcribe(run.model, audio, run.decoded, closed)
        INFERENCE.labels(run.delivery.language).observe(result.inference_seconds)
        segment = self._event(run, result, cut, "segment")
        await self.queue.commit(run.delivery.job.job_id, segment, held.let_go(cut))
        run.decoded.clear()  # its keys counted from the audio held before
        run.pauses.close()  # the next stretch's scan starts where it may end
        run.pauses = None

    async def _finish(self, run: _Running) -> str:
        """The final result of the audio held, or a refusal of audio too short for the model."""
        delivery, model, held = run.delivery, run.model, run.held
        job, lang = delivery.job, delivery.language
        audio = held.audio()
        if held.base == 0 and 0 < len(audio) < model.min_samples:
            # Its model's real minimum (`CtcModel.min_samples`): a clear refusal, not a guess padded out.
            await self._fail(
                delivery,
                "INVALID_ARGUMENT",
                f"{len(audio) / TARGET_RATE:.3f} s of audio is too short for the {lang} model,"
                f" which needs at least {model.min_samples / TARGET_RATE:.3f} s",
            )
            return "too_short"
        final = await self.transcribe(model, audio, run.decoded)
        INFERENCE.labels(lang).observe(final.inference_seconds)
        await self.queue.done(delivery, self._event(run, final, len(audio), "final"))
        log.info(
            "job done",
            extra={
                "job_id": job.job_id,
                "language": lang,
                "audio_s": round((held.base + len(audio)) / TARGET_RATE, 3),
                "inference_s": round(final.inference_seconds, 4),
            },
        )
        return "ok"

    async def transcribe(
        self,
        model: CtcModel,
        audio: np.ndarray,
        decoded: dict[tuple[int, int], Part],
        parts: list[tuple[int, int]] | None = None,
    ) -> Transcript:
        """`CtcModel.transcribe` served (of `parts` of `audio` alone, when given): the parts not yet
        decoded join the batcher's next model call with other jobs' parts, and their decoding (beam
        search, pure CPU on small arrays) runs in a thread of its own, beside the next model call,
        rather than on the event loop."""
        started = time.perf_counter()
        parts, missing = model.pending(audio, decoded, parts)
        logits = await asyncio.gather(*(self.batcher.submit(item) for _, item in missing))
        found = await asyncio.to_thread(lambda: [model.decode(one) for one in logits])
        decoded.update(zip((part for part, _ in missing), found, strict=True))
        return model.assemble(parts, decoded, started)

    async def _abandoned(self, delivery: Delivery, when: str) -> str:
        """Drops a job nobody waits for (its client's lease lapsed), freeing the slot."""
        log.info("job dropped: its client is gone", extra={"job_id": delivery.job.job_id, "when": when})
        await self.queue.done(delivery)
        return "abandoned"

    async def _fail(self, delivery: Delivery, code: str, message: str) -> None:
        await self.queue.done(delivery, Event("error", worker_id=self.id, code=code, message=message))

    def _event(self, run: _Running, t: Transcript, samples: int, kind: EventKind) -> Event:
        """A result of the first `samples` held, its times counted from the start of the job's audio."""
        delivery, job = run.delivery, run.delivery.job
        offset = run.held.base / TARGET_RATE
        words = []
        if job.word_time_offsets or job.word_confidence:
            for w in t.words:
                info = pb.WordInfo(word=w.word)
                if job.word_time_offsets:
                    info.start_offset.CopyFrom(duration(offset + w.start))
                    info.end_offset.CopyFrom(duration(offset + w.end))
                if job.word_confidence:
                    info.confidence = w.confidence
                words.append(info)
        spec = run.model.spec
        result = pb.RecognitionResult(
            alternatives=[
                pb.SpeechRecognitionAlternative(transcript=t.text, confidence=t.confidence, words=words)
            ],
            is_final=kind != "partial",
            language_code=delivery.language,
            result_end_offset=duration(offset + samples / TARGET_RATE),
            model=pb.ModelInfo(
                language_code=delivery.language, uri=spec.name, revision=spec.revision, kind=spec.kind
            ),
            timing=pb.Timing(
                audio_seconds=samples / TARGET_RATE,
                queue_seconds=max(run.picked_up - job.enqueued_at, 0.0),
                inference_seconds=t.inference_seconds,
            ),
            worker_id=self.id,
        )
        return Event(kind, result=result, worker_id=self.id)

    # ------------------------------------------------------------------ lifecycle
    async def run(self) -> None:
        server = GrpcServer(self.settings.health_address, [], grace_s=1.0)
        await server.start()
        stop_task = asyncio.create_task(server.wait_for_stop())
        await self._retry_redis(self.sync_models)
        self.batcher.start()
        background = [
            asyncio.create_task(self.heartbeat(), name="heartbeat"),
            asyncio.create_task(self.watch_registry(), name="watch-registry"),
            asyncio.create_task(self.reclaim(), name="reclaim"),
        ]
        consumer = asyncio.create_task(self.consume(), name="consume")
        await server.set_serving(True)
        log.info("worker ready", extra={"worker_id": self.id, "languages": sorted(self.models)})
        await asyncio.wait([stop_task, consumer, *background], return_when=asyncio.FIRST_COMPLETED)
        broken = next((t for t in (consumer, *background) if t.done()), None)
        if broken is not None:
            # A loop that ended on an error it does not know leaves a worker that looks healthy and
            # takes no job: stop, so that whatever runs it (Kubernetes, `lidroute up`) starts a new one.
            log.error(
                "worker loop ended; stopping", exc_info=broken.exception(), extra={"loop": broken.get_name()}
            )
            stop_task.cancel()
        log.info("stopping: finishing jobs in progress", extra={"jobs": len(self.active)})
        self.stopping.set()
        await server.set_serving(False)
        consumer.cancel()
        if self.active:
            _, pending = await asyncio.wait(self.active, timeout=self.settings.grace_seconds)
            for task in pending:  # left pending in Redis: another worker reclaims them
                task.cancel()
        for task in background:
            task.cancel()
        await self.batcher.stop()
        with contextlib.suppress(*REDIS_ERRORS):
            await self.registry.leave(self.id, sorted(self.models))
        await server.shutdown()
        if broken is not None:
            raise SystemExit(1)  # logged above, with its traceback

    async def _retry_redis(self, fn) -> None:  # type: ignore[no-untyped-def]
        while True:
            try:
                return await fn()
            except REDIS_ERRORS as exc:
                log.warning("Redis unavailable; retrying", extra={"error": str(exc)})
                await asyncio.sleep(1.0)


async def serve(settings: WorkerSettings) -> None:
    torch.set_num_threads(settings.threads())
    os.environ.setdefault("HF_HOME", str(settings.model_cache))
    start_metrics(settings.metrics_port)
    client = aioredis.Redis.from_url(settings.redis_url, health_check_interval=10)
    try:
        await AsrWorker(settings, client).run()
    finally:
        await client.aclose()


def main(argv: list[str] | None = None) -> None:
    run_service(serve, WorkerSettings, argv, prog="asr_worker serve", service="asr_worker")
