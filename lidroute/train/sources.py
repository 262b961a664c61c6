"""Readers of the speech data this project did not make: Common Voice folders, Hugging Face
datasets, and tables of recorded clips; and `read_examples`, which tells them apart.

Each reads its source into `Example`s (`lidroute.train.example`) without loading any audio, so
that training and evaluation take real data exactly as they take the synthetic corpus, and one
`--data` flag on every command reads them all.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lidroute.audio import resample, to_mono
from lidroute.train.example import CorpusError, Example, read_audio
from lidroute.train.manifest import read_manifest

if TYPE_CHECKING:
    import datasets

#: Common Voice's TSV files, by our split names.
COMMON_VOICE_SPLITS = {"train": "train.tsv", "dev": "dev.tsv", "test": "test.tsv"}


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
    dataset = _load_hf_split(source, split, config)
    _require_columns(
        dataset, source, [audio_column, text_column, *([language_column] if language_column else [])]
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


def _load_hf_split(source: str | Path, split: str, config: str | None) -> datasets.Dataset:
    """One split of a dataset: a `save_to_disk` folder and a hub name load by different calls, and
    either way a failure is a `CorpusError`, so that a command names what it could not load."""
    import datasets

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
    return loaded  # type: ignore[return-value]


def _require_columns(dataset: datasets.Dataset, source: str | Path, wanted: Sequence[str]) -> None:
    """Refuses a dataset without the columns asked for, naming those it has: a dataset's column
    names vary (`sentence`, `transcription`, ...) and the flags must be set to match."""
    missing = [c for c in wanted if c not in dataset.column_names]
    if missing:
        raise CorpusError(
            f"dataset {source} has no column(s) {', '.join(missing)}; "
            f"it has {', '.join(dataset.column_names)}"
        )


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
