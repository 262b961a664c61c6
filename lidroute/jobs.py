"""The job queue: per-language job streams, per-job audio and event streams.

Delivery is at-least-once. A job stays pending in the consumer group until the worker has
written its final event; a worker that dies leaves it pending, and another worker reclaims
it with XAUTOCLAIM once it has been idle long enough. A worker that is alive and busy keeps
its jobs' idle time near zero (`touch`), so only dead workers' jobs are reclaimed. Audio and
event streams carry a TTL so that an abandoned job leaves nothing behind for long.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Literal

import redis.asyncio as aioredis
import redis.exceptions

from lidroute.keys import WORKER_GROUP, Keys
from lidroute.v1 import transcriber_pb2 as pb

log = logging.getLogger(__name__)

#: `segment`: a final result of a stretch of a long job's audio, more to come; `final`: the last.
EventKind = Literal["started", "partial", "segment", "final", "error"]
AudioKind = Literal["pcm", "end", "cancel"]


@dataclass(frozen=True)
class Job:
    job_id: str
    language: str
    deadline: float
    enqueued_at: float
    interim_results: bool = False
    word_time_offsets: bool = False
    word_confidence: bool = False
    #: The router keeps a lease for the client (`JobQueue.renew_lease`): without it, no one waits.
    leased: bool = False

    def to_fields(self) -> dict[str, str]:
        return {"job": json.dumps(asdict(self))}

    @classmethod
    def from_fields(cls, fields: dict[bytes, bytes]) -> Job:
        return cls(**json.loads(fields[b"job"]))

    def seconds_left(self) -> float:
        return self.deadline - time.time()


@dataclass(frozen=True)
class Event:
    kind: EventKind
    result: pb.RecognitionResult | None = None
    worker_id: str = ""
    code: str = ""
    message: str = ""

    def to_fields(self) -> dict[str, str | bytes]:
        fields: dict[str, str | bytes] = {"kind": self.kind, "worker": self.worker_id}
        if self.result is not None:
            fields["result"] = self.result.SerializeToString()
        if self.code:
            fields["code"] = self.code
            fields["message"] = self.message
        return fields

    @classmethod
    def from_fields(cls, fields: dict[bytes, bytes]) -> Event:
        result = None
        if b"result" in fields:
            result = pb.RecognitionResult.FromString(fields[b"result"])
        return cls(
            kind=fields[b"kind"].decode(),  # type: ignore[arg-type]
            result=result,
            worker_id=fields.get(b"worker", b"").decode(),
            code=fields.get(b"code", b"").decode(),
            message=fields.get(b"message", b"").decode(),
        )


@dataclass(frozen=True)
class Progress:
    """How far a long job's final results go: `committed` samples of its audio are transcribed and
    sent; its audio stream goes on after entry `after`, whose next entry starts at sample `at`
    (`at` <= `committed`: entries are not cut where results are)."""

    committed: int = 0
    after: str = "0"
    at: int = 0


@dataclass(frozen=True)
class Delivery:
    """A job as a worker received it: the stream entry id is what it acknowledges."""

    language: str
    entry_id: str
    job: Job


def _decode_id(entry_id: bytes | str) -> str:
    """A stream entry id, or a consumer name, as text."""
    return entry_id.decode() if isinstance(entry_id, bytes) else entry_id


#: XADD unless the stream already holds ARGV[1] entries (0: always); the new id, or nil.
_ENQUEUE_BELOW = """
local limit = tonumber(ARGV[1])
if limit > 0 and redis.call('XLEN', KEYS[1]) >= limit then return false end
return redis.call('XADD', KEYS[1], '*', unpack(ARGV, 2))
"""


def join_results(results: Sequence[pb.RecognitionResult]) -> pb.RecognitionResult:
    """A request's final results (one per stretch of long audio) as one: the transcripts joined,
    the words in order (their offsets count from the start of the audio already), the confidence
    the mean of theirs weighted by transcript length, the audio and model time summed."""
    if len(results) == 1:
        return results[0]
    out = pb.RecognitionResult()
    if not results:
        out.is_final = True
        return out
    out.CopyFrom(results[-1])
    best = [r.alternatives[0] for r in results if r.alternatives and r.alternatives[0].transcript]
    weight = sum(len(a.transcript) for a in best)
    del out.alternatives[:]
    out.alternatives.add(
        transcript=" ".join(a.transcript for a in best),
        confidence=sum(len(a.transcript) * a.confidence for a in best) / weight if weight else 0.0,
        words=[w for a in best for w in a.words],
    )
    out.timing.audio_seconds = sum(r.timing.audio_seconds for r in results)
    out.timing.inference_seconds = sum(r.timing.inference_seconds for r in results)
    out.timing.queue_seconds = results[0].timing.queue_seconds
    out.timing.language_id_seconds = results[0].timing.language_id_seconds
    return out


def _events(entries: list[tuple[bytes, dict[bytes, bytes]]]) -> list[tuple[str, Event]]:
    """An event stream's entries as events; the marker that created the stream is none."""
    return [
        (_decode_id(entry_id), Event.from_fields(fields))
        for entry_id, fields in entries
        if fields.get(b"kind") != b"created"
    ]


