"""Speech corpora: one example type for every data source, its readers, and the synthetic corpus.

Training and evaluation must run the same way on the synthetic speech this machine can make and
on real data elsewhere (a Common Voice download, a Hugging Face dataset), so every source is
read into `Example`s whose audio comes out as 16 kHz mono float32 on demand, decoded and
resampled by the same code that serves requests (`lidroute.audio`).

The synthetic corpus (`synth_corpus`, `lidroute corpus synth`) is written in the project's own
on-disk format: FLAC files plus one JSONL manifest per split whose `audio` paths are relative to
the manifest, which `datasets.load_dataset("json", data_files=...)` also reads.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import soxr

from lidroute.audio import TARGET_RATE, frame_power, resample, rms, to_mono
from lidroute.train import synth
from lidroute.train.budget import usable_cores
from lidroute.train.kokoro import Kokoro, speak_with_kokoro

SPLITS = ("train", "dev", "test", "test_hard")
#: Fields every manifest line has; anything else on the line is kept as metadata.
MANIFEST_FIELDS = ("audio", "text", "language", "duration")
#: Common Voice's TSV files, by our split names.
COMMON_VOICE_SPLITS = {"train": "train.tsv", "dev": "dev.tsv", "test": "test.tsv"}


class CorpusError(ValueError):
    """A data source that cannot be read as asked: missing folder, file, column or language."""


# --------------------------------------------------------------------------- the example type


def read_audio(source: str | Path | bytes) -> np.ndarray:
    """A file (path or its bytes) as 16 kHz mono float32.

    Common Voice ships MP3, which soundfile reads only with libsndfile >= 1.1 (its wheels bundle
    1.2.2); an older system libsndfile gets a message that says so instead of a bare format error.
    """
    try:
        audio, rate = sf.read(
            io.BytesIO(source) if isinstance(source, bytes) else source, dtype="float32", always_2d=True
        )
    except sf.LibsndfileError as exc:
        name = "audio bytes" if isinstance(source, bytes) else str(source)
        hint = ""
        if str(source).lower().endswith(".mp3") and "MP3" not in sf.available_formats():
            hint = (
                f" (this libsndfile {sf.__libsndfile_version__} cannot decode MP3: install a soundfile "
                "wheel that bundles libsndfile >= 1.1, or convert the clips to FLAC)"
            )
        raise CorpusError(f"cannot decode {name}: {exc}{hint}") from None
    return resample(to_mono(audio), rate)


@dataclass(frozen=True, eq=False)
class Example:
    """One labelled utterance from any source; `audio()` decodes it when training asks for it.

    Audio is not held in memory: an example knows either its file (`audio_path`) or how to fetch
    its audio (`fetch`, for sources such as a Hugging Face dataset whose audio lives in Arrow
    files), so a corpus of many hours costs only its transcripts until it is read.
    """

    text: str
    language: str
    split: str
    audio_path: Path | None = None
    duration: float | None = None
    id: str = ""
    #: Whatever else the source says about the utterance (voice, speed, noise, speaker, ...).
    meta: Mapping[str, Any] = field(default_factory=dict)
    fetch: Callable[[], np.ndarray] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if (self.audio_path is None) == (self.fetch is None):
            raise ValueError("an Example needs exactly one of audio_path and fetch")

    def audio(self) -> np.ndarray:
        """The utterance as 16 kHz mono float32."""
        if self.fetch is not None:
            return self.fetch()
        assert self.audio_path is not None
        return read_audio(self.audio_path)

    @classmethod
    def from_array(cls, audio: np.ndarray, rate: int, **fields: Any) -> Example:
        """An example whose audio is already in memory at any rate; resampled once, here."""
        mono = resample(to_mono(np.asarray(audio, dtype=np.float32)), rate)
        fields.setdefault("duration", len(mono) / TARGET_RATE)
        return cls(fetch=lambda: mono, **fields)


# --------------------------------------------------------------------------- readers


def read_manifest(path: str | Path, *, split: str | None = None) -> list[Example]:
    """Reads a JSONL manifest: one object per line with `audio` (relative to the manifest), `text`,
    `language` and `duration`; every other field is kept in `meta`.

    The split is the line's `split` field, else `split`, else the file's stem (`train.jsonl`).
    """
    path = Path(path)
    if not path.is_file():
        raise CorpusError(f"manifest {path} not found")
    examples = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise CorpusError(f"{path}:{number}: not JSON: {exc}") from None
            missing = [name for name in MANIFEST_FIELDS if name not in row]
            if missing:
                raise CorpusError(f"{path}:{number}: missing field(s) {', '.join(missing)}")
            meta = {k: v for k, v in row.items() if k not in (*MANIFEST_FIELDS, "id", "split")}
            examples.append(
                Example(
                    text=row["text"],
                    language=row["language"],
                    split=row.get("split") or split or path.stem,
                    audio_path=path.parent / row["audio"],
                    duration=float(row["duration"]),
                    id=str(row.get("id", f"{path.stem}-{number}")),
                    meta=meta,
                )
            )
    return examples


def read_common_voice(
    folder: str | Path, *, splits: Sequence[str] = ("train", "dev", "test"), language: str | None = None
) -> list[Example]:
    """Reads a Common Voice language folder: `clips/` and the `train.tsv`/`dev.tsv`/`test.tsv` files.

    The TSV columns used are `path` (a file in `clips/`) and `sentence`; the language is
    `language`, else the TSV's `locale` column, else the folder's name (Common Voice names it by
    locale: `cv-corpus-17.0/sw`). Durations come from `clip_durations.tsv` when the release has it.
    Quoting is off: sentences contain quote marks that are text, not CSV quoting.
    """
    folder = Path(folder)
    if not (folder / "clips").is_dir():
        raise CorpusError(f"{folder} is not a Common Voice folder: no clips/ folder in it")
    unknown = [s for s in splits if s not in COMMON_VOICE_SPLITS]
    if unknown:
        raise CorpusError(f"unknown Common Voice split(s) {unknown}; known: {', '.join(COMMON_VOICE_SPLITS)}")
    durations = _clip_durations(folder / "clip_durations.tsv")
    examples = []
    for split in splits:
        tsv = folder / COMMON_VOICE_SPLITS[split]
        if not tsv.is_file():
            raise CorpusError(f"{tsv} not found")
        with tsv.open(encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
            missing = {"path", "sentence"} - set(reader.fieldnames or ())
            if missing:
                raise CorpusError(f"{tsv} lacks column(s) {', '.join(sorted(missing))}")
            for row in reader:
                lang = language or row.get("locale") or folder.name
                meta = {k: v for k, v in row.items() if k not in ("path", "sentence") and v}
                examples.append(
                    Example(
                        text=row["sentence"],
                        language=lang,
                        split=split,
                        audio_path=folder / "clips" / row["path"],
                        duration=durations.get(row["path"]),
                        id=Path(row["path"]).stem,
                        meta=meta,
                    )
                )
    return examples


def _clip_durations(path: Path) -> dict[str, float]:
    if not path.is_file():
        return {}
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        column = next((c for c in reader.fieldnames or () if c.startswith("duration")), None)
        if column is None or "clip" not in (reader.fieldnames or ()):
            return {}
        return {row["clip"]: float(row[column]) / 1000 for row in reader}


def read_hf_dataset(
    source: str | Path,
    *,
    split: str = "train",
    audio_column: str = "audio",
    text_column: str = "text",
    language: str | None = None,
    language_column: str | None = None,
    config: str | None = None,
) -> list[Example]:
    """Reads a Hugging Face dataset: a `save_to_disk` folder, or anything `load_dataset` takes.

    The audio column may be an `Audio` feature, a file path, or a `{array, sampling_rate}` dict.
    An `Audio` column is read undecoded and decoded here by soundfile: datasets' own decoder
    needs torchcodec, which nothing else in the project does. Each example fetches its row when
    its audio is asked for, so the dataset is never loaded into memory whole.
    """
    import datasets

    if language is None and language_column is None:
        raise CorpusError("say the dataset's language (language=...) or its language column")
    path = Path(source)
    if path.is_dir() and ((path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file()):
        loaded = datasets.load_from_disk(str(path))
        if isinstance(loaded, datasets.DatasetDict):
            if split not in loaded:
                raise CorpusError(f"{path} has no split {split!r}; it has {', '.join(loaded)}")
            loaded = loaded[split]
    else:
        try:
            loaded = datasets.load_dataset(str(source), config, split=split)
        except (OSError, ValueError) as exc:  # not found, no network, bad config or split
            raise CorpusError(f"cannot load dataset {source!r} (split {split!r}): {exc}") from None
    dataset: datasets.Dataset = loaded  # type: ignore[assignment]
    wanted = [audio_column, text_column, *([language_column] if language_column else [])]
    missing = [c for c in wanted if c not in dataset.column_names]
    if missing:
        raise CorpusError(
            f"dataset {source} has no column(s) {', '.join(missing)}; "
            f"it has {', '.join(dataset.column_names)}"
        )
    if isinstance(dataset.features[audio_column], datasets.Audio):
        dataset = dataset.cast_column(audio_column, datasets.Audio(decode=False))
    audio_only = dataset.select_columns([audio_column])
    texts = dataset[text_column]
    languages = dataset[language_column] if language_column else [language] * len(texts)
    durations = dataset["duration"] if "duration" in dataset.column_names else [None] * len(texts)

    def fetcher(index: int) -> Callable[[], np.ndarray]:
        return lambda: _hf_audio(audio_only[index][audio_column])

    return [
        Example(
            text=text,
            language=lang,
            split=split,
            duration=None if seconds is None else float(seconds),
            id=f"{split}-{index}",
            fetch=fetcher(index),
        )
        for index, (text, lang, seconds) in enumerate(zip(texts, languages, durations, strict=True))
    ]


def _hf_audio(value: Any) -> np.ndarray:
    if isinstance(value, str):
        return read_audio(value)
    if isinstance(value, Mapping):
        if value.get("array") is not None:
            return resample(
                to_mono(np.asarray(value["array"], dtype=np.float32)), int(value["sampling_rate"])
            )
        if value.get("bytes"):
            return read_audio(value["bytes"])
        if value.get("path"):
            return read_audio(value["path"])
    raise CorpusError(f"cannot read audio from a dataset value of type {type(value).__name__}")


#: A folder of clips with one table of transcripts: `file`, `lang`, `transcript` (tab-separated).
TRANSCRIPT_TABLES = ("manifest.tsv", "transcripts.tsv")


def _transcript_table(folder: Path) -> Path | None:
    return next((folder / name for name in TRANSCRIPT_TABLES if (folder / name).is_file()), None)


#: Column names a table of clips may use, first choice first (CSV or TSV, by its suffix).
TABLE_COLUMNS = {
    "audio": ("file", "path", "audio", "audio_filepath", "filename"),
    "text": ("transcript", "text", "sentence", "transcription"),
    "language": ("lang", "language", "locale"),
    "duration": ("duration_s", "duration"),
}


def read_table(
    path: str | Path, *, split: str = "test", language: str | None = None, id_prefix: str = ""
) -> list[Example]:
    """Clips listed in a CSV or TSV file (by suffix; `.tsv` is tab-separated): an audio path
    relative to the table, its transcript and language, optionally its duration, under any of the
    usual column names (`TABLE_COLUMNS`). `language` fills a table without a language column."""
    table = Path(path)
    delimiter = "," if table.suffix.lower() == ".csv" else "\t"
    with table.open(encoding="utf-8", newline="") as handle:
        quoting = csv.QUOTE_MINIMAL if delimiter == "," else csv.QUOTE_NONE
        rows = list(csv.DictReader(handle, delimiter=delimiter, quoting=quoting))
    header = set(rows[0]) if rows else set()
    column = {role: next((n for n in names if n in header), None) for role, names in TABLE_COLUMNS.items()}
    needed = ["audio", "text"] + ([] if language else ["language"])
    missing = [role for role in needed if column[role] is None]
    if missing:
        wanted = "; ".join(f"{role}: {' or '.join(TABLE_COLUMNS[role])}" for role in missing)
        hint = " (or pass the language)" if "language" in missing else ""
        raise CorpusError(f"{table} lacks column(s) for {wanted}{hint}")
    examples = []
    for row in rows:
        audio = table.parent / row[column["audio"]]  # type: ignore[index]
        if not audio.is_file():
            raise CorpusError(f"{table}: {row[column['audio']]} not found")  # type: ignore[index]
        duration = row.get(column["duration"] or "")
        examples.append(
            Example(
                text=row[column["text"]],  # type: ignore[index]
                language=row[column["language"]] if column["language"] else language,  # type: ignore[arg-type]
                split=split,
                audio_path=audio,
                duration=float(duration) if duration else None,
                id=id_prefix + audio.stem,
                meta={"source": table.parent.name},
            )
        )
    return examples


def read_transcript_tables(folder: str | Path, *, split: str = "test") -> list[Example]:
    """Clips listed in a transcript table (`manifest.tsv` or `transcripts.tsv`, `read_table`), in
    `folder` or in each of its subfolders, as recorded speech is often shipped: one folder per
    source. An id is `SUBFOLDER/FILE-STEM`."""
    root = Path(folder)
    tables = [t for t in [_transcript_table(root)] if t] or [
        t for sub in sorted(p for p in root.iterdir() if p.is_dir()) if (t := _transcript_table(sub))
    ]
    if not tables:
        raise CorpusError(f"{root}: no {' or '.join(TRANSCRIPT_TABLES)} in it or in its subfolders")
    return [
        example
        for table in tables
        for example in read_table(
            table, split=split, id_prefix="" if table.parent == root else f"{table.parent.name}/"
        )
    ]


def read_examples(
    source: str | Path,
    *,
    split: str = "train",
    language: str | None = None,
    audio_column: str = "audio",
    text_column: str = "text",
) -> list[Example]:
    """Any source by its look: a `.jsonl` manifest, a CSV/TSV table of clips (`read_table`), a
    corpus folder of manifests (`SPLIT.jsonl`),
    a Common Voice folder (`clips/`), folders of clips with a transcript table (`manifest.tsv`,
    `transcripts.tsv`), or a Hugging Face dataset (a saved folder or a hub name).

    This is what training and evaluation commands take, so one `--data` flag reads them all.
    """
    path = Path(source).expanduser()
    looks_local = path.is_absolute() or str(source).startswith((".", "~"))
    if looks_local and not path.exists():
        raise CorpusError(f"{path} not found")
    if path.suffix == ".jsonl":
        return read_manifest(path, split=split)
    if path.suffix.lower() in (".tsv", ".csv") and path.is_file():
        return read_table(path, split=split, language=language)
    if path.is_dir() and (path / f"{split}.jsonl").is_file():
        return read_manifest(path / f"{split}.jsonl", split=split)
    if path.is_dir() and (path / "clips").is_dir():
        return read_common_voice(path, splits=[split], language=language)
    if path.is_dir() and (
        _transcript_table(path) or any(_transcript_table(p) for p in path.iterdir() if p.is_dir())
    ):
        return read_transcript_tables(path, split=split)
    if path.exists() and not path.is_dir():
        raise CorpusError(f"{path}: not a .jsonl manifest, a corpus folder or a dataset")
    return read_hf_dataset(
        source, split=split, audio_column=audio_column, text_column=text_column, language=language
    )


# --------------------------------------------------------------------------- the synthetic corpus


@dataclass(frozen=True)
class SynthPlan:
    """How `synth_corpus` speaks and degrades each split; the defaults are the documented recipe.

    Train, dev and test share one voice pool and speed range, so dev and test measure
    generalisation to new sentences; `test_hard` uses voice variants and speeds that no other
    split has, noise at `hard_snr_db`, and a telephone channel (8 kHz, back up to 16 kHz), so it
    measures what a model does on speech unlike its training data.
    """

    speeds: tuple[int, int] = (130, 185)
    hard_speeds: tuple[tuple[int, int], ...] = ((105, 125), (195, 220))
    pitches: tuple[int, int] = (30, 70)
    hard_pitches: tuple[int, int] = (20, 80)
    #: Share of the voice variants held out of train/dev/test for `test_hard`.
    hard_voice_share: float = 0.25
    #: Share of sentences built around a number spelled by num2words, where it covers the language.
    numbers: float = 0.2
    min_words: int = 2
    max_words: int = 5
    #: Noise augmentation of train/dev/test (with --noise): share of utterances and SNR range.
    noise_share: float = 0.5
    noise_snr_db: tuple[float, float] = (10.0, 30.0)
    #: Level augmentation (with --level): peak level range in dBFS.
    level_db: tuple[float, float] = (-24.0, -1.0)
    hard_snr_db: tuple[float, float] = (10.0, 20.0)
    telephone_rate: int = 8000
    #: Share of every split's utterances spoken by Kokoro-82M's neural voices, a new speaker each
    #: (`lidroute.train.kokoro`), instead of espeak-ng: speech of a second, more natural kind.
    kokoro: float = 0.0
    kokoro_speeds: tuple[float, float] = (0.8, 1.25)


def split_voices(seed: int, share: float) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Voice variants for (train/dev/test, test_hard), disjoint, drawn from the seed."""
    order = np.random.default_rng([seed, synth.stable_hash("held-out voices")]).permutation(
        len(synth.VARIANTS)
    )
    held = max(1, round(share * len(order)))
    seen = tuple(sorted(synth.VARIANTS[i] for i in order[held:]))
    hard = tuple(sorted(synth.VARIANTS[i] for i in order[:held]))
    return seen, hard


