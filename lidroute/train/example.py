"""The one example type every speech source is read into, and the error its readers raise.

Training and evaluation must run the same way on the synthetic speech this machine can make and
on real data elsewhere (a Common Voice download, a Hugging Face dataset), so every source is
read into `Example`s whose audio comes out as 16 kHz mono float32 on demand, decoded and
resampled by the same code that serves requests (`lidroute.audio`). The readers are in
`lidroute.train.sources` and `lidroute.train.manifest`.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from lidroute.audio import TARGET_RATE, resample, to_mono


class CorpusError(ValueError):
    """A data source that cannot be read as asked: missing folder, file, column or language."""


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
