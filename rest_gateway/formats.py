"""OpenAI's transcription response formats (json, text, srt, vtt, verbose_json) from a lidroute result.

lidroute returns one transcript with word timings; OpenAI's clients expect segments too, for
subtitles and for `verbose_json`. Segments are cut where the speaker pauses (and before they
grow past `longest` seconds), which is where subtitles break and what Whisper's segments are
near. Whisper's per-segment statistics are filled with lidroute's own: `avg_logprob` is the
mean log word confidence, `no_speech_prob` 1 where the router heard no speech, and
`compression_ratio` the text's zlib ratio, as Whisper computes it.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from typing import Any

from lidroute.client import Transcription

FORMATS = ("json", "text", "srt", "verbose_json", "vtt")
GRANULARITIES = ("segment", "word")
#: What `verbose_json` says the language is: the English name, lower case, as OpenAI writes it, for
#: the languages lidroute's bundled models and its language ID know; any other code as it is.
LANGUAGE_NAMES = {
    "de": "german",
    "en": "english",
    "es": "spanish",
    "fr": "french",
    "hi": "hindi",
    "it": "italian",
    "mr": "marathi",
    "pt": "portuguese",
    "qu": "quechua",
    "ru": "russian",
    "sw": "swahili",
    "tr": "turkish",
}


@dataclass(frozen=True)
class Word:
    word: str
    start: float
    end: float
    confidence: float


@dataclass(frozen=True)
class Segment:
    id: int
    start: float
    end: float
    words: tuple[Word, ...]

    @property
    def text(self) -> str:
        return " ".join(w.word for w in self.words)


def segments(result: Transcription, *, pause: float = 0.6, longest: float = 15.0) -> list[Segment]:
    """The transcript cut at pauses of at least `pause` s and before a segment passes `longest` s;
    without word timings, one segment over the whole audio."""
    words = [Word(*w) for w in result.words]
    if not words:
        if not result.transcript:
            return []
        audio = result.timing.get("audio", 0.0)
        return [
            Segment(
                0,
                0.0,
                audio,
                tuple(Word(w, 0.0, audio, result.confidence) for w in result.transcript.split()),
            )
        ]
    groups: list[list[Word]] = [[words[0]]]
    for word in words[1:]:
        current = groups[-1]
        if word.start - current[-1].end >= pause or word.end - current[0].start > longest:
            groups.append([word])
        else:
            current.append(word)
    return [Segment(i, g[0].start, g[-1].end, tuple(g)) for i, g in enumerate(groups)]


def clock(seconds: float, decimal: str) -> str:
    """A subtitle timestamp, HH:MM:SS followed by `decimal` and milliseconds."""
    ms = round(max(seconds, 0.0) * 1000)
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    secs, ms = divmod(ms, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal}{ms:03d}"


def srt(parts: list[Segment]) -> str:
    return "".join(
        f"{i}\n{clock(s.start, ',')} --> {clock(s.end, ',')}\n{s.text}\n\n" for i, s in enumerate(parts, 1)
    )


def vtt(parts: list[Segment]) -> str:
    return "WEBVTT\n\n" + "".join(
        f"{clock(s.start, '.')} --> {clock(s.end, '.')}\n{s.text}\n\n" for s in parts
    )


def _compression_ratio(text: str) -> float:
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


def verbose_json(result: Transcription, parts: list[Segment], granularities: list[str]) -> dict[str, Any]:
    """OpenAI's `verbose_json`: segments unless only words were asked for, words when asked for."""
    body: dict[str, Any] = {
        "task": "transcribe",
        "language": LANGUAGE_NAMES.get(result.language, result.language),
        "duration": round(result.timing.get("audio", 0.0), 3),
        "text": result.transcript,
    }
    if "segment" in granularities or not granularities:
        no_speech = 1.0 if result.source == "NO_SPEECH" else 0.0
        body["segments"] = [
            {
                "id": s.id,
                "seek": round(s.start * 100),
                "start": round(s.start, 3),
                "end": round(s.end, 3),
                "text": " " + s.text,
                "tokens": [],
                "temperature": 0.0,
                "avg_logprob": sum(math.log(max(w.confidence, 1e-6)) for w in s.words) / len(s.words),
                "compression_ratio": _compression_ratio(s.text),
                "no_speech_prob": no_speech,
            }
            for s in parts
        ]
    if "word" in granularities:
        body["words"] = [
            {"word": w.word, "start": round(w.start, 3), "end": round(w.end, 3)}
            for s in parts
            for w in s.words
        ]
    return body
