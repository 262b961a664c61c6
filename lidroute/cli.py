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
from importlib import metadata
from pathlib import Path

import grpc
import redis.asyncio as aioredis
import redis.exceptions

from lidroute.errors import InvalidArgument
from lidroute.keys import Keys
from lidroute.registry import HEAD_FILE, MODEL_KINDS, ModelSpec, Registry, check_language_code
from lidroute.settings import CommonSettings, add_setting_flags, settings_from_namespace, without_password

DEFAULT_ROUTER = os.environ.get("LIDROUTE_ROUTER_ADDR", "localhost:50051")
BUNDLED_MODELS = Path(__file__).resolve().parent.parent / "models"
CACHE = Path(os.environ.get("LIDROUTE_CACHE", Path.home() / ".cache/lidroute"))
#: Where a running `lidroute up` says where it is (router, Redis, REST), for the commands here.
UP_STATE = CACHE / "up.json"
DESCRIPTION = "Multilingual speech recognition with automatic language routing."
#: The commands (and `models` subcommands) this module serves alone.
MODELS_COMMANDS = ("register", "remove", "list", "sync")
COMMANDS = ("models", "transcribe", "languages")


def version() -> str:
    try:
        return metadata.version("lidroute")
    except metadata.PackageNotFoundError:
        return "unknown"


# ---------------------------------------------------------------------- the running stack
def running_stack() -> dict[str, str]:
    """What a `lidroute up` running on this machine wrote about itself; {} when none runs."""
    try:
        state = json.loads(UP_STATE.read_text())
        os.kill(int(state["pid"]), 0)
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    return {k: str(v) for k, v in state.items()}


def _access(args: argparse.Namespace) -> dict[str, object]:
    """The client's token and TLS from --token/--tls/--ca-file (or LIDROUTE_TOKEN, LIDROUTE_CA_FILE)."""
    return {
        "token": args.token or os.environ.get("LIDROUTE_TOKEN", ""),
        "tls": args.tls,
        "ca_file": args.ca_file or os.environ.get("LIDROUTE_CA_FILE", ""),
    }


def _call_failed(address: str, exc: grpc.aio.AioRpcError) -> str:
    """One line on why a call to the router failed, and what to do about it."""
    if exc.code() == grpc.StatusCode.UNAUTHENTICATED:
        return f"the router at {address} wants a token: {exc.details()} (--token or LIDROUTE_TOKEN)"
    if exc.code() == grpc.StatusCode.UNAVAILABLE:
        return (
            f"no answer from a router at {address} ({exc.details()}): start one with `lidroute up`, "
            "pass --address, or --tls/--ca-file for a TLS port"
        )
    return f"the router at {address} answered {exc.code().name}: {exc.details()}"


def add_access_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--token", help="bearer token for a router that wants one [env LIDROUTE_TOKEN]")
    parser.add_argument("--tls", action="store_true", help="dial the router with TLS (system CA roots)")
    parser.add_argument("--ca-file", help="TLS with this PEM CA bundle [env LIDROUTE_CA_FILE]")


def router_address(given: str | None) -> str:
    """--address, else LIDROUTE_ROUTER_ADDR, else the running `lidroute up`'s router, else :50051."""
    return given or os.environ.get("LIDROUTE_ROUTER_ADDR") or running_stack().get("router") or DEFAULT_ROUTER


# ---------------------------------------------------------------------- models
#: The settings the registry commands take: where the registry is, nothing about serving.
REGISTRY_SETTINGS = ("redis_url", "key_prefix")


async def _with_registry(args: argparse.Namespace, parser: argparse.ArgumentParser, fn) -> int:  # type: ignore[no-untyped-def]
    # No Redis named: the one `lidroute up` started, if it runs (its Redis is on a free port).
    named = "redis_url" in vars(args) or "LIDROUTE_REDIS_URL" in os.environ
    if not named and (url := running_stack().get("redis_url")):
        args.redis_url = url
    settings = settings_from_namespace(CommonSettings, args, parser)
    client = aioredis.Redis.from_url(settings.redis_url)
    try:
        return await fn(Registry(client, Keys(settings.key_prefix)))
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
        print(
            f"cannot reach Redis at {without_password(settings.redis_url)} ({exc}): start the stack with "
            "`lidroute up`, or name its Redis with --redis-url",
            file=sys.stderr,
        )
        return 1
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


#: A models folder's language ID for recorded and synthetic speech alike, when it has one: Whisper
#: base for recordings and the ECAPA models inside it for espeak-ng's voices, weighed by a gate
#: (`lid_service.whisper_lid.GatedLanguageLogits`). On 1 s of recorded speech it reads about six
#: times as many windows right as the ECAPA models alone, which read espeak-ng only.
GATED_LID = "whisper-lid"


