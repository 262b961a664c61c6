"""`make bench`: end-to-end latency of Transcribe next to the same models called in-process,
throughput at several concurrency levels beside the server a user would write, how fast a
router at its limit refuses twice its capacity, and what serving costs at real model sizes
(random-weight stand-ins of XLS-R 300M and the VoxLingua107 ECAPA, `workbench.standins`).
Prints a Markdown table and writes it, with the raw figures as JSON, to bench-results/.

Everything is measured side by side in one run on one machine: compare the ratios, not the
absolute numbers, across machines.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from lidroute.audio import TARGET_RATE, float_to_pcm16

if TYPE_CHECKING:
    from workbench.stack import StackConfig

OUT = Path("bench-results")


def utterance(lang: str, seconds: float, models_dir: Path, gap: float = 0.2) -> np.ndarray:
    """`seconds` of sentences of the model's vocabulary with `gap` s of silence after each."""
    from lidroute.train.synth import synth_utterances
    from workbench.cli import training_vocabulary

    pieces, total, seed = [], 0, 100
    silence = np.zeros(round(gap * TARGET_RATE), np.float32)
    while total < seconds * TARGET_RATE:
        utt = synth_utterances(lang, 1, seed=seed, vocab=training_vocabulary(models_dir, lang))[0]
        pieces += [utt.audio, silence]
        total += len(utt.audio) + len(silence)
        seed += 1
    return np.concatenate(pieces)[: int(seconds * TARGET_RATE)]


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def in_process(models_dir: Path, lang: str, audio: np.ndarray, runs: int) -> list[float]:
    """The same work without serving: one LID window, then the CTC model on the whole clip."""
    from asr_worker.model import CtcModel
    from lid_service.model import LanguageIdModel, LidRequest
    from lidroute.cli import lid_source, model_dirs
    from lidroute.registry import ModelSpec

    lid_dirs, asr = model_dirs(models_dir)
    lid = LanguageIdModel(lid_source(lid_dirs), Path(tempfile.mkdtemp()))
    ctc = CtcModel(lang, ModelSpec(uri=str(asr[lang])))
    window = audio[: TARGET_RATE // 2]
    for _ in range(3):
        lid.identify([LidRequest(window, ())])
        ctc.transcribe(audio)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        lid.identify([LidRequest(window, ())])
        ctc.transcribe(audio)
        times.append(time.perf_counter() - start)
    return times


def decoders(models_dir: Path, lang: str, audio: np.ndarray, runs: int) -> dict[str, list[float]]:
    """The CTC model alone, decoded greedily and by beam search with its word LM at the worker's
    width and at a quarter of it (what a narrower beam would save), runs interleaved."""
    from asr_worker.decoding import DEFAULT_BEAM
    from asr_worker.model import CtcModel
    from lidroute.cli import model_dirs
    from lidroute.registry import ModelSpec

    spec = ModelSpec(uri=str(model_dirs(models_dir)[1][lang]))
    models = {"greedy": CtcModel(lang, spec, beam=0)}
    for width in (DEFAULT_BEAM // 4, DEFAULT_BEAM):
        model = CtcModel(lang, spec, beam=width)
        if model.lm is not None:
            models[f"beam {width} + word LM"] = model
    times: dict[str, list[float]] = {name: [] for name in models}
    for i in range(runs + 3):
        for name, model in models.items():
            start = time.perf_counter()
            model.transcribe(audio)
            if i >= 3:
                times[name].append(time.perf_counter() - start)
    return times


def long_request(models_dir: Path, lang: str, audio: np.ndarray, runs: int) -> dict[str, list[float]]:
    """A long request with pauses, recognised whole and as the worker does, and as a stream with
    interim results (one a second, as the worker's default) with and without reusing decoded parts."""
    from asr_worker.model import CtcModel
    from asr_worker.worker import WorkerSettings
    from lidroute.cli import model_dirs
    from lidroute.registry import ModelSpec

    spec = ModelSpec(uri=str(model_dirs(models_dir)[1][lang]))
    whole, split = CtcModel(lang, spec, pause_split=0), CtcModel(lang, spec)
    step = int(WorkerSettings.model_fields["interim_interval_seconds"].default * TARGET_RATE)

    def stream(model: CtcModel, reuse: bool) -> None:
        decoded: dict = {}
        for end in [*range(step, len(audio), step), len(audio)]:
            model.transcribe(audio[:end], decoded if reuse else None)

    cases = {
        "in one piece": lambda: whole.transcribe(audio),
        "split at pauses (the worker)": lambda: split.transcribe(audio),
        "stream, interim results, in one piece": lambda: stream(whole, False),
        "stream, interim results, split, parts decoded anew": lambda: stream(split, False),
        "stream, interim results, split, parts reused (the worker)": lambda: stream(split, True),
    }
    split.transcribe(audio[:TARGET_RATE])  # lazy initialisation
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(runs):
        for name, run in cases.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return times


async def end_to_end(
    address: str, audio: np.ndarray, runs: int
) -> tuple[list[float], dict[str, list[float]]]:
    """Latencies seen by the client, and the parts of each that the router and the worker timed."""
    from lidroute.client import Client

    pcm = float_to_pcm16(audio)
    parts: dict[str, list[float]] = {}
    async with Client(address) as client:
        for _ in range(3):
            await client.transcribe_pcm(pcm, TARGET_RATE, timeout=60)
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            result = await client.transcribe_pcm(pcm, TARGET_RATE, timeout=60)
            times.append(time.perf_counter() - start)
            for name, seconds in result.timing.items():
                parts.setdefault(name, []).append(seconds)
    return times, parts


def breakdown(times: list[float], parts: dict[str, list[float]]) -> list[str]:
    """Where one request's time goes, median of each part over the runs (ms): the language ID call
    (onset VAD and the LID service), the queue (enqueued to picked up), the worker's model and
    decoding, what the router spends besides (enqueue, audio and event relays through Redis), and
    the client's side (gRPC, the client)."""

    def ms(name: str) -> float:
        return 1000 * statistics.median(parts.get(name, [0.0]))

    router = ms("total")
    known = ms("language_id") + ms("queue") + ms("inference")
    rows = [
        ("language ID (onset VAD, LID service call)", ms("language_id")),
        ("queue (enqueued to a worker's pick-up)", ms("queue")),
        ("worker: model and decoding", ms("inference")),
        ("router besides: enqueue, audio and event relays", max(router - known, 0.0)),
        ("client and gRPC", max(1000 * statistics.median(times) - router, 0.0)),
    ]
    return [
        "| where a request's time goes (median of each part) | ms |",
        "|---|---|",
        *(f"| {name} | {value:.1f} |" for name, value in rows),
        f"| end to end, at the client | {1000 * statistics.median(times):.1f} |",
    ]


#: One concurrency level's result: requests/s, and the median and 95th-percentile latency (s).
Rate = tuple[float, float, float]


async def at_concurrency(call: Callable[[], Awaitable[object]], concurrency: int, requests: int) -> Rate:
    """`requests` calls made by `concurrency` callers, each starting its next as its last ends."""
    latencies: list[float] = []
    left = requests

    async def caller() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            start = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    wall = time.perf_counter() - start
    return requests / wall, pct(latencies, 50), pct(latencies, 95)


async def throughput(address: str, audio: np.ndarray, concurrency: int, requests: int) -> Rate:
    from lidroute.client import Client

    pcm = float_to_pcm16(audio)
    async with Client(address) as client:
        return await at_concurrency(
            lambda: client.transcribe_pcm(pcm, TARGET_RATE, timeout=300), concurrency, requests
        )


def main(argv: list[str] | None = None) -> int:
    from lidroute.cli import default_models_dir, has_models
    from workbench.build import build_models

    args = _parse(argv)
    models_dir = args.models_dir or default_models_dir()
    if not has_models(models_dir):
        build_models(models_dir)
    audio = utterance(args.language, args.seconds, models_dir)
    base = in_process(models_dir, args.language, audio, args.runs)
    decoding = decoders(models_dir, args.language, audio, args.runs)
    long_audio = utterance(args.language, args.long_seconds, models_dir, gap=1.0)
    long = long_request(models_dir, args.language, long_audio, args.long_runs)
    (e2e, parts), rows, cpu = through_the_stack(models_dir, audio, args.runs, args.concurrency)
    others = {system: naive_server(models_dir, audio, args.concurrency, system) for system in ALTERNATIVES}
    admitted = admission(models_dir, audio, args.admission_waves)
    sections = [
        _table(args, base, e2e, decoding, long, rows),
        "\n".join(breakdown(e2e, parts)),
        naive_rows(rows, others),
        cpu_rows(cpu, others),
        admission_rows(admitted),
    ]
    streamed: dict[str, object] = {}
    if args.stream_minutes:
        streamed = long_stream(models_dir, args.language, args.stream_minutes)
        sections.append(long_stream_rows(streamed))
    real: dict[str, object] = {}
    if args.real_size_seconds:
        real = real_size(models_dir, audio[: int(args.real_size_seconds * TARGET_RATE)], args.concurrency)
        sections.append(real_size_rows(real, args.real_size_seconds))
    table = "\n\n".join(sections)
    print(table)
    OUT.mkdir(exist_ok=True)
    (OUT / "bench.md").write_text(table + "\n")
    (OUT / "bench.json").write_text(
        json.dumps(
            {
                "in_process_s": base,
                "decoding_s": decoding,
                "long_request_s": long,
                "end_to_end_s": e2e,
                "end_to_end_parts_s": parts,
                "throughput": rows,
                "cpu_per_request_s": cpu,
                "alternatives": {system: served._asdict() for system, served in others.items()},
                "admission_s": admitted,
                "long_stream": streamed,
                "real_size": real,
            }
        )
    )
    return 0


def _parse(argv: list[str] | None) -> argparse.Namespace:
    """The flags; the description is this module's docstring, so `--help` says what is measured."""
    parser = argparse.ArgumentParser(prog="workbench.bench", description=__doc__)
    parser.add_argument("--models-dir", type=Path, default=None)
    parser.add_argument("--language", default="es")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--concurrency", default="1,4,16,64")
    parser.add_argument("--long-seconds", type=float, default=60.0, help="the long request, 1 s pauses")
    parser.add_argument("--long-runs", type=int, default=3)
    parser.add_argument(
        "--admission-waves", type=int, default=5, help="rounds of twice the router's capacity at once"
    )
    parser.add_argument(
        "--stream-minutes", type=float, default=30.0, help="the long stream beside a 1-minute one (0: skip)"
    )
    parser.add_argument(
        "--real-size-seconds",
        type=float,
        default=2.0,
        help="clip length for the real-size stand-ins (0: leave them out)",
    )
    return parser.parse_args(argv)


def _stack_config(models_dir: Path, router_args: list[str] | None = None) -> StackConfig:
    """A stack of real processes on the models folder, logging warnings only."""
    from lidroute.cli import lid_source, model_dirs
    from workbench.stack import StackConfig

    lid, asr = model_dirs(models_dir)
    return StackConfig(
        lid_model=lid_source(lid),
        models={k: str(v) for k, v in asr.items()},
        extra_env={"LIDROUTE_LOG_LEVEL": "WARNING"},
        router_args=router_args or [],
    )


def through_the_stack(
    models_dir: Path, audio: np.ndarray, runs: int, concurrency: str
) -> tuple[tuple[list[float], dict[str, list[float]]], dict[str, Rate], dict[str, dict[str, float]]]:
    """End-to-end latencies, then (requests/s, p50, p95 latency) per concurrency level (`c4`, ...)
    and each process's CPU seconds per request at that level, all on one stack started once: a
    fresh stack per level would measure its warm-up too."""
    from workbench.stack import Stack

    rows: dict[str, Rate] = {}
    cpu: dict[str, dict[str, float]] = {}
    # Room past the highest level: a client that sends its next request the moment it has its
    # result must not meet its last one still counted (the limits are measured by `admission`).
    room = str(2 * max(int(c) for c in concurrency.split(",")))
    config = _stack_config(models_dir, router_args=["--max-streams", room, "--max-queue-depth", room])
    with Stack(config) as stack:
        e2e = asyncio.run(end_to_end(stack.router_address, audio, runs))
        for level in (int(c) for c in concurrency.split(",")):
            requests = max(12, 3 * level)
            with cpu_per_request(stack.pids(), requests) as used:
                rows[f"c{level}"] = asyncio.run(throughput(stack.router_address, audio, level, requests))
            cpu[f"c{level}"] = used
    return e2e, rows, cpu


@contextlib.contextmanager
def cpu_per_request(pids: dict[str, int], requests: int) -> Iterator[dict[str, float]]:
    """Fills the dict it yields, once the block ends, with each process's CPU seconds (user and
    system) per request spent in the block: where serving's work goes, beside the wall clock."""
    from workbench.stack import cpu_seconds

    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    used: dict[str, float] = {}
    yield used
    used.update({name: (cpu_seconds(pid) - before[name]) / requests for name, pid in pids.items()})


#: The router's limit in the admission measurement, and the clients sent at once: twice as many.
ADMISSION_LIMIT = 4


def admission(models_dir: Path, audio: np.ndarray, waves: int) -> dict[str, list[float]]:
    """Twice the router's capacity at once, `waves` times: `ADMISSION_LIMIT` x 2 clients each
    stream the clip in real time to a router that serves `ADMISSION_LIMIT` requests. Returns the
    seconds each refused request waited for its RESOURCE_EXHAUSTED (`refused`), each admitted
    one took (`admitted`), and each that failed otherwise (`failed`: none should)."""
    import grpc

    from lidroute.client import Client
    from workbench.stack import Stack

    config = _stack_config(models_dir, router_args=["--max-streams", str(ADMISSION_LIMIT)])
    pcm = float_to_pcm16(audio)
    outcomes: dict[str, list[float]] = {"admitted": [], "refused": [], "failed": []}

    async def one(client: Client) -> None:
        start = time.perf_counter()
        try:
            await client.transcribe_pcm(pcm, TARGET_RATE, realtime=True, timeout=60)
            outcome = "admitted"
        except grpc.aio.AioRpcError as exc:
            outcome = "refused" if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED else "failed"
        outcomes[outcome].append(time.perf_counter() - start)

    async def run() -> None:
        async with Client(stack.router_address) as client:
            await client.transcribe_pcm(pcm, TARGET_RATE, timeout=60)  # warm
            for _ in range(waves):
                await asyncio.gather(*(one(client) for _ in range(2 * ADMISSION_LIMIT)))

    with Stack(config) as stack:
        asyncio.run(run())
    return outcomes


def admission_rows(outcomes: dict[str, list[float]]) -> str:
    """How fast twice the capacity is refused, and whether what was admitted finished."""
    refused, admitted = outcomes["refused"], outcomes["admitted"]
    total = sum(map(len, outcomes.values()))
    lines = [
        f"Twice the capacity: {2 * ADMISSION_LIMIT} clients at once, each streaming the clip in real time,"
        f" against a router serving {ADMISSION_LIMIT} (max_streams), {total} requests in all:",
        "",
        "| outcome | requests | p50 (ms) | p95 (ms) | max (ms) |",
        "|---|---|---|---|---|",
    ]
    for name, times in (("refused, RESOURCE_EXHAUSTED", refused), ("admitted, transcribed", admitted)):
        if times:
            lines.append(
                f"| {name} | {len(times)} | {1000 * pct(times, 50):.1f} | {1000 * pct(times, 95):.1f} |"
                f" {1000 * max(times):.1f} |"
            )
    lines.append(f"| failed otherwise | {len(outcomes['failed'])} | | | |")
    return "\n".join(lines)


#: The servers `make bench` sets beside lidroute (`workbench.naive --system`), and how a table names them.
ALTERNATIVES = {"naive": "naive server", "whisper-base": "Whisper base"}


class Served(NamedTuple):
    """A server beside lidroute: (requests/s, p50, p95) and its CPU seconds per request, per level
    (`c4`, ...), and the language it heard in the clip."""

    rates: dict[str, Rate]
    heard: str
    cpu: dict[str, float]


def naive_server(models_dir: Path, audio: np.ndarray, concurrency: str, system: str = "naive") -> Served:
    """The server a user would write (`workbench.naive`) on the same models and clip, or the anchor a
    user would install instead (`system` whisper-base), measured level by level."""
    import subprocess
    import sys

    from lidroute.client import Client
    from workbench.stack import free_port, wait_serving

    address = f"127.0.0.1:{free_port()}"
    port = address.rpartition(":")[2]
    with tempfile.TemporaryDirectory() as tmp:
        log_path = Path(tmp) / "naive.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [
                    *(sys.executable, "-m", "workbench.naive", "--models-dir", str(models_dir)),
                    *("--port", port, "--system", system),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_serving(address, 300, proc, log_path)

            async def heard() -> str:
                async with Client(address) as client:
                    return (
                        await client.transcribe_pcm(float_to_pcm16(audio), TARGET_RATE, timeout=60)
                    ).language

            language = asyncio.run(heard())
            rows: dict[str, Rate] = {}
            cpu: dict[str, float] = {}
            for level in (int(c) for c in concurrency.split(",")):
                requests = max(12, 3 * level)
                with cpu_per_request({system: proc.pid}, requests) as used:
                    rows[f"c{level}"] = asyncio.run(throughput(address, audio, level, requests))
                cpu[f"c{level}"] = used[system]
        finally:
            proc.terminate()
            proc.wait(30)
    return Served(rows, language, cpu)


def naive_rows(ours: dict[str, Rate], others: dict[str, Served]) -> str:
    """lidroute beside the alternatives (`ALTERNATIVES`), level by level: rates, lidroute's ratio to
    each, and the latencies."""
    names = [ALTERNATIVES[system] for system in others]
    heard = ", ".join(f"{ALTERNATIVES[system]} {served.heard!r}" for system, served in others.items())
    lines = [
        "Beside the server a user would write (`workbench.naive`: the first language-ID model on the first"
        " second, then the recognizer, greedy, per request on 2 threads) and Whisper base (faster-whisper,"
        f" int8, its own language detection, beam 5, 2 callers), same clip; they heard {heard}:",
        "",
        "| concurrent clients | requests/s lidroute / "
        + " / ".join(names)
        + " | lidroute / "
        + " | lidroute / ".join(names)
        + " | p50 latency lidroute / "
        + " / ".join(names)
        + " (ms) |"
        " p95 latency (ms) |",
        "|---|---|" + "---|" * len(names) + "---|---|",
    ]
    for key, (rps, median, p95) in ours.items():
        rows = [served.rates[key] for served in others.values()]
        lines.append(
            f"| {key[1:]} | {rps:.2f} / "
            + " / ".join(f"{r[0]:.2f}" for r in rows)
            + " | "
            + " | ".join(f"{rps / r[0]:.2f}x" for r in rows)
            + f" | {1000 * median:.0f} / "
            + " / ".join(f"{1000 * r[1]:.0f}" for r in rows)
            + f" | {1000 * p95:.0f} / "
            + " / ".join(f"{1000 * r[2]:.0f}" for r in rows)
            + " |"
        )
    return "\n".join(lines)


def long_stream(models_dir: Path, lang: str, minutes: float) -> dict[str, object]:
    """A stream of `minutes` minutes after one of 1 minute, on one stack, sent as fast as it goes:
    each process's peak memory after each (the peak only grows, so the difference is what the
    longer stream added), and the long stream's wall time beside the sum of its final results'
    model and decoding time (the worker's, stretch by stretch)."""
    from lidroute.client import Client
    from workbench.stack import Stack

    one = utterance(lang, 60.0, models_dir, gap=1.0)
    config = pb_config(lang)
    chunk = TARGET_RATE  # one second a message

    async def send(audio: np.ndarray) -> tuple[float, list[float]]:
        pcm = float_to_pcm16(audio)
        step = 2 * chunk
        model_s: list[float] = []
        async with Client(stack.router_address) as client:
            start = time.perf_counter()
            call = client.stream(config, [pcm[i : i + step] for i in range(0, len(pcm), step)], timeout=7200)
            async for response in call:
                if response.result.is_final:
                    model_s.append(response.result.timing.inference_seconds)
            return time.perf_counter() - start, model_s

    out: dict[str, object] = {}
    with Stack(_stack_config(models_dir)) as stack:
        for name, audio in (("1 min", one), (f"{minutes:g} min", np.tile(one, round(minutes)))):
            wall, model_s = asyncio.run(send(audio))
            out[name] = {
                "wall_s": wall,
                "finals": len(model_s),
                "model_s": sum(model_s),
                "peak_mb": stack.peak_mb(),
            }
    return out


def long_stream_rows(result: dict) -> str:  # type: ignore[type-arg]
    """The long stream beside the 1-minute one: memory, and time beside the stretches' own."""
    (short, a), (long, b) = result.items()
    lines = [
        f"A {long} stream after a {short} one, on one stack, sent as fast as it goes (peak memory of each"
        " process after each; the long stream's wall time beside the sum of its final results' model time):",
        "",
        "| process | peak MB after " + short + " | after " + long + " | added |",
        "|---|---|---|---|",
    ]
    for proc, mb in a["peak_mb"].items():
        lines.append(f"| {proc} | {mb:.0f} | {b['peak_mb'][proc]:.0f} | {b['peak_mb'][proc] - mb:+.0f} |")
    lines += [
        "",
        f"{long}: {b['finals']} final results in {b['wall_s']:.1f} s, their model and decoding time"
        f" {b['model_s']:.1f} s ({b['wall_s'] / max(b['model_s'], 1e-9):.2f}x); {short}: {a['finals']} in"
        f" {a['wall_s']:.1f} s ({a['wall_s'] / max(a['model_s'], 1e-9):.2f}x).",
    ]
    return "\n".join(lines)


def pb_config(lang: str):  # type: ignore[no-untyped-def]
    """LINEAR16 at 16 kHz in `lang`, hinted: the bench measures serving, not detection."""
    from lidroute.v1 import transcriber_pb2 as pb

    return pb.RecognitionConfig(
        encoding=pb.RecognitionConfig.LINEAR16, sample_rate_hertz=TARGET_RATE, language_code=lang
    )


def cpu_rows(ours: dict[str, dict[str, float]], others: dict[str, Served]) -> str:
    """Where serving's CPU goes: each lidroute process's CPU ms per request beside each
    alternative's, level by level (two cores give 2,000 ms a second)."""
    procs = list(next(iter(ours.values())))
    names = [ALTERNATIVES[system] for system in others]
    lines = [
        "CPU per request (ms, user and system, each process; the same runs as the table above):",
        "",
        "| concurrent clients | "
        + " | ".join(f"lidroute {p}" for p in procs)
        + " | lidroute in all | "
        + " | ".join(names)
        + " |",
        "|---|" + "---|" * (len(procs) + 1 + len(names)),
    ]
    for key, used in ours.items():
        lines.append(
            f"| {key[1:]} | "
            + " | ".join(f"{1000 * used[p]:.0f}" for p in procs)
            + f" | {1000 * sum(used.values()):.0f} | "
            + " | ".join(f"{1000 * served.cpu[key]:.0f}" for served in others.values())
            + " |"
        )
    return "\n".join(lines)


#: Where `make bench` keeps the real-size stand-ins (`workbench.standins`; 1.3 GB, built once).
STANDINS = Path("build/standins")


def real_size(models_dir: Path, audio: np.ndarray, concurrency: str) -> dict[str, object]:
    """The stand-ins of real size (a VoxLingua107-shaped ECAPA, an XLS-R-300M-shaped recognizer,
    random weights): each model alone on one thread, batch 1 and batched; then served, the ECAPA
    by the LID service and the recognizer by one worker (its language hinted, so only it runs):
    latency and throughput per concurrency level, the worker's own time per request, the LID
    service's batch sizes, and each process's peak memory."""
    from workbench.stack import Stack, StackConfig, free_port
    from workbench.standins import ASR_DIR, LID_DIR, build_standins

    lid_dir, asr_dir = build_standins(STANDINS, models_dir)
    alone = _alone(lid_dir, asr_dir, audio)
    levels = [int(c) for c in concurrency.split(",")]
    config = StackConfig(
        lid_model=str(lid_dir),
        models={"mr": str(asr_dir)},
        worker_groups=[["mr"]],
        extra_env={"LIDROUTE_LOG_LEVEL": "WARNING"},
        metrics_port=free_port(),
        # 64 streams of a model that takes a second or more a clip wait minutes for the one worker.
        router_args=["--queue-timeout-seconds", "900"],
    )
    with Stack(config) as stack:
        (times, parts) = asyncio.run(end_to_end(stack.router_address, audio, 5))
        served = {
            f"c{level}": asyncio.run(throughput(stack.router_address, audio, level, max(4, level)))
            for level in levels
        }
        worker_batches = _histogram_mean(stack.metrics["worker-1"], "lidroute_worker_batch_size")
        window = audio[:TARGET_RATE]
        lid = {
            f"c{level}": asyncio.run(_identify(stack.addresses["lid"], window, level, max(16, 2 * level)))
            for level in levels
        }
        batches = _histogram_mean(stack.metrics["lid"], "lidroute_lid_batch_size")
        peak = stack.peak_mb()
    return {
        "models": {"lid": LID_DIR, "asr": ASR_DIR},
        "alone_s": alone,
        "end_to_end_s": times,
        "inference_s": parts.get("inference", []),
        "served": served,
        "lid_served": lid,
        "lid_mean_batch": batches,
        "worker_mean_batch": worker_batches,
        "peak_rss_mb": peak,
    }


def _alone(lid_dir: Path, asr_dir: Path, audio: np.ndarray) -> dict[str, float]:
    """Median seconds per item of each stand-in on one thread, as each service runs: the recognizer
    on the clip (batch 1, and 4 clips in one call), the ECAPA on its first second (1, and 16)."""
    import torch
    from speechbrain.inference.classifiers import EncoderClassifier

    from asr_worker.model import CtcModel
    from lidroute.registry import ModelSpec

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ctc = CtcModel("mr", ModelSpec(uri=str(asr_dir)))
        model = ctc.acoustic.model  # type: ignore[attr-defined]
        clip = torch.from_numpy(audio)[None]
        lid = EncoderClassifier.from_hparams(source=str(lid_dir), savedir=tempfile.mkdtemp())
        window = clip[:, :TARGET_RATE]

        def per_item(fn, items: int, runs: int) -> float:  # type: ignore[no-untyped-def]
            fn()
            times = []
            for _ in range(runs):
                start = time.perf_counter()
                fn()
                times.append((time.perf_counter() - start) / items)
            return statistics.median(times)

        with torch.inference_mode():
            return {
                "asr_batch1": per_item(lambda: model(clip), 1, 3),
                "asr_batch4": per_item(lambda: model(clip.repeat(4, 1)), 4, 2),
                "asr_transcribe": per_item(lambda: ctc.transcribe(audio), 1, 3),
                "lid_batch1": per_item(lambda: lid.classify_batch(window), 1, 5),
                "lid_batch16": per_item(lambda: lid.classify_batch(window.repeat(16, 1)), 16, 3),
            }
    finally:
        torch.set_num_threads(threads)


async def _identify(address: str, window: np.ndarray, concurrency: int, requests: int) -> Rate:
    """(windows/s, p50, p95) of Identify calls straight to the LID service, `concurrency` at a time."""
    import grpc

    from lidroute.v1 import language_id_pb2 as lid_pb
    from lidroute.v1 import language_id_pb2_grpc as lid_grpc

    request = lid_pb.IdentifyRequest(audio_content=float_to_pcm16(window), top_k=3)
    async with grpc.aio.insecure_channel(address) as channel:
        stub = lid_grpc.LanguageIdentifierStub(channel)
        await stub.Identify(request, timeout=60)
        return await at_concurrency(lambda: stub.Identify(request, timeout=300), concurrency, requests)


def _histogram_mean(port: int, name: str) -> float:
    """The mean of a Prometheus histogram a process exports on `port` (sum over count)."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    values = {}
    for line in text.splitlines():
        if line.startswith((f"{name}_sum ", f"{name}_count ")):
            key, value = line.split()
            values[key.rsplit("_", 1)[1]] = float(value)
    return values["sum"] / values["count"] if values.get("count") else float("nan")


def real_size_rows(result: dict, seconds: float) -> str:  # type: ignore[type-arg]
    """The stand-ins' report: the models alone, then served, and the worker beside its model."""
    alone = result["alone_s"]
    inference = statistics.median(result["inference_s"]) if result["inference_s"] else float("nan")
    ms = lambda s: f"{1000 * s:.0f}"  # noqa: E731
    lines = [
        f"Real sizes, random weights (`python -m workbench.standins`: {result['models']['asr']}, 316M"
        f" weights; {result['models']['lid']}, 107 languages), one thread a process, CPU (no GPU measured):",
        "",
        "| model alone, one thread | ms per item |",
        "|---|---|",
        f"| XLS-R-300M shape, {seconds:g} s clip, batch 1 | {ms(alone['asr_batch1'])} |",
        f"| XLS-R-300M shape, {seconds:g} s clip, batch 4 | {ms(alone['asr_batch4'])} |",
        f"| XLS-R-300M shape, transcribed (forward and decoding) | {ms(alone['asr_transcribe'])} |",
        f"| VoxLingua107 shape, 1 s window, batch 1 | {ms(alone['lid_batch1'])} |",
        f"| VoxLingua107 shape, 1 s window, batch 16 | {ms(alone['lid_batch16'])} |",
        "",
        f"Served: the worker's model and decoding, median at one stream, {ms(inference)} ms:"
        f" {inference / alone['asr_batch1']:.2f}x the model's forward at batch 1,"
        f" {inference / alone['asr_batch4']:.2f}x batched (the worker runs one clip a call).",
        "",
        "| concurrent streams | clips/s | audio s per s | p50 (ms) | p95 (ms) | LID windows/s |"
        " LID p50 (ms) |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, (rps, median, p95) in result["served"].items():
        wps, lid_median, _ = result["lid_served"][key]
        lines.append(
            f"| {key[1:]} | {rps:.2f} | {rps * seconds:.1f} | {ms(median)} | {ms(p95)} | {wps:.1f} |"
            f" {ms(lid_median)} |"
        )
    peak = ", ".join(f"{name} {mb:.0f} MB" for name, mb in result["peak_rss_mb"].items())
    lines += [
        "",
        f"LID service: {result['lid_mean_batch']:.1f} windows per model call on average; the worker:"
        f" {result.get('worker_mean_batch', 0.0):.1f} clips per model call. Peak memory: {peak}.",
    ]
    return "\n".join(lines)


def _table(
    args: argparse.Namespace,
    base: list[float],
    e2e: list[float],
    decoding: dict[str, list[float]],
    long: dict[str, list[float]],
    rows: dict[str, Rate],
) -> str:
    """The Markdown report: percentiles in ms beside the ratio that carries across machines."""
    lines = [
        f"Transcribe of a {args.seconds:g} s {args.language} utterance (LINEAR16 16 kHz, streamed at once), "
        f"{args.runs} runs each, one machine, one run.",
        "",
        "| path | p50 (ms) | p95 (ms) |",
        "|---|---|---|",
        f"| in-process: LID 0.5 s window + CTC | {1000 * pct(base, 50):.1f} | {1000 * pct(base, 95):.1f} |",
        f"| end to end through router, LID service, Redis, worker | {1000 * pct(e2e, 50):.1f} | "
        f"{1000 * pct(e2e, 95):.1f} |",
        f"| ratio end-to-end / in-process | {pct(e2e, 50) / pct(base, 50):.2f}x | "
        f"{pct(e2e, 95) / pct(base, 95):.2f}x |",
        "",
        "| CTC model alone, decoded | p50 (ms) | p95 (ms) |",
        "|---|---|---|",
        *(f"| {name} | {1000 * pct(t, 50):.1f} | {1000 * pct(t, 95):.1f} |" for name, t in decoding.items()),
        "",
        f"| {args.long_seconds:g} s request, sentences 1 s apart, {args.long_runs} runs | median (s) |",
        "|---|---|",
        *(f"| {name} | {statistics.median(t):.2f} |" for name, t in long.items()),
        "",
        "| concurrent clients | requests/s | audio s per s | p50 latency (ms) | p95 latency (ms) |",
        "|---|---|---|---|---|",
    ]
    for key, (rps, median, p95) in rows.items():
        lines.append(
            f"| {key[1:]} | {rps:.2f} | {rps * args.seconds:.1f} | {1000 * median:.0f} | {1000 * p95:.0f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
