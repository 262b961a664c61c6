"""The registry and the job queue against a real redis-server."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import numpy as np
import pytest
import redis.asyncio as aioredis
import redis.exceptions

from lidroute.errors import InvalidArgument
from lidroute.jobs import Event, EventReader, Job, JobQueue, Progress, join_results
from lidroute.keys import WORKER_GROUP, Keys
from lidroute.registry import ModelSpec, Registry
from lidroute.v1 import transcriber_pb2 as pb


def job(job_id: str = "j1", lang: str = "sw", seconds: float = 60) -> Job:
    return Job(job_id=job_id, language=lang, deadline=time.time() + seconds, enqueued_at=time.time())


async def test_register_list_remove_and_change_notifications(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    registry = Registry(redis_client, keys)
    changes = registry.changes()
    assert await anext(changes) == "*"  # subscribed: re-read everything
    await registry.register("sw", ModelSpec(uri="/models/sw", revision="v2", metrics={"cer": 0.05}))
    assert await asyncio.wait_for(anext(changes), 5) == "sw"
    assert (await registry.models())["sw"] == ModelSpec(
        uri="/models/sw", revision="v2", metrics={"cer": 0.05}
    )
    assert await registry.remove("sw") is True
    assert await asyncio.wait_for(anext(changes), 5) == "sw"
    assert await registry.remove("sw") is False
    assert await registry.models() == {}
    await changes.aclose()


async def test_registry_rejects_bad_codes_and_skips_malformed_entries(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    registry = Registry(redis_client, keys)
    with pytest.raises(InvalidArgument):
        await registry.register("Swahili!", ModelSpec(uri="x"))
    with pytest.raises(InvalidArgument):
        ModelSpec(uri="x", kind="rnnt")
    await redis_client.hset(keys.models, "qu", "{not json")
    await registry.register("mr", ModelSpec(uri="/m/mr"))
    assert list(await registry.models()) == ["mr"]


async def test_register_missing_keeps_existing_models_unless_forced_and_creates_job_groups(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    registry = Registry(redis_client, keys)
    await registry.register("sw", ModelSpec(uri="/hand/registered/sw", revision="v7"))
    done = await registry.register_missing({"en": "/models/asr/en", "sw": "/models/asr/sw"})
    assert {lang: (r.action, r.spec.uri) for lang, r in done.items()} == {
        "en": ("registered", "/models/asr/en"),
        "sw": ("kept", "/hand/registered/sw"),
    }
    models = await registry.models()
    assert (models["sw"].uri, models["sw"].revision) == ("/hand/registered/sw", "v7")
    for lang in ("en", "sw"):  # KEDA's lag trigger reads the group before any worker exists
        groups = await redis_client.xinfo_groups(keys.jobs(lang))
        assert [g["name"].decode() for g in groups] == [WORKER_GROUP]
    again = await registry.register_missing({"sw": "/models/asr/sw"}, force=True)
    assert again["sw"].action == "registered"
    assert (await registry.models())["sw"].uri == "/models/asr/sw"
    with pytest.raises(InvalidArgument):
        await registry.register_missing({"Swahili": "/models/asr/sw"})


async def test_a_worker_is_live_only_while_it_heartbeats(redis_client: aioredis.Redis, keys: Keys) -> None:
    registry = Registry(redis_client, keys, worker_ttl=0.5)
    await registry.heartbeat("w1", ["sw", "mr"])
    assert await registry.live_workers(["sw", "mr", "qu"]) == {"sw": 1, "mr": 1, "qu": 0}
    await asyncio.sleep(0.7)
    assert await registry.live_workers(["sw"]) == {"sw": 0}
    await registry.heartbeat("w1", ["sw"])
    await registry.leave("w1", ["sw"])
    assert await registry.live_workers(["sw"]) == {"sw": 0}


async def test_job_round_trip_and_ack_removes_it(redis_client: aioredis.Redis, keys: Keys) -> None:
    queue = JobQueue(redis_client, keys)
    await queue.ensure_group("sw")
    await queue.enqueue(job())
    assert await queue.queue_depth("sw") == 1
    [delivery] = await queue.next_jobs(["sw"], "w1", 10, 100)
    assert (delivery.language, delivery.job.job_id, delivery.job.language) == ("sw", "j1", "sw")
    assert delivery.job.seconds_left() > 50
    assert await queue.next_jobs(["sw"], "w2", 10, 50) == []  # not delivered twice
    await queue.ack("sw", delivery.entry_id)
    assert await queue.queue_depth("sw") == 0
    assert (await redis_client.xpending(keys.jobs("sw"), WORKER_GROUP))["pending"] == 0


def test_clients_are_told_a_models_name_never_its_path_on_the_server() -> None:
    assert ModelSpec("/srv/lidroute/models/asr/sw").name == "asr/sw"
    assert ModelSpec("./sw-model").name == "sw-model"
    assert ModelSpec("facebook/wav2vec2-xls-r-300m").name == "facebook/wav2vec2-xls-r-300m"


async def test_a_queue_at_its_depth_limit_takes_no_more_even_from_concurrent_senders(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    queue = JobQueue(redis_client, keys)
    await queue.ensure_group("sw")
    added = await asyncio.gather(*(queue.enqueue(job(f"j{i}"), max_depth=3) for i in range(10)))
    assert sum(entry is not None for entry in added) == 3
    assert await queue.queue_depth("sw") == 3
    [delivery, *_] = await queue.next_jobs(["sw"], "w1", 10, 100)
    await queue.ack("sw", delivery.entry_id)  # one done: room for one more
    assert await queue.enqueue(job("late"), max_depth=3) is not None
    assert await queue.enqueue(job("later"), max_depth=3) is None
    # The created event is written only for a job that was queued.
    assert await redis_client.exists(keys.events("late")) and not await redis_client.exists(
        keys.events("later")
    )


async def test_the_jobs_of_a_worker_whose_heartbeat_stopped_go_to_one_live_worker_at_once(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    queue = JobQueue(redis_client, keys)
    await queue.ensure_group("sw")
    for name in ("dead-1", "live-1"):
        await queue.enqueue(job(name))
        await queue.next_jobs(["sw"], name.split("-")[0] + "-worker", 1, 100)
    await asyncio.sleep(0.05)
    live = {"live-worker", "w2", "w3"}
    # The live worker's job stays; the dead one's goes to the first to ask, and only to it.
    first, second = await asyncio.gather(
        queue.claim_orphans("sw", "w2", live, 20, 5), queue.claim_orphans("sw", "w3", live, 20, 5)
    )
    taken = [d.job.job_id for d, _, _ in first + second if d is not None]
    assert taken == ["dead-1"]
    (_, _, times), *_ = first or second
    assert times == 2  # its second delivery: past max_deliveries it is dead-lettered like any other
    # Not idle long enough (a live worker touches its jobs): not an orphan, whoever holds it.
    assert await queue.claim_orphans("sw", "w2", set(), 60_000, 5) == []


async def test_audio_and_events_streams_keep_order_and_expire(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    queue = JobQueue(redis_client, keys, stream_ttl=60)
    await queue.enqueue(job("j2"))
    await queue.append_audio("j2", b"\x01\x00")
    await queue.append_audio("j2", b"\x02\x00")
    await queue.end_audio("j2")
    entries = await queue.read_audio("j2", "0", 10)
    assert [(kind, payload) for _, kind, payload in entries] == [
        ("pcm", b"\x01\x00"),
        ("pcm", b"\x02\x00"),
        ("end", b""),
    ]
    result = pb.RecognitionResult(is_final=True, language_code="sw")
    await queue.emit("j2", Event("final", result=result, worker_id="w1"))
    [(_, event)] = await queue.read_events("j2", "0", 10)
    assert event.kind == "final" and event.result == result and event.worker_id == "w1"
    assert 0 < await redis_client.ttl(keys.audio("j2")) <= 60
    assert 0 < await redis_client.ttl(keys.events("j2")) <= 60


async def test_idle_jobs_are_reclaimed_with_their_delivery_count(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    queue = JobQueue(redis_client, keys)
    await queue.ensure_group("sw")
    await queue.enqueue(job())
    [delivery] = await queue.next_jobs(["sw"], "dead-worker", 1, 100)
    assert await queue.reclaim("sw", "w2", 200, 10) == []  # not idle long enough yet
    await asyncio.sleep(0.3)
    [(reclaimed, entry_id, times)] = await queue.reclaim("sw", "w2", 200, 10)
    assert reclaimed is not None and reclaimed.job.job_id == "j1" and entry_id == delivery.entry_id
    assert times == 2


async def test_touch_keeps_a_busy_workers_job_from_being_reclaimed(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    queue = JobQueue(redis_client, keys)
    await queue.ensure_group("sw")
    await queue.enqueue(job())
    [delivery] = await queue.next_jobs(["sw"], "busy", 1, 100)
    for _ in range(3):
        await asyncio.sleep(0.15)
        await queue.touch(delivery, "busy")
    assert await queue.reclaim("sw", "w2", 300, 10) == []


async def test_lost_consumer_group_is_recreated(redis_client: aioredis.Redis, keys: Keys) -> None:
    queue = JobQueue(redis_client, keys)
    await queue.ensure_group("sw")
    await redis_client.delete(keys.jobs("sw"))
    assert await queue.next_jobs(["sw"], "w1", 1, 10) == []
    await queue.enqueue(job())
    assert len(await queue.next_jobs(["sw"], "w1", 1, 100)) == 1


async def test_a_dead_lettered_job_is_recorded_its_client_told_and_its_queue_entry_and_audio_gone(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    queue = JobQueue(redis_client, keys, stream_ttl=60)
    await queue.ensure_group("sw")
    await queue.enqueue(job())
    await queue.append_audio("j1", b"\0\0" * 160)
    [delivery] = await queue.next_jobs(["sw"], "w1", 1, 100)
    await queue.dead_letter(delivery, 4, Event("error", worker_id="w1", code="ABORTED", message="boom"))
    [(_, fields)] = await redis_client.xrange(keys.dead)
    assert fields[b"error"] == b"boom" and fields[b"deliveries"] == b"4" and b"j1" in fields[b"job"]
    [(_, event)] = await redis_client.xrevrange(keys.events("j1"), count=1)
    assert Event.from_fields(event).code == "ABORTED"  # its client's last event
    assert await redis_client.xpending(keys.jobs("sw"), WORKER_GROUP) == {
        "pending": 0,
        "min": None,
        "max": None,
        "consumers": [],
    }
    assert not await redis_client.exists(keys.audio("j1"))


async def test_one_event_reader_serves_every_waiting_job_on_one_blocked_connection(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    queue = JobQueue(redis_client, keys, stream_ttl=60)
    reader = EventReader(queue, block_ms=5000)
    jobs = [f"r{i}" for i in range(20)]
    try:
        waiting = {job_id: await reader.watch(job_id) for job_id in jobs}
        await asyncio.sleep(0.2)
        assert int((await redis_client.info("clients"))["blocked_clients"]) == 1
        for job_id in reversed(jobs):
            result = pb.RecognitionResult(is_final=True, language_code=job_id)
            await queue.emit(job_id, Event("final", result=result, worker_id="w1"))
        for job_id, events in waiting.items():
            [(_, event)] = await asyncio.wait_for(events.get(), 2)
            assert event.kind == "final" and event.result.language_code == job_id
        # A job that joins while the read is blocked wakes it: its first event comes at once, not
        # when the 5 s block ends.
        late = await reader.watch("late")
        started = time.monotonic()
        await queue.emit("late", Event("started", worker_id="w1"))
        [(_, event)] = await asyncio.wait_for(late.get(), 2)
        assert event.kind == "started" and time.monotonic() - started < 2
    finally:
        await reader.close()
    assert not await redis_client.exists(reader.wake_key)


async def test_a_redis_failure_reaches_every_job_the_event_reader_serves(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from workbench.stack import RedisServer

    server = RedisServer(tmp_path / "redis")
    server.start()
    client = aioredis.Redis.from_url(server.url)
    reader = EventReader(JobQueue(client, Keys()), block_ms=5000)
    try:
        waiting = [await reader.watch(job_id) for job_id in ("a", "b")]
        await asyncio.sleep(0.2)
        server.proc.kill()  # type: ignore[union-attr]
        for events in waiting:
            assert isinstance(await asyncio.wait_for(events.get(), 5), redis.exceptions.ConnectionError)
    finally:
        await reader.close()
        await client.aclose()
        server.stop()


async def test_a_final_result_of_a_stretch_records_progress_and_lets_its_audio_go(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    queue = JobQueue(redis_client, keys, stream_ttl=60)
    assert await queue.progress("long") == Progress()
    ids = []
    for _ in range(4):
        await queue.append_audio("long", b"\x01\x00" * 100)
        [(entry_id, _, _)] = (await queue.read_audio("long", ids[-1] if ids else "0", 10))[-1:]
        ids.append(entry_id)
    segment = Event("segment", result=pb.RecognitionResult(is_final=True), worker_id="w1")
    progress = Progress(committed=250, after=ids[1], at=200)
    await queue.commit("long", segment, progress)
    assert await queue.progress("long") == progress
    [(_, event)] = await queue.read_events("long", "0", 10)
    assert event.kind == "segment"
    # The entries before the last one wholly covered are gone; reading goes on after it.
    assert [e for e, _, _ in await queue.read_audio("long", "0", 10)] == ids[1:]
    assert [e for e, _, _ in await queue.read_audio("long", progress.after, 10)] == ids[2:]
    assert 0 < await redis_client.ttl(keys.progress("long")) <= 60


def test_results_of_a_long_requests_stretches_join_into_one_in_order() -> None:
    def stretch(text: str, confidence: float, start: float, audio: float) -> pb.RecognitionResult:
        words = [pb.WordInfo(word=w) for w in text.split()[:1]]
        for word in words:
            word.start_offset.FromTimedelta(timedelta(seconds=start))
        best = pb.SpeechRecognitionAlternative(transcript=text, confidence=confidence, words=words)
        return pb.RecognitionResult(
            alternatives=[best],
            is_final=True,
            timing=pb.Timing(audio_seconds=audio, inference_seconds=0.1, queue_seconds=0.5),
            worker_id=f"w{start:g}",
        )

    joined = join_results(
        [stretch("ab cd", 0.9, 0.0, 30.0), stretch("", 0.0, 30.0, 2.0), stretch("efgh", 0.6, 32.0, 5.0)]
    )
    [best] = joined.alternatives
    assert best.transcript == "ab cd efgh" and [w.word for w in best.words] == ["ab", "efgh"]
    assert best.confidence == pytest.approx((5 * 0.9 + 4 * 0.6) / 9)
    assert joined.timing.audio_seconds == 37.0 and joined.timing.inference_seconds == pytest.approx(0.3)
    assert joined.timing.queue_seconds == 0.5 and joined.worker_id == "w32" and joined.is_final
    one = stretch("ab", 0.5, 0.0, 1.0)
    assert join_results([one]) is one
    assert join_results([]).is_final


def test_held_audio_lets_stretches_go_and_a_worker_taking_over_skips_what_was_given() -> None:
    from asr_worker.worker import HeldAudio

    held = HeldAudio(Progress())
    for i in range(4):
        held.add(f"1-{i}", np.full(100, i, np.float32))
    assert held.size == 400
    progress = held.let_go(250)
    # Entries 1-0 and 1-1 (samples 0-199) are wholly given; 1-2 only in part.
    assert progress == Progress(committed=250, after="1-1", at=200)
    assert held.base == 250 and held.size == 150 and list(held.audio()[:50]) == [2.0] * 50
    taker = HeldAudio(progress)  # reads the stream on after entry 1-1, from sample 200
    assert taker.last_id == "1-1" and taker.base == 250
    taker.add("1-2", np.full(100, 2, np.float32))
    taker.add("1-3", np.full(100, 3, np.float32))
    assert np.array_equal(taker.audio(), held.audio())
