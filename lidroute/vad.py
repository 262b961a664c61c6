"""Silero VAD for the services: the router finds where speech starts with it (`router.detection`),
the worker finds the pauses of a long stream with it, where a stretch can end as a final result.

Silero runs here on ONNX Runtime, one thread per model: the same network as its TorchScript
build, about four times less CPU a frame (5 against 24 ms a second of audio, one core).
"""

from __future__ import annotations

import math
import threading
import warnings
from typing import Protocol

import numpy as np
import torch

from lidroute.audio import TARGET_RATE

VAD_FRAME = 512  # Silero VAD takes 32 ms frames at 16 kHz


class Vad(Protocol):
    """A Silero VAD model: stateful, one frame after another of one stream."""

    def __call__(self, x: torch.Tensor, sr: int) -> torch.Tensor: ...

    def reset_states(self, batch_size: int = 1) -> None: ...


class VadPool:
    """Silero VAD models are stateful per stream, so each stream borrows one of its own."""

    def __init__(self) -> None:
        self._free: list[Vad] = []
        self._lock = threading.Lock()

    def acquire(self) -> Vad:
        with self._lock:
            if self._free:
                model = self._free.pop()
                model.reset_states()
                return model
        from silero_vad import load_silero_vad

        # Its loader's notices (TorchScript's deprecation, the model's one sample rate) say nothing
        # to whoever reads a service's log.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return load_silero_vad(onnx=True)

    def release(self, model: Vad) -> None:
        with self._lock:
            self._free.append(model)


def speech_probability(model: Vad, audio: np.ndarray, pos: int) -> float:
    """The VAD's probability of speech in the frame of `audio` at `pos`, the stream's next one."""
    return float(model(torch.from_numpy(np.ascontiguousarray(audio[pos : pos + VAD_FRAME])), TARGET_RATE))


class Pauses:
    """The pauses of one stream, each frame scanned once as the stream grows, counted in samples
    from the start of the stream however much of it the caller still holds.

    A pause is a run of at least `min_pause` s of frames the VAD scores under `threshold` (0.35,
    as Silero's own segmentation ends speech 0.15 under its 0.5 for starting it). Unlike a level
    threshold, it tells speech from steady noise: a recording with a fan or a crowd behind it has
    pauses no quieter than its words.
    """

    def __init__(self, pool: VadPool, *, start: int = 0, min_pause: float = 0.5, threshold: float = 0.35):
        self.pool = pool
        self.min_samples = max(1, math.ceil(min_pause * TARGET_RATE / VAD_FRAME)) * VAD_FRAME
        self.threshold = threshold
        self.scanned = start  # the stream's next frame to scan
        self._quiet_from: int | None = None  # where the run of quiet frames up to `scanned` started
        self._last: tuple[int, int] | None = None  # the latest whole pause
        self._model: Vad | None = None
        # Scans run in a worker thread; a job ending on the event loop must not hand the model's
        # state to another stream mid-scan.
        self._lock = threading.Lock()

    @torch.inference_mode()
    def scan(self, audio: np.ndarray, base: int) -> None:
        """Scans the frames not scanned yet of `audio`, the stream from sample `base` on."""
        with self._lock:
            if self._model is None:
                self._model = self.pool.acquire()
            pos = self.scanned - base
            while pos + VAD_FRAME <= len(audio):
                if speech_probability(self._model, audio, pos) < self.threshold:
                    if self._quiet_from is None:
                        self._quiet_from = base + pos
                elif self._quiet_from is not None:
                    if base + pos - self._quiet_from >= self.min_samples:
                        self._last = (self._quiet_from, base + pos)
                    self._quiet_from = None
                pos += VAD_FRAME
            self.scanned = base + pos

    def cut(self) -> int | None:
        """The middle of the latest pause scanned (one still going on included), or None."""
        latest = self._last
        if self._quiet_from is not None and self.scanned - self._quiet_from >= self.min_samples:
            latest = (self._quiet_from, self.scanned)
        return None if latest is None else (latest[0] + latest[1]) // 2

    def close(self) -> None:
        with self._lock:
            if self._model is not None:
                self.pool.release(self._model)
                self._model = None
