"""What the LID and CTC training loops share: a budget of steps and seconds, its schedule, the cores."""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field


@dataclass
class Budget:
    """Ends training after `max_steps` updates or `max_seconds` of wall-clock time, whichever first.

    Steps make a model reproducible from its seed whatever else the machine is doing; seconds
    keep a run inside the time it was planned for on a slow or busy machine. The learning-rate
    schedule follows whichever limit is nearer, so a run cut short by time still ends with a
    decayed learning rate.
    """

    max_steps: int | None = None
    max_seconds: float | None = None
    steps: int = 0
    started: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        if self.max_steps is None and self.max_seconds is None:
            raise ValueError("a training budget needs max_steps, max_seconds or both")

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    @property
    def progress(self) -> float:
        """From 0 at the start to 1 when the budget is spent."""
        by_steps = self.steps / self.max_steps if self.max_steps else 0.0
        by_time = self.elapsed / self.max_seconds if self.max_seconds else 0.0
        return min(1.0, max(by_steps, by_time))

    @property
    def done(self) -> bool:
        return self.progress >= 1.0

    def lr_factor(self, warmup: float, floor: float = 0.0) -> float:
        """Linear warm-up over the first `warmup` of the budget, then cosine decay to `floor`."""
        progress = self.progress
        return max(floor, min(1.0, progress / warmup) * 0.5 * (1 + math.cos(math.pi * progress)))


def usable_cores() -> int:
    """The CPU cores this process may run on: fewer than the machine has in a CPU-limited container."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
