"""Speech corpora, by one name: every data source read into one example type, and the synthetic
corpus. This module holds no code of its own; it gathers what commands and recipes import.

Training and evaluation must run the same way on the synthetic speech this machine can make and
on real data elsewhere (a Common Voice download, a Hugging Face dataset), so every source is read
into `Example`s whose audio comes out as 16 kHz mono float32 on demand. Where each part lives:

* `lidroute.train.example`: `Example`, `read_audio` and `CorpusError`;
* `lidroute.train.manifest`: the project's own format (FLAC plus one JSONL manifest per split),
  `read_manifest` and `corpus_stats`;
* `lidroute.train.sources`: Common Voice, Hugging Face datasets, tables of recorded clips, and
  `read_examples`, which reads any of them (and manifests) by its look;
* `lidroute.train.augment`: noise, telephone channel, speed, tempo, timbre, pauses, level,
  rooms and codecs;
* `lidroute.train.synthetic`: `synth_corpus` (`lidroute corpus synth`) and its recipe;
* `lidroute.train.extra_splits`: splits added to a synthetic corpus (`condition_splits`,
  `tuning_split`).
"""

from __future__ import annotations

from lidroute.train.augment import (
    CODECS,
    RT60,
    _noise,  # noqa: F401  (its tests reach it here)
    add_noise,
    add_pauses,
    change_speed,
    change_tempo,
    change_timbre,
    draw_codec,
    reverberate,
    room_response,
    set_peak,
    silence,
    telephone,
    through_codec,
)
from lidroute.train.example import CorpusError, Example, read_audio
from lidroute.train.extra_splits import CONDITIONS, TUNE_SPLIT, condition_splits, tune_command, tuning_split
from lidroute.train.manifest import MANIFEST_FIELDS, corpus_stats, format_stats, read_manifest
from lidroute.train.sources import (
    COMMON_VOICE_SPLITS,
    TABLE_COLUMNS,
    TRANSCRIPT_TABLES,
    read_common_voice,
    read_examples,
    read_hf_dataset,
    read_table,
    read_transcript_tables,
)
from lidroute.train.synthetic import (
    SPLITS,
    SynthPlan,
    corpus_sentences,
    json_tuples,
    split_voices,
    synth_command,
    synth_corpus,
)

__all__ = [
    "CODECS",
    "COMMON_VOICE_SPLITS",
    "CONDITIONS",
    "MANIFEST_FIELDS",
    "RT60",
    "SPLITS",
    "TABLE_COLUMNS",
    "TRANSCRIPT_TABLES",
    "TUNE_SPLIT",
    "CorpusError",
    "Example",
    "SynthPlan",
    "add_noise",
    "add_pauses",
    "change_speed",
    "change_tempo",
    "change_timbre",
    "condition_splits",
    "corpus_sentences",
    "corpus_stats",
    "draw_codec",
    "format_stats",
    "json_tuples",
    "read_audio",
    "read_common_voice",
    "read_examples",
    "read_hf_dataset",
    "read_manifest",
    "read_table",
    "read_transcript_tables",
    "reverberate",
    "room_response",
    "set_peak",
    "silence",
    "split_voices",
    "synth_command",
    "synth_corpus",
    "telephone",
    "through_codec",
    "tune_command",
    "tuning_split",
]