def model_dirs(root: Path) -> tuple[list[Path], dict[str, Path]]:
    """The LID directories and the per-language ASR directories of a models folder.

    Language ID is `whisper-lid/` when it is gated (`GATED_LID`); else `lid/` and then every
    `lid-*/` in name order: models trained on different crops that the LID service serves as
    one, averaging their log-posteriors (`lid_source`), because together they read the router's
    short windows better than any one of them does.
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
    gated = root / GATED_LID / "hyperparams.yaml"
    if gated.is_file() and "GatedLanguageLogits" in gated.read_text(encoding="utf-8"):
        return [gated.parent], asr
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
RAW_ENCODINGS = {"linear16": "LINEAR16", "mulaw": "MULAW"}


async def _transcribe_one(client, path: Path, args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from lidroute.client import Encoding

    options = {
        "language": args.language or "",
        "interim_results": args.interim,
        "realtime": args.realtime,
        "timeout": args.timeout,
    }
    if not args.encoding:
        return await client.transcribe_file(path, **options)
    data = await asyncio.to_thread(path.read_bytes)
    encoding = Encoding.Value(RAW_ENCODINGS[args.encoding])
    return await client.transcribe_pcm(data, args.rate, channels=args.channels, encoding=encoding, **options)


def _report(path: Path, result, args: argparse.Namespace, several: bool) -> str:  # type: ignore[no-untyped-def]
    """One file's result as --format asks; subtitles of several files go beside each file."""
    from lidroute import client as transcripts

    if args.format == "json":
        return json.dumps({"file": str(path), **result.__dict__}, ensure_ascii=False)
    if args.format in ("srt", "vtt"):
        write = transcripts.srt if args.format == "srt" else transcripts.vtt
        text = write(transcripts.segments(result))
        if not several:
            return text.rstrip("\n")
        out = path.with_suffix(f".{args.format}")
        out.write_text(text, encoding="utf-8")
        return f"{path}: wrote {out}"
    lines = [f"{path}: ... {partial}" for partial in result.partials]
    heard = f"{result.language} p={result.probability:.2f} {result.source.lower()}"
    if result.source == "NO_SPEECH":
        heard = "no speech"
    return "\n".join([*lines, f"{path}: [{heard}] {result.transcript}"])


async def _transcribe_files(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from lidroute.client import Client

    if args.encoding and not args.rate:
        print(f"--encoding {args.encoding} needs --rate (the sample rate in Hz)", file=sys.stderr)
        return 2
    failures = 0
    address = router_address(args.address)
    async with Client(address, **_access(args)) as client:
        files = [Path(f) for f in args.files]
        bar = tqdm(total=len(files), disable=len(files) < 4 or not sys.stderr.isatty(), unit="file")
        for path in files:
            try:
                result = await _transcribe_one(client, path, args)
            except grpc.aio.AioRpcError as exc:
                failures += 1
                tqdm.write(f"{path}: ERROR {exc.code().name}: {exc.details()}")
                if exc.code() == grpc.StatusCode.UNAVAILABLE and "connect" in (exc.details() or "").lower():
                    tqdm.write(_call_failed(address, exc))  # no router: the other files would fail alike
                    return 1
            except (OSError, ValueError) as exc:
                failures += 1
                tqdm.write(f"{path}: ERROR cannot read file: {exc}")
            else:
                tqdm.write(_report(path, result, args, several=len(files) > 1))
            bar.update(1)
        bar.close()
    return 1 if failures else 0


def cmd_transcribe(args: argparse.Namespace) -> int:
    return asyncio.run(_transcribe_files(args))


def cmd_languages(args: argparse.Namespace) -> int:
    from lidroute.client import Client

    async def run() -> int:
        address = router_address(args.address)
        async with Client(address, **_access(args)) as client:
            try:
                reply = await client.list_languages()
            except grpc.aio.AioRpcError as exc:
                print(_call_failed(address, exc), file=sys.stderr)
                return 1
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
    reg.add_argument("language", help="language code, e.g. sw or pt-BR")
    reg.add_argument("uri", help="a model folder (asr/LANG of a models folder) or a Hugging Face hub id")
    reg.add_argument("--revision", default="", help="hub revision (branch, tag or commit) of a hub id")
    reg.add_argument(
        "--kind",
        choices=MODEL_KINDS,
        help="ctc: a whole CTC model; head: a head on the shared Whisper encoder (default: from the folder)",
    )
    rem = msub.add_parser("remove", help="stop serving LANG")
    rem.add_argument("language", help="language code")
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
        add_setting_flags(p, CommonSettings, only=REGISTRY_SETTINGS)

    address_help = (
        "router address [env LIDROUTE_ROUTER_ADDR; default: the running `lidroute up`'s, "
        f"else {DEFAULT_ROUTER}]"
    )
    tr = sub.add_parser("transcribe", help="transcribe audio files through a running router")
    tr.add_argument("files", nargs="+", help="audio files: WAV, FLAC, OGG, MP3, or raw with --encoding")
    tr.add_argument("--address", help=address_help)
    tr.add_argument("--language", help="language hint: skip detection")
    tr.add_argument("--interim", action="store_true", help="print interim results")
    tr.add_argument("--realtime", action="store_true", help="send audio at real-time pace")
    tr.add_argument(
        "--format",
        choices=("text", "json", "srt", "vtt"),
        default="text",
        help="text: language and transcript per file; json: everything, one object per file; srt, vtt:"
        " subtitles (on stdout for one file, beside each file for several)",
    )
    tr.add_argument("--json", dest="format", action="store_const", const="json", help="--format json")
    tr.add_argument("--encoding", choices=RAW_ENCODINGS, help="the files are raw samples in this encoding")
    tr.add_argument("--rate", type=int, help="sample rate of raw files (Hz)")
    tr.add_argument("--channels", type=int, default=1, help="channels of raw files (interleaved)")
    tr.add_argument("--timeout", type=float, default=120.0, help="deadline per file (s)")

    la = sub.add_parser("languages", help="languages a running router serves")
    la.add_argument("--address", help=address_help)
    for p in (tr, la):
        add_access_flags(p)
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
    parser.add_argument("--version", action="version", version=f"lidroute {version()}")
    add_commands(parser.add_subparsers(dest="command", required=True))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    return run(parser.parse_args(argv), parser)


if __name__ == "__main__":
    sys.exit(main())
