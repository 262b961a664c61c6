"""`lidroute corpus synth|conditions|tune|teach|stats`: make a corpus (synthetic, or a teacher's
transcripts of recordings), and summarise one."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

from lidroute.settings import comma_list
from lidroute.train import synth
from lidroute.train.example import CorpusError
from lidroute.train.extra_splits import TUNE_SPLIT, condition_splits, tuning_split
from lidroute.train.manifest import corpus_stats, format_stats
from lidroute.train.synthetic import SynthPlan, synth_corpus
from lidroute.train.teacher import DEFAULT_PACK

#: The synthesis plan's shares, each a flag of its own name (`SynthPlan` says what they do).
SYNTH_SHARES = {
    "numbers": "sentences with a spelled-out number",
    "kokoro": "each split spoken by Kokoro-82M's neural voices (a new speaker each), not espeak-ng",
    "running": "sentences that are running text of the language's common words (wordfreq)",
    "rooms": "train/dev/test utterances heard in a simulated room (reverberation)",
    "codecs": "train/dev/test utterances heard through a lossy codec (mu-law, GSM, Opus)",
}


def add_corpus_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Adds `lidroute corpus synth|conditions|tune|teach|stats`; each parser carries its handler in
    `corpus_handler`."""
    corpus = sub.add_parser("corpus", help="make the synthetic corpus; summarise a corpus")
    csub = corpus.add_subparsers(dest="corpus_command", required=True)
    _add_synth_command(csub)
    _add_split_command(
        csub,
        "conditions",
        "add splits that apply test_hard's voices, speeds, noise and channel one at a time",
        per_language=(50, "test sentences per language"),
        handler=cmd_conditions,
    )
    _add_split_command(
        csub,
        "tune",
        "add a split of new held-out sentences, spoken as dev is, to tune decoders on"
        " (replaces an earlier one)",
        per_language=(200, "sentences per language"),
        handler=cmd_tune,
    )
    _add_teach_command(csub)
    stats = csub.add_parser("stats", help="hours and utterances per split and language")
    stats.add_argument("folder")
    stats.add_argument("--json", action="store_true")
    stats.set_defaults(corpus_handler=cmd_stats)


