"""Audio decoding, downmixing, resampling and limits."""

from __future__ import annotations

import io
import itertools

import numpy as np
import pytest
import soundfile as sf

from lidroute.audio import (
    BLOCK_SECONDS,
    AudioLimits,
    StreamDecoder,
    container_blocks,
    decode_container,
    decode_pcm16,
    float_to_pcm16,
    pcm16_to_float,
    resample,
    speech_segments,
)
from lidroute.errors import InvalidArgument, LimitExceeded


def tone(seconds: float, rate: int, freq: float = 440.0, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    wave = (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return np.stack([wave] * channels, axis=1) if channels > 1 else wave


def file_bytes(audio: np.ndarray, rate: int, fmt: str, subtype: str | None = None) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, audio, rate, format=fmt, subtype=subtype)
    return buf.getvalue()


def dominant_frequency(audio: np.ndarray, rate: int = 16000) -> float:
    spectrum = np.abs(np.fft.rfft(audio))
    return float(np.argmax(spectrum) * rate / len(audio))


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_linear16_is_resampled_to_16k_keeping_pitch(rate: int) -> None:
    audio = decode_pcm16(float_to_pcm16(tone(1.0, rate)), rate, 1, AudioLimits())
    assert abs(len(audio) - 16000) <= 2
    assert abs(dominant_frequency(audio) - 440) < 5


def test_stereo_is_downmixed_to_the_mean_of_the_channels() -> None:
    left, right = tone(0.5, 16000, 300), tone(0.5, 16000, 500)
    stereo = np.stack([left, right], axis=1)
    audio = decode_pcm16(float_to_pcm16(stereo.reshape(-1)), 16000, 2, AudioLimits())
    assert len(audio) == 8000
    expected = (pcm16_to_float(float_to_pcm16(left)) + pcm16_to_float(float_to_pcm16(right))) / 2
    np.testing.assert_allclose(audio, expected, atol=1e-4)


def test_stream_chunks_may_split_samples_and_frames() -> None:
    pcm = float_to_pcm16(tone(1.0, 44100, channels=2).reshape(-1))
    decoder = StreamDecoder.raw(44100, 2, AudioLimits())
    pieces = [decoder.feed(pcm[i : i + 777]) for i in range(0, len(pcm), 777)]
    pieces.append(decoder.finish())
    whole = decode_pcm16(pcm, 44100, 2, AudioLimits())
    np.testing.assert_allclose(np.concatenate(pieces), whole, atol=1e-4)


def test_stream_ending_inside_a_frame_is_an_error() -> None:
    decoder = StreamDecoder.raw(16000, 2, AudioLimits())
    decoder.feed(b"\x00" * 6)
    with pytest.raises(InvalidArgument, match="stray bytes"):
        decoder.finish()


@pytest.mark.parametrize(
    ("fmt", "subtype"), [("WAV", "PCM_16"), ("FLAC", None), ("OGG", "VORBIS"), ("OGG", "OPUS")]
)
def test_container_files_are_decoded(fmt: str, subtype: str | None) -> None:
    rate = 48000 if subtype == "OPUS" else 22050
    audio = decode_container(file_bytes(tone(1.0, rate, channels=2), rate, fmt, subtype), AudioLimits())
    assert abs(len(audio) - 16000) < 400
    assert abs(dominant_frequency(audio) - 440) < 5


def test_a_long_file_is_decoded_a_block_at_a_time_into_what_decoding_it_whole_gives() -> None:
    """An hour of 44.1 kHz stereo decoded whole is 1.3 GB of floats: the router decodes a file a
    block at a time, and the blocks join into the file resampled in one piece."""
    rate = 44100
    stereo = tone(35.0, rate, channels=2)
    blocks = list(container_blocks(file_bytes(stereo, rate, "FLAC"), AudioLimits()))
    assert max(len(b) for b in blocks) <= BLOCK_SECONDS * 16000 + 16
    assert len(blocks) >= 4
    whole = resample(stereo.mean(axis=1), rate)
    joined = np.concatenate(blocks)
    assert abs(len(joined) - len(whole)) <= 1
    n = min(len(joined), len(whole))
    assert np.abs(joined[:n] - whole[:n]).max() < 1e-3


def test_real_recordings_decode(real_speech_files: list) -> None:
    for path in real_speech_files:
        audio = decode_container(path.read_bytes(), AudioLimits())
        assert len(audio) > 16000, path
        assert np.abs(audio).max() > 0, path


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk", "not a file lidroute reads"),
        (b"this is not audio at all" * 10, "not a file lidroute reads"),
    ],
)
def test_corrupt_files_are_invalid_argument(data: bytes, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        decode_container(data, AudioLimits())


def test_truncated_flac_is_rejected_or_short() -> None:
    data = file_bytes(tone(2.0, 16000), 16000, "FLAC")[:400]
    with pytest.raises(InvalidArgument):
        decode_container(data, AudioLimits())


def test_containers_outside_the_allow_list_are_refused() -> None:
    data = file_bytes(tone(0.5, 16000), 16000, "AIFF")
    with pytest.raises(InvalidArgument, match="AIFF is not supported"):
        decode_container(data, AudioLimits())


def test_limits_name_the_limit() -> None:
    limits = AudioLimits(max_seconds=1.0, max_bytes=100_000, max_chunk_bytes=1000)
    with pytest.raises(LimitExceeded, match="max_audio_seconds"):
        decode_container(file_bytes(tone(2.0, 16000), 16000, "WAV"), limits)
    with pytest.raises(LimitExceeded, match="max_audio_bytes"):
        decode_container(b"RIFF" + b"\x00" * 200_000, limits)
    decoder = StreamDecoder.raw(16000, 1, limits)
    with pytest.raises(LimitExceeded, match="max_chunk_bytes"):
        decoder.feed(b"\x00" * 2000)
    with pytest.raises(InvalidArgument, match="outside the supported range"):
        StreamDecoder.raw(96000, 1, limits)
    with pytest.raises(InvalidArgument, match="audio_channel_count 3"):
        StreamDecoder.raw(16000, 3, limits)


def test_streamed_duration_limit_stops_the_stream() -> None:
    decoder = StreamDecoder.raw(16000, 1, AudioLimits(max_seconds=0.5))
    with pytest.raises(LimitExceeded, match="max_audio_seconds"):
        for _ in range(10):
            decoder.feed(float_to_pcm16(tone(0.1, 16000)))


def test_sample_rate_mismatch_is_reported() -> None:
    with pytest.raises(InvalidArgument, match="does not match"):
        decode_container(file_bytes(tone(0.5, 22050), 22050, "WAV"), AudioLimits(), expected_rate=16000)


def test_speech_is_cut_at_long_pauses_keeping_a_little_silence_on_each_side() -> None:
    rate = 16000
    word = tone(1.0, rate)
    rng = np.random.default_rng(0)
    hiss = (rng.standard_normal(3 * rate) * 1e-4).astype(np.float32)  # an open line, ~70 dB down
    for pause in (np.zeros(3 * rate, np.float32), hiss):
        audio = np.concatenate([pause[: rate // 2], word, pause, word, pause[:rate]])
        (a1, b1), (a2, b2) = speech_segments(audio, keep=0.2)
        first, second = rate // 2, rate // 2 + 4 * rate  # where the two words start
        assert first - 0.2 * rate - 320 <= a1 <= first - 0.2 * rate + 320  # leading silence trimmed
        assert b1 - (first + rate) == pytest.approx(0.2 * rate, abs=320)
        assert second - a2 == pytest.approx(0.2 * rate, abs=320)
        assert b2 - (second + rate) == pytest.approx(0.2 * rate, abs=320)


def test_short_gaps_noisy_speech_and_silence_alone_stay_whole() -> None:
    rate = 16000
    word = tone(1.0, rate)
    gap = np.zeros(rate * 3 // 10, np.float32)  # 0.3 s: a pause between words, not between parts
    assert speech_segments(np.concatenate([word, gap, word])) == [(0, 2 * rate + len(gap))]
    rng = np.random.default_rng(1)
    noisy = np.concatenate([word, np.zeros(2 * rate, np.float32), word])
    noisy += (rng.standard_normal(len(noisy)) * 0.05).astype(np.float32)  # ~17 dB SNR fills the pause
    assert speech_segments(noisy) == [(0, len(noisy))]
    assert speech_segments(np.zeros(rate, np.float32)) == [(0, rate)]
    assert speech_segments(np.zeros(0, np.float32)) == [(0, 0)]


def test_long_speech_without_pauses_is_cut_into_parts_no_longer_than_the_limit() -> None:
    rate = 16000
    t = np.arange(70 * rate) / rate
    # Syllable-like bursts with dips too short to count as pauses: the cut lands in a dip.
    audio = (np.sin(2 * np.pi * 200 * t) * (0.55 + 0.45 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)
    spans = speech_segments(audio, max_seconds=30)
    assert spans[0][0] == 0 and spans[-1][1] == len(audio)
    assert all(b == a2 for (_, b), (a2, _) in itertools.pairwise(spans))  # nothing lost
    assert all(15 * rate <= b - a <= 30 * rate for a, b in spans[:-1])
    assert all(audio[b] ** 2 < 0.02 for _, b in spans[:-1])  # in a dip, not mid-burst
