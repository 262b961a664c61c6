"""`lidroute evaluate`: the systems under evaluation, run on a data set (the numbers: `workbench.scoring`).

One command measures the models the way they are used, on any data source `read_examples` reads
(the synthetic corpus's manifests, recorded clips with a transcript table, a Common Voice folder,
a Hugging Face dataset), and, with `--anchor`, Whisper base beside them (`workbench.anchor`):

* **in-process**: the models of a models folder (`lid/`, `asr/LANG/`) are loaded by the same
  classes and calls the services use (`LanguageIdModel`, `CtcModel` with a `ModelSpec`). Each
  utterance is transcribed by its own language's recognizer, so CER/WER measure the recognizer
  and not the language ID in front of it; language ID is measured separately, the router's way:
  on a window that starts at the speech onset found by the router's VAD (`router.detection`),
  once per fixed window length and once with the router's own growing-window policy, choosing
  among the languages under evaluation.
* **through a router** (`--address`): every utterance is one `Transcribe` call, so the numbers
  are what a client gets end to end, detection errors and serving overhead included.

**Windows spoken alike** (`--lid-twins`, synthetic corpora): espeak-ng reads Hindi and Marathi
with nearly the same rules, and a sentence of words the two share sounds the same in both for as
long as the words last, so on some windows no model can know the language. Each utterance is
spoken again in every candidate language of its script, with its voice, speed and pitch; a window
spoken sample for sample alike by k other languages counts 1/(k + 1) towards the ceiling (the
accuracy no model can beat), and the accuracy on the remaining windows says how far the model is
from it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lidroute.settings import comma_list
from lidroute.train.example import CorpusError, Example
from lidroute.train.sources import read_examples

if TYPE_CHECKING:
    from asr_worker.model import CtcModel
    from lid_service.model import LanguageIdModel
from workbench.scoring import (
    DEFAULT_WINDOWS,
    ROUTER,
    UtteranceResult,
    format_alike,
    format_calibration,
    format_confusion,
    format_side_by_side,
    format_table,
    report,
    summarize,
    window_label,
)


def select_examples(
    examples: Sequence[Example], languages: Sequence[str] | None = None, limit: int | None = None
) -> list[Example]:
    """The examples of `languages` (all when None), at most `limit` per language, in source order."""
    taken: dict[str, int] = defaultdict(int)
    chosen = []
    for ex in examples:
        if languages and ex.language not in languages:
            continue
        if limit is not None and taken[ex.language] >= limit:
            continue
        taken[ex.language] += 1
        chosen.append(ex)
    return chosen


def alike_windows(example: Example, others: Sequence[str], windows: Sequence[float]) -> dict[str, list[str]]:
    """Per window label, the languages of `others` whose espeak-ng voice speaks that window of a
    synthetic utterance sample for sample as its own language's voice does.

    espeak-ng reads some scripts with the same letter-to-sound rules in several languages (Hindi
    and Marathi share Devanagari and most of its rules), and a synthetic sentence of words both
    languages have (names of countries, currencies, months) then sounds the same in both: its
    label is a coin toss, and no model can do better on it. The utterance is spoken again, with
    the manifest's voice, speed and pitch, once in its own language and once in each other; a
    window (from the energy onset of the clean speech, which is where the router's VAD starts it
    give or take a frame) is alike when no sample in it differs. Noise and channel effects of a
    hard split do not depend on the language, so the clean speech decides.
    """
    from lidroute.audio import TARGET_RATE, speech_bounds
    from lidroute.train import synth

    try:
        spoken = {
            "variant": str(example.meta["voice"]),
            "speed": int(example.meta["speed"]),
            "pitch": int(example.meta["pitch"]),
        }
    except (KeyError, TypeError, ValueError):
        raise CorpusError(
            f"{example.id or example.text!r}: no voice, speed and pitch in its manifest row; "
            "windows spoken alike can only be found in a synthetic corpus (lidroute corpus synth)"
        ) from None
    own = synth.synthesize(example.text, example.language, **spoken)
    onset = speech_bounds(own)[0]
    alike: dict[str, list[str]] = {window_label(w): [] for w in windows}
    for other in others:
        twin = synth.synthesize(example.text, other, **spoken)
        n = min(len(own), len(twin))
        differ = np.flatnonzero(own[:n] != twin[:n])
        same_until = int(differ[0]) if len(differ) else (n if len(own) != len(twin) else None)
        for w in windows:
            if same_until is None or same_until >= onset + round(w * TARGET_RATE):
                alike[window_label(w)].append(other)
    return alike


def find_alike(
    examples: Sequence[Example], candidates: Sequence[str], windows: Sequence[float], workers: int = 2
) -> list[dict[str, list[str]]]:
    """`alike_windows` for each example, against the candidates written in the same script (a
    voice reading another script spells letters out or says nothing, so it cannot match)."""
    from concurrent.futures import ThreadPoolExecutor

    from lidroute.train import synth

    def script(lang: str) -> str | None:
        return synth.LANGUAGES[lang].script if lang in synth.LANGUAGES else None

    def one(example: Example) -> dict[str, list[str]]:
        own = script(example.language)
        others = [c for c in candidates if c != example.language and own and script(c) == own]
        return alike_windows(example, others, windows)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:  # espeak-ng runs as processes
        return list(pool.map(one, examples))


class Evaluator:
    """What every system under evaluation is scored by: the router's onset, windows and policy.

    A system supplies `identify` (language ID of one window, among the candidates) and
    `transcribe` (one utterance in its known language); the windows start at the speech onset the
    router's VAD finds, and the router's growing-window policy runs with the system's `identify`,
    so two systems are compared on exactly the same audio.
    """

    #: Shown above the system's table.
    name = "lidroute"

    def __init__(self, candidates: Sequence[str], windows: Sequence[float], identifies: bool) -> None:
        from lidroute.vad import VadPool
        from router.core import RouterSettings

        self.candidates = tuple(candidates)
        self.windows = tuple(windows)
        self.identifies = identifies
        self.vad = VadPool()
        # The router's own policy, read from its settings' defaults so that the two never drift.
        fields = RouterSettings.model_fields
        self.router_windows: list[float] = list(fields["lid_windows"].default)
        self.router_threshold: float = fields["lid_threshold"].default
        self.max_onset_search: float = fields["max_onset_search_seconds"].default
        self.vad_threshold: float = fields["vad_threshold"].default

    async def identify(self, audio: np.ndarray, candidates: Sequence[str]) -> list[tuple[str, float]]:
        """(language, probability) of one window, best first."""
        raise NotImplementedError

    def can_transcribe(self, lang: str) -> bool:
        """Whether the system recognizes `lang`; loads (and warms) its recognizer, off the clock."""
        raise NotImplementedError

    def transcribe(self, lang: str, audio: np.ndarray) -> str:
        """The transcript of an utterance in `lang`, one `can_transcribe` said yes to."""
        raise NotImplementedError

    async def detect(self, audio: np.ndarray) -> dict[str, tuple[str, float]]:
        """The router's decision on this audio, per fixed window and with its growing-window policy.

        The whole utterance is in the buffer, as if the client had sent it at once; the onset is
        found once and shared by every decision.
        """
        from router.detection import AudioBuffer, OnsetDetector, detect_language

        buffer = AudioBuffer()
        buffer.append(audio)
        buffer.end()
        detector = OnsetDetector(self.vad, threshold=self.vad_threshold)
        policies = [(window_label(w), [w], 1.0) for w in self.windows]
        policies.append((ROUTER, self.router_windows, self.router_threshold))
        decided = {}
        for label, windows, threshold in policies:
            decision = await detect_language(
                buffer,
                self.candidates,
                self.identify,
                detector,
                windows=windows,
                threshold=threshold,
                max_onset_search=self.max_onset_search,
            )
            decided[label] = (decision.language, decision.probability)
        return decided

    async def evaluate(self, example: Example) -> UtteranceResult:
        from lidroute.audio import TARGET_RATE

        audio = example.audio()
        result = UtteranceResult(
            id=example.id,
            language=example.language,
            reference=example.text,
            hypothesis=None,
            audio_seconds=len(audio) / TARGET_RATE,
        )
        if self.can_transcribe(example.language):
            started = time.perf_counter()
            result.hypothesis = self.transcribe(example.language, audio)
            result.processing_seconds = time.perf_counter() - started
        if self.identifies:
            started = time.perf_counter()
            try:
                decided = await self.detect(audio)
                result.detected = {label: lang for label, (lang, _) in decided.items()}
                result.probability = {label: p for label, (_, p) in decided.items()}
            except Exception as exc:  # too short to identify, say: recorded, not fatal
                result.error = f"language ID: {exc}"
            result.lid_seconds = time.perf_counter() - started
        return result


class InProcessEvaluator(Evaluator):
    """The bundled (or any) models loaded as the services load them, run without a network.

    `candidates` are the languages language ID chooses among, as a router restricts detection to
    the languages it serves. `lid_model`, when given, is loaded instead of `models_dir`'s LID, as the
    LID service's setting of that name is (several sources, comma-separated, served as one).
    """

    def __init__(
        self,
        models_dir: Path,
        candidates: Sequence[str],
        *,
        windows: Sequence[float] = DEFAULT_WINDOWS,
        device: str = "cpu",
        lid: bool = True,
        asr: bool = True,
        beam: int | None = None,
        pause_split: float | None = None,
        lid_model: str | None = None,
    ) -> None:
        import tempfile

        from asr_worker.worker import WorkerSettings
        from lid_service.model import LanguageIdModel
        from lidroute.cli import lid_source, model_dirs

        super().__init__(candidates, windows, identifies=lid)
        lid_dirs, asr_dirs = model_dirs(models_dir)
        self.asr_dirs = asr_dirs if asr else {}
        self.device = device
        self.lid: LanguageIdModel | None = None
        if lid:
            if lid_model is None and not (lid_dirs[0] / "hyperparams.yaml").is_file():
                raise CorpusError(
                    f"no language-ID model in {lid_dirs[0]} (give --no-lid to skip language ID)"
                )
            self._savedir = tempfile.TemporaryDirectory(prefix="lidroute-eval-lid-")
            self.lid = LanguageIdModel(lid_model or lid_source(lid_dirs), Path(self._savedir.name), device)
        defaults = WorkerSettings.model_fields
        self.beam: int = defaults["beam"].default if beam is None else beam
        split = defaults["pause_split_seconds"].default if pause_split is None else pause_split
        self.pause_split: float = split
        self._asr: dict[str, CtcModel | None] = {}

    def recognizer(self, lang: str) -> CtcModel | None:
        """The language's CTC model, loaded once; None when the models folder has none for it."""
        if lang not in self._asr:
            from asr_worker.model import CtcModel
            from lidroute.audio import TARGET_RATE
            from lidroute.registry import ModelSpec

            path = self.asr_dirs.get(lang)
            model = None
            if path is not None:
                model = CtcModel(
                    lang,
                    ModelSpec(uri=str(path)),
                    self.device,
                    self.beam,
                    self.pause_split,
                )
                # The first call pays for lazy initialisation; a long-running worker pays it once.
                model.transcribe(np.zeros(TARGET_RATE, np.float32))
            self._asr[lang] = model
        return self._asr[lang]

    def can_transcribe(self, lang: str) -> bool:
        return self.recognizer(lang) is not None

    def transcribe(self, lang: str, audio: np.ndarray) -> str:
        model = self.recognizer(lang)
        assert model is not None
        return model.transcribe(audio).text

    async def identify(self, audio: np.ndarray, candidates: Sequence[str]) -> list[tuple[str, float]]:
        from lid_service.model import LidRequest

        assert self.lid is not None
        return self.lid.identify([LidRequest(audio, tuple(candidates))])[0]


