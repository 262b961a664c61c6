"""`lidroute models build`: trains the bundled offline models, every stage the project's own recipe."""

from __future__ import annotations

import argparse
import json
import multiprocessing
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from lidroute.cli import CACHE
from lidroute.train.budget import usable_cores
from lidroute.train.corpus import TUNE_SPLIT
from lidroute.train.synth import HIGH_RESOURCE
from lidroute.train.teacher import DEFAULT_PACK

#: Languages with synthetic speech, all known to the bundled LID model.
ALL_LANGUAGES = ("en", "es", "fr", "de", "pt", "it", "ru", "hi", "sw", "tr", "mr", "qu")
BUNDLED_ASR_LANGUAGES = ("en", "es", "fr", "de", "sw", "tr", "mr", "qu")


@dataclass(frozen=True)
class LidMember:
    """A further language-ID model of the build, written to `lid-NAME/` and served with `lid/`.

    The first model's width and utterances; its own crops and sentences (the plan's seed plus
    `seed`, and one more for each further run, as the first model's runs count up from the plan's).
    """

    name: str
    seed: int
    crops: tuple[float, float]
    #: Updates of each run, the later ones from the model the run before wrote (`lid_continue_lr`).
    steps: tuple[int, ...]

    @property
    def folder(self) -> str:
        """Its folder in a models folder: `lid` for the first model (no name), as `model_dirs` reads."""
        return f"lid-{self.name}" if self.name else "lid"


#: The bundled language ID's further models: two of the first's width trained on crops of 0.25–1 s
#: only, from random weights on seeds of their own (the first trained on further, as `lid/` is).
#: Short crops make an update about 0.2 s on the 2 cores, so their updates were what the clock
#: allowed: 5,700 + 1,750 s and 5,000 + 1,500 s. Alone each reads 0.5 s better than the first
#: (94.2 and 95.5 against 92.9 % of 840 `test` windows); the three averaged read 95.5 % there and
#: 96.7 % of a third corpus's 600, 99.0 % on 1 s of both, for three times the first's work per
#: window (the history of docs/models.md).
LID_MEMBERS: tuple[LidMember, ...] = (
    LidMember("short-a", 21, (0.25, 1.0), (30338, 9127)),
    LidMember("short-b", 23, (0.25, 1.0), (22357, 7689)),
)


def gated_lid(out: Path, plan: BuildPlan, experts: list[Path], stage: Callable[[str], None]) -> None:
    """The default language ID, once the ECAPA models it holds are trained: Whisper base's
    language token calibrated on the pack, the ECAPA models for espeak-ng, the gate between."""
    from lid_service.recipes.whisper import WHISPER_LANGUAGES, WhisperLidRecipe, calibrate

    languages = tuple(lang for lang in plan.lid_languages if lang in WHISPER_LANGUAGES)
    stage(f"language ID on Whisper base over {', '.join(languages)} and the ECAPA models, on {plan.pack}...")
    recipe = WhisperLidRecipe(languages=languages, seed=plan.seed, experts=tuple(map(str, experts)))
    scores = {k: round(v, 3) for k, v in calibrate(out / plan.whisper_lid, Path(plan.pack), recipe).items()}
    stage(f"language ID ({plan.whisper_lid}): {json.dumps(scores)}")


