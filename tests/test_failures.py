"""Failures of the parts: a worker killed mid-job, a job that keeps failing, the language-ID
service down, Redis restarted, a model swapped in the registry. Each runs against processes
this module starts, because it breaks them."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import time
import uuid
from pathlib import Path

import grpc
import jiwer
import numpy as np
import pytest
import redis
import redis.asyncio as aioredis

from lidroute.audio import float_to_pcm16
from lidroute.client import Client
from lidroute.jobs import Job, JobQueue
from lidroute.keys import WORKER_GROUP, Keys
from lidroute.registry import ModelSpec
from tests.conftest import EXTERNAL_ROUTER, make_stack
from workbench.stack import RedisTLS

pytestmark = [
    pytest.mark.integration,
    pytest.mark.faults,
    pytest.mark.skipif(bool(EXTERNAL_ROUTER), reason="breaks processes: needs the stack this suite starts"),
]


@pytest.fixture(scope="module")
def fault_stack(models_dir: Path, pki: dict[str, Path]):  # type: ignore[no-untyped-def]
    """Its Redis speaks TLS alone and wants a password, as a production one does: every fault below,
    Redis killed and restarted among them, is survived over TLS."""
    tls = RedisTLS(pki["server"], pki["server_key"], pki["ca"])
    with make_stack(
        models_dir, [["en", "es"], ["en", "es"]], redis_tls=tls, redis_password="fault-stack-pw"
    ) as stack:
        yield stack


@pytest.fixture
async def client(fault_stack):  # type: ignore[no-untyped-def]
    async with Client(fault_stack.router_address) as c:
        yield c


@pytest.fixture
async def redis_of(fault_stack):  # type: ignore[no-untyped-def]
    r = aioredis.Redis.from_url(fault_stack.redis_url)
    yield r
    await r.aclose()


async def eventually(check, timeout: float = 20.0, every: float = 0.2):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = await check()
            if value:
                return value
        except Exception:
            if time.monotonic() > deadline:
                raise
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(every)


async def job_owner(redis_of: aioredis.Redis) -> str:
    """The worker holding the one job in progress, if any."""
    for lang in ("en", "es"):
        rows = await redis_of.xpending_range(Keys().jobs(lang), WORKER_GROUP, min="-", max="+", count=1)
        if rows:
            return rows[0]["consumer"].decode()
    return ""


def test_the_stacks_redis_answers_only_over_tls_and_with_its_password(fault_stack) -> None:  # type: ignore[no-untyped-def]
    plain = redis.Redis(host="127.0.0.1", port=fault_stack.redis.port, socket_timeout=3)
    with pytest.raises(redis.exceptions.ConnectionError):
        plain.ping()
    anonymous = redis.Redis.from_url(fault_stack.redis_url.replace(":fault-stack-pw@", ""))
    with pytest.raises(redis.exceptions.AuthenticationError):
        anonymous.ping()
    assert redis.Redis.from_url(fault_stack.redis_url).ping()


async def test_a_registry_change_reloads_the_model_without_restart(
    fault_stack, client: Client, speech, tmp_path: Path
) -> None:
    from workbench.cli import main as cli

    original = fault_stack.config.models["es"]
    copy = tmp_path / "es-v2"
    shutil.copytree(original, copy)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LIDROUTE_REDIS_URL", fault_stack.redis_url)
        assert await asyncio.to_thread(cli, ["models", "register", "es", str(copy), "--revision", ""]) == 0
        try:

            async def uses_copy() -> bool:
                result = await client.transcribe_pcm(
                    float_to_pcm16(speech["es"][0].audio), 16000, language="es"
                )
                return result.model == ModelSpec(str(copy)).name  # es-v2 under the test's folder

            await eventually(uses_copy)
        finally:
            assert await asyncio.to_thread(cli, ["models", "register", "es", original]) == 0


async def test_a_job_survives_its_worker_being_killed(fault_stack, client: Client, redis_of, speech) -> None:
    utt = speech["es"][0]
    audio = np.concatenate([utt.audio, np.zeros(16000 * 3, np.float32), utt.audio])
    undisturbed = await client.transcribe_pcm(float_to_pcm16(audio), 16000, language="es", timeout=60)
    pending = asyncio.ensure_future(
        client.transcribe_pcm(
            float_to_pcm16(audio),
            16000,
            language="es",
            realtime=True,
            chunk_seconds=0.1,
            timeout=60,
        )
    )

    async def owner() -> str:
        rows = await redis_of.xpending_range(Keys().jobs("es"), WORKER_GROUP, min="-", max="+", count=1)
        return rows[0]["consumer"].decode() if rows else ""

    victim = await eventually(lambda: job_owner(redis_of))
    await asyncio.to_thread(fault_stack.signal, victim, signal.SIGKILL)
    result = await pending
    assert result.worker and result.worker != victim
    # The whole request, recognised as a worker that is not killed recognises it: the transcript
    # of both sentences, neither lost nor repeated (the recognizer's own errors aside).
    assert jiwer.cer(undisturbed.transcript, result.transcript) <= 0.02, (undisturbed, result.transcript)
    assert jiwer.cer(f"{utt.text} {utt.text}", result.transcript) <= 0.5, result.transcript
    # What `lidroute up` does every half second: the killed worker is started again (two workers
    # again for the tests that follow), and nothing is reported lost.
    assert await asyncio.to_thread(fault_stack.supervise) == []
    assert fault_stack.procs[victim].poll() is None and fault_stack.restarts[victim] == 1


async def test_a_long_stream_taken_over_after_a_final_result_repeats_and_loses_nothing(
    fault_stack, client: Client, redis_of, speech
) -> None:
    """A worker killed after it gave a stretch of a long stream as a final result (4 s in this
    suite): the worker that takes the job over goes on from the end of that stretch, so the
    client gets every sentence once."""
    utt = speech["es"][0]
    audio = np.concatenate([utt.audio, np.zeros(16000, np.float32)] * 4)
    undisturbed = await client.transcribe_pcm(float_to_pcm16(audio), 16000, language="es", timeout=60)
    pending = asyncio.ensure_future(
        client.transcribe_pcm(
            float_to_pcm16(audio), 16000, language="es", realtime=True, chunk_seconds=0.1, timeout=90
        )
    )
    await eventually(lambda: redis_of.keys(Keys().progress("*")), timeout=30, every=0.05)
    victim = await eventually(lambda: job_owner(redis_of))
    await asyncio.to_thread(fault_stack.signal, victim, signal.SIGKILL)
    result = await pending
    assert result.worker and result.worker != victim
    assert jiwer.cer(undisturbed.transcript, result.transcript) <= 0.1, (undisturbed, result.transcript)
    assert jiwer.cer(" ".join([utt.text] * 4), result.transcript) <= 0.5, result.transcript
    assert await asyncio.to_thread(fault_stack.supervise) == []


async def test_a_worker_killed_under_load_loses_none_of_a_hundred_jobs(
    fault_stack, client: Client, speech
) -> None:
    """100 requests, 12 at a time, over two workers; one is SIGKILLed a third of the way in. Its jobs
    go to the other (adopted as soon as its heartbeat stops) and every request gets its result."""
    clips = [(lang, float_to_pcm16(speech[lang][i].audio)) for lang in ("en", "es") for i in range(2)]
    limit = asyncio.Semaphore(12)
    third = asyncio.Event()
    done = 0

    async def one(n: int) -> str:
        nonlocal done
        lang, clip = clips[n % len(clips)]
        async with limit:
            result = await client.transcribe_pcm(clip, 16000, language=lang, timeout=90)
        done += 1
        if done >= 33:
            third.set()
        return result.transcript

    jobs = [asyncio.ensure_future(one(n)) for n in range(100)]
    await third.wait()
    workers = [name for name, proc in fault_stack.procs.items() if name.startswith("worker-")]
    victim = next(name for name in workers if fault_stack.procs[name].poll() is None)
    await asyncio.to_thread(fault_stack.signal, victim, signal.SIGKILL)
    transcripts = await asyncio.gather(*jobs)  # a lost job raises here (ABORTED, DEADLINE_EXCEEDED)
    assert len(transcripts) == 100 and all(transcripts)
    assert await asyncio.to_thread(fault_stack.supervise) == []  # two workers again for what follows


async def test_sigterm_lets_a_worker_finish_its_job_first(
    fault_stack, client: Client, redis_of, speech
) -> None:
    utt = speech["en"][0]
    audio = np.concatenate([utt.audio, np.zeros(16000, np.float32)])
    pending = asyncio.ensure_future(
        client.transcribe_pcm(
            float_to_pcm16(audio),
            16000,
            language="en",
            realtime=True,
            chunk_seconds=0.1,
            timeout=60,
        )
    )
    victim = await eventually(lambda: job_owner(redis_of))
    stopping = asyncio.ensure_future(asyncio.to_thread(fault_stack.signal, victim, signal.SIGTERM))
    result = await pending
    await stopping
    assert result.worker == victim  # drained, not abandoned
    assert fault_stack.procs[victim].returncode == 0
    await asyncio.to_thread(fault_stack.add_worker, ["en", "es"])


async def test_a_job_that_keeps_failing_goes_to_dead_and_reports_an_error(fault_stack, redis_of) -> None:
    keys = Keys()
    queue = JobQueue(redis_of, keys)
    job_id = uuid.uuid4().hex
    await queue.enqueue(Job(job_id=job_id, language="es", deadline=time.time() + 60, enqueued_at=time.time()))
    await queue.append_audio(job_id, b"\x01\x02\x03")  # an odd byte count: every attempt fails on it
    await queue.end_audio(job_id)

    async def error_event():  # type: ignore[no-untyped-def]
        events = await queue.read_events(job_id, "0", 100)
        return next((e for _, e in events if e.kind == "error"), None)

    event = await eventually(error_event, timeout=30)
    assert event.code == "ABORTED" and "deliveries" in event.message
    dead = await redis_of.xrange(keys.dead)
    assert any(json.loads(fields[b"job"])["job_id"] == job_id for _, fields in dead)
    assert int((await redis_of.xpending(keys.jobs("es"), WORKER_GROUP))["pending"]) == 0


async def test_a_worker_drops_jobs_whose_client_is_gone_even_when_no_cancel_marker_came(
    fault_stack, redis_of, speech
) -> None:
    """Zombie work: a router that died, or a cancel marker lost with Redis, leaves jobs nobody waits
    for. Their client's lease tells the workers: one never leased is skipped, one whose lease lapses
    is stopped, long before the worker's own audio timeout (30 s)."""
    queue = JobQueue(redis_of, Keys())
    pcm = float_to_pcm16(speech["es"][0].audio)

    def job() -> Job:
        return Job(uuid.uuid4().hex, "es", deadline=time.time() + 60, enqueued_at=time.time(), leased=True)

    async def kinds(job_id: str) -> list[str]:
        return [e.kind for _, e in await queue.read_events(job_id, "0", 10)]

    async def settled() -> bool:  # acknowledged: an acknowledged job leaves the stream
        return await queue.queue_depth("es") == 0

    skipped = job()  # its client left before any worker was free
    await queue.append_audio(skipped.job_id, pcm)
    await queue.end_audio(skipped.job_id)
    await queue.enqueue(skipped)
    await eventually(settled, timeout=10)
    assert await kinds(skipped.job_id) == []  # never started, never a result

    stranded = job()  # its router vanishes mid-stream: no end marker, no cancel marker, no renewals
    await queue.renew_lease(stranded.job_id, 2)
    await queue.append_audio(stranded.job_id, pcm)
    await queue.enqueue(stranded)
    await eventually(lambda: kinds(stranded.job_id), timeout=10)  # started
    started = time.monotonic()
    await eventually(settled, timeout=15)
    assert time.monotonic() - started < 10
    assert "final" not in await kinds(stranded.job_id)


