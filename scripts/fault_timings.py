"""Two timings of the failure paths, on the bundled models: how fast a request past the router's
stream limit is refused, and how soon after a Redis kill -9 and restart a request succeeds.

    .venv/bin/python scripts/fault_timings.py

Timings on shared machines are noisy, so these are measured here rather than asserted by tests
(the tests assert that the refusal comes before any audio and that service returns).
"""

from __future__ import annotations

import asyncio
import statistics
import time

import grpc
import numpy as np

from lidroute.audio import float_to_pcm16
from lidroute.cli import default_models_dir, lid_source, model_dirs
from lidroute.client import Client
from workbench.stack import Stack, StackConfig

SILENCE = float_to_pcm16(np.zeros(16000 * 3, np.float32))


async def refusals(address: str, limit: int) -> None:
    async with Client(address) as client:
        held = [
            asyncio.create_task(client.transcribe_pcm(SILENCE, 16000, realtime=True, timeout=60))
            for _ in range(limit)
        ]
        await asyncio.sleep(0.8)
        seconds = []
        for _ in range(50):
            started = time.perf_counter()
            try:
                await client.transcribe_pcm(SILENCE[:3200], 16000, timeout=10)
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                    seconds.append(time.perf_counter() - started)
        await asyncio.gather(*held)
    ms = sorted(s * 1000 for s in seconds)
    median = statistics.median(ms)
    print(f"past max_streams={limit}: {len(ms)}/50 refused; median {median:.1f} ms, max {ms[-1]:.1f} ms")


async def after_restart(stack: Stack, lang: str) -> None:
    speech = float_to_pcm16((np.random.default_rng(0).normal(0, 0.05, 16000)).astype(np.float32))
    assert stack.redis is not None and stack.redis.proc is not None
    stack.redis.proc.kill()
    stack.redis.proc.wait()
    await asyncio.sleep(1.0)
    stack.redis.start()
    back, tries = time.monotonic(), 0
    async with Client(stack.router_address) as client:
        while True:
            tries += 1
            try:
                await client.transcribe_pcm(speech, 16000, language=lang, timeout=10)
                break
            except grpc.aio.AioRpcError:
                await asyncio.sleep(0.1)
    waited = time.monotonic() - back
    print(f"Redis kill -9 and restart: first success {waited:.2f} s after it answered ({tries} tries)")


def main() -> None:
    lid, asr = model_dirs(default_models_dir())
    lang = sorted(asr)[0]
    config = StackConfig(
        lid_model=lid_source(lid), models={lang: str(asr[lang])}, router_args=["--max-streams", "3"]
    )
    with Stack(config) as stack:
        asyncio.run(refusals(stack.router_address, 3))
        asyncio.run(after_restart(stack, lang))


if __name__ == "__main__":
    main()
