"""Audio in: validation against limits, decoding, downmixing and resampling to 16 kHz mono.

Everything downstream (language ID, the queue, the workers) sees only 16 kHz mono float32, or
its PCM16 form on the wire. Container files go through an allow-list and caps checked on the
header before any decoding, because libsndfile has a history of crashing on crafted files.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import soundfile as sf
import soxr
from google.protobuf import duration_pb2

from lidroute.errors import InvalidArgument, LimitExceeded

TARGET_RATE = 16000
#: soundfile major formats we decode; everything else is refused before it reaches libsndfile's decoders.
ALLOWED_CONTAINERS = frozenset({"WAV", "WAVEX", "FLAC", "OGG", "MP3"})
CONTAINERS = "WAV, FLAC, OGG (Vorbis or Opus) or MP3"


def _mulaw_table() -> np.ndarray:
    """G.711 μ-law byte -> float sample: telephony's 8-bit encoding (Google's MULAW), expanded once."""
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    magnitude = (((u & 0x0F) << 3) + 0x84) << ((u >> 4) & 0x07)
    return (np.where(u & 0x80, 0x84 - magnitude, magnitude - 0x84) / 32768.0).astype(np.float32)


MULAW_TABLE = _mulaw_table()


@dataclass(frozen=True)
class AudioLimits:
    max_seconds: float = 120.0
    max_bytes: int = 16 * 1024 * 1024
    max_chunk_bytes: int = 1024 * 1024
    min_sample_rate: int = 8000
    max_sample_rate: int = 48000
    max_channels: int = 2

    def check_rate(self, rate: int) -> None:
        if not self.min_sample_rate <= rate <= self.max_sample_rate:
            raise InvalidArgument(
                f"sample_rate_hertz {rate} is outside the supported range "
                f"{self.min_sample_rate}-{self.max_sample_rate} Hz"
            )

    def check_channels(self, channels: int) -> None:
        if not 1 <= channels <= self.max_channels:
            raise InvalidArgument(
                f"audio_channel_count {channels} is not supported (1 to {self.max_channels})"
            )

    def check_total_bytes(self, n: int) -> None:
        if n > self.max_bytes:
            raise LimitExceeded(f"audio exceeds the limit of {self.max_bytes} bytes (max_audio_bytes)")

    def check_chunk(self, n: int) -> None:
        if n > self.max_chunk_bytes:
            raise LimitExceeded(
                f"an audio message of {n} bytes exceeds the limit of {self.max_chunk_bytes} bytes "
                "(max_chunk_bytes); send smaller chunks"
            )

    def check_duration(self, seconds: float) -> None:
        if seconds > self.max_seconds:
            raise LimitExceeded(f"audio longer than the limit of {self.max_seconds:g} s (max_audio_seconds)")


def frame_power(audio: np.ndarray, frame: int) -> np.ndarray:
    """Mean power of each whole `frame` of samples (a trailing part frame is left out)."""
    frames = len(audio) // frame
    return (audio[: frames * frame].astype(np.float64) ** 2).reshape(frames, frame).mean(axis=1)


def speech_bounds(audio: np.ndarray, threshold: float = 0.02, frame: int = 160) -> tuple[int, int]:
    """Sample span from the first to the end of the last `frame` whose level is over `threshold`
    times the loudest frame's: where clean speech starts and stops, cheaply (no VAD model).

    The whole of `audio` when it is shorter than a frame or has no level at all.
    """
    if len(audio) < frame:
        return 0, len(audio)
    level = np.sqrt(frame_power(audio, frame))
    loud = np.flatnonzero(level > threshold * max(float(level.max()), 1e-6))
    if len(loud) == 0:
        return 0, len(audio)
    return int(loud[0]) * frame, (int(loud[-1]) + 1) * frame


def rms(audio: np.ndarray) -> float:
    """Root mean square level of `audio`; 0 for no samples."""
    return float(np.sqrt(np.mean(audio.astype(np.float64) ** 2))) if len(audio) else 0.0


def speech_segments(
    audio: np.ndarray,
    *,
    min_pause: float = 0.5,
    keep: float = 0.2,
    quiet_db: float = 35.0,
    max_seconds: float = 30.0,
    frame: int = 320,
) -> list[tuple[int, int]]:
    """Sample spans of `audio` to recognise one at a time: the speech between its long pauses.

    A recognizer trained on single utterances hears a request with long silences in it (a caller
    who pauses, a line left open) as one strange utterance and loses words around them; cut at
    the pauses, each part is the kind of input it knows. A pause is a run of at least
    `min_pause` s of 20 ms frames `quiet_db` under the loud frames (the 98th percentile, so a
    short word in a long silence still sets it): digital silence and a faint hiss count, noisy
    speech does not. `keep` s of a pause stay on each side of the speech. A part longer than
    `max_seconds` is cut at its quietest frame in its last half, which bounds the cost of
    self-attention on long requests. Audio with no pause comes back whole, as one span.
    """
    n = len(audio)
    frames = n // frame
    if frames == 0:
        return [(0, n)]
    power = frame_power(audio, frame)
    level = 10 * np.log10(power + 1e-20)
    quiet = level < np.percentile(level, 98) - quiet_db
    # Runs of quiet frames long enough to cut at, as [start, end) frame pairs.
    edges = np.flatnonzero(np.diff(np.concatenate(([0], quiet.astype(np.int8), [0]))))
    pad = round(keep * TARGET_RATE / frame)
    spans: list[tuple[int, int]] = []
    start = 0
    for a, b in zip(edges[::2], edges[1::2], strict=True):
        if (b - a) * frame < min_pause * TARGET_RATE:
            continue
        if a > 0:
            spans.append((start, (a + pad) * frame))
        start = (b - pad) * frame if b < frames else n
    if start < n:
        spans.append((start, n))
    spans = spans or [(0, n)]
    longest = round(max_seconds * TARGET_RATE)
    out: list[tuple[int, int]] = []
    for a, b in spans:
        while b - a > longest:
            lo, hi = (a + longest // 2) // frame, (a + longest) // frame
            cut = (lo + int(np.argmin(power[lo:hi]))) * frame
            out.append((a, cut))
            a = cut
        out.append((a, b))
    return out


def pcm16_to_float(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0


def float_to_pcm16(audio: np.ndarray) -> bytes:
    return (np.clip(audio, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()


def to_mono(audio: np.ndarray) -> np.ndarray:
    return audio.mean(axis=1, dtype=np.float32) if audio.ndim == 2 else audio.astype(np.float32, copy=False)


def resample(audio: np.ndarray, rate: int) -> np.ndarray:
    if rate == TARGET_RATE:
        return audio.astype(np.float32, copy=False)
    return soxr.resample(audio, rate, TARGET_RATE, quality="HQ").astype(np.float32, copy=False)


def looks_like_container(data: bytes) -> bool:
    return data[:4] in (b"RIFF", b"fLaC", b"OggS", b"RF64") or data[:3] == b"ID3"


def decode_container(data: bytes, limits: AudioLimits, expected_rate: int = 0) -> np.ndarray:
    """Decodes a whole audio file to 16 kHz mono after checking its header against the limits."""
    return np.concatenate(list(container_blocks(data, limits, expected_rate)))


def _resampler(rate: int) -> soxr.ResampleStream:
    """Resamples mono audio to 16 kHz a piece at a time, as `resample` does it whole."""
    return soxr.ResampleStream(rate, TARGET_RATE, 1, dtype="float32", quality="HQ")


#: Seconds of a file decoded at a time: an hour of 44.1 kHz stereo decoded whole would be 1.3 GB
#: of float samples in the router; a block of it is a few MB.
BLOCK_SECONDS = 10.0


def container_blocks(data: bytes, limits: AudioLimits, expected_rate: int = 0) -> Iterator[np.ndarray]:
    """A whole audio file as 16 kHz mono, `BLOCK_SECONDS` at a time, its header checked against the
    limits before the first block: decoding never holds more than a block of it."""
    if not data:
        raise InvalidArgument("audio is empty")
    limits.check_total_bytes(len(data))
    try:
        sound = sf.SoundFile(io.BytesIO(data))
    except (sf.LibsndfileError, RuntimeError, TypeError):
        raise InvalidArgument(
            f"the audio is not a file lidroute reads ({CONTAINERS}) or it is corrupt; raw audio needs "
            "encoding LINEAR16 (or MULAW) and sample_rate_hertz"
        ) from None
    with sound:
        if sound.format not in ALLOWED_CONTAINERS:
            raise InvalidArgument(f"audio container {sound.format} is not supported ({CONTAINERS})")
        rate = sound.samplerate
        limits.check_rate(rate)
        limits.check_channels(sound.channels)
        if expected_rate and expected_rate != rate:
            raise InvalidArgument(f"sample_rate_hertz {expected_rate} does not match the file's {rate} Hz")
        if sound.frames > 0:
            limits.check_duration(sound.frames / rate)
        resampler = None if rate == TARGET_RATE else _resampler(rate)
        block, read = round(BLOCK_SECONDS * rate), 0
        while True:
            try:
                audio = sound.read(min(block, int(limits.max_seconds * rate) + 1 - read), "float32", True)
            except (sf.LibsndfileError, RuntimeError) as exc:
                raise InvalidArgument(
                    f"could not decode the audio file: {getattr(exc, 'error_string', exc)}"
                ) from None
            read += len(audio)
            limits.check_duration(read / rate)
            last = len(audio) == 0
            if last and read == 0:
                raise InvalidArgument("audio file holds no samples")
            mono = to_mono(audio)
            yield mono if resampler is None else resampler.resample_chunk(mono, last=last)
            if last:
                return


def decode_pcm16(data: bytes, rate: int, channels: int, limits: AudioLimits) -> np.ndarray:
    """Decodes a whole buffer of raw LINEAR16 audio; the unary call's path."""
    decoder = StreamDecoder.raw(rate, channels, limits)
    return np.concatenate([decoder.feed(data), decoder.finish()])