class JobQueue:
    def __init__(self, client: aioredis.Redis, keys: Keys, stream_ttl: int = 900) -> None:
        self.redis = client
        self.keys = keys
        self.stream_ttl = stream_ttl

    # ---------------------------------------------------------------- router side
    async def enqueue(self, job: Job, max_depth: int = 0) -> str | None:
        """Adds the job to its language's queue; None, adding nothing, when the queue already holds
        `max_depth` jobs (0: no limit). Checked and added in one step in Redis, so routers sending
        at once cannot push a queue past its limit between the check and the add."""
        fields = [item for pair in job.to_fields().items() for item in pair]
        entry_id = await self.redis.eval(_ENQUEUE_BELOW, 1, self.keys.jobs(job.language), max_depth, *fields)
        if entry_id is None:
            return None
        events = self.keys.events(job.job_id)
        async with self.redis.pipeline(transaction=False) as pipe:
            # The event stream exists from the start so that its TTL holds even if no event comes.
            pipe.xadd(events, {"kind": "created"})
            pipe.expire(events, self.stream_ttl)
            await pipe.execute()
        return _decode_id(entry_id)

    async def renew_lease(self, job_id: str, seconds: int) -> None:
        """The job's client is still there, for `seconds` more; the router renews it while it is."""
        await self.redis.set(self.keys.lease(job_id), b"1", ex=seconds)

    async def drop_lease(self, job_id: str) -> None:
        await self.redis.delete(self.keys.lease(job_id))

    async def client_gone(self, job: Job) -> bool:
        """Whether nobody waits for the job's result any more: its lease lapsed or was dropped,
        which a worker learns even when the cancel marker could not be written."""
        return job.leased and not await self.redis.exists(self.keys.lease(job.job_id))

    async def append_audio(self, job_id: str, pcm: bytes) -> None:
        await self._audio(job_id, {"pcm": pcm})

    async def end_audio(self, job_id: str) -> None:
        await self._audio(job_id, {"end": "1"})

    async def cancel(self, job_id: str, reason: str) -> None:
        await self._audio(job_id, {"cancel": reason})

    async def _audio(self, job_id: str, fields: dict[str, str | bytes]) -> None:
        key = self.keys.audio(job_id)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.xadd(key, fields)
            pipe.expire(key, self.stream_ttl)
            await pipe.execute()

    async def read_events(self, job_id: str, last_id: str, block_ms: int) -> list[tuple[str, Event]]:
        """The job's events after `last_id`, waiting up to `block_ms` for one. A router reads them
        through its `EventReader`, one read for all its jobs."""
        reply = await self.redis.xread({self.keys.events(job_id): last_id}, block=block_ms, count=100)
        return [event for _, entries in reply for event in _events(entries)]

    # ---------------------------------------------------------------- worker side
    async def ensure_group(self, lang: str) -> None:
        try:
            await self.redis.xgroup_create(self.keys.jobs(lang), WORKER_GROUP, id="0", mkstream=True)
        except redis.exceptions.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def next_jobs(
        self, langs: Sequence[str], consumer: str, count: int, block_ms: int
    ) -> list[Delivery]:
        if not langs:
            return []
        streams = {self.keys.jobs(lang): ">" for lang in langs}
        try:
            reply = await self.redis.xreadgroup(WORKER_GROUP, consumer, streams, count=count, block=block_ms)
        except redis.exceptions.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            for lang in langs:  # Redis lost its data (restart without persistence): recreate.
                await self.ensure_group(lang)
            return []
        by_key = {self.keys.jobs(lang): lang for lang in langs}
        deliveries = []
        for key, entries in reply:
            lang = by_key[key.decode() if isinstance(key, bytes) else key]
            for entry_id, fields in entries:
                deliveries.append(Delivery(lang, _decode_id(entry_id), Job.from_fields(fields)))
        return deliveries

    async def reclaim(
        self, lang: str, consumer: str, min_idle_ms: int, count: int
    ) -> list[tuple[Delivery | None, str, int]]:
        """Takes over jobs left idle by dead workers: (delivery, entry id, times delivered).

        A `None` delivery is an entry whose body was deleted; the caller acknowledges it away.
        """
        key = self.keys.jobs(lang)
        try:
            _, claimed, deleted = await self.redis.xautoclaim(
                key, WORKER_GROUP, consumer, min_idle_ms, start_id="0-0", count=count
            )
        except redis.exceptions.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            await self.ensure_group(lang)
            return []
        out: list[tuple[Delivery | None, str, int]] = []
        for entry_id, fields in claimed:
            eid = _decode_id(entry_id)
            pending = await self.redis.xpending_range(key, WORKER_GROUP, min=eid, max=eid, count=1)
            times = int(pending[0]["times_delivered"]) if pending else 1
            delivery = Delivery(lang, eid, Job.from_fields(fields)) if fields else None
            out.append((delivery, eid, times))
        for entry_id in deleted or []:
            out.append((None, _decode_id(entry_id), 0))
        return out

    async def claim_orphans(
        self, lang: str, consumer: str, live: set[str], min_idle_ms: int, count: int
    ) -> list[tuple[Delivery | None, str, int]]:
        """Takes over jobs held by workers that are not live (their heartbeat stopped), without
        waiting for the jobs to look abandoned: as `reclaim` returns them.

        A job must also be idle for `min_idle_ms` (a live worker touches its jobs more often than
        that), and each is claimed at the idle time it was seen with, so that two workers seeing the
        same orphan cannot both take it: the first claim resets its idle time.
        """
        key = self.keys.jobs(lang)
        rows = await self.redis.xpending_range(key, WORKER_GROUP, min="-", max="+", count=100)
        orphans = [
            row
            for row in rows
            if _decode_id(row["consumer"]) not in live and row["time_since_delivered"] >= min_idle_ms
        ][:count]
        out: list[tuple[Delivery | None, str, int]] = []
        for row in orphans:
            eid = _decode_id(row["message_id"])
            claimed = await self.redis.xclaim(key, WORKER_GROUP, consumer, row["time_since_delivered"], [eid])
            for entry_id, fields in claimed:
                delivery = Delivery(lang, _decode_id(entry_id), Job.from_fields(fields)) if fields else None
                out.append((delivery, _decode_id(entry_id), int(row["times_delivered"]) + 1))
        return out

    async def touch(self, delivery: Delivery, consumer: str) -> None:
        """Resets the job's idle time so that no other worker reclaims it while this one works."""
        await self.redis.xclaim(
            self.keys.jobs(delivery.language), WORKER_GROUP, consumer, 0, [delivery.entry_id], justid=True
        )

    async def ack(self, lang: str, entry_id: str) -> None:
        """Acknowledges a job: it leaves the stream."""
        await self._acknowledge(lang, entry_id)

    async def done(self, delivery: Delivery, last: Event | None = None) -> None:
        """Acknowledges a job that ended (result, error, cancel) and deletes its audio at once: a
        long request's audio is megabytes that would otherwise stay for the stream TTL. `last`, its
        final or error event, is written in the same transaction: the job leaves its queue the
        moment its client can see it ended, so a client that sends its next request at once never
        finds this one still counted against the queue's limit."""
        await self._acknowledge(delivery.language, delivery.entry_id, delivery.job.job_id, last)

    async def _acknowledge(
        self,
        lang: str,
        entry_id: str,
        job_id: str = "",
        last: Event | None = None,
        dead: dict[str, str] | None = None,
    ) -> None:
        key = self.keys.jobs(lang)
        async with self.redis.pipeline(transaction=True) as pipe:
            if dead is not None:
                pipe.xadd(self.keys.dead, dead, maxlen=10000, approximate=True)  # type: ignore[arg-type]
            if last is not None:
                pipe.xadd(self.keys.events(job_id), last.to_fields())
                pipe.expire(self.keys.events(job_id), self.stream_ttl)
            pipe.xack(key, WORKER_GROUP, entry_id)
            pipe.xdel(key, entry_id)
            if job_id:
                pipe.delete(self.keys.audio(job_id), self.keys.progress(job_id))
            await pipe.execute()

    async def forget(self, job_id: str) -> None:
        """The router has its final result: the job's events and its client's lease go."""
        await self.redis.delete(self.keys.events(job_id), self.keys.lease(job_id))

    async def dead_letter(self, delivery: Delivery, times: int, last: Event) -> None:
        """Ends a job delivered too often: it goes to the dead stream, its client gets `last` (its
        error), and it leaves its queue with its audio, in one transaction, so a worker dying
        in between neither leaves the client waiting nor has the job delivered once more."""
        dead = {
            "job": json.dumps(asdict(delivery.job)),
            "language": delivery.language,
            "deliveries": str(times),
            "error": last.message,
        }
        job = delivery.job.job_id
        await self._acknowledge(delivery.language, delivery.entry_id, job, last, dead)

    async def read_audio(
        self, job_id: str, last_id: str, block_ms: int
    ) -> list[tuple[str, AudioKind, bytes]]:
        # Entries are up to 10 s each (the router's FORWARD_SAMPLES): 16 of them bound what a
        # worker holds of a whole file uploaded at once, while a stream sent in real time, 0.1 s
        # an entry, is read a second and a half at a time.
        reply = await self.redis.xread({self.keys.audio(job_id): last_id}, block=block_ms, count=16)
        out: list[tuple[str, AudioKind, bytes]] = []
        for _, entries in reply:
            for entry_id, fields in entries:
                eid = _decode_id(entry_id)
                if b"pcm" in fields:
                    out.append((eid, "pcm", fields[b"pcm"]))
                elif b"end" in fields:
                    out.append((eid, "end", b""))
                else:
                    out.append((eid, "cancel", fields.get(b"cancel", b"")))
        return out

    async def emit(self, job_id: str, event: Event) -> None:
        key = self.keys.events(job_id)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.xadd(key, event.to_fields())
            pipe.expire(key, self.stream_ttl)
            await pipe.execute()

    async def commit(self, job_id: str, segment: Event, progress: Progress) -> None:
        """A long job's final result for a stretch of its audio, and how far its results now go, in
        one transaction: a worker that takes the job over after this goes on from `progress` and
        repeats nothing; one that takes it over before repeats the stretch whole. The audio
        stream's entries before `progress.after` go: they are done with, and an hour of audio is
        not kept in Redis to the end of the request."""
        events, audio, state = (
            self.keys.events(job_id),
            self.keys.audio(job_id),
            self.keys.progress(job_id),
        )
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xadd(events, segment.to_fields())
            pipe.expire(events, self.stream_ttl)
            pipe.hset(state, mapping=asdict(progress))
            pipe.expire(state, self.stream_ttl)
            pipe.xtrim(audio, minid=progress.after, approximate=False)
            await pipe.execute()

    async def progress(self, job_id: str) -> Progress:
        """How far a job's final results go (nothing yet: zeros, from the audio's first entry)."""
        fields = await self.redis.hgetall(self.keys.progress(job_id))
        if not fields:
            return Progress()
        return Progress(
            committed=int(fields[b"committed"]), after=fields[b"after"].decode(), at=int(fields[b"at"])
        )

    async def queue_depth(self, lang: str) -> int:
        """Jobs waiting or in progress: what autoscaling reads (stream length, acked entries deleted)."""
        return int(await self.redis.xlen(self.keys.jobs(lang)))

    async def queue_depths(self, langs: list[str]) -> list[int]:
        """`queue_depth` of each language, in one round trip."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for lang in langs:
                pipe.xlen(self.keys.jobs(lang))
            return [int(n) for n in await pipe.execute()]


#: What a waiting job gets from the `EventReader`: its next events, or the error that stopped the read.
EventBatch = list[tuple[str, Event]] | BaseException


class EventReader:
    """The events of every job a router waits on, read by one blocking XREAD over all their streams
    rather than one per request: a router with 64 requests in flight keeps one Redis connection
    blocked on events, not 64, and one read returns whatever came for any of them.

    A job that joins while the read is blocked wakes it through the router's own wake stream (one
    XADD), so its first event is not held back until the block ends. Where Redis fails, every
    waiting job gets the error (as a read of its own would have raised it) and the reader goes on
    with the jobs that come after.
    """

    def __init__(self, queue: JobQueue, block_ms: int = 1000) -> None:
        self.queue = queue
        # A read blocked past the client's socket timeout (`?socket_timeout=` in the Redis URL)
        # would fail as a timeout: block for half of it at most.
        timeout = queue.redis.connection_pool.connection_kwargs.get("socket_timeout")
        self.block_ms = block_ms if timeout is None else max(10, min(block_ms, int(timeout * 500)))
        self.wake_key = queue.keys.wake(uuid.uuid4().hex)
        self._wake_id = "0"
        #: a waiting job's event stream -> (the last entry read, where its events go)
        self._jobs: dict[str, tuple[str, asyncio.Queue[EventBatch]]] = {}
        self._task: asyncio.Task[None] | None = None

    async def watch(self, job_id: str) -> asyncio.Queue[EventBatch]:
        """Starts reading the job's events (from its first); `forget` stops it."""
        events: asyncio.Queue[EventBatch] = asyncio.Queue()
        self._jobs[self.queue.keys.events(job_id)] = ("0", events)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._read(), name="event-reader")
        async with self.queue.redis.pipeline(transaction=False) as pipe:
            pipe.xadd(self.wake_key, {"job": job_id}, maxlen=100, approximate=True)
            pipe.expire(self.wake_key, self.queue.stream_ttl)
            await pipe.execute()
        return events

    def forget(self, job_id: str) -> None:
        self._jobs.pop(self.queue.keys.events(job_id), None)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(redis.exceptions.RedisError, OSError):
            await self.queue.redis.delete(self.wake_key)

    async def _read(self) -> None:
        while self._jobs:
            streams = {key: last for key, (last, _) in self._jobs.items()} | {self.wake_key: self._wake_id}
            try:
                reply = await self.queue.redis.xread(streams, block=self.block_ms, count=100)
            except (redis.exceptions.RedisError, OSError) as exc:
                log.warning("event read failed", extra={"error": str(exc), "jobs": len(self._jobs)})
                for _, events in self._jobs.values():
                    events.put_nowait(exc)
                self._jobs.clear()
                return
            for key, entries in reply:
                name = key.decode() if isinstance(key, bytes) else key
                if name == self.wake_key:
                    self._wake_id = _decode_id(entries[-1][0])
                    continue
                if name not in self._jobs:  # forgotten while the read was out
                    continue
                events = self._jobs[name][1]
                self._jobs[name] = (_decode_id(entries[-1][0]), events)
                found = _events(entries)
                if found:
                    events.put_nowait(found)
