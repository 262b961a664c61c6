"""Finding where speech starts, and deciding the language from a growing window after it.

Language ID on leading silence or noise is a coin toss, so the window starts at the speech
onset found by Silero VAD, and ends at its last speech (0.1 s after the last frame the VAD calls
speech): a window longer than a short request, or one that ends in a pause, would otherwise hold
silence or noise the model takes for a language. The window then grows (by default 0.5 -> 1.0 s,
`lid_windows`) until the top language is confident enough: most requests are decided on half a
second, hard ones get more audio.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from lidroute.audio import TARGET_RATE
from lidroute.errors import InvalidArgument
from lidroute.vad import VAD_FRAME, Vad, VadPool, speech_probability

log = logging.getLogger(__name__)

MIN_WINDOW = int(0.1 * TARGET_RATE)  # the shortest window the language-ID service accepts


class OnsetDetector:
    """Feeds 16 kHz audio frame by frame; `onset` is the first sample of speech once found.

    Speech starts where `min_frames` consecutive frames score above `threshold`; the onset is
    moved `pad_seconds` earlier so that the first phoneme is not clipped.
    """

    def __init__(self, pool: VadPool, threshold: float = 0.5, min_frames: int = 2, pad_seconds: float = 0.03):
        self.pool = pool
        self.threshold = threshold
        self.min_frames = min_frames
        self.pad = int(pad_seconds * TARGET_RATE)
        self.onset: int | None = None
        self._model: Vad | None = None
        self._pos = 0
        self._run = 0
        # The scan of the windows after the onset, carried from one window to the next bigger one.
        self._window_model: Vad | None = None
        self._window_pos = 0
        self._window_speech_end: int | None = None
        # Scans run in worker threads; a cancelled request closes the detector from the event loop
        # while one may still run, and must not hand its VAD state to another stream mid-scan.
        self._lock = threading.Lock()

    def _is_speech(self, model: Vad, audio: np.ndarray, pos: int) -> bool:
        return speech_probability(model, audio, pos) >= self.threshold

    @torch.inference_mode()
    def feed(self, audio: np.ndarray) -> int | None:
        """Scans the frames of `audio` (the whole buffer so far) not yet scanned."""
        with self._lock:
            if self.onset is not None:
                return self.onset
            if self._model is None:
                self._model = self.pool.acquire()
            while self._pos + VAD_FRAME <= len(audio):
                speech = self._is_speech(self._model, audio, self._pos)
                self._pos += VAD_FRAME
                self._run = self._run + 1 if speech else 0
                if self._run >= self.min_frames:
                    start = self._pos - self.min_frames * VAD_FRAME
                    self.onset = max(0, start - self.pad)
                    self.pool.release(self._model)  # free for the window scan
                    self._model = None
                    break
            return self.onset

    @property
    def scanned(self) -> int:
        return self._pos

    @torch.inference_mode()
    def speech_end(self, audio: np.ndarray, hangover_seconds: float = 0.1) -> int:
        """Where the speech in `audio` (a window from the onset) ends, plus a short hang-over.

        A window longer than a short request, or one that ends in a pause, holds silence or noise
        after the last word, and a language-ID model scoring it with the speech mistook it for a
        language (1 s windows on utterances under 1.4 s, 3 s windows on most). A VAD state fresh at
        the onset scans the window (a few ms a second of audio on one core); each call is given
        the last window grown, so only the frames the last call did not reach are scanned. Without
        a speech frame in it the window is kept whole.
        """
        with self._lock:
            if self._window_model is None:
                self._window_model = self.pool.acquire()
            elif len(audio) < self._window_pos:  # not the last window grown: scan it afresh
                self._window_model.reset_states()
                self._window_pos, self._window_speech_end = 0, None
            while self._window_pos + VAD_FRAME <= len(audio):
                if self._is_speech(self._window_model, audio, self._window_pos):
                    self._window_speech_end = self._window_pos + VAD_FRAME
                self._window_pos += VAD_FRAME
            last = self._window_speech_end
        if last is None:
            return len(audio)
        return min(len(audio), last + int(hangover_seconds * TARGET_RATE))

    def close(self) -> None:
        with self._lock:
            for model in (self._model, self._window_model):
                if model is not None:
                    self.pool.release(model)
            self._model = self._window_model = None
            self._window_pos, self._window_speech_end = 0, None


class NoSpeech(Exception):
    """The request ended, every frame of it scanned, and the VAD heard no speech in it."""


@dataclass(frozen=True)
class Decision:
    language: str
    probability: float
    alternatives: list[tuple[str, float]]
    onset: int
    window: int  # samples of speech the decision used


Identify = Callable[[np.ndarray, Sequence[str]], Awaitable[list[tuple[str, float]]]]


class AudioBuffer:
    """16 kHz audio of one request as it arrives, with a signal for waiters."""

    def __init__(self) -> None:
        self.chunks: list[np.ndarray] = []
        self.size = 0
        self.ended = False
        self._changed = asyncio.Event()
        self._flat: np.ndarray | None = None
        self._taken = False
        self._held = 0  # samples in `chunks`
        self._drained = asyncio.Event()

    def append(self, audio: np.ndarray) -> None:
        if len(audio):
            self.chunks.append(audio)
            self.size += len(audio)
            self._held += len(audio)
            self._flat = None
            self._changed.set()

    def end(self) -> None:
        self.ended = True
        self._changed.set()

    def take(self) -> list[np.ndarray]:
        """The chunks buffered, handed over and no longer kept (`size` still counts them): once a
        request's audio goes on to its worker, the router holds none of it, however long it is."""
        chunks, self.chunks = self.chunks, []
        self._taken = True
        self._held = 0
        self._flat = None
        self._drained.set()
        return chunks

    async def room(self, limit: int) -> None:
        """Once the audio is being handed on (`take`), waits while more than `limit` samples wait
        for it: a client that sends faster than its audio goes on is held back (gRPC's flow control
        reaches it) instead of its whole file piling up here."""
        while self._taken and self._held > limit:
            self._drained.clear()
            await self._drained.wait()

    def array(self) -> np.ndarray:
        """Everything so far as one array (cached until more arrives); not once audio was taken."""
        if self._taken:
            raise RuntimeError("the audio was handed over (take); the buffer no longer holds it")
        if self._flat is None or len(self._flat) != self.size:
            self._flat = np.concatenate(self.chunks) if self.chunks else np.zeros(0, np.float32)
        return self._flat

    async def wait_for(self, samples: int) -> None:
        """Returns once `samples` samples are buffered or the stream has ended."""
        while self.size < samples and not self.ended:
            self._changed.clear()
            await self._changed.wait()

    async def wait_change(self) -> None:
        self._changed.clear()
        await self._changed.wait()


