"""Micro-batching: requests that arrive together share one call; errors reach every caller."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from lidroute.batching import MicroBatcher


async def test_concurrent_requests_share_one_call_and_keep_their_results() -> None:
    calls: list[int] = []

    def double(items: Sequence[int]) -> list[int]:
        calls.append(len(items))
        return [2 * i for i in items]

    batcher: MicroBatcher[int, int] = MicroBatcher(double, max_batch=8, max_wait_s=0.05)
    batcher.start()
    results = await asyncio.gather(*(batcher.submit(i) for i in range(20)))
    await batcher.stop()
    assert results == [2 * i for i in range(20)]
    assert max(calls) == 8 and sum(calls) == 20 and len(calls) < 20


async def test_a_failing_batch_fails_its_callers_and_the_batcher_goes_on() -> None:
    def flaky(items: Sequence[int]) -> list[int]:
        if 13 in items:
            raise ValueError("bad item")
        return list(items)

    batcher: MicroBatcher[int, int] = MicroBatcher(flaky, max_batch=4, max_wait_s=0.0)
    batcher.start()
    with pytest.raises(ValueError, match="bad item"):
        await batcher.submit(13)
    assert await batcher.submit(7) == 7
    await batcher.stop()


async def test_the_model_runs_off_the_event_loop() -> None:
    seen: list[bool] = []

    def record(items: Sequence[int]) -> list[int]:
        seen.append(threading.current_thread() is threading.main_thread())
        return list(items)

    batcher: MicroBatcher[int, int] = MicroBatcher(record)
    batcher.start()
    await batcher.submit(1)
    await batcher.stop()
    assert seen == [False]


async def test_a_workers_concurrent_jobs_share_model_calls_and_get_their_own_transcripts(
    models_dir: Path, redis_client: aioredis.Redis
) -> None:
    """Jobs of two languages on one encoder and of a whole wav2vec2 model, in flight at once: their
    parts are computed in shared calls (heads on one encoder together, the wav2vec2 model's parts
    padded together), and each transcript is the one its clip gets alone."""
    from asr_worker.model import CtcModel
    from asr_worker.worker import AsrWorker, WorkerSettings
    from lidroute.cli import model_dirs
    from lidroute.registry import ModelSpec
    from workbench.bench import utterance

    _, asr = model_dirs(models_dir)
    langs = [lang for lang in ("es", "en", "sw") if lang in asr]
    models = {lang: CtcModel(lang, ModelSpec(uri=str(asr[lang])), beam=0) for lang in langs}
    jobs = [(models[lang], utterance(lang, seconds, models_dir)) for lang in langs for seconds in (1.5, 2.2)]
    worker = AsrWorker(WorkerSettings(max_batch=16, batch_wait_ms=200), redis_client)
    calls: list[int] = []
    worker.batcher._on_batch = calls.append
    worker.batcher.start()
    try:
        served = await asyncio.gather(*(worker.transcribe(model, clip, {}) for model, clip in jobs))
    finally:
        await worker.batcher.stop()
    assert calls == [sum(len(model.parts(clip)) for model, clip in jobs)]
    for (model, clip), transcript in zip(jobs, served, strict=True):
        alone = model.transcribe(clip)
        assert transcript.text == alone.text
        assert [w.start for w in transcript.words] == [w.start for w in alone.words]