async def evaluate_in_process(
    examples: Sequence[Example],
    evaluator: Evaluator,
    progress: Callable[[UtteranceResult], None] | None = None,
) -> list[UtteranceResult]:
    results = []
    for example in examples:
        results.append(await evaluator.evaluate(example))
        if progress:
            progress(results[-1])
    return results


async def evaluate_through_router(
    examples: Sequence[Example],
    address: str,
    *,
    candidates: Sequence[str] = (),
    hint: bool = False,
    timeout: float = 120.0,
    concurrency: int = 1,
    progress: Callable[[UtteranceResult], None] | None = None,
) -> list[UtteranceResult]:
    """One Transcribe call per utterance, sent as 16 kHz LINEAR16 without real-time pacing.

    Detection is restricted to `candidates` (the languages under evaluation) as a client would
    restrict it; with `hint` the reference language is sent as `language_code` and language ID is
    not measured. A failed call counts as an empty transcript, so failures show in the error rates.
    """
    import grpc

    from lidroute.audio import TARGET_RATE
    from lidroute.client import Client

    gate = asyncio.Semaphore(max(1, concurrency))

    async def one(client: Client, example: Example) -> UtteranceResult:
        async with gate:  # decoding inside the gate: only `concurrency` clips are in memory at once
            audio = await asyncio.to_thread(example.audio)
            pcm = (np.clip(audio, -1.0, 1.0) * 32767).astype("<i2").tobytes()
            result = UtteranceResult(
                id=example.id,
                language=example.language,
                reference=example.text,
                hypothesis="",
                audio_seconds=len(audio) / TARGET_RATE,
            )
            started = time.perf_counter()
            try:
                reply = await client.transcribe_pcm(
                    pcm,
                    TARGET_RATE,
                    language=example.language if hint else "",
                    alternatives=() if hint else candidates,
                    timeout=timeout,
                )
            except grpc.aio.AioRpcError as exc:
                result.error = f"{exc.code().name}: {exc.details()}"
            else:
                result.hypothesis = reply.transcript
                result.lid_seconds = reply.timing.get("language_id", 0.0)
                if not hint:
                    result.detected = {ROUTER: reply.language}
                    result.probability = {ROUTER: reply.probability}
            result.processing_seconds = time.perf_counter() - started
        if progress:
            progress(result)
        return result

    async with Client(address) as client:
        return list(await asyncio.gather(*(one(client, ex) for ex in examples)))


