"""OpenAI's `verbose_json` from a lidroute result; its subtitles and segments are the client
library's (`lidroute.client`).

Whisper's per-segment statistics are filled with lidroute's own: `avg_logprob` is the mean log
word confidence, `no_speech_prob` 1 where the router heard no speech, and `compression_ratio`
the text's zlib ratio, as Whisper computes it.
"""

from __future__ import annotations

import math
import zlib
from typing import Any

from lidroute.client import Segment, Transcription

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