def _add_synth_command(csub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """`synth`: `--numbers` and `--kokoro` default to `SynthPlan`'s shares, because a model card's
    command (`synth_command`) leaves a share out when it is the plan's default."""
    make = csub.add_parser(
        "synth", help="speak a multilingual corpus with espeak-ng (train/dev/test/test_hard)"
    )
    make.add_argument("--out", required=True, help="folder for SPLIT.jsonl manifests and FLAC audio")
    make.add_argument(
        "--languages", default=",".join(synth.LANGUAGES), help="comma-separated codes (default: all 12)"
    )
    make.add_argument("--train", type=int, default=400, help="utterances per language")
    make.add_argument("--dev", type=int, default=50, help="utterances per language")
    make.add_argument("--test", type=int, default=100, help="utterances per language")
    make.add_argument("--test-hard", type=int, help="utterances per language (default: as --test)")
    make.add_argument("--seed", type=int, default=0)
    make.add_argument("--noise", action="store_true", help="add noise to part of train/dev/test")
    make.add_argument("--level", action="store_true", help="random peak levels")
    make.add_argument("--vocab-words", type=int, help="draw sentences from only this many words per language")
    for share, meaning in SYNTH_SHARES.items():
        make.add_argument(
            f"--{share}", type=float, default=getattr(SynthPlan, share), help=f"share of {meaning}"
        )
    _add_workers(make)
    make.set_defaults(corpus_handler=cmd_synth)


def _add_split_command(
    csub: argparse._SubParsersAction,  # type: ignore[type-arg]
    name: str,
    summary: str,
    *,
    per_language: tuple[int, str],
    handler: Callable[[argparse.Namespace], int],
) -> None:
    """`conditions` and `tune`: both add splits to a corpus `synth` made, so they take the same
    arguments and differ only in how many sentences they speak by default."""
    parser = csub.add_parser(name, help=summary)
    parser.add_argument("folder", help="a corpus made by `lidroute corpus synth`")
    parser.add_argument("--languages", help="comma-separated codes (default: the corpus's)")
    default, per_language_help = per_language
    parser.add_argument("--per-language", type=int, default=default, help=per_language_help)
    _add_workers(parser)
    parser.set_defaults(corpus_handler=handler)


def _add_workers(parser: argparse.ArgumentParser) -> None:
    """espeak-ng runs as one process per worker, so every command that speaks bounds them alike."""
    parser.add_argument("--workers", type=int, help="parallel espeak-ng processes (default: CPU count)")


def _add_teach_command(csub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """`teach`: Whisper's transcripts stand in for the ones a pack's recordings lack, so that its
    untranscribed speech can be trained on too."""
    teach = csub.add_parser(
        "teach",
        help="transcripts by Whisper base for a pack's untranscribed recordings, joined into windows",
    )
    teach.add_argument(
        "--pack", default=str(DEFAULT_PACK), help="folder with manifest.jsonl (the real-speech pack)"
    )
    teach.add_argument("--languages", required=True, help="comma-separated codes")
    teach.add_argument(
        "--out", required=True, help="folder for transcribed.jsonl and the windows' FLAC audio"
    )
    teach.add_argument("--chunk-seconds", type=float, default=25.0, help="longest window")
    teach.add_argument("--threads", type=int, default=0, help="CPU threads (0: all)")
    teach.set_defaults(corpus_handler=cmd_teach)


def cmd_synth(args: argparse.Namespace) -> int:
    languages = comma_list(args.languages)
    unknown = [lang for lang in languages if lang not in synth.LANGUAGES]
    if unknown:
        print(
            f"unknown language(s) {', '.join(unknown)}; known: {', '.join(synth.LANGUAGES)}", file=sys.stderr
        )
        return 2
    started = time.monotonic()
    synth_corpus(
        args.out,
        languages,
        train=args.train,
        dev=args.dev,
        test=args.test,
        test_hard=args.test_hard,
        seed=args.seed,
        noise=args.noise,
        level=args.level,
        vocab_words=args.vocab_words,
        plan=SynthPlan(**{share: getattr(args, share) for share in SYNTH_SHARES}),
        workers=args.workers,
        progress=lambda line: print(line, flush=True),
    )
    print(format_stats(corpus_stats(args.out)))
    print(f"corpus written to {args.out} in {time.monotonic() - started:.0f} s")
    return 0


def cmd_conditions(args: argparse.Namespace) -> int:
    languages = comma_list(args.languages)
    started = time.monotonic()
    try:
        manifests = condition_splits(
            args.folder, languages=languages or None, per_language=args.per_language, workers=args.workers
        )
    except CorpusError as exc:
        print(exc, file=sys.stderr)
        return 2
    stats = corpus_stats(args.folder)
    print(format_stats({cond: stats[cond] for cond in manifests}))
    print(f"condition splits written to {args.folder} in {time.monotonic() - started:.0f} s; score one with")
    print(f"  lidroute evaluate {args.folder} --split cond_noise_telephone --models-dir models")
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    languages = comma_list(args.languages)
    started = time.monotonic()
    try:
        tuning_split(
            args.folder, languages=languages or None, per_language=args.per_language, workers=args.workers
        )
    except CorpusError as exc:
        print(exc, file=sys.stderr)
        return 2
    print(format_stats({TUNE_SPLIT: corpus_stats(args.folder)[TUNE_SPLIT]}))
    seconds = time.monotonic() - started
    print(f"{TUNE_SPLIT} split written to {args.folder} in {seconds:.0f} s; tune an LM on it with")
    print(f"  python -m asr_worker lm --model DIR --data {args.folder} --language xx --dev-splits dev,tune")
    return 0


def cmd_teach(args: argparse.Namespace) -> int:
    from lidroute.cli import CACHE
    from lidroute.train.teacher import transcribe_windows, untranscribed

    out, pack = Path(args.out), Path(args.pack)
    for lang in comma_list(args.languages):
        clips = untranscribed(pack, lang)
        if not clips:
            print(f"{lang}: no untranscribed clips in {pack}", file=sys.stderr)
            continue
        started = time.perf_counter()
        manifest = transcribe_windows(
            lang, clips, out, CACHE, chunk_seconds=args.chunk_seconds, threads=args.threads
        )
        print(f"{lang}: {len(clips)} clips in {time.perf_counter() - started:.0f} s -> {manifest}")
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    try:
        stats = corpus_stats(args.folder)
    except CorpusError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(json.dumps(stats, indent=2) if args.json else format_stats(stats))
    return 0
