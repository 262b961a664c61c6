"""The `lidroute` command: the serving commands of `lidroute.cli`, and the workbench's.

The workbench adds what runs, builds and measures models on one machine: the local stack (`up`,
`demo`), `models build`, `corpus` and `evaluate`. A serving command is handed to `lidroute.cli`
before any of that is imported, so the deployment's `lidroute models sync` loads no training code.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from lidroute import cli as serving
from lidroute.cli import DESCRIPTION, default_models_dir, has_models, lid_source, model_dirs
from lidroute.settings import without_password


# ---------------------------------------------------------------------- the stack
def stack_config(models_dir: Path, args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from workbench.stack import StackConfig

    lid, asr = model_dirs(models_dir)
    if not has_models(models_dir):
        raise SystemExit(f"no models in {models_dir}: run `lidroute models build --out {models_dir}` first")
    groups = [g.split(",") for g in args.workers.split(";")] if args.workers else [[]]
    return StackConfig(
        lid_model=args.lid_model or lid_source(lid),
        models={lang: str(path) for lang, path in asr.items()},
        worker_groups=groups,
        redis_url=args.redis_url,
        router_port=args.port,
        host=args.host,
        rest_port=args.rest_port or None,
        metrics_port=args.metrics_port,
        log_dir=Path(args.log_dir) if args.log_dir else None,
    )


def cmd_up(args: argparse.Namespace) -> int:
    from workbench.stack import Stack

    models_dir = Path(args.models_dir) if args.models_dir else default_models_dir()
    config = stack_config(models_dir, args)
    print(f"starting lidroute with models from {models_dir} ...", flush=True)
    stack = Stack(config)
    stack.start()
    # Where this stack is, for `lidroute transcribe`, `languages` and `models` run without flags.
    state = {
        "pid": os.getpid(),
        "router": stack.router_address,
        "redis_url": stack.redis_url,
        "rest": stack.rest_url,
    }
    serving.UP_STATE.parent.mkdir(parents=True, exist_ok=True)
    serving.UP_STATE.write_text(json.dumps(state))
    print(f"gRPC (lidroute.v1 and google.cloud.speech.v1) on {stack.router_address}")
    if stack.rest_url:
        print(f"REST (OpenAI's /v1/audio/transcriptions) on {stack.rest_url}/v1")
    if config.host in ("127.0.0.1", "localhost", "::1"):
        print("listening on this machine only: --host 0.0.0.0 serves other machines too")
    print(f"Redis {without_password(stack.redis_url)}, logs in {stack.log_dir}")
    if stack.metrics:
        ports = ", ".join(f"{name} :{port}" for name, port in stack.metrics.items())
        print(f"Prometheus /metrics: {ports}")
    print(f"try: lidroute transcribe --address {stack.router_address} FILE.wav")
    if stack.rest_url:
        print(f"     curl {stack.rest_url}/v1/audio/transcriptions -F file=@FILE.wav -F model=lidroute")
    print("Ctrl-C stops everything", flush=True)
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        while not stopping:
            restarted = dict(stack.restarts)
            lost = stack.supervise()
            if lost:
                print(
                    f"process exited unexpectedly: {', '.join(lost)} (see {stack.log_dir})", file=sys.stderr
                )
                return 1
            for name in (n for n, count in stack.restarts.items() if count != restarted.get(n)):
                print(f"{name} exited; started it again (see {stack.log_dir / name}.log)", flush=True)
            time.sleep(0.5)
    finally:
        print("stopping...", flush=True)
        if serving.running_stack().get("pid") == str(os.getpid()):
            serving.UP_STATE.unlink(missing_ok=True)
        stack.stop()
    return 0


# ---------------------------------------------------------------------- demo
def cmd_demo(args: argparse.Namespace) -> int:
    from lidroute.client import Client
    from lidroute.train.synth import synth_utterances
    from workbench.build import build_models
    from workbench.scoring import error_counts, normalize
    from workbench.stack import Stack

    models_dir = Path(args.models_dir) if args.models_dir else default_models_dir()
    if not has_models(models_dir):
        print(f"no models in {models_dir} yet: building them (one time, a few minutes)", flush=True)
        build_models(models_dir)
    _, asr = model_dirs(models_dir)
    samples_dir = Path(tempfile.mkdtemp(prefix="lidroute-demo-"))
    samples = []
    import soundfile as sf

    for lang in sorted(asr):
        utt = synth_utterances(lang, 1, seed=4242, vocab=training_vocabulary(models_dir, lang))[0]
        path = samples_dir / f"{lang}.wav"
        sf.write(path, utt.audio, 16000)
        samples.append((path, lang, utt.text))
    args.redis_url, args.port, args.log_dir, args.workers, args.lid_model = None, 0, None, None, None
    args.host, args.rest_port, args.metrics_port = "127.0.0.1", 0, 0
    with Stack(stack_config(models_dir, args)) as stack:
        print(f"stack up: router at {stack.router_address}\n")

        async def run() -> int:
            wrong = 0
            async with Client(stack.router_address) as client:
                for path, lang, text in samples:
                    r = await client.transcribe_file(path, timeout=60)
                    wrong += r.language != lang
                    cer = error_counts([normalize(text)], [normalize(r.transcript)]).cer or 0.0
                    print(f"{path.name:8} spoken [{lang}] {text}")
                    heard = f"[{r.language} p={r.probability:.2f}] {r.transcript}"
                    print(f"{'':8} heard  {heard}  (CER {cer:.0%})\n")
            return 1 if wrong else 0

        return asyncio.run(run())


def training_vocabulary(models_dir: Path, lang: str) -> list[str] | None:
    """The words `lang`'s model in a models folder was trained on; see `asr_worker.recipes.ctc`."""
    from asr_worker.recipes.ctc import training_words

    return training_words(models_dir / "asr" / lang)