async def detect_language(
    buffer: AudioBuffer,
    candidates: Sequence[str],
    identify: Identify,
    detector: OnsetDetector,
    *,
    windows: Sequence[float],
    threshold: float,
    max_onset_search: float,
) -> Decision:
    """Waits for speech, then asks `identify` about growing windows until one is confident."""
    search_limit = int(max_onset_search * TARGET_RATE)
    try:
        onset, heard_nothing = await _onset(buffer, detector, search_limit)
        detector.close()  # the onset search's VAD state, free for the window scan
        if buffer.ended and buffer.size < MIN_WINDOW:
            raise InvalidArgument(
                f"{buffer.size / TARGET_RATE:.3f} s of audio is too short to identify its language "
                f"(at least {MIN_WINDOW / TARGET_RATE} s, or pass language_code)"
            )
        # A stream that goes on past the search limit without speech is classified from its
        # start (speech may come later); one that ended with none in it has no language.
        if heard_nothing:
            raise NoSpeech(f"no speech in {buffer.size / TARGET_RATE:.2f} s of audio")
        best: list[tuple[str, float]] = []
        used = 0
        for i, seconds in enumerate(windows):
            want = int(seconds * TARGET_RATE)
            window = await _window(buffer, detector, onset, want)
            if used and len(window) <= used:
                break  # a bigger window would hold no more speech (the stream ended, or a pause)
            used = len(window)
            best = await identify(window, candidates)
            last = i == len(windows) - 1 or (buffer.ended and buffer.size <= onset + want)
            log.debug(
                "language-ID window",
                extra={"seconds": len(window) / TARGET_RATE, "onset": onset, "top": best[0]},
            )
            if best[0][1] >= threshold or last:
                break
    finally:
        detector.close()  # the VAD states go back to the pool
    language, probability = best[0]
    return Decision(language, probability, best, onset, used)


async def _onset(buffer: AudioBuffer, detector: OnsetDetector, search_limit: int) -> tuple[int, bool]:
    """Where speech starts (0 when none was found within `search_limit` samples), and whether
    the stream ended with every frame of it scanned and no speech heard."""
    onset = None
    heard_nothing = False
    while onset is None:
        await buffer.wait_for(detector.scanned + VAD_FRAME)
        onset = await asyncio.to_thread(detector.feed, buffer.array())
        # No speech found once every frame that arrived has been scanned (not merely once the
        # stream ended: a fast client ends it before the first scan): classify from the start.
        scanned_all = buffer.ended and detector.scanned + VAD_FRAME > buffer.size
        if onset is None and (scanned_all or detector.scanned >= search_limit):
            onset = 0
            heard_nothing = scanned_all
    return onset, heard_nothing


async def _window(buffer: AudioBuffer, detector: OnsetDetector, onset: int, want: int) -> np.ndarray:
    """The `want` samples from the onset once they are in (or the stream has ended), cut after
    their last speech."""
    await buffer.wait_for(onset + want)
    audio = buffer.array()
    window = audio[onset : onset + want]
    if len(window) < MIN_WINDOW:
        return audio[-want:]  # speech found too late to fill a window: use the tail
    # A short request, or a pause: leave out what follows the window's last speech.
    end = await asyncio.to_thread(detector.speech_end, window)
    return window[: max(end, MIN_WINDOW)]
