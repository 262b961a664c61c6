"""The `lidroute` serving commands: the model registry, transcription, the languages a router serves.

They load no training code, so the deployment's `lidroute models sync` job stays light; the
workbench (`workbench.cli`) adds the commands that build, evaluate and run models locally.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import grpc
import redis.asyncio as aioredis
import redis.exceptions

from lidroute.errors import InvalidArgument
from lidroute.keys import Keys
from lidroute.registry import HEAD_FILE, MODEL_KINDS, ModelSpec, Registry, check_language_code
from lidroute.settings import CommonSettings, add_setting_flags, settings_from_namespace

DEFAULT_ROUTER = os.environ.get("LIDROUTE_ROUTER_ADDR", "localhost:50051")
BUNDLED_MODELS = Path(__file__).resolve().parent.parent / "models"
CACHE = Path(os.environ.get("LIDROUTE_CACHE", Path.home() / ".cache/lidroute"))
DESCRIPTION = "Multilingual speech recognition with automatic language routing."
#: The commands (and `models` subcommands) this module serves alone.
MODELS_COMMANDS = ("register", "remove", "list", "sync")
COMMANDS = ("models", "transcribe", "languages")


# ---------------------------------------------------------------------- models
async def _with_registry(args: argparse.Namespace, parser: argparse.ArgumentParser, fn) -> int:  # type: ignore[no-untyped-def]
    settings = settings_from_namespace(CommonSettings, args, parser)
    client = aioredis.Redis.from_url(settings.redis_url)
    try:
        return await fn(Registry(client, Keys(settings.key_prefix)))
    finally:
        await client.aclose()


def cmd_models(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    # A local directory is stored as an absolute path: workers may run from another folder.
    uri = getattr(args, "uri", "")
    if uri and Path(uri).exists():
        uri = str(Path(uri).resolve())

    async def run(registry: Registry) -> int:
        if args.models_command == "register":
            await registry.register(args.language, ModelSpec(uri, args.revision, args.kind or ""))
            print(f"registered {args.language} -> {uri}")
        elif args.models_command == "remove":
            if not await registry.remove(args.language):
                print(f"{args.language} was not registered", file=sys.stderr)
                return 1
            print(f"removed {args.language}")
        else:
            models, workers = await registry.served()
            if not models:
                print("no models registered")
            for lang, spec in sorted(models.items()):
                rev = f"@{spec.revision}" if spec.revision else ""
                print(f"{lang:8} {spec.kind:5} workers={workers.get(lang, 0):<3} {spec.uri}{rev}")
        return 0

    return asyncio.run(_with_registry(args, parser, run))


def _model_pair(text: str) -> tuple[str, str]:
    """`LANG=URI` -> (lang, uri); argparse turns the error into a usage message."""
    lang, sep, uri = text.partition("=")
    if not sep or not uri:
        raise argparse.ArgumentTypeError(f"{text!r} is not LANG=URI")
    try:
        return check_language_code(lang), uri
    except InvalidArgument as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _looks_local(uri: str) -> bool:
    """A path, not a hub id: `org/name` is relative-looking but is a hub id."""
    return uri.startswith(("/", "./", "../"))


def cmd_sync(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """`models sync`: what a deploy runs on every start (compose service, Helm hook).

    Explicit LANG=URI pairs win over what --models-dir holds. A local path that does not exist
    fails the run before Redis is touched: a models volume mounted at the wrong place should stop
    the deploy, not leave workers logging load errors. Redis may still be starting (compose, a
    fresh cluster), so it is waited for.
    """
    wanted: dict[str, str] = {}
    if args.models_dir is not None:
        root = Path(args.models_dir)
        if not root.is_dir():
            print(f"models folder {root} not found (is the models volume mounted?)", file=sys.stderr)
            return 1
        wanted.update({lang: str(path) for lang, path in model_dirs(root)[1].items()})
    wanted.update(dict(args.models))
    if not wanted:
        print("no models: give LANG=URI pairs or a --models-dir that holds asr/LANG folders", file=sys.stderr)
        return 2
    missing = [
        f"{lang}={uri}" for lang, uri in wanted.items() if _looks_local(uri) and not Path(uri).is_dir()
    ]
    if missing:
        print(f"model paths not found (is the models volume mounted?): {', '.join(missing)}", file=sys.stderr)
        return 1
    # A local directory is stored as an absolute path: workers may run from another folder.
    wanted = {lang: str(Path(uri).resolve()) if Path(uri).exists() else uri for lang, uri in wanted.items()}

    async def run(registry: Registry) -> int:
        give_up = time.monotonic() + args.wait_seconds
        while True:
            try:
                await registry.redis.ping()
                break
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
                if time.monotonic() >= give_up:
                    print(f"Redis unreachable after {args.wait_seconds:g} s: {exc}", file=sys.stderr)
                    return 1
                print(f"waiting for Redis: {exc}", file=sys.stderr, flush=True)
                await asyncio.sleep(min(2.0, max(give_up - time.monotonic(), 0.0)))
        for lang, done in (await registry.register_missing(wanted, force=args.force)).items():
            print(f"{lang}: {done.action} {done.spec.uri}")
        return 0

    return asyncio.run(_with_registry(args, parser, run))


def model_dirs(root: Path) -> tuple[list[Path], dict[str, Path]]:
    """The LID directories and the per-language ASR directories of a models folder.

    Language ID is `lid/` and then every `lid-*/` in name order: models trained on different
    crops that the LID service serves as one, averaging their log-posteriors (`lid_source`),
    because together they read the router's short windows better than any one of them does.
    """
    asr = (
        {
            p.name: p
            for p in sorted((root / "asr").iterdir())
            if (p / "config.json").exists() or (p / HEAD_FILE).exists()
        }
        if (root / "asr").is_dir()
        else {}
    )
    members = sorted(p for p in root.glob("lid-*") if (p / "hyperparams.yaml").is_file())
    return [root / "lid", *members], asr


def lid_source(lid: list[Path]) -> str:
    """The LID service's `lid_model` for these directories: comma-separated, served as one."""
    return ",".join(str(p) for p in lid)


