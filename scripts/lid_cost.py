"""CPU time of one language-ID decision on one thread, as the LID service makes it, for windows of
0.5, 1 and 3 s of recorded speech (a clip of the real-speech pack) and of espeak-ng.

    .venv/bin/python scripts/lid_cost.py [SOURCE ...]   # default: the bundled models' language ID

Process CPU time, median of 15 decisions after two warm-ups: what one decision costs a core,
whatever else the machine runs. A gated model runs its ECAPA models only on windows it judges
espeak-ng, so the two kinds of speech cost differently.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from lid_service.model import LanguageIdModel, LidRequest
from lidroute.cli import default_models_dir, lid_source, model_dirs
from lidroute.train.synth import make_sentences, synthesize
from lidroute.train.teacher import DEFAULT_PACK


def recorded() -> np.ndarray:
    """The first sentence-long recording of the pack (silence when there is no pack)."""
    import soundfile as sf

    manifest = DEFAULT_PACK / "manifest.jsonl"
    if manifest.is_file():
        for line in manifest.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            if row.get("kind") == "sentence" and row.get("duration", 0) >= 3:
                audio, _ = sf.read(DEFAULT_PACK / row["audio"], dtype="float32", always_2d=True)
                return audio.mean(axis=1)
    print(f"no real-speech pack at {DEFAULT_PACK}: silence stands in", file=sys.stderr)
    return np.zeros(16000 * 3, np.float32)


def espeak() -> np.ndarray:
    text = " ".join(make_sentences("es", 3, seed=0, min_words=4, max_words=6))
    return synthesize(text, "es", variant="m3", speed=150, pitch=50, sample_rate=16000).astype(np.float32)


def cost(model: LanguageIdModel, audio: np.ndarray, seconds: float) -> float:
    window = [LidRequest(np.ascontiguousarray(audio[: int(seconds * 16000)]), ())]
    for _ in range(2):
        model.identify(window)
    spent = []
    for _ in range(15):
        started = time.process_time()
        model.identify(window)
        spent.append(time.process_time() - started)
    return 1000 * statistics.median(spent)


def main() -> None:
    torch.set_num_threads(1)
    sources = sys.argv[1:] or [lid_source(model_dirs(default_models_dir())[0])]
    speech = {"recorded": recorded(), "espeak-ng": espeak()}
    print("| language ID | speech | 0.5 s | 1 s | 3 s |\n|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as cache:
        for source in sources:
            model = LanguageIdModel(source, Path(cache) / str(abs(hash(source))))
            for kind, audio in speech.items():
                row = " | ".join(f"{cost(model, audio, s):.0f} ms" for s in (0.5, 1.0, 3.0))
                print(f"| `{source}` | {kind} | {row} |", flush=True)


if __name__ == "__main__":
    main()