async def test_redis_restart_gives_a_clear_error_then_service_resumes(
    fault_stack, client: Client, speech
) -> None:
    audio = float_to_pcm16(speech["en"][0].audio)
    fault_stack.redis.stop()
    try:
        started = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await client.transcribe_pcm(audio, 16000, timeout=30)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "redis" in (err.value.details() or "").lower()
        assert time.monotonic() - started < 10
    finally:
        fault_stack.redis.start()

    async def works() -> bool:
        result = await client.transcribe_pcm(audio, 16000, timeout=30)
        return result.language == "en" and bool(result.transcript)

    await eventually(works, timeout=30, every=0.5)


async def _outcome(call) -> str:  # type: ignore[no-untyped-def]
    try:
        result = await call
    except grpc.aio.AioRpcError as exc:
        return exc.code().name
    return "OK" if result.transcript else "EMPTY"


async def _seconds_until_served(client: Client, clip: bytes, language: str) -> float:
    """Seconds from now until a request in `language` gets a result (retried; at most 30 s)."""
    back = time.monotonic()

    async def works() -> bool:
        return await _outcome(client.transcribe_pcm(clip, 16000, language=language, timeout=20)) == "OK"

    await eventually(works, timeout=30, every=0.2)
    return time.monotonic() - back


#: What a request in flight may end with when Redis fails under it: a result, or a clear status.
CLEAN = {"OK", "UNAVAILABLE", "DEADLINE_EXCEEDED"}


