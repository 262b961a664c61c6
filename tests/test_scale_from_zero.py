"""A worker pool at zero replicas wakes on a queued job: with `scale_from_zero`, the router queues a
request for a registered language that has no live worker and waits; a worker that starts later
(KEDA's doing, in a cluster) takes the job and the client gets its transcript. Without the setting,
the router refuses that language at once, as before. Runs against processes this module starts,
because it starts a worker in the middle of a request."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc
import pytest
import redis.asyncio as aioredis

from lidroute.audio import float_to_pcm16
from lidroute.client import Client
from lidroute.keys import WORKER_GROUP, Keys
from tests.conftest import EXTERNAL_ROUTER, ROUTER_TEST_ARGS, make_stack
from workbench.stack import free_port

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(bool(EXTERNAL_ROUTER), reason="starts a worker mid-request: needs its own stack"),
    # Its own stack (LID, two routers, a worker) starts, then a second worker: more than the default.
    pytest.mark.timeout(600),
]

#: Long enough for a worker process to start and load its model on a busy machine.
COLD_START_SECONDS = 150


@pytest.fixture(scope="module")
def cold_stack(models_dir: Path):  # type: ignore[no-untyped-def]
    """en has a worker; es and sw are registered (the stack registers every model) but have none.
    The stack's router runs with scale_from_zero; a second router, `strict`, without it."""
    stack = make_stack(models_dir, [["en"]])
    stack.config.router_args = [
        *stack.config.router_args,
        "--scale-from-zero",
        "--queue-timeout-seconds",
        str(COLD_START_SECONDS),
    ]
    with stack:
        port = free_port()
        stack.spawn(
            "strict",
            "router",
            [
                "--listen-address",
                f"127.0.0.1:{port}",
                "--lid-address",
                stack.addresses["lid"],
                *ROUTER_TEST_ARGS,
            ],
            f"127.0.0.1:{port}",
            stack.config.start_timeout,
        )
        yield stack


async def test_a_request_for_a_language_with_no_worker_waits_until_a_worker_starts(
    cold_stack, speech
) -> None:
    utt = speech["sw"][0]
    pcm = float_to_pcm16(utt.audio)

    async with Client(cold_stack.addresses["strict"]) as strict:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await strict.transcribe_pcm(pcm, 16000, language="sw", timeout=30)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "no live worker serves 'sw'" in (refused.value.details() or "")

    redis_of = aioredis.Redis.from_url(cold_stack.redis_url)
    try:
        async with Client(cold_stack.router_address) as client:
            listed = {lang.language_code: lang for lang in (await client.list_languages()).languages}
            assert listed["sw"].served and listed["sw"].live_workers == 0

            pending = asyncio.ensure_future(
                client.transcribe_pcm(pcm, 16000, language="sw", timeout=COLD_START_SECONDS + 60)
            )
            deadline = time.monotonic() + 30
            while True:  # queued, undelivered: what KEDA's lag trigger reads
                groups = await redis_of.xinfo_groups(Keys().jobs("sw"))
                lag = {g["name"].decode(): g["lag"] for g in groups}
                if lag.get(WORKER_GROUP) == 1:
                    break
                assert not pending.done(), pending.exception()
                assert time.monotonic() < deadline, "the job for sw was never queued"
                await asyncio.sleep(0.2)
            await asyncio.sleep(1.0)
            assert not pending.done(), "the request must wait for a worker, not fail"

            worker = await asyncio.to_thread(cold_stack.add_worker, ["sw"])
            result = await pending
    finally:
        await redis_of.aclose()
    assert result.language == "sw" and result.source == "HINT"
    assert result.worker == worker
    assert result.transcript