def has_models(root: Path) -> bool:
    lid, asr = model_dirs(root)
    return (lid[0] / "hyperparams.yaml").exists() and bool(asr)


def default_models_dir() -> Path:
    return BUNDLED_MODELS if has_models(BUNDLED_MODELS) else CACHE / "demo-models"


# ---------------------------------------------------------------------- transcription
async def _transcribe_files(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from lidroute.client import Client

    failures = 0
    async with Client(args.address) as client:
        files = [Path(f) for f in args.files]
        bar = tqdm(total=len(files), disable=len(files) < 4 or not sys.stderr.isatty(), unit="file")
        for path in files:
            try:
                result = await client.transcribe_file(
                    path,
                    language=args.language or "",
                    interim_results=args.interim,
                    realtime=args.realtime,
                    timeout=args.timeout,
                )
            except grpc.aio.AioRpcError as exc:
                failures += 1
                tqdm.write(f"{path}: ERROR {exc.code().name}: {exc.details()}")
            except (OSError, RuntimeError) as exc:
                failures += 1
                tqdm.write(f"{path}: ERROR cannot read file: {exc}")
            else:
                if args.json:
                    tqdm.write(json.dumps({"file": str(path), **result.__dict__}, ensure_ascii=False))
                else:
                    for partial in result.partials:
                        tqdm.write(f"{path}: ... {partial}")
                    heard = f"{result.language} p={result.probability:.2f} {result.source.lower()}"
                    if result.source == "NO_SPEECH":
                        heard = "no speech"
                    tqdm.write(f"{path}: [{heard}] {result.transcript}")
            bar.update(1)
        bar.close()
    return 1 if failures else 0


def cmd_transcribe(args: argparse.Namespace) -> int:
    return asyncio.run(_transcribe_files(args))


def cmd_languages(args: argparse.Namespace) -> int:
    from lidroute.client import Client

    async def run() -> int:
        async with Client(args.address) as client:
            reply = await client.list_languages()
        for lang in reply.languages:
            state = "served" if lang.served else "not served"
            print(
                f"{lang.language_code:8} {state:11} workers={lang.live_workers:<3} "
                f"detectable={'yes' if lang.detectable else 'no':3} {lang.model.uri}"
            )
        return 0

    return asyncio.run(run())


# ---------------------------------------------------------------------- parser
def add_commands(sub: argparse._SubParsersAction) -> argparse._SubParsersAction:  # type: ignore[type-arg]
    """Adds the serving commands to `sub`; returns the `models` subcommands, for the workbench's `build`."""
    models = sub.add_parser("models", help="the model registry; `models build` trains demo models")
    msub = models.add_subparsers(dest="models_command", required=True)
    reg = msub.add_parser("register", help="serve LANG with the model at URI (hub id or local directory)")
    reg.add_argument("language")
    reg.add_argument("uri")
    reg.add_argument("--revision", default="")
    reg.add_argument(
        "--kind",
        choices=MODEL_KINDS,
        help="ctc: a whole CTC model; head: a head on the shared Whisper encoder (default: from the folder)",
    )
    rem = msub.add_parser("remove", help="stop serving LANG")
    rem.add_argument("language")
    lst = msub.add_parser("list", help="registered models and their live workers")
    sync = msub.add_parser(
        "sync",
        help="register models for languages the registry lacks and create their job groups (deploys run it)",
    )
    sync.add_argument("models", nargs="*", type=_model_pair, metavar="LANG=URI", help="model of a language")
    sync.add_argument("--models-dir", help="also register every asr/LANG model found in this folder")
    sync.add_argument("--force", action="store_true", help="re-register languages that already have a model")
    sync.add_argument("--wait-seconds", type=float, default=120.0, help="how long to wait for Redis")
    for p in (reg, rem, lst, sync):
        add_setting_flags(p, CommonSettings)

    tr = sub.add_parser("transcribe", help="transcribe audio files through a running router")
    tr.add_argument("files", nargs="+")
    tr.add_argument("--address", default=DEFAULT_ROUTER, help="router address [env LIDROUTE_ROUTER_ADDR]")
    tr.add_argument("--language", help="language hint: skip detection")
    tr.add_argument("--interim", action="store_true", help="print interim results")
    tr.add_argument("--realtime", action="store_true", help="send audio at real-time pace")
    tr.add_argument("--json", action="store_true", help="one JSON object per file")
    tr.add_argument("--timeout", type=float, default=120.0, help="deadline per file (s)")

    la = sub.add_parser("languages", help="languages a running router serves")
    la.add_argument("--address", default=DEFAULT_ROUTER, help="router address [env LIDROUTE_ROUTER_ADDR]")
    return msub


def is_serving(argv: Sequence[str]) -> bool:
    """Whether `argv` names a serving command, which this module runs without the workbench."""
    words = [a for a in argv if not a.startswith("-")]
    if not words or words[0] not in COMMANDS:
        return False
    return words[0] != "models" or (len(words) > 1 and words[1] in MODELS_COMMANDS)


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Runs a parsed serving command."""
    if args.command == "models":
        if args.models_command == "sync":
            return cmd_sync(args, parser)
        return cmd_models(args, parser)
    return {"transcribe": cmd_transcribe, "languages": cmd_languages}[args.command](args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lidroute", description=DESCRIPTION)
    add_commands(parser.add_subparsers(dest="command", required=True))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    return run(parser.parse_args(argv), parser)


if __name__ == "__main__":
    sys.exit(main())