async def test_redis_killed_under_traffic_ends_every_request_cleanly_and_service_returns(
    fault_stack, client: Client, speech
) -> None:
    clip = float_to_pcm16(np.concatenate([speech["es"][0].audio, np.zeros(8000, np.float32)]))
    calls = [
        asyncio.ensure_future(
            _outcome(client.transcribe_pcm(clip, 16000, language="es", realtime=True, timeout=20))
        )
        for _ in range(6)
    ]
    await asyncio.sleep(0.6)
    fault_stack.redis.proc.kill()  # kill -9: no shutdown, the AOF as it was
    fault_stack.redis.proc.wait()
    outcomes = await asyncio.gather(*calls)  # none hangs past its deadline
    assert set(outcomes) <= CLEAN, outcomes
    fault_stack.redis.start()
    # The AOF kept the jobs whose clients got UNAVAILABLE, and their leases (15 s): the router tells
    # Redis they are abandoned as soon as it answers, or they would fill every slot until the leases
    # lapse (seen: 15 s). Then only the workers' next heartbeat (every 0.5 s here) is waited for.
    assert await _seconds_until_served(client, clip, "es") < 5


async def test_redis_paused_under_traffic_ends_every_request_cleanly_and_service_resumes(
    fault_stack, client: Client, redis_of, speech
) -> None:
    clip = float_to_pcm16(speech["en"][1].audio)
    calls = [
        asyncio.ensure_future(_outcome(client.transcribe_pcm(clip, 16000, language="en", timeout=4)))
        for _ in range(4)
    ]
    await redis_of.execute_command("CLIENT", "PAUSE", 5000, "ALL")
    try:
        outcomes = await asyncio.gather(*calls)
    finally:
        await redis_of.execute_command("CLIENT", "UNPAUSE")
    assert set(outcomes) <= CLEAN, outcomes
    # The pause outlasted the workers' heartbeat TTL (3 s here): until a heartbeat lands again the
    # router says no worker serves the language; the jobs the timed-out calls left are abandoned
    # as soon as Redis answers, so they hold no slot (seen: 0.1 s, and 9 s before they were).
    assert await _seconds_until_served(client, clip, "en") < 5


