"""Degradations of clean speech: noise, a telephone channel, speed, tempo, timbre, pauses, level,
room reverberation and lossy speech codecs.

Synthetic speech is clean, and a model trained only on clean speech fails on what callers send.
These functions are what the synthetic corpus (`lidroute.train.synthetic`) and the
recognizers' training augmentation (`asr_worker.recipes.ctc`) both use to make it less so; each
takes 16 kHz mono float32 and returns the same, drawing any randomness from the generator given.
"""

from __future__ import annotations

import numpy as np
import soxr

from lidroute.audio import TARGET_RATE, frame_power, rms


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


def room_response(rng: np.random.Generator, rt60: float) -> np.ndarray:
    """The impulse response between a talker and a microphone at random places in a random
    shoebox room (3-10 x 3-8 x 2.4-4 m) whose walls absorb as much as the reverberation time
    `rt60` (s) asks (Sabine's formula), by image sources (pyroomacoustics). Reflections are
    followed to order 30 at most (26 ms a room): the tail past -30 dB is cut, which the ear and
    the recognizers hardly notice beside the early reflections that colour every word."""
    import pyroomacoustics as pra

    dims = rng.uniform([3.0, 3.0, 2.4], [10.0, 8.0, 4.0])
    absorption, order = pra.inverse_sabine(rt60, dims)
    room = pra.ShoeBox(dims, fs=TARGET_RATE, materials=pra.Material(absorption), max_order=min(order, 30))
    room.add_source(rng.uniform(0.5, dims - 0.5))
    room.add_microphone(rng.uniform(0.5, dims - 0.5))
    room.compute_rir()
    return np.asarray(room.rir[0][0], np.float32)


def reverberate(audio: np.ndarray, response: np.ndarray) -> np.ndarray:
    """`audio` as heard through `response` (a room's impulse response), at the level it had, and
    aligned on the direct sound so that words keep their times."""
    start = int(np.argmax(np.abs(response)))
    tail = response[start:]
    n = len(audio) + len(tail) - 1
    wet = np.fft.irfft(np.fft.rfft(audio, n) * np.fft.rfft(tail, n), n)[: len(audio)]
    return (wet * rms(audio) / (rms(wet) + 1e-12)).astype(np.float32)


#: Lossy codecs of real channels, each at the rate it runs at: G.711 mu-law and GSM 6.10 (8 kHz
#: telephony), Opus at its lowest rates (16 kHz: voice over IP, messaging apps).
CODECS = ("ulaw", "gsm", "opus")
#: The reverberation times (s) rooms are drawn from: a small office to a large hall.
RT60 = (0.2, 0.9)


def draw_codec(rng: np.random.Generator) -> str:
    """One of `CODECS`, each as likely."""
    return CODECS[int(rng.integers(len(CODECS)))]


_CODEC_FILES = {"ulaw": ("WAV", "ULAW", 8000), "gsm": ("WAV", "GSM610", 8000), "opus": ("OGG", "OPUS", 16000)}


def through_codec(audio: np.ndarray, codec: str) -> np.ndarray:
    """`audio` encoded with `codec` (one of `CODECS`) and decoded again, by libsndfile in memory."""
    import io

    import soundfile as sf

    container, subtype, rate = _CODEC_FILES[codec]
    coded = soxr.resample(audio, TARGET_RATE, rate, quality="HQ") if rate != TARGET_RATE else audio
    buffer = io.BytesIO()
    # Opus's lowest bitrate (compression level 1: about 6 kb/s at 16 kHz), where its artefacts show.
    extra = {"compression_level": 1.0} if codec == "opus" else {}
    sf.write(buffer, np.clip(coded, -1, 1), rate, format=container, subtype=subtype, **extra)
    buffer.seek(0)
    decoded, _ = sf.read(buffer, dtype="float32")
    if rate != TARGET_RATE:
        decoded = soxr.resample(decoded, rate, TARGET_RATE, quality="HQ")
    out = np.zeros(len(audio), np.float32)
    out[: min(len(audio), len(decoded))] = decoded[: len(audio)]
    return out


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
    """`audio` scaled so that its peak is at `peak_db` dBFS; silence is left as it is."""
    peak = float(np.abs(audio).max())
    return audio if peak == 0 else (audio * (10 ** (peak_db / 20) / peak)).astype(np.float32)