def _floats(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of seconds") from None
    if not values or any(not 0.1 <= v <= 30 for v in values):
        raise argparse.ArgumentTypeError("window lengths are seconds between 0.1 and 30")
    return values


def add_evaluate_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Adds `lidroute evaluate`; its handler is `evaluate_handler`."""
    ev = sub.add_parser(
        "evaluate",
        help="CER, WER, numbers-and-names micro-WER, language-ID accuracy and RTF on a data set",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    _add_data_arguments(ev)
    _add_system_arguments(ev)
    _add_in_process_arguments(ev)
    ev.add_argument("--hint", action="store_true", help="router: send the reference language, skip detection")
    ev.add_argument("--timeout", type=float, default=120.0, help="router: deadline per utterance (s)")
    ev.add_argument("--concurrency", type=int, default=1, help="router: requests in flight")
    ev.add_argument("--json", dest="json_path", metavar="PATH", help="write every number and the settings")
    ev.add_argument("--quiet", action="store_true", help="no line per utterance")
    ev.set_defaults(evaluate_handler=cmd_evaluate)


def _add_data_arguments(ev: argparse.ArgumentParser) -> None:
    """What to read: one positional for every source `read_examples` knows, so that a recorded
    set is scored exactly as the synthetic corpus is."""
    ev.add_argument(
        "data",
        help="a .jsonl manifest, a CSV/TSV table of clips (audio path, transcript and language columns;"
        " --languages XX for a table without one), a corpus folder, a Common Voice folder, folders of clips"
        " with a manifest.tsv/transcripts.tsv (recorded speech as shipped), or a HF dataset",
    )
    ev.add_argument("--split", default="test", help="split to read (default: test)")
    ev.add_argument("--languages", help="comma-separated codes to evaluate (default: all in the data)")
    ev.add_argument("--limit", type=int, help="at most this many utterances per language")
    ev.add_argument("--audio-column", default="audio", help="HF dataset audio column")
    ev.add_argument("--text-column", default="text", help="HF dataset text column")


def _add_system_arguments(ev: argparse.ArgumentParser) -> None:
    """Which system is scored, and on which windows and languages: a models folder and a router are
    exclusive, since one run's numbers must describe one system."""
    from lidroute.cli import DEFAULT_ROUTER, default_models_dir

    mode = ev.add_mutually_exclusive_group()
    mode.add_argument(
        "--models-dir",
        help=f"evaluate in-process with the lid/, asr/LANG/ models here (default: {default_models_dir()})",
    )
    mode.add_argument(
        "--address",
        metavar="HOST:PORT",
        help=f"evaluate through the router at this address instead (e.g. {DEFAULT_ROUTER})",
    )
    ev.add_argument(
        "--lid-windows",
        type=_floats,
        default=list(DEFAULT_WINDOWS),
        help="in-process: seconds of speech after onset to score language ID on (default: 0.5,1,3)",
    )
    ev.add_argument(
        "--lid-model",
        metavar="SOURCE",
        help="in-process: the language-ID model instead of MODELS_DIR's (lid, lid-*), as the LID service's"
        " lid_model setting takes it (a folder or hub id, or several comma-separated, served as one)",
    )
    ev.add_argument(
        "--candidates",
        default="data",
        help="languages language ID chooses among: data (those in the data), model (every language the"
        " in-process LID model knows; utterances in others are left out), or a comma-separated list",
    )
    ev.add_argument(
        "--anchor",
        choices=["whisper-base"],
        help="in-process: also score Whisper base (faster-whisper) on the same utterances, windows and"
        " candidates, and print the two side by side",
    )


def _add_in_process_arguments(ev: argparse.ArgumentParser) -> None:
    """Switches that only a run in this process can honour (`_refuse_in_process_flags` says so for
    the language-ID ones when a router is named)."""
    ev.add_argument("--no-lid", action="store_true", help="in-process: skip language ID")
    ev.add_argument("--no-asr", action="store_true", help="in-process: language ID only")
    ev.add_argument("--confusion", action="store_true", help="print language-ID confusion matrices")
    ev.add_argument(
        "--lid-twins",
        action="store_true",
        help="in-process, synthetic corpus: find the windows another language's voice speaks identically "
        "and report the accuracy no model can beat",
    )
    ev.add_argument("--device", default="cpu", help="in-process: torch device")
    ev.add_argument(
        "--beam",
        type=int,
        metavar="WIDTH",
        help="in-process: beam width for models with a word LM (default: the worker's; 0: greedy)",
    )
    ev.add_argument(
        "--pause-split",
        type=float,
        metavar="SECONDS",
        help="in-process: silence this long splits an utterance into parts (default: the worker's; 0: never)",
    )


def command_line(args: argparse.Namespace) -> list[str]:
    """The command that repeats this run, every option spelled out (defaults too): a JSON report
    then says exactly what was run, however the command was invoked (shell, `main(argv)`, a test).
    """
    flags = {"json_path": "--json"}
    line = ["lidroute", "evaluate", str(args.data)]
    for name, value in vars(args).items():
        if name in ("command", "data", "evaluate_handler") or value is None or value is False:
            continue
        line.append(flags.get(name, "--" + name.replace("_", "-")))
        if isinstance(value, list):
            line.append(",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value))
        elif value is not True:
            line.append(str(value))
    return line


def _progress_line(result: UtteranceResult) -> None:
    detected = " ".join(f"{label}={lang}" for label, lang in result.detected.items())
    heard = result.error or ("(no recognizer)" if result.hypothesis is None else result.hypothesis)
    print(
        f"{result.id} [{result.language}] {detected}\n  ref: {result.reference}\n  hyp: {heard}", flush=True
    )


def _known(examples: Sequence[Example], candidates: Sequence[str]) -> tuple[list[Example], str]:
    """The examples in a candidate language, and a note on the languages left out (with counts)."""
    kept = [ex for ex in examples if ex.language in candidates]
    out = Counter(ex.language for ex in examples if ex.language not in candidates)
    return kept, ", ".join(f"{lang} ({n})" for lang, n in sorted(out.items()))


def _anchor(args: argparse.Namespace, candidates: Sequence[str]) -> Evaluator:
    """The system `--anchor` names, scored as the models under evaluation are."""
    from lidroute.cli import CACHE
    from lidroute.train.budget import usable_cores
    from workbench.anchor import WhisperEvaluator

    return WhisperEvaluator(
        candidates,
        CACHE,
        windows=args.lid_windows,
        threads=usable_cores(),
        lid=not args.no_lid,
        asr=not args.no_asr,
    )


class _Refused(Exception):
    """A run `cmd_evaluate` will not make: its message goes to stderr and the exit status is 1,
    with no traceback, because the fix is a flag or a path the user gives."""


def cmd_evaluate(args: argparse.Namespace) -> int:
    try:
        examples, candidates = _examples_and_candidates(args)
        _refuse_in_process_flags(args)
        alike = _windows_spoken_alike(args, examples, candidates)
        settings: dict[str, Any] = {
            "data": str(args.data),
            "split": args.split,
            "languages": candidates,
            "limit": args.limit,
        }
        started = time.monotonic()
        evaluate = _evaluate_through_router if args.address else _evaluate_in_process
        results, anchored, ran = evaluate(args, examples, candidates)
    except _Refused as exc:
        print(exc, file=sys.stderr)
        return 1
    settings |= ran
    settings["elapsed_seconds"] = round(time.monotonic() - started, 2)
    if alike is not None:
        for result, windows in zip(results, alike, strict=True):
            result.alike = windows
    _print_tables(args, results, anchored, settings, spoken_alike=alike is not None)
    if args.json_path:
        Path(args.json_path).write_text(
            json.dumps(report(results, settings, command_line(args), anchored), indent=2, ensure_ascii=False)
            + "\n",
            encoding="utf-8",
        )
        print(f"wrote {args.json_path}")
    return 0


def _examples_and_candidates(args: argparse.Namespace) -> tuple[list[Example], list[str]]:
    """The utterances to score and the languages language ID chooses among. An empty selection is
    refused: it would print an empty table that looks like a run."""
    languages = comma_list(args.languages) if args.languages else None
    try:
        examples = read_examples(
            args.data,
            split=args.split,
            language=languages[0] if languages and len(languages) == 1 else None,
            audio_column=args.audio_column,
            text_column=args.text_column,
        )
    except CorpusError as exc:
        raise _Refused(str(exc)) from None
    examples = select_examples(examples, languages, args.limit)
    if not examples:
        raise _Refused(f"no utterances in {args.data} (split {args.split}) for {languages or 'any language'}")
    candidates = sorted({ex.language for ex in examples})
    if args.candidates not in ("data", "model"):
        candidates = comma_list(args.candidates)
    return examples, candidates


def _refuse_in_process_flags(args: argparse.Namespace) -> None:
    """Flags that need this process's language ID are refused beside a router or `--no-lid`
    rather than ignored, which would report numbers of a run that was not asked for."""
    for flag, given in (
        ("--lid-model", args.lid_model),
        ("--lid-twins", args.lid_twins),
        ("--anchor", args.anchor),
        ("--candidates model", args.candidates == "model"),
    ):
        if given and (args.address or args.no_lid):
            raise _Refused(f"{flag} needs in-process language ID: drop --address/--no-lid")


def _windows_spoken_alike(
    args: argparse.Namespace, examples: Sequence[Example], candidates: Sequence[str]
) -> list[dict[str, list[str]]] | None:
    """`--lid-twins`, found before any model runs, so that a corpus it cannot be done on (not
    synthetic, or espeak-ng missing) fails at once rather than after the whole evaluation."""
    if not args.lid_twins:
        return None
    from lidroute.train.budget import usable_cores

    try:
        return find_alike(examples, candidates, args.lid_windows, workers=usable_cores())
    except (CorpusError, RuntimeError) as exc:  # not a synthetic corpus; espeak-ng missing or failing
        raise _Refused(str(exc)) from None


#: What `_evaluate_through_router` and `_evaluate_in_process` return: the results, the anchor's
#: (none without `--anchor`), and the settings the run adds to its report.
_Evaluated = tuple[list[UtteranceResult], list[UtteranceResult], dict[str, Any]]


def _evaluate_through_router(
    args: argparse.Namespace, examples: Sequence[Example], candidates: Sequence[str]
) -> _Evaluated:
    """`--address`: one Transcribe call per utterance; the settings record what a client sent."""
    results = asyncio.run(
        evaluate_through_router(
            examples,
            args.address,
            candidates=candidates,
            hint=args.hint,
            timeout=args.timeout,
            concurrency=args.concurrency,
            progress=None if args.quiet else _progress_line,
        )
    )
    ran = {"mode": "router", "address": args.address, "hint": args.hint, "concurrency": args.concurrency}
    return results, [], ran


def _evaluate_in_process(
    args: argparse.Namespace, examples: list[Example], candidates: list[str]
) -> _Evaluated:
    """The models folder's models, and with `--anchor` Whisper base, on the same utterances; the
    settings record what was loaded, which the arguments alone do not say (the defaults)."""
    from lidroute.cli import default_models_dir

    models_dir = Path(args.models_dir) if args.models_dir else default_models_dir()
    evaluator = _in_process_evaluator(args, models_dir, candidates)
    if args.candidates == "model":
        assert evaluator.lid is not None
        candidates = list(evaluator.lid.codes)
        evaluator.candidates = tuple(candidates)
    examples, left_out = _known(examples, candidates)
    if left_out:
        print(f"left out (no candidate language): {left_out}", file=sys.stderr)
    missing = [lang for lang in sorted({ex.language for ex in examples}) if lang not in evaluator.asr_dirs]
    if missing and not args.no_asr:
        print(f"no recognizer in {models_dir} for {', '.join(missing)}: language ID only", file=sys.stderr)
    ran = {"languages": candidates, **_in_process_settings(args, evaluator, models_dir)}
    progress = None if args.quiet else _progress_line
    results = asyncio.run(evaluate_in_process(examples, evaluator, progress))
    anchored: list[UtteranceResult] = []
    if args.anchor:
        anchored, ran["anchor"] = _evaluate_anchor(args, examples, candidates, progress)
    return results, anchored, ran


def _in_process_evaluator(
    args: argparse.Namespace, models_dir: Path, candidates: Sequence[str]
) -> InProcessEvaluator:
    """The evaluator the flags describe; a models folder without a language-ID model is refused."""
    try:
        return InProcessEvaluator(
            models_dir,
            candidates,
            windows=args.lid_windows,
            device=args.device,
            lid=not args.no_lid,
            asr=not args.no_asr,
            beam=args.beam,
            pause_split=args.pause_split,
            lid_model=args.lid_model,
        )
    except CorpusError as exc:
        raise _Refused(str(exc)) from None


def _in_process_settings(
    args: argparse.Namespace, evaluator: InProcessEvaluator, models_dir: Path
) -> dict[str, Any]:
    """What an in-process run loaded and decided with, the defaults resolved: a report read later
    must say which models and which decoder settings its numbers belong to."""
    return {
        "mode": "in-process",
        "models_dir": str(models_dir.resolve()),
        # What was served, the models folder's LID models when no --lid-model was given.
        "lid_model": evaluator.lid.source if evaluator.lid else None,
        "lid_windows": [] if args.no_lid else list(args.lid_windows),
        "router_lid_windows": evaluator.router_windows,
        "router_lid_threshold": evaluator.router_threshold,
        "device": args.device,
        "beam": evaluator.beam,
        "pause_split_seconds": evaluator.pause_split,
    }


def _evaluate_anchor(
    args: argparse.Namespace,
    examples: Sequence[Example],
    candidates: Sequence[str],
    progress: Callable[[UtteranceResult], None] | None,
) -> tuple[list[UtteranceResult], dict[str, Any]]:
    """`--anchor` on the utterances the models heard, and its name and time for the report: timed
    apart, since loading and running Whisper would otherwise read as the models' own cost."""
    anchor_started = time.monotonic()
    try:
        anchor = _anchor(args, candidates)
    except CorpusError as exc:
        raise _Refused(str(exc)) from None
    anchored = asyncio.run(evaluate_in_process(examples, anchor, progress))
    return anchored, {"name": anchor.name, "elapsed_seconds": round(time.monotonic() - anchor_started, 2)}


def _print_tables(
    args: argparse.Namespace,
    results: Sequence[UtteranceResult],
    anchored: Sequence[UtteranceResult],
    settings: Mapping[str, Any],
    *,
    spoken_alike: bool,
) -> None:
    """The system's table, the anchor's and both side by side, then calibration, the ceiling that
    windows spoken alike leave, and confusion: the sections a run asked for, in one fixed order."""
    rows = summarize(results)
    if anchored:
        print(f"{Evaluator.name} ({settings['models_dir']})")
    print(format_table(rows))
    if anchored:
        print(f"\n{settings['anchor']['name']}\n{format_table(summarize(anchored))}")
        print(f"\n{format_side_by_side(rows, summarize(anchored), (Evaluator.name, args.anchor))}")
    systems = [(Evaluator.name, rows), *([(args.anchor, summarize(anchored))] if anchored else [])]
    for name, lid_rows in systems:
        if any(m.lid_confident_share for m in lid_rows.values()):
            print("\n" + format_calibration(lid_rows, name))
    if spoken_alike:
        print("\n" + format_alike(rows))
    if args.confusion:
        print("\n" + format_confusion(results))