async def test_a_job_longer_than_the_reclaim_time_keeps_its_worker(
    fault_stack, client: Client, speech
) -> None:
    """Seven seconds of speech in real time against a 2 s reclaim time: the worker that started the
    job finishes it; no other worker takes it over."""
    clip = float_to_pcm16(np.concatenate([speech["es"][1].audio] * 3 + [np.zeros(16000, np.float32)]))
    result = await client.transcribe_pcm(clip, 16000, language="es", realtime=True, timeout=60)
    assert result.transcript and len(clip) / 32000 > 3 * 2
    logs = "".join(p.read_text(errors="replace") for p in fault_stack.log_dir.glob("worker-*.log"))
    assert result.request_id in logs and f"reclaimed job job_id={result.request_id}" not in logs
    assert result.request_id not in [line for line in logs.splitlines() if "reclaimed job" in line]


async def test_an_upload_all_at_once_with_a_short_deadline_ends_by_it_and_leaves_no_job(
    fault_stack, client: Client, redis_of, speech
) -> None:
    """18 s of speech sent in one go with a 0.3 s deadline: the call ends by its deadline (with the
    transcript, if the worker was that fast, or DEADLINE_EXCEEDED) and no job stays behind."""
    utterance = speech["es"][0].audio
    long_speech = np.concatenate([utterance] * int(18 * 16000 / len(utterance)))
    started = time.monotonic()
    upload = client.transcribe_pcm(float_to_pcm16(long_speech), 16000, language="es", timeout=0.3)
    assert await _outcome(upload) in {"OK", "DEADLINE_EXCEEDED"}
    assert time.monotonic() - started < 1.5

    async def released() -> bool:
        return int((await redis_of.xpending(Keys().jobs("es"), WORKER_GROUP))["pending"]) == 0

    await eventually(released, timeout=15)