@dataclass(frozen=True)
class BuildPlan:
    """What `lidroute models build` trains. The defaults are the recipe of the bundled `models/`.

    Four stages, each the project's own command: the LID model (`lid_service train`), a synthetic
    corpus (`lidroute corpus synth`), the multilingual phoneme backbone (`asr_worker pretrain`)
    and one fine-tune of it per served language (`asr_worker finetune`, some languages trained
    further in a second run with `--keep-head`), the cross-lingual transfer recipe even for the
    high-resource languages, so one model family serves them all.
    Budgets are in updates (reproducible from the seed), so the CTC stages give the same recipe on
    `device` "cuda" as on the CPU, many times faster; the model cards say where theirs ran.
    """

    lid_languages: tuple[str, ...] = ALL_LANGUAGES
    #: The default language ID, written to this folder of the output (none when empty): Whisper
    #: base's language token over the `lid_languages` Whisper knows, calibrated on the recorded
    #: clips of `pack`, and the ECAPA models trained here, weighed by a gate that tells espeak-ng
    #: from other speech (`python -m lid_service whisper --experts`). Whisper hears recorded
    #: speech far better than the ECAPA models, espeak-ng far worse.
    whisper_lid: str = "whisper-lid"
    #: Recorded speech (a folder laid out as the real-speech pack) that calibrates `whisper_lid`
    #: and trains the `head_languages`' recognizers; without it both are left out.
    pack: str = str(DEFAULT_PACK)
    asr_languages: tuple[str, ...] = BUNDLED_ASR_LANGUAGES
    #: Of `asr_languages`, those whose recognizer is a CTC head on Whisper base's frozen encoder
    #: (`python -m asr_worker head`) rather than a fine-tune of the backbone: trained on the
    #: pack's recordings (with Whisper base's transcripts where they have none, `lidroute corpus
    #: teach`) and a synthetic corpus a `head_kokoro` share of which Kokoro's voices speak
    #: (`head_corpus_sizes` utterances of train and dev per language): first one head pooled over
    #: them, then each language's from it, for `head_minutes` each (15 serve a head from nothing).
    #: Without a pack they are fine-tuned as the others are.
    head_languages: tuple[str, ...] = ("en", "de", "es", "fr")
    head_corpus_sizes: tuple[int, int] = (600, 60)
    #: The corpus has no rooms or codecs (`lidroute corpus synth --rooms --codecs`): heads trained
    #: as these are on a corpus with 30 % of each read held-out recorded speakers no better (greedy
    #: CER en 24.6 / de 29.1 / es 10.2 / fr 19.7 % on 357 / 2 / 15 / 9 utterances, against 24.3 /
    #: 33.3 / 10.1 / 19.3 % without).
    head_kokoro: float = 0.25
    #: Share of the heads' synthetic sentences that are running text (the language's common words,
    #: `lidroute corpus synth --running`): the recordings are children and learners reading words and
    #: prompts, so without it no training sentence is fluent speech.
    head_running: float = 0.5
    head_minutes: float = 8.0
    #: Minutes of a head pooled over all of `head_languages` (their alphabets are near one), which
    #: each language's head then starts from; 0: each starts from nothing. On the corpus without
    #: running text, held-out speakers and synthetic dev pooled, heads from a 25-minute pooled
    #: head read en 25.5 / de 18.0 / es 13.2 / fr 26.3 % CER where heads from nothing in 15
    #: minutes read 25.9 / 19.2 / 14.9 / 29.2 %. The pooled head was still improving at 25
    #: minutes; on the corpus with running text it levels off by 30 (its dev CER 22.9, 22.8,
    #: 22.9 % in its last three epochs).
    head_pooled_minutes: float = 30.0
    #: Learning rate of a language's head started from the pooled one (half a fresh head's).
    head_init_lr: float = 1e-3
    #: Each head's word LM: its language's commonest words from the installed word list, one
    #: fusion setting for all tuned on their held-out speakers (`python -m asr_worker lexicon`);
    #: 0: the heads decode greedily.
    head_lexicon_words: int = 50_000
    seed: int = 0
    #: Updates: 16,000 read held-out voices at 73.2 / 93.1 / 99.0 % on 0.25 / 0.5 / 1 s where 8,000
    #: read 70.6 / 91.2 / 99.2 %: two to three points on 0.5 s in every evaluation, 1 s moved by at
    #: most 0.6 points either way (the history of docs/models.md).
    lid_steps: int = 16000
    #: Updates of each further language-ID run, from the model the run before it wrote (`lid_service
    #: train --init`), on new sentences (the next seed) with its schedule warming up again to
    #: `lid_continue_lr`: a longer budget than one working session holds, in parts. 10,000 more
    #: took the two 12-language corpora's 840 `test` windows from 91.1 to 93.2 % on 0.5 s and 97.7
    #: to 98.0 % on 1 s; 6,000 more again held 0.5 s (92.9 %) and took 1 s to 98.7 %, the router's
    #: policy from 97.4 to 97.6 to 98.5 % (the history of docs/models.md).
    lid_continue_steps: tuple[int, ...] = (10000, 6000)
    lid_continue_lr: float = 1e-3
    #: A wall-clock cap above what the updates take, so that on a busy machine the update budget,
    #: not the clock, ends the training: 92 minutes alone on the 2 cores here with both threads,
    #: about 2 h 10 min estimated on the one thread `make models` gives it (not timed).
    lid_seconds: float = 10800
    lid_utterances: int = 1200
    #: Shortest and longest training crop: 0.25–1.5 s, nearer the router's windows, read held-out
    #: voices worse on 0.5 / 1 s (89.9 / 97.6 %) at the same budget.
    lid_crops: tuple[float, float] = (0.25, 3.0)
    #: Width of the TDNN blocks: at the same 8,000 updates, 256 read held-out voices at 91.2 / 99.2 %
    #: on 0.5 / 1 s where 128 read 88.2 / 96.9 %, for 1.56 M parameters instead of 0.52 M; 384
    #: (3.12 M) read worse, 89.2 / 98.5 % (the history of docs/models.md).
    lid_channels: int = 256
    #: Language-ID models served with the first one, their log-posteriors averaged (`model_dirs`).
    lid_members: tuple[LidMember, ...] = LID_MEMBERS
    #: Utterances per language and split of the synthetic corpus (train, dev, test, test_hard).
    corpus_sizes: tuple[int, int, int, int] = (1800, 50, 100, 100)
    #: Languages whose LM fusion is tuned on `tune_sentences` new held-out sentences (`lidroute
    #: corpus tune`) beside dev's 50: on those alone English's third run chose a fusion that lost
    #: its acoustic gain (20.5 % CER on 300 new `test_hard` utterances); tuned on 300 it reads
    #: 19.0 %, where the second run reads 20.3 % (the history of docs/models.md). A
    #: split of its own, so the corpus's other splits, and every model trained on them, stay as
    #: they were. German's and Marathi's third runs were tuned on it from the start; the other
    #: languages' LMs were tuned on dev alone, before the split existed.
    lm_tune_languages: tuple[str, ...] = ("en", "de", "mr")
    tune_sentences: int = 250
    #: Narrows the fusion's tuning grid (`asr_worker.decoding.tune`'s `weights`, `bonuses`,
    #: `oov_penalties`), for builds whose every setting's search would take too long, as in tests.
    lm_grid: tuple[tuple[str, tuple[float, ...]], ...] = ()
    backbone_languages: tuple[str, ...] = HIGH_RESOURCE
    backbone_steps: int = 3000
    backbone_utterances: int = 1000
    asr_steps: int = 8000
    #: Languages whose budget differs from `asr_steps` (none in the bundled recipe: at 4,000
    #: updates each, the four furthest above 5 % CER got twice that first, English and French
    #: spelling being far from their sound, and it bought every language the most of any change
    #: tried on the CPU, so all eight have 8,000 now).
    asr_steps_by_language: tuple[tuple[str, int], ...] = ()
    #: Languages trained further once their first run is done: the updates of a second run from
    #: the first's saved model, head and alphabet kept (`asr_worker finetune --keep-head`), its
    #: schedule warming up again to `asr_continue_lr`; a language listed twice gets a third run
    #: from the second's model, and so on. Several runs rather than one longer one, so that no
    #: single training outlasts a working session on the CPU here. English, French,
    #: Marathi, German, Spanish and Turkish, furthest from the targets: 8,000 more updates took
    #: greedy CER on 300 + 300 new utterances from 22.4 / 35.8 to 19.7 / 32.5 % (en), 16.3 / 26.0
    #: to 14.3 / 22.8 % (fr), 13.5 / 29.2 to 11.0 / 25.6 % (mr), 11.5 / 23.7 to 9.3 / 20.2 % (de),
    #: 11.7 / 24.2 to 10.3 / 21.7 % (es) and 9.0 / 20.8 to 6.9 / 17.6 % (tr) on `test` /
    #: `test_hard` (the history of docs/models.md). English has a third run: 19.7 /
    #: 32.5 to 18.3 / 30.2 % greedy, and with its LM tuned on `lm_tune_languages`' larger split
    #: 20.3 to 19.0 % on `test_hard`. German and Marathi have a third run of 6,000 updates (what
    #: fitted in a working session with the LM tuning): 11.3 to 9.2 % and 10.9 to 8.9 % on
    #: `test_hard` with their LMs.
    asr_continue_by_language: tuple[tuple[str, int], ...] = (
        ("en", 8000),
        ("en", 8000),
        ("fr", 8000),
        ("mr", 8000),
        ("mr", 6000),
        ("de", 8000),
        ("de", 6000),
        ("es", 8000),
        ("tr", 8000),
    )
    asr_continue_lr: float = 5e-4
    #: Where the models train: language ID, the backbone and the fine-tunes (on a GPU, language
    #: ID's batches are made by loader workers, so its draws differ from the CPU's).
    device: str = "cpu"
    #: Trainings at once (0: one per CPU core on the CPU, one on a GPU).
    jobs: int = 0

    def has_pack(self) -> bool:
        return (Path(self.pack) / "manifest.jsonl").is_file()

    def heads(self) -> tuple[str, ...]:
        """The languages that get a head: none without a pack."""
        if not self.has_pack():
            return ()
        return tuple(lang for lang in self.asr_languages if lang in self.head_languages)

    def finetuned(self) -> tuple[str, ...]:
        return tuple(lang for lang in self.asr_languages if lang not in self.heads())

    def corpus_languages(self) -> list[str]:
        return list(dict.fromkeys((*self.backbone_languages, *self.asr_languages)))

    def steps(self, language: str) -> int:
        return dict(self.asr_steps_by_language).get(language, self.asr_steps)

    def continuations(self, language: str) -> tuple[int, ...]:
        """Updates of each further run that trains the language's model on, in order (none: one run)."""
        return tuple(n for lang, n in self.asr_continue_by_language if lang == language)

    def lm_tuning(self, language: str) -> dict[str, Any]:
        """`finetune`'s arguments for the held-out speech that the language's LM fusion is tuned on."""
        dev, grid = self.corpus_sizes[1], dict(self.lm_grid) or None
        if language in self.lm_tune_languages and self.tune_sentences:
            splits, utterances = ("dev", TUNE_SPLIT), dev + self.tune_sentences
        else:
            splits, utterances = ("dev",), dev
        return {"lm_splits": splits, "lm_utterances": utterances, "lm_grid": grid}

    def finetune_order(self) -> list[str]:
        """The longest fine-tunes first, so that no long one starts last while the other processes idle."""
        return sorted(
            self.finetuned(),
            key=lambda lang: self.steps(lang) + sum(self.continuations(lang)),
            reverse=True,
        )

    def workers(self) -> tuple[int, int]:
        """(trainings at once, torch threads each).

        These models are small: one thread keeps a core busy, where a second thread on the same
        model adds little (two one-thread fine-tunes side by side on 2 cores each took 0.72 s an
        update, one two-thread fine-tune alone 0.49 s: 1.4 times the work per hour). So on the CPU
        the default is one training per core, each with one thread, as many as the free memory
        holds.
        """
        cores = usable_cores()
        if self.jobs:
            jobs = self.jobs
        elif self.device == "cpu":
            jobs = min(cores, max(1, _available_memory() // TRAINING_MEMORY))
        else:
            jobs = 1
        # Beyond the fine-tunes, only language ID beside the backbone can use another process.
        jobs = max(1, min(jobs, max(len(self.asr_languages), 2)))
        return jobs, max(1, cores // jobs)


#: Memory to set aside per training process: a fine-tune of the bundled recipe peaked at 5.2 GB
#: (4.9 GiB) with pauses in its augmentation (longer clips), 4.8 GB without.
TRAINING_MEMORY = 6 << 30


def _available_memory() -> int:
    """Bytes the kernel says can be allocated without swapping (MemAvailable); no limit if unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 1 << 62


def _training_process(threads: int) -> None:
    """Initialises each training process of `build_models`: its share of the cores."""
    import torch

    torch.set_num_threads(threads)


#: What each language-ID training is: its model's index in `_Build.lid_models` and its run (0 the first).
_LidRuns = dict[Future[dict], tuple[int, int]]
#: What each fine-tune is: its language and its run (0 the first, from the backbone; k the k-th further).
_TuneRuns = dict[Future[dict], tuple[str, int]]


@dataclass(frozen=True)
class _Build:
    """What the steps of one `build_models` share: where it writes, its plan, its processes and log."""

    out: Path
    plan: BuildPlan
    work: Path
    pool: ProcessPoolExecutor
    stage: Callable[[str], None]
    #: Each language-ID model: the first, `lid/`, then the members served with it.
    lid_models: tuple[LidMember, ...]

    def run_folder(self, final: Path, name: str, run: int, last: bool) -> Path:
        """Where run `run` (0 the first) of a model trained in several runs writes: the last one
        its folder in `out`, the earlier ones the work folder, numbered from 1."""
        return final if last else self.work / "earlier-runs" / name / str(run + 1)

    def lid_dir(self, model: int, run: int) -> Path:
        """Where a run of language-ID model `model` writes: `lid/` (or `lid-NAME/`) for its last."""
        member = self.lid_models[model]
        earlier = member.folder if member.name else "language-id"
        return self.run_folder(self.out / member.folder, earlier, run, run == len(member.steps) - 1)

    def last_tune(self, lang: str, run: int) -> bool:
        """Whether it is the language's last run, the one whose model ships, with the word LM."""
        return run == len(self.plan.continuations(lang))

    def tune_dir(self, lang: str, run: int) -> Path:
        """Where a fine-tune run writes: `asr/LANG/` for the last, the work folder for earlier ones."""
        return self.run_folder(self.out / "asr" / lang, lang, run, self.last_tune(lang, run))


def build_models(out: Path, plan: BuildPlan = BuildPlan(), work: Path | None = None) -> None:
    """Trains lid/, backbone/ and asr/LANG/ into `out`; the corpus goes to `work` (default: the cache).

    The backbone ships beside the fine-tuned models so that a new language can be fine-tuned
    offline from it (`python -m asr_worker finetune --backbone models/backbone ...`). Trainings
    run in `plan.workers()` processes: language ID beside the corpus and the backbone, then the
    fine-tunes side by side, as each depends only on the backbone.
    """
    out.mkdir(parents=True, exist_ok=True)
    work = work or CACHE / "models-build"
    started = time.monotonic()
    jobs, threads = plan.workers()

    def stage(text: str) -> None:
        print(f"[{time.monotonic() - started:6.0f} s] {text}", flush=True)

    stage(f"{jobs} training process(es), {threads} thread(s) each")
    pool = ProcessPoolExecutor(
        max_workers=jobs,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_training_process,
        initargs=(threads,),
    )
    try:
        first_lid = LidMember("", 0, plan.lid_crops, (plan.lid_steps, *plan.lid_continue_steps))
        build = _Build(out, plan, work, pool, stage, (first_lid, *plan.lid_members))
        lids = _start_language_id(build)
        _synthesise_corpus(build)
        _pretrain_backbone(build)
        tunes = _start_finetunes(build)
        heads = submit_heads(pool, out, plan, work, stage)
        # The further language-ID models queue behind the first, the backbone and the fine-tunes.
        lids.update({_submit_lid(build, model, 0): (model, 0) for model in range(1, len(build.lid_models))})
        _train_to_the_end(build, lids, tunes, heads)
        heads.add_lexicons(plan.head_lexicon_words, stage)
        if plan.whisper_lid and plan.has_pack():
            gated_lid(out, plan, [out / m.folder for m in build.lid_models], stage)
    except BaseException:
        # Trainings not yet started would otherwise run for an hour after the failure is known.
        pool.shutdown(cancel_futures=True)
        raise
    pool.shutdown()
    stage(f"models written to {out}")


def _submit_lid(build: _Build, model: int, run: int) -> Future[dict]:
    """Submits one run of a language-ID model, a further run from the model the run before wrote."""
    from lid_service.recipes.ecapa import train_lid

    plan, member = build.plan, build.lid_models[model]
    further = {"init": build.lid_dir(model, run - 1), "lr": plan.lid_continue_lr} if run else {}
    return build.pool.submit(
        train_lid,
        build.lid_dir(model, run),
        plan.lid_languages,
        seed=plan.seed + member.seed + run,  # a further run hears new sentences
        utterances_per_language=plan.lid_utterances,
        max_steps=member.steps[run],
        max_train_seconds=plan.lid_seconds,
        crop_seconds=member.crops,
        channels=plan.lid_channels,
        device=plan.device,
        **further,
    )


def _start_language_id(build: _Build) -> _LidRuns:
    """Starts the first language-ID model first, as it trains beside the corpus and the backbone."""
    plan = build.plan
    build.stage(
        f"training language ID over {', '.join(plan.lid_languages)} ("
        + "; ".join(f"{m.folder}: {' + '.join(map(str, m.steps))}" for m in build.lid_models)
        + " updates)..."
    )
    lids: _LidRuns = {_submit_lid(build, 0, 0): (0, 0)}
    if plan.whisper_lid and not plan.has_pack():
        build.stage(f"no real-speech pack at {plan.pack}: {plan.whisper_lid}/ left as it is")
    return lids


def _synthesise_corpus(build: _Build) -> None:
    """Writes the synthetic corpus (and the LMs' tuning split) that the backbone and fine-tunes read."""
    from lidroute.train.corpus import SPLITS, synth_corpus, tuning_split

    plan, corpus = build.plan, build.work / "corpus"
    build.stage(f"synthesising the corpus ({', '.join(plan.corpus_languages())}) into {corpus}...")
    sizes = dict(zip(SPLITS, plan.corpus_sizes, strict=True))
    synth_corpus(corpus, plan.corpus_languages(), seed=plan.seed, **sizes)
    tuned = [lang for lang in plan.asr_languages if lang in plan.lm_tune_languages]
    if tuned and plan.tune_sentences:
        build.stage(f"adding {plan.tune_sentences} sentences to tune the LMs on ({', '.join(tuned)})...")
        tuning_split(corpus, languages=tuned, per_language=plan.tune_sentences)


def _pretrain_backbone(build: _Build) -> None:
    """Trains the backbone and waits for it, since every fine-tune starts from it."""
    from asr_worker.recipes.backbone import pretrain_backbone

    plan = build.plan
    build.stage(
        f"pretraining the phoneme backbone on {', '.join(plan.backbone_languages)}"
        f" ({plan.backbone_steps} updates)..."
    )
    report = build.pool.submit(
        pretrain_backbone,
        build.work / "corpus",
        build.out / "backbone",
        plan.backbone_languages,
        utterances_per_language=plan.backbone_utterances,
        max_steps=plan.backbone_steps,
        seed=plan.seed,
        device=plan.device,
    ).result()
    build.stage(f"backbone: mean phone error rate {report['mean_cer']:.3f}")


def _submit_finetune(build: _Build, lang: str, run: int) -> Future[dict]:
    """Submits one fine-tune run: the first from the backbone, a further one from the last run's model."""
    from asr_worker.recipes.finetune import FinetuneRecipe, finetune

    plan = build.plan
    if run:
        init, steps = str(build.tune_dir(lang, run - 1)), plan.continuations(lang)[run - 1]
        further = {"keep_head": True, "recipe": FinetuneRecipe(lr=plan.asr_continue_lr)}
    else:
        init, steps, further = str(build.out / "backbone"), plan.steps(lang), {}
    return build.pool.submit(
        finetune,
        init,
        build.work / "corpus",
        lang,
        build.tune_dir(lang, run),
        max_steps=steps,
        # A further run draws new augmentation and batch order, not an earlier run's again.
        seed=plan.seed + run,
        device=plan.device,
        **further,
        lm=build.last_tune(lang, run),
        **plan.lm_tuning(lang),
    )


def _start_finetunes(build: _Build) -> _TuneRuns:
    """Starts each language's first fine-tune, the longest first."""
    plan = build.plan
    updates = ", ".join(
        f"{lang} {plan.steps(lang)}" + "".join(f" + {n}" for n in plan.continuations(lang))
        for lang in plan.finetune_order()
    )
    build.stage(f"fine-tuning it to each language (updates: {updates})...")
    return {_submit_finetune(build, lang, 0): (lang, 0) for lang in plan.finetune_order()}


def _train_to_the_end(build: _Build, lids: _LidRuns, tunes: _TuneRuns, heads: _HeadRuns) -> None:
    """Reports each training as it ends, submitting the run that continues its model, until none is left."""
    pending: set[Future] = {*lids, *tunes, *heads.runs}
    while pending:
        finished, pending = wait(pending, return_when=FIRST_COMPLETED)
        for done in finished:
            if done in lids:
                further = _lid_finished(build, lids, done)
            elif done in heads.runs:
                from asr_worker.recipes.heads import kept_scores

                kept = kept_scores(done.result())
                cer = kept.get("dev_real_cer", float("nan"))
                build.stage(
                    f"{heads.runs[done]} (head on Whisper's encoder): {cer:.3f} CER on held-out speakers"
                )
                pending.update(heads.finished(done, build.pool))
                further = None
            else:
                further = _finetune_finished(build, tunes, done)
            if further is not None:
                pending.add(further)


def _lid_finished(build: _Build, lids: _LidRuns, done: Future[dict]) -> Future[dict] | None:
    """Reports a language-ID run's scores and submits its model's next run, if it has one."""
    (model, run), scores = lids[done], done.result()
    runs = build.lid_models[model].steps
    more = run + 1 < len(runs)
    build.stage(
        f"language ID ({build.lid_models[model].folder}):"
        f" {json.dumps({k: round(v, 3) for k, v in scores.items()})}"
        + (f"; training it {runs[run + 1]} updates further..." if more else "")
    )
    if not more:
        return None
    further = _submit_lid(build, model, run + 1)
    lids[further] = (model, run + 1)
    return further


def _finetune_finished(build: _Build, tunes: _TuneRuns, done: Future[dict]) -> Future[dict] | None:
    """Reports a fine-tune's CER and submits its language's next run, if it has one."""
    (lang, run), report = tunes[done], done.result()
    cer = {s: round(v["cer"], 3) for s, v in report["scores"].items()}
    more = 0 if build.last_tune(lang, run) else build.plan.continuations(lang)[run]
    build.stage(
        f"{lang}: {json.dumps(cer)} CER" + (f"; training it {more} updates further..." if more else "")
    )
    if not more:
        return None
    further = _submit_finetune(build, lang, run + 1)
    tunes[further] = (lang, run + 1)
    return further


@dataclass
class _HeadRuns:
    """The heads' trainings: each future's language (or `POOLED`), and the languages' recipes
    that wait for the pooled head to start from."""

    runs: dict[Future[dict], str]
    waiting: dict[str, Any]  # language -> HeadRecipe
    out: Path
    #: The recorded speech (manifests) they trained on, whose held-out speakers tune their LMs,
    #: and the synthetic corpora, whose dev splits do too.
    real: tuple[str, ...] = ()
    synthetic: tuple[str, ...] = ()

    def add_lexicons(self, words: int, stage: Callable[[str], None]) -> None:
        """Each trained head's word LM (`lexicon_lms`), once all are trained."""
        from asr_worker.recipes.heads import lexicon_lms
        from lidroute.wordlist import has_words

        languages = [lang for lang in self.runs.values() if lang != POOLED and has_words(lang)]
        if not words or not languages or not self.real:
            return
        stage(f"word LMs of the {words:,} commonest words of {', '.join(languages)}, tuned together...")
        folders = [self.out / "asr" / lang for lang in languages]
        summary = lexicon_lms(folders, self.real, words, synthetic=self.synthetic)
        stage(
            f"heads' word LMs: CER {summary['dev_cer_greedy']:.3f} greedy, {summary['dev_cer']:.3f} with them"
            " on held-out speakers"
        )

    def finished(self, done: Future[dict], pool: ProcessPoolExecutor) -> list[Future[dict]]:
        """The languages' heads, submitted once the pooled head they start from is done."""
        if self.runs[done] != POOLED:
            return []
        from asr_worker.recipes.heads import train_head

        started = [
            pool.submit(train_head, recipe, self.out / "asr" / lang) for lang, recipe in self.waiting.items()
        ]
        self.runs.update(zip(started, self.waiting, strict=True))
        self.waiting = {}
        return started


#: The head pooled over all the heads' languages, which each language's head starts from.
POOLED = "pooled"


def submit_heads(
    pool: ProcessPoolExecutor, out: Path, plan: BuildPlan, work: Path, stage: Callable[[str], None]
) -> _HeadRuns:
    """The heads' data, made here (the teacher's transcripts of the pack's untranscribed clips, a
    corpus a share of which Kokoro speaks), then the pooled head's training, submitted to `pool`
    (each language's head follows it), or without one each language's head at once."""
    from asr_worker.recipes.heads import HeadRecipe, train_head
    from lidroute.train.corpus import SynthPlan, synth_corpus
    from lidroute.train.teacher import MANIFEST, transcribe_windows, untranscribed

    languages = plan.heads()
    if not languages:
        return _HeadRuns({}, {}, out)
    pack = Path(plan.pack)
    stage(f"Whisper base transcribing {pack}'s untranscribed clips of {', '.join(languages)}...")
    for lang in languages:
        if clips := untranscribed(pack, lang):
            transcribe_windows(lang, clips, work / "teacher", CACHE, seed=plan.seed)
    corpus = work / "head-corpus"
    stage(f"synthesising the heads' corpus ({plan.head_kokoro:.0%} Kokoro) into {corpus}...")
    train, dev = plan.head_corpus_sizes
    synth_corpus(
        corpus,
        list(languages),
        train=train,
        dev=dev,
        test=1,  # the heads are scored on recorded speech, not on this corpus's test splits
        test_hard=1,
        seed=plan.seed + 7,
        noise=True,
        level=True,
        plan=replace(SynthPlan(), kokoro=plan.head_kokoro, running=plan.head_running),
    )
    real = [str(pack / "manifest.jsonl")]
    if (work / "teacher" / MANIFEST).is_file():
        real.append(str(work / "teacher" / MANIFEST))
    speech = {"synthetic": (str(corpus),), "real": tuple(real), "seed": plan.seed}
    recipes = {lang: HeadRecipe(lang, minutes=plan.head_minutes, **speech) for lang in languages}
    if plan.head_pooled_minutes and len(languages) > 1:
        pooled_dir = work / "pooled-head"
        pooled = HeadRecipe(languages[0], pooled=languages[1:], minutes=plan.head_pooled_minutes, **speech)
        stage(
            f"training a head on Whisper's encoder pooled over {', '.join(languages)}"
            f" ({plan.head_pooled_minutes:g} min), then each language's from it"
            f" ({plan.head_minutes:g} min each)..."
        )
        waiting = {
            lang: replace(recipe, init=str(pooled_dir), lr=plan.head_init_lr)
            for lang, recipe in recipes.items()
        }
        return _HeadRuns(
            {pool.submit(train_head, pooled, pooled_dir): POOLED}, waiting, out, tuple(real), (str(corpus),)
        )
    stage(
        f"training a head on Whisper's encoder for {', '.join(languages)} ({plan.head_minutes:g} min each)..."
    )
    runs = {pool.submit(train_head, recipe, out / "asr" / lang): lang for lang, recipe in recipes.items()}
    return _HeadRuns(runs, {}, out, tuple(real), (str(corpus),))


def cmd_build(args: argparse.Namespace) -> int:
    plan = BuildPlan()
    build_models(
        Path(args.out),
        BuildPlan(
            lid_languages=tuple(args.lid_languages.split(",")) if args.lid_languages else plan.lid_languages,
            asr_languages=tuple(args.languages.split(",")) if args.languages else plan.asr_languages,
            seed=args.seed,
            lid_steps=args.lid_steps or plan.lid_steps,
            lid_continue_steps=() if args.lid_steps else plan.lid_continue_steps,
            lid_members=tuple(replace(m, steps=(args.lid_steps,)) for m in plan.lid_members)
            if args.lid_steps
            else plan.lid_members,
            backbone_steps=args.backbone_steps or plan.backbone_steps,
            asr_steps=args.asr_steps or plan.asr_steps,
            # One number on the command line is one budget for every language, in one run each.
            asr_steps_by_language=() if args.asr_steps else plan.asr_steps_by_language,
            asr_continue_by_language=() if args.asr_steps else plan.asr_continue_by_language,
            device=args.device,
            jobs=args.jobs,
            pack=args.pack,
        ),
        Path(args.work) if args.work else None,
    )
    return 0


def add_build_command(msub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """`models build`, beside the registry's subcommands."""
    build = msub.add_parser(
        "build", help="train the offline models: LID, corpus, backbone, one fine-tuned CTC model per language"
    )
    build.add_argument("--out", default=str(CACHE / "demo-models"))
    build.add_argument(
        "--languages", help=f"CTC models to train (default: {','.join(BUNDLED_ASR_LANGUAGES)})"
    )
    build.add_argument("--lid-languages", help="languages the LID model knows (default: all 12)")
    build.add_argument("--seed", type=int, default=0)
    build.add_argument(
        "--lid-steps",
        type=int,
        help="updates of each LID model, in one run (default: "
        + " + ".join(map(str, (BuildPlan.lid_steps, *BuildPlan.lid_continue_steps)))
        + "".join(f"; lid-{m.name} " + " + ".join(map(str, m.steps)) for m in BuildPlan.lid_members)
        + ")",
    )
    build.add_argument(
        "--asr-steps",
        type=int,
        help=f"updates per fine-tuned CTC model, for every language (default: {BuildPlan.asr_steps}"
        + "".join(f", {lang} {n}" for lang, n in BuildPlan.asr_steps_by_language)
        + "; further runs: "
        + ", ".join(
            f"{lang} " + " ".join(f"+{n}" for n in BuildPlan().continuations(lang))
            for lang in dict.fromkeys(lang for lang, _ in BuildPlan.asr_continue_by_language)
        )
        + ")",
    )
    build.add_argument(
        "--backbone-steps", type=int, help=f"backbone updates (default: {BuildPlan.backbone_steps})"
    )
    build.add_argument(
        "--device", default="cpu", help="where language ID, the backbone and the fine-tunes train (cpu, cuda)"
    )
    build.add_argument(
        "--jobs",
        type=int,
        default=0,
        help="trainings at once (default: one per CPU core on the CPU, one with --device cuda)",
    )
    build.add_argument("--work", help=f"where the corpus is synthesised (default: {CACHE / 'models-build'})")
    build.add_argument(
        "--pack",
        default=BuildPlan.pack,
        help="recorded speech (a folder with manifest.jsonl) that calibrates whisper-lid and trains"
        " the recognizers on Whisper's encoder (default: %(default)s); without one whisper-lid is"
        " left out and every recognizer is a fine-tune of the backbone",
    )
