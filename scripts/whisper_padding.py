"""How much Whisper base's language token owes to the silence it is padded with, on short windows
of the real-speech pack's sentences (a development set: nothing is fitted here).

    .venv/bin/python scripts/whisper_padding.py [CLIPS_PER_LANGUAGE] [WINDOW_SECONDS]

Each window (from the first loud frame of a clip of at least 1.5 s) is read three ways: padded to
3 s (as `models/whisper-lid` does it), padded to 30 s (as Whisper was trained; ten times the
encoder's work), and encoded at 3 s followed by the encoder's states of the rest of a 30 s input
of silence alone, computed once: if that tail stood in for the padding, the decoder's keys and
values of it could be cached and 30 s of padding had for the price of 3. It cannot: the silence
frames' states depend on the speech before them.
"""

from __future__ import annotations

import collections
import json
import random
import sys
import time

import numpy as np
import soundfile as sf
import torch

from lid_service.whisper_lid import WhisperLanguageLogits
from lidroute.audio import resample, speech_bounds, to_mono
from lidroute.train.teacher import DEFAULT_PACK
from lidroute.whisper import LogMel

LANGUAGES = ("en", "es", "fr", "de", "pt", "it", "ru", "hi", "sw", "tr", "mr")


def windows(per_language: int, seconds: float) -> list[tuple[str, np.ndarray]]:
    """Up to `per_language` windows a language, drawn with a fixed seed."""
    by_language: dict[str, list[dict]] = collections.defaultdict(list)
    for line in (DEFAULT_PACK / "manifest.jsonl").read_text().splitlines():
        row = json.loads(line)
        if row["language"] in LANGUAGES and row.get("duration", 0) >= 1.5:
            by_language[row["language"]].append(row)
    rng = random.Random(0)
    out = []
    for lang, rows in sorted(by_language.items()):
        rng.shuffle(rows)
        for row in rows[:per_language]:
            audio, rate = sf.read(DEFAULT_PACK / row["audio"], dtype="float32")
            audio = resample(to_mono(audio), rate)
            start, _ = speech_bounds(audio)
            out.append((lang, audio[start : start + int(seconds * 16000)]))
    return out


@torch.inference_mode()
def main(argv: list[str]) -> None:
    per_language = int(argv[0]) if argv else 20
    seconds = float(argv[1]) if len(argv) > 1 else 1.0
    torch.set_num_threads(1)
    # The bundled language ID's own padding (`encode`: silence 2 under the window's loudest frame),
    # in float32, to 3 s or, as a batch row of that length, to 30 s.
    whisper, mel = WhisperLanguageLogits(LANGUAGES, min_seconds=3.0, precision="float32"), LogMel()
    tails: dict[float, torch.Tensor] = {}
    right: dict[str, list[bool]] = collections.defaultdict(list)
    cost: dict[str, float] = collections.defaultdict(float)
    clips = windows(per_language, seconds)
    for lang, audio in clips:
        features = mel(torch.from_numpy(audio)[None])
        frames = features.shape[-1]
        truth = LANGUAGES.index(lang)
        for name, width in (("padded to 3 s", 300), ("padded to 30 s", 3000)):
            started = time.process_time()
            row = torch.nn.functional.pad(features, (0, max(0, width - frames)))
            encoded, _ = whisper.encode(row, torch.tensor([frames / row.shape[-1]]))
            right[name].append(int(whisper.token(encoded).argmax()) == truth)
            cost[name] += time.process_time() - started
            if width == 300:
                short = encoded
        floor = round(float(features.amax()) - 2.0, 1)  # the padding's silence, as `encode` puts it
        if floor not in tails:
            tails[floor] = whisper.encoder(torch.full((1, 80, 3000), floor))
        joined = torch.cat([short, tails[floor][:, short.shape[1] :]], dim=1)
        right["3 s, then silence's states"].append(int(whisper.token(joined).argmax()) == truth)
    print(f"{len(clips)} windows of {seconds:g} s, {len(set(lang for lang, _ in clips))} languages")
    for name, hits in right.items():
        each = f", {1000 * cost[name] / len(clips):.0f} ms CPU each" if name in cost else ""
        print(f"{name}: {100 * np.mean(hits):.1f} % right{each}")


if __name__ == "__main__":
    main(sys.argv[1:])
