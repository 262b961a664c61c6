"""The server a user would write instead of lidroute, for `make bench` to measure against.

One process, the same `Transcribe` API and the same bundled models, and none of what lidroute
adds: the language-ID model's `EncoderClassifier` on the first second of audio as it comes (no
speech-onset search, one window), then the detected language's recognizer with greedy decoding,
per request on a thread pool; no queue, no Redis, no second process, no streaming results. What it
answers is what lidroute would for the same clip when both are right, so the bench compares the
cost of serving, not of different models.

    python -m workbench.naive --models-dir models --port 50071

`--system whisper-base` serves the anchor a user would install instead of both (faster-whisper,
Whisper base, int8): its own language detection on the first 30 s, then its decoder (beam 5), on
the same thread pool.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import torch
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from lidroute.audio import TARGET_RATE, pcm16_to_float
from lidroute.cli import CACHE
from lidroute.registry import ModelSpec
from lidroute.v1 import transcriber_pb2 as pb
from lidroute.v1 import transcriber_pb2_grpc as pb_grpc


class WholeStream(pb_grpc.TranscriberServicer):  # type: ignore[misc]
    """Reads the whole stream, then `recognize` (language and text) in a worker thread."""

    def __init__(self, threads: int) -> None:
        self.pool = ThreadPoolExecutor(threads)

    def recognize(self, audio: np.ndarray) -> tuple[str, str]:
        raise NotImplementedError

    async def Transcribe(
        self, request_iterator: AsyncIterator[pb.TranscribeRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.TranscribeResponse]:
        pcm = bytearray()
        async for request in request_iterator:
            pcm += request.audio_content
        audio = pcm16_to_float(bytes(pcm))
        lang, text = await asyncio.get_running_loop().run_in_executor(self.pool, self.recognize, audio)
        yield pb.TranscribeResponse(language_detected=pb.LanguageDetected(language_code=lang))
        alternative = pb.SpeechRecognitionAlternative(transcript=text)
        yield pb.TranscribeResponse(
            result=pb.RecognitionResult(alternatives=[alternative], is_final=True, language_code=lang)
        )


class NaiveTranscriber(WholeStream):
    """The bundled models, as a user would call them."""

    def __init__(self, models_dir: Path, threads: int) -> None:
        super().__init__(threads)
        from speechbrain.inference.classifiers import EncoderClassifier

        from asr_worker.model import CtcModel
        from lid_service.model import label_to_code
        from lidroute.cli import model_dirs

        lid, asr = model_dirs(models_dir)  # the first language-ID model alone
        self.lid = EncoderClassifier.from_hparams(source=str(lid[0]), savedir=tempfile.mkdtemp())
        labels = self.lid.hparams.label_encoder.ind2lab
        self.codes = [label_to_code(labels[i]) for i in range(len(labels))]
        self.models = {lang: CtcModel(lang, ModelSpec(uri=str(path)), beam=0) for lang, path in asr.items()}

    def recognize(self, audio: np.ndarray) -> tuple[str, str]:
        with torch.inference_mode():
            scores = self.lid.classify_batch(torch.from_numpy(audio[:TARGET_RATE])[None])[0][0]
        served = [i for i, code in enumerate(self.codes) if code in self.models]
        lang = self.codes[max(served, key=lambda i: float(scores[i]))]
        return lang, self.models[lang].transcribe(audio).text


class WhisperTranscriber(WholeStream):
    """Whisper base on faster-whisper, as a user would call it: one model, `threads` callers."""

    def __init__(self, cache: Path, threads: int) -> None:
        super().__init__(threads)
        from workbench.anchor import whisper_base

        self.model = whisper_base(cache, workers=threads)

    def recognize(self, audio: np.ndarray) -> tuple[str, str]:
        segments, info = self.model.transcribe(audio, beam_size=5)
        return info.language, " ".join(segment.text.strip() for segment in segments)


async def serve(servicer: WholeStream, port: int) -> None:
    server = grpc.aio.server()
    pb_grpc.add_TranscriberServicer_to_server(servicer, server)
    checks = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(checks, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await checks.set("", health_pb2.HealthCheckResponse.SERVING)
    await server.wait_for_termination()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="workbench.naive", description=__doc__)
    parser.add_argument("--models-dir", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, default=2, help="requests recognised at once")
    parser.add_argument("--system", choices=("naive", "whisper-base"), default="naive")
    parser.add_argument("--cache", type=Path, default=CACHE, help="where Whisper base's joined model file is")
    args = parser.parse_args(argv)
    servicer = (
        NaiveTranscriber(args.models_dir, args.threads)
        if args.system == "naive"
        else WhisperTranscriber(args.cache, args.threads)
    )
    asyncio.run(serve(servicer, args.port))


if __name__ == "__main__":
    main()
