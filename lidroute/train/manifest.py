"""The project's own on-disk corpus format: FLAC files plus one JSONL manifest per split.

A manifest line holds `audio` (a path relative to the manifest), `text`, `language` and
`duration`, and whatever else its maker knew (voice, speed, noise, ...), which `read_manifest`
keeps as metadata. The format is plain enough that `datasets.load_dataset("json",
data_files=...)` also reads it; the synthetic corpus (`lidroute.train.synthetic`) writes it,
and `corpus_stats` summarises any folder of it.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from lidroute.audio import TARGET_RATE
from lidroute.train.augment import set_peak
from lidroute.train.example import CorpusError, Example

#: Fields every manifest line has; anything else on the line is kept as metadata.
MANIFEST_FIELDS = ("audio", "text", "language", "duration")


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


def write_utterance(
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


def write_manifest(path: Path, rows: Iterable[Mapping[str, Any]]) -> Path:
    """Writes `rows` one JSON object a line, not ASCII-escaped, so that a manifest's transcripts stay
    readable in any script."""
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


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
    """`corpus_stats` as a table, with an `all` line per split."""
    lines = [f"{'split':10} {'lang':6} {'utts':>7} {'hours':>8}"]
    for split, languages in stats.items():
        for lang, numbers in languages.items():
            lines.append(f"{split:10} {lang:6} {int(numbers['utterances']):7d} {numbers['hours']:8.3f}")
        total_utts = sum(int(n["utterances"]) for n in languages.values())
        total_hours = sum(n["hours"] for n in languages.values())
        lines.append(f"{split:10} {'all':6} {total_utts:7d} {total_hours:8.3f}")
    return "\n".join(lines)