async def test_an_upload_all_at_once_cancelled_by_its_client_leaves_no_job(
    fault_stack, client: Client, redis_of, speech
) -> None:
    """18 s of speech sent in one go, the call cancelled once a worker holds its job: the job is
    let go (stopped, or finished and acknowledged), not left pending."""
    utterance = speech["es"][0].audio
    long_speech = np.concatenate([utterance] * int(18 * 16000 / len(utterance)))
    upload = asyncio.ensure_future(
        client.transcribe_pcm(float_to_pcm16(long_speech), 16000, language="es", timeout=30)
    )

    async def pending() -> int:
        return int((await redis_of.xpending(Keys().jobs("es"), WORKER_GROUP))["pending"])

    await eventually(pending, timeout=15, every=0.05)  # a worker holds the job
    upload.cancel()
    with pytest.raises(asyncio.CancelledError):
        await upload
    await eventually(lambda: _released(redis_of), timeout=15)


async def _released(redis_of: aioredis.Redis) -> bool:
    return int((await redis_of.xpending(Keys().jobs("es"), WORKER_GROUP))["pending"]) == 0


async def test_language_id_down_is_unavailable_within_the_deadline(
    fault_stack, client: Client, speech
) -> None:
    fault_stack.signal("lid", signal.SIGKILL)
    audio = float_to_pcm16(speech["es"][0].audio)
    started = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.transcribe_pcm(audio, 16000, timeout=8)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE, err.value.details()
    assert "language identification" in (err.value.details() or "")
    assert time.monotonic() - started < 8
    hinted = await client.transcribe_pcm(audio, 16000, language="es", timeout=30)  # no LID needed
    assert hinted.language == "es" and hinted.transcript


async def test_a_job_whose_client_left_while_redis_was_down_is_abandoned_as_soon_as_it_is_back(
    tmp_path: Path,
) -> None:
    """The router could not write the cancel marker or drop the lease: it writes them once Redis
    answers, so that a job the AOF kept holds no worker's slot until its lease lapses."""
    from router.core import Router, RouterSettings
    from workbench.stack import RedisServer

    server = RedisServer(tmp_path / "redis")
    server.start()
    client = aioredis.Redis.from_url(server.url, socket_timeout=1)
    router = Router(RouterSettings(redis_url=server.url), client, grpc.aio.insecure_channel("127.0.0.1:9"))
    keys = Keys(router.settings.key_prefix)
    await router.queue.renew_lease("j1", 60)
    keeper = asyncio.create_task(router.keep_abandoning(every=0.05))
    try:
        server.proc.kill()  # type: ignore[union-attr]
        server.proc.wait()  # type: ignore[union-attr]
        with pytest.raises((redis.exceptions.ConnectionError, OSError)):
            await router._abandon("j1")
        await asyncio.sleep(0.3)
        assert list(router.unabandoned) == ["j1"]  # still down: kept for later
        server.start()
        await eventually(lambda: asyncio.sleep(0, result=not router.unabandoned), timeout=5, every=0.05)
        assert await client.exists(keys.lease("j1")) == 0  # the AOF had kept it: dropped now
        marks = await client.xrange(keys.audio("j1"))
        assert [fields for _, fields in marks] == [{b"cancel": b"request ended early"}]
    finally:
        keeper.cancel()
        await client.aclose()
        server.stop()


async def test_a_worker_whose_loop_dies_exits_to_be_restarted_rather_than_idle_as_if_healthy(
    fault_stack, client: Client, redis_of, speech
) -> None:
    """An error no loop expects (here the workers' heartbeat key of the wrong type) ends the worker
    with status 1, so that Kubernetes or `lidroute up` starts a new one; before, the heartbeat loop
    died alone, the worker went on answering health checks, and the router saw no live worker."""
    workers = [n for n, proc in fault_stack.procs.items() if n.startswith("worker-") and proc.poll() is None]
    assert workers
    key = Keys().workers("en")
    await redis_of.delete(key)
    await redis_of.set(key, "not a sorted set")
    try:
        for name in workers:
            code = await asyncio.to_thread(fault_stack.procs[name].wait, 20)
            assert code == 1, (name, code)
    finally:
        await redis_of.delete(key)
    lost = await asyncio.to_thread(fault_stack.supervise)  # the language-ID test left its service down
    assert not [name for name in lost if name.startswith("worker-")], lost
    clip = float_to_pcm16(speech["en"][0].audio)
    assert await _seconds_until_served(client, clip, "en") < 30