def corpus_sentences(
    lang: str, counts: Mapping[str, int], *, seed: int, plan: SynthPlan, vocab: Sequence[str] | None = None
) -> dict[str, list[tuple[str, bool]]]:
    """Distinct sentences for each split (disjoint across splits), each flagged True when it holds a number.

    All splits are cut from one pool of distinct sentences, which is what makes them disjoint.
    """
    total = sum(counts.values())
    n_numbers = round(plan.numbers * total) if synth.supports_numbers(lang) else 0
    numbers = synth.make_number_sentences(lang, n_numbers, seed=seed, vocab=vocab) if n_numbers else []
    # Extra word sentences cover any that collide with a number sentence.
    words = synth.make_sentences(
        lang,
        total - n_numbers + n_numbers // 10 + 10,
        seed=seed,
        min_words=plan.min_words,
        max_words=plan.max_words,
        vocab=vocab,
    )
    pool: dict[str, bool] = dict.fromkeys(numbers, True)
    for sentence in words:
        if len(pool) == total:
            break
        pool.setdefault(sentence, False)
    if len(pool) < total:
        raise CorpusError(f"{lang}: could make only {len(pool)} distinct sentences of {total}")
    items = list(pool.items())
    order = synth._rng(seed, lang, "split order").permutation(len(items))
    shuffled = [items[i] for i in order]
    out: dict[str, list[tuple[str, bool]]] = {}
    start = 0
    for split, count in counts.items():
        out[split] = shuffled[start : start + count]
        start += count
    return out