# ---------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    # Here, not at the top: a serving command never builds this parser, so never loads these.
    from workbench.build import add_build_command
    from workbench.corpus import add_corpus_commands
    from workbench.evaluation import add_evaluate_commands

    parser = argparse.ArgumentParser(prog="lidroute", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"lidroute {serving.version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    add_build_command(serving.add_commands(sub))
    up = sub.add_parser("up", help="start Redis (unless --redis-url), LID service, workers and router")
    demo = sub.add_parser("demo", help="start the stack and transcribe synthetic speech in several languages")
    for p in (up, demo):
        p.add_argument(
            "--models-dir", help=f"folder with lid/ and asr/LANG/ (default: {default_models_dir()})"
        )
    up.add_argument("--redis-url", help="use this Redis instead of starting one")
    up.add_argument("--port", type=int, default=50051, help="router port (gRPC)")
    up.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: this machine only; 0.0.0.0: all)"
    )
    up.add_argument(
        "--rest-port", type=int, default=8000, help="OpenAI-compatible REST gateway port (0: no gateway)"
    )
    up.add_argument(
        "--metrics-port",
        type=int,
        default=0,
        help="Prometheus /metrics of every process, each on its own port from this one up (0: off)",
    )
    up.add_argument("--workers", help='worker groups, e.g. "en,es;sw,de" (default: one worker for all)')
    up.add_argument("--log-dir", help="where service logs go (default: a temporary folder)")
    up.add_argument(
        "--lid-model",
        metavar="SOURCE",
        help="language ID to serve instead of the models folder's (its whisper-lid/, else lid/ and lid-*/):"
        " a folder or hub id, or several comma-separated, served as one",
    )
    add_corpus_commands(sub)
    add_evaluate_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if serving.is_serving(argv):
        return serving.main(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "corpus":
        return args.corpus_handler(args)
    if args.command == "evaluate":
        return args.evaluate_handler(args)
    if args.command == "models" and args.models_command == "build":
        from workbench.build import cmd_build

        return cmd_build(args)
    handlers = {"up": cmd_up, "demo": cmd_demo}
    if args.command in handlers:
        return handlers[args.command](args)
    return serving.run(args, parser)


if __name__ == "__main__":
    sys.exit(main())
