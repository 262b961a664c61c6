"""Micro-batching: requests that arrive together share one call; errors reach every caller."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import pytest

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
