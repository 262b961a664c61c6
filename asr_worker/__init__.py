"""The ASR worker: consumes a language's job queue and runs its wav2vec2 CTC model."""