def _noise(rng: np.random.Generator, n: int) -> np.ndarray:
    """White or pink-ish (1/f) noise, unit RMS: two colours so a model cannot learn one hiss.

    `n` may be 0: a pause drawn shorter than one sample (`silence`) is none, and an inverse FFT
    of no points raises, which once ended a German fine-tune after 1,500 of its 8,000 updates.
    """
    white = rng.standard_normal(n)
    if rng.random() < 0.5 and n:
        spectrum = np.fft.rfft(white)
        spectrum[1:] /= np.sqrt(np.arange(1, len(spectrum)))
        white = np.fft.irfft(spectrum, n)
    return (white / (rms(white) + 1e-12)).astype(np.float32)


def add_noise(audio: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """`audio` plus noise at `snr_db` relative to the speech's RMS."""
    return (audio + _noise(rng, len(audio)) * rms(audio) / 10 ** (snr_db / 20)).astype(np.float32)


def telephone(audio: np.ndarray, rate: int = 8000) -> np.ndarray:
    """A narrowband channel: down to `rate` and back up to 16 kHz.

    soxr's anti-alias filter removes everything above rate/2, as a telephone line does.
    """
    low = soxr.resample(audio, TARGET_RATE, rate, quality="HQ")
    return soxr.resample(low, rate, TARGET_RATE, quality="HQ")[: len(audio)].astype(np.float32)


def change_speed(audio: np.ndarray, factor: float) -> np.ndarray:
    """`audio` played `factor` times faster (pitch moves with it, as in Kaldi's speed perturbation)."""
    return soxr.resample(audio, round(TARGET_RATE * factor), TARGET_RATE, quality="HQ").astype(np.float32)


def change_timbre(audio: np.ndarray, rng: np.random.Generator, max_db: float = 6.0) -> np.ndarray:
    """`audio` through a random smooth equaliser: the same words in another voice's colour.

    Voices differ in spectral envelope beyond what a speed change moves (it scales every
    formant and the pitch by one factor): espeak-ng's variants set formant heights and a
    "tone" curve of their own, and microphones and rooms tilt and colour speech. The gain is a
    tilt of up to `max_db` over the band's ±3 octaves around 1 kHz plus three bumps or notches
    of up to `max_db`, 0.25–1 octave wide, centred at 200 Hz–4 kHz; the level (RMS) is kept.
    """
    n = len(audio)
    if n == 0:
        return audio.astype(np.float32)
    octaves = np.log2(np.maximum(np.fft.rfftfreq(n, 1 / TARGET_RATE), 50.0) / 1000)
    gain_db = rng.uniform(-max_db, max_db) * np.clip(octaves / 3, -1, 1)
    for _ in range(3):
        centre, width = rng.uniform(np.log2(0.2), np.log2(4.0)), rng.uniform(0.25, 1.0)
        gain_db += rng.uniform(-max_db, max_db) * np.exp(-0.5 * ((octaves - centre) / width) ** 2)
    out = np.fft.irfft(np.fft.rfft(audio) * 10 ** (gain_db / 20), n)
    return (out * rms(audio) / (rms(out) + 1e-12)).astype(np.float32)


def change_tempo(audio: np.ndarray, factor: float, frame: int = 512, tolerance: int = 160) -> np.ndarray:
    """`audio` spoken `factor` times faster at the same pitch and timbre (WSOLA).

    A speaker who talks faster keeps their voice; resampling (`change_speed`) cannot separate
    the two. Windows of `frame` samples are overlap-added at half-frame hops; each is taken
    from near where `factor` puts it, within `tolerance` samples, where it best continues the
    last one (normalised cross-correlation), so pitch periods line up and the result does not
    warble the way a phase vocoder's does.
    """
    if factor <= 0:
        raise ValueError(f"tempo factor must be positive, not {factor}")
    hop = frame // 2
    n_out = round(len(audio) / factor)
    window = np.hanning(frame + 1)[:-1].astype(np.float32)  # periodic: sums to 1 at half overlap
    x = np.pad(audio.astype(np.float32), (tolerance, 2 * (frame + tolerance) + int(hop * factor)))
    energy = np.concatenate(([0.0], np.cumsum(x.astype(np.float64) ** 2)))
    frames = n_out // hop + 1
    out = np.zeros(frames * hop + frame, np.float32)
    pos = tolerance
    for k in range(frames):
        target = tolerance + round(k * hop * factor)
        if k:
            start = target - tolerance
            region = x[start : target + tolerance + frame]
            corr = np.correlate(region, x[pos + hop : pos + hop + frame], mode="valid")
            norms = energy[start + frame : start + frame + len(corr)] - energy[start : start + len(corr)]
            score = corr / np.sqrt(norms + 1e-9)
            # In silence nothing correlates: stay on target rather than drift to the window's edge.
            pos = start + int(np.argmax(score)) if score.max() > 1e-6 else target
        out[k * hop : k * hop + frame] += x[pos : pos + frame] * window
    return out[:n_out]


def add_pauses(
    audio: np.ndarray, rng: np.random.Generator, seconds: tuple[float, float], frame: int = 320
) -> np.ndarray:
    """`audio` with a pause put into its quietest gap and silence of up to half as long before and after.

    Callers pause mid-sentence, leave the line open and start late; a recognizer that has only
    heard tightly cut utterances loses its word boundaries around a long silence. The pause
    goes where the speaker already paused (the quietest 20 ms frame of the middle 80 %), so no
    word is cut. Half the pauses are digital zeros, as a muted or gated microphone gives; the rest
    are a faint hiss, as an open line gives (`silence`).
    """
    power = frame_power(audio, frame)
    if len(power) >= 5:
        lo, hi = len(power) // 10, len(power) - len(power) // 10
        cut = (lo + int(np.argmin(power[lo:hi]))) * frame + frame // 2
    else:
        cut = len(audio) // 2
    level = rms(audio)
    inside = rng.uniform(*seconds)
    before, after = rng.uniform(0, seconds[1] / 2, size=2)
    parts = [audio[:cut], silence(inside, level, rng), audio[cut:]]
    return np.concatenate([silence(before, level, rng), *parts, silence(after, level, rng)])


def silence(seconds: float, speech_rms: float, rng: np.random.Generator) -> np.ndarray:
    """A pause beside speech of `speech_rms`: digital zeros or, half the time, a hiss 40-70 dB under it."""
    length = round(seconds * TARGET_RATE)
    if rng.random() < 0.5 or speech_rms == 0:
        return np.zeros(length, np.float32)
    return _noise(rng, length) * np.float32(speech_rms * 10 ** (-rng.uniform(40, 70) / 20))


def set_peak(audio: np.ndarray, peak_db: float) -> np.ndarray:
    peak = float(np.abs(audio).max())
    return audio if peak == 0 else (audio * (10 ** (peak_db / 20) / peak)).astype(np.float32)


def synth_corpus(
    out: str | Path,
    languages: Sequence[str],
    *,
    train: int,
    dev: int,
    test: int,
    test_hard: int | None = None,
    seed: int = 0,
    noise: bool = False,
    level: bool = False,
    vocab_words: int | None = None,
    plan: SynthPlan = SynthPlan(),
    workers: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Path]:
    """Speaks a corpus into `out`: `SPLIT/LANG/ID.flac` and one `SPLIT.jsonl` manifest per split.

    Everything (sentences, voices, speeds, pitches, noise, levels) is drawn from `seed`, and the
    draws for one utterance depend only on seed, language, split and position, so the corpus is
    the same whatever the thread pool's timing. `vocab_words` keeps only that many of each
    language's words (a fixed random subset), for small models that must learn fast. Returns
    the manifest of each split; `corpus.json` beside them records the recipe.
    """
    out = Path(out)
    for lang in languages:
        synth.get_language(lang)  # an unknown language fails before any audio is made
    counts = {"train": train, "dev": dev, "test": test, "test_hard": test if test_hard is None else test_hard}
    if any(n < 0 for n in counts.values()):
        raise CorpusError(f"split sizes must not be negative: {counts}")
    seen_voices, hard_voices = split_voices(seed, plan.hard_voice_share)
    workers = workers or usable_cores()
    rows: dict[str, list[dict[str, Any]]] = {split: [] for split in counts}
    started = time.monotonic()
    for lang in languages:
        vocab = _vocab_subset(lang, vocab_words, seed)
        sentences = corpus_sentences(lang, counts, seed=seed, plan=plan, vocab=vocab)
        for split, items in sentences.items():
            if not items:
                continue
            utterances = _speak_split(
                lang, split, [s for s, _ in items], seed, plan, seen_voices, hard_voices, workers
            )
            rows[split] += _write_spoken(
                out, split, lang, utterances, items, seed, plan, noise=noise, level=level
            )
            if progress:
                progress(f"{lang} {split}: {len(items)} utterances ({time.monotonic() - started:.0f} s)")
    manifests = {split: _write_manifest(out / f"{split}.jsonl", lines) for split, lines in rows.items()}
    recipe = {
        "seed": seed,
        "languages": list(languages),
        "counts": counts,
        "noise": noise,
        "level": level,
        "vocab_words": vocab_words,
        "voices": {"train_dev_test": list(seen_voices), "test_hard": list(hard_voices)},
        "plan": asdict(plan),
        "numbers_languages": [lang for lang in languages if synth.supports_numbers(lang)],
    }
    (out / "corpus.json").write_text(
        json.dumps(recipe, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    return manifests


def _write_spoken(
    out: Path,
    split: str,
    lang: str,
    utterances: Sequence[synth.Utterance],
    items: Sequence[tuple[str, bool]],
    seed: int,
    plan: SynthPlan,
    *,
    noise: bool,
    level: bool,
) -> list[dict[str, Any]]:
    """Degrades (`_degrade`) and writes one language's spoken split; returns its manifest rows."""
    rows = []
    for index, (utt, (_, has_number)) in enumerate(zip(utterances, items, strict=True)):
        audio, effects = _degrade(utt.audio, lang, split, index, seed, plan, noise=noise, level=level)
        fields = {"voice": utt.variant, "speed": utt.speed, "pitch": utt.pitch, "numbers": has_number}
        rows.append(_write_utterance(out, split, lang, index, audio, utt.text, fields | effects))
    return rows


def _write_utterance(
    out: Path, split: str, lang: str, index: int, audio: np.ndarray, text: str, fields: Mapping[str, Any]
) -> dict[str, Any]:
    """Writes `SPLIT/LANG/ID.flac` under `out` and returns its manifest row."""
    if np.abs(audio).max(initial=0.0) > 1.0:
        audio = set_peak(audio, -1.0)  # noise can push peaks past full scale; FLAC would clip them
    name = f"{lang}-{split}-{index:06d}"
    folder = out / split / lang
    folder.mkdir(parents=True, exist_ok=True)
    sf.write(folder / f"{name}.flac", audio, TARGET_RATE, format="FLAC", subtype="PCM_16")
    return {
        "id": name,
        "audio": f"{split}/{lang}/{name}.flac",
        "text": text,
        "language": lang,
        "duration": round(len(audio) / TARGET_RATE, 4),
        "split": split,
        **fields,
    }


def _write_manifest(path: Path, rows: Iterable[Mapping[str, Any]]) -> Path:
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def _vocab_subset(lang: str, size: int | None, seed: int) -> list[str] | None:
    if size is None:
        return None
    words = synth.vocabulary(lang)
    if size >= len(words):
        return words
    picks = synth._rng(seed, lang, "vocabulary").choice(len(words), size=size, replace=False)
    return sorted(words[i] for i in picks)


def _split_seed(seed: int, split: str) -> int:
    return synth.stable_hash(f"{seed}:{split}")


@functools.cache
def _kokoro(threads: int) -> Kokoro:
    """One Kokoro session for a whole corpus, not one per language and split."""
    return Kokoro(threads=threads)


def _speak_split(
    lang: str,
    split: str,
    texts: list[str],
    seed: int,
    plan: SynthPlan,
    seen_voices: Sequence[str],
    hard_voices: Sequence[str],
    workers: int,
) -> list[synth.Utterance]:
    """Speaks one split; `test_hard` alternates between a slow and a fast speed range outside
    training's. A `plan.kokoro` share of the utterances, drawn from the seed, Kokoro speaks."""
    # A stream of its own: `speak_with_kokoro` draws the speakers from (split seed, lang, "kokoro").
    draw = np.random.default_rng(
        [_split_seed(seed, split), synth.stable_hash(lang), synth.stable_hash("kokoro share")]
    )
    neural = {int(i) for i in np.flatnonzero(draw.random(len(texts)) < plan.kokoro)}
    rest = [text for i, text in enumerate(texts) if i not in neural]
    if split != "test_hard":
        spoken = _speak(lang, split, rest, seed, seen_voices, (plan.speeds,), plan.pitches, workers)
    else:
        spoken = _speak(lang, split, rest, seed, hard_voices, plan.hard_speeds, plan.hard_pitches, workers)
    if not neural:
        return spoken
    by_kokoro = iter(
        speak_with_kokoro(
            [texts[i] for i in sorted(neural)],
            lang,
            seed=_split_seed(seed, split),
            speeds=plan.kokoro_speeds,
            kokoro=_kokoro(workers),
        )
    )
    by_espeak = iter(spoken)
    return [next(by_kokoro) if i in neural else next(by_espeak) for i in range(len(texts))]


def _speak(
    lang: str,
    split: str,
    texts: list[str],
    seed: int,
    voices: Sequence[str],
    speed_ranges: Sequence[tuple[int, int]],
    pitches: tuple[int, int],
    workers: int,
) -> list[synth.Utterance]:
    """Speaks `texts` with `voices`, utterance i in speed range i mod len(speed_ranges)."""
    if len(speed_ranges) == 1:
        return synth.speak_texts(
            texts,
            lang,
            seed=_split_seed(seed, split),
            variants=voices,
            speeds=speed_ranges[0],
            pitches=pitches,
            workers=workers,
        )
    spoken: dict[int, synth.Utterance] = {}
    for r, speeds in enumerate(speed_ranges):
        positions = range(r, len(texts), len(speed_ranges))
        if not positions:
            continue
        utterances = synth.speak_texts(
            [texts[i] for i in positions],
            lang,
            seed=_split_seed(seed, f"{split}:{r}"),
            variants=voices,
            speeds=speeds,
            pitches=pitches,
            workers=workers,
        )
        spoken.update(zip(positions, utterances, strict=True))
    return [spoken[i] for i in range(len(texts))]


def _degrade(
    audio: np.ndarray,
    lang: str,
    split: str,
    index: int,
    seed: int,
    plan: SynthPlan,
    *,
    noise: bool,
    level: bool,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Noise, channel and level for one utterance, drawn from its own generator; returns what was done."""
    rng = np.random.default_rng([seed, synth.stable_hash(lang), synth.stable_hash(split), index])
    # Every key is on every line, so a manifest is one table for `datasets`.
    effects: dict[str, Any] = {"snr_db": None, "telephone": False, "peak_db": None}
    if split == "test_hard":
        effects["snr_db"] = round(float(rng.uniform(*plan.hard_snr_db)), 2)
        audio = telephone(add_noise(audio, effects["snr_db"], rng), plan.telephone_rate)
        effects["telephone"] = True
    elif noise and rng.random() < plan.noise_share:
        effects["snr_db"] = round(float(rng.uniform(*plan.noise_snr_db)), 2)
        audio = add_noise(audio, effects["snr_db"], rng)
    if level:
        effects["peak_db"] = round(float(rng.uniform(*plan.level_db)), 2)
        audio = set_peak(audio, effects["peak_db"])
    return audio.astype(np.float32, copy=False), effects


#: `condition_splits`: test_hard's conditions one at a time, each on the test split's sentences.
CONDITIONS = (
    "cond_voices",
    "cond_speeds",
    "cond_noise",
    "cond_telephone",
    "cond_noise_telephone",
    "cond_pauses",
)


def condition_splits(
    folder: str | Path,
    *,
    languages: Sequence[str] | None = None,
    per_language: int | None = None,
    workers: int | None = None,
) -> dict[str, Path]:
    """Adds to a synthetic corpus one split per `test_hard` condition, each applied alone.

    `test_hard` changes voices, speaking rates, noise and channel at once, so its error says
    that a model fails on unfamiliar speech but not which change it fails on, and so not what
    training should add. These splits take the `test` split's sentences (first `per_language`
    of each language) and change one thing: the held-out voices at training's speeds
    (`cond_voices`), training's voices at the held-out speeds (`cond_speeds`), `test_hard`'s noise
    (`cond_noise`), its telephone channel (`cond_telephone`), or both (`cond_noise_telephone`).
    The voices, speeds and SNRs come from the corpus's own recipe (`corpus.json`). One more is
    not in `test_hard` but in real requests: two sentences with a 1-3 s pause between them
    (`cond_pauses`: each utterance, then `silence`, then the next one).
    """
    folder = Path(folder)
    recipe, plan = _recipe(folder)
    seed = recipe["seed"]
    seen_voices, hard_voices = recipe["voices"]["train_dev_test"], recipe["voices"]["test_hard"]
    test = read_manifest(folder / "test.jsonl")
    languages = list(languages or recipe["languages"])
    missing = [lang for lang in languages if not any(e.language == lang for e in test)]
    if missing:
        raise CorpusError(f"{folder}: the test split has no {', '.join(missing)} utterances")
    workers = workers or usable_cores()
    rows: dict[str, list[dict[str, Any]]] = {cond: [] for cond in CONDITIONS}
    for lang in languages:
        examples = [e for e in test if e.language == lang][:per_language]
        texts = [e.text for e in examples]
        voices_and_speeds = {
            "cond_voices": (hard_voices, (plan.speeds,)),
            "cond_speeds": (seen_voices, plan.hard_speeds),
        }
        spoken = {
            cond: _speak(lang, cond, texts, seed, voices, speeds, plan.pitches, workers)
            for cond, (voices, speeds) in voices_and_speeds.items()
        }
        cleans = [e.audio() for e in examples]
        for index, example in enumerate(examples):
            clean = cleans[index]
            rng = np.random.default_rng([seed, synth.stable_hash(f"{lang}:conditions"), index])
            snr_db = round(float(rng.uniform(*plan.hard_snr_db)), 2)
            noisy = add_noise(clean, snr_db, rng)
            following = (index + 1) % len(examples)
            pause = round(float(rng.uniform(1.0, 3.0)), 2)
            paused = np.concatenate([clean, silence(pause, rms(clean), rng), cleans[following]])
            made: dict[str, tuple[np.ndarray, dict[str, Any]]] = {
                "cond_noise": (noisy, {"snr_db": snr_db}),
                "cond_telephone": (telephone(clean, plan.telephone_rate), {"telephone": True}),
                "cond_noise_telephone": (
                    telephone(noisy, plan.telephone_rate),
                    {"snr_db": snr_db, "telephone": True},
                ),
            }
            for cond, utterances in spoken.items():
                utt = utterances[index]
                made[cond] = (utt.audio, {"voice": utt.variant, "speed": utt.speed, "pitch": utt.pitch})
            for cond, (audio, changed) in made.items():
                fields = example.meta | changed
                rows[cond].append(_write_utterance(folder, cond, lang, index, audio, example.text, fields))
            text = f"{example.text} {examples[following].text}"
            fields = example.meta | {"pause_seconds": pause}
            rows["cond_pauses"].append(
                _write_utterance(folder, "cond_pauses", lang, index, paused, text, fields)
            )
    return {cond: _write_manifest(folder / f"{cond}.jsonl", rows[cond]) for cond in CONDITIONS}


def _recipe(folder: Path) -> tuple[dict[str, Any], SynthPlan]:
    """The `corpus.json` that `synth_corpus` wrote in `folder`, and its plan."""
    try:
        recipe = json.loads((folder / "corpus.json").read_text(encoding="utf-8"))
        recipe["seed"] = int(recipe["seed"])
        if not {"train_dev_test", "test_hard"} <= set(recipe["voices"]):
            raise KeyError("voices")
        plan = SynthPlan(**{k: json_tuples(v) for k, v in recipe["plan"].items()})
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CorpusError(f"{folder}: not a corpus made by `lidroute corpus synth` ({exc})") from None
    return recipe, plan


#: `tuning_split`'s split: more held-out sentences, spoken as `dev` is, to tune decoders on.
TUNE_SPLIT = "tune"


def tuning_split(
    folder: str | Path,
    *,
    languages: Sequence[str] | None = None,
    per_language: int = 200,
    workers: int | None = None,
) -> Path:
    """Adds to a synthetic corpus a `tune` split: new sentences, spoken and degraded as `dev` is.

    A recognizer's LM fusion (`asr_worker lm`) picks three numbers on held-out speech, and 50
    dev sentences per language make a noisy choice: English's recognizer trained 8,000 updates
    further chose a fusion that lost its whole acoustic gain on 300 new `test_hard` utterances
    (20.5 % CER, where the earlier run's fusion read 18.6 %). A larger dev split would do, but
    every split is cut from one pool of sentences whose draws depend on the total, so a corpus
    with a larger dev split has other training sentences, and every model trained on it
    changes. This split is drawn apart (its own seed) and leaves out every sentence the corpus
    already has, so the corpus's splits, and the models trained on them, stay as they are. An
    earlier `tune` split is replaced, whichever languages it had.
    """
    folder = Path(folder)
    recipe, plan = _recipe(folder)
    seed = recipe["seed"]
    languages = list(languages or recipe["languages"])
    unknown = [lang for lang in languages if lang not in recipe["languages"]]
    if unknown:
        raise CorpusError(f"{folder}: the corpus has no {', '.join(unknown)}")
    if per_language < 1:
        raise CorpusError(f"per_language must be positive, got {per_language}")
    have: dict[str, set[str]] = defaultdict(set)
    for split in SPLITS:
        if (folder / f"{split}.jsonl").is_file():
            for example in read_manifest(folder / f"{split}.jsonl"):
                have[example.language].add(example.text)
    workers = workers or usable_cores()
    voices = recipe["voices"]["train_dev_test"]
    rows: list[dict[str, Any]] = []
    for lang in languages:
        vocab = _vocab_subset(lang, recipe.get("vocab_words"), seed)
        wanted = {TUNE_SPLIT: per_language + len(have[lang])}
        pool = corpus_sentences(lang, wanted, seed=_split_seed(seed, TUNE_SPLIT), plan=plan, vocab=vocab)
        items = [item for item in pool[TUNE_SPLIT] if item[0] not in have[lang]][:per_language]
        texts = [text for text, _ in items]
        utterances = _speak(lang, TUNE_SPLIT, texts, seed, voices, (plan.speeds,), plan.pitches, workers)
        rows += _write_spoken(
            folder,
            TUNE_SPLIT,
            lang,
            utterances,
            items,
            seed,
            plan,
            noise=bool(recipe.get("noise")),
            level=bool(recipe.get("level")),
        )
    recipe["tune"] = {"languages": languages, "per_language": per_language}
    (folder / "corpus.json").write_text(
        json.dumps(recipe, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    return _write_manifest(folder / f"{TUNE_SPLIT}.jsonl", rows)


def json_tuples(value: Any) -> Any:
    """JSON lists back to the tuples that a frozen recipe dataclass (`SynthPlan`) holds."""
    return tuple(json_tuples(v) for v in value) if isinstance(value, list) else value


# --------------------------------------------------------------------------- statistics


def corpus_stats(folder: str | Path) -> dict[str, dict[str, dict[str, float]]]:
    """Utterances and hours per split and language, read from the manifests in `folder`."""
    folder = Path(folder)
    manifests = sorted(folder.glob("*.jsonl"))
    if not manifests:
        raise CorpusError(f"no *.jsonl manifests in {folder}")
    stats: dict[str, dict[str, dict[str, float]]] = {}
    for manifest in manifests:
        split: dict[str, dict[str, float]] = defaultdict(lambda: {"utterances": 0, "hours": 0.0})
        for example in read_manifest(manifest):
            split[example.language]["utterances"] += 1
            split[example.language]["hours"] += (example.duration or 0.0) / 3600
        stats[manifest.stem] = dict(sorted(split.items()))
    return stats


def format_stats(stats: Mapping[str, Mapping[str, Mapping[str, float]]]) -> str:
    lines = [f"{'split':10} {'lang':6} {'utts':>7} {'hours':>8}"]
    for split, languages in stats.items():
        for lang, numbers in languages.items():
            lines.append(f"{split:10} {lang:6} {int(numbers['utterances']):7d} {numbers['hours']:8.3f}")
        total_utts = sum(int(n["utterances"]) for n in languages.values())
        total_hours = sum(n["hours"] for n in languages.values())
        lines.append(f"{split:10} {'all':6} {total_utts:7d} {total_hours:8.3f}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- for model cards


def synth_command(folder: str | Path) -> str | None:
    """The `lidroute corpus synth` call that makes `folder` again (from its corpus.json), for model
    cards; None when the folder is not a synthetic corpus."""
    try:
        recipe = json.loads((Path(folder) / "corpus.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    counts = recipe["counts"]
    flags = [
        f"--out {folder}",
        f"--languages {','.join(recipe['languages'])}",
        *(f"--{split.replace('_', '-')} {counts[split]}" for split in SPLITS),
        f"--seed {recipe['seed']}",
    ]
    flags += [f"--{flag}" for flag in ("noise", "level") if recipe.get(flag)]
    if recipe.get("vocab_words"):
        flags.append(f"--vocab-words {recipe['vocab_words']}")
    numbers = recipe.get("plan", {}).get("numbers", SynthPlan.numbers)
    if numbers != SynthPlan.numbers:
        flags.append(f"--numbers {numbers}")
    return "lidroute corpus synth " + " ".join(flags)


def tune_command(folder: str | Path) -> str | None:
    """The `lidroute corpus tune` call that made `folder`'s `tune` split, for model cards; None
    when it has none."""
    try:
        tune = json.loads((Path(folder) / "corpus.json").read_text(encoding="utf-8"))["tune"]
    except (OSError, ValueError, KeyError):
        return None
    languages = ",".join(tune["languages"])
    return f"lidroute corpus tune {folder} --languages {languages} --per-language {tune['per_language']}"


__all__ = [
    "SPLITS",
    "TUNE_SPLIT",
    "CorpusError",
    "Example",
    "SynthPlan",
    "corpus_stats",
    "read_audio",
    "read_common_voice",
    "read_examples",
    "read_hf_dataset",
    "read_manifest",
    "read_transcript_tables",
    "synth_corpus",
    "tuning_split",
]