class StreamDecoder:
    """Turns a stream of client audio messages into 16 kHz mono float32 as they arrive.

    Raw LINEAR16 (or 8-bit μ-law) is decoded and resampled chunk by chunk (a chunk may split a
    sample or a stereo frame: the remainder waits for the next one). A container file cannot be
    decoded before its header and its end are in, so it is buffered and, when the stream ends,
    decoded a block at a time (`rest`).
    """

    def __init__(
        self, *, rate: int, channels: int, container: bool, limits: AudioLimits, mulaw: bool = False
    ) -> None:
        self.rate = rate
        self.channels = channels
        self.container = container
        self.limits = limits
        self.mulaw = mulaw
        self.width = 1 if mulaw else 2
        self.bytes_in = 0
        self.samples_out = 0
        self._pending = b""
        self._buffer: list[bytes] = []
        self._resampler = None if container or rate == TARGET_RATE else _resampler(rate)

    @classmethod
    def raw(cls, rate: int, channels: int, limits: AudioLimits, *, mulaw: bool = False) -> StreamDecoder:
        """Raw samples: LINEAR16, or 8-bit μ-law with `mulaw`."""
        limits.check_rate(rate)
        limits.check_channels(channels)
        return cls(rate=rate, channels=channels, container=False, limits=limits, mulaw=mulaw)

    @classmethod
    def for_container(cls, limits: AudioLimits, expected_rate: int = 0) -> StreamDecoder:
        return cls(rate=expected_rate, channels=0, container=True, limits=limits)

    @property
    def encoding(self) -> str:
        return "MULAW" if self.mulaw else "LINEAR16"

    @property
    def seconds(self) -> float:
        return self.samples_out / TARGET_RATE

    def feed(self, chunk: bytes) -> np.ndarray:
        self.limits.check_chunk(len(chunk))
        self.bytes_in += len(chunk)
        self.limits.check_total_bytes(self.bytes_in)
        if self.container:
            self._buffer.append(chunk)
            return np.zeros(0, np.float32)
        if self.bytes_in == len(chunk) and looks_like_container(chunk):
            raise InvalidArgument(
                f"{self.encoding} audio must be raw samples; this stream starts with a file header "
                "(use encoding ENCODING_UNSPECIFIED for audio files)"
            )
        data = self._pending + chunk
        frame = self.width * self.channels
        usable = len(data) - len(data) % frame
        self._pending = data[usable:]
        if self.mulaw:
            samples = MULAW_TABLE[np.frombuffer(data[:usable], dtype=np.uint8)]
        else:
            samples = np.frombuffer(data[:usable], dtype="<i2").astype(np.float32) / 32768.0
        if self.channels > 1:
            samples = samples.reshape(-1, self.channels)
        return self._emit(to_mono(samples), last=False)

    def finish(self) -> np.ndarray:
        return np.concatenate(list(self.rest()))

    def rest(self) -> Iterator[np.ndarray]:
        """What the end of the stream lets out: a container file, decoded a block at a time
        (`container_blocks`), or the resampler's last samples of raw audio."""
        if self.container:
            data = b"".join(self._buffer)
            self._buffer.clear()
            for block in container_blocks(data, self.limits, self.rate):
                self.samples_out += len(block)
                yield block
            return
        if self._pending:
            raise InvalidArgument(
                f"{self.encoding} stream ended inside a sample frame ({len(self._pending)} stray bytes); "
                f"audio_channel_count {self.channels} needs multiples of {self.width * self.channels} bytes"
            )
        yield self._emit(np.zeros(0, np.float32), last=True)

    def _emit(self, audio: np.ndarray, *, last: bool) -> np.ndarray:
        if self._resampler is not None:
            audio = self._resampler.resample_chunk(audio, last=last)
        self.samples_out += len(audio)
        self.limits.check_duration(self.seconds)
        return audio.astype(np.float32, copy=False)


def duration(seconds: float) -> duration_pb2.Duration:
    """A protobuf Duration for an offset in the audio."""
    return duration_pb2.Duration(seconds=int(seconds), nanos=round((seconds - int(seconds)) * 1e9))
