"""gRPC front of the language-ID model: translation between messages and `LanguageIdModel`."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import grpc
import numpy as np
import torch
from prometheus_client import Histogram
from pydantic import Field

from lid_service.model import MIN_SECONDS, LanguageIdModel, LidRequest
from lidroute.audio import TARGET_RATE, pcm16_to_float
from lidroute.batching import MicroBatcher
from lidroute.errors import InvalidArgument, LimitExceeded, Unavailable
from lidroute.server import GrpcServer, run_service, start_metrics
from lidroute.settings import ComputeSettings
from lidroute.v1 import language_id_pb2 as pb
from lidroute.v1 import language_id_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

BATCH_SIZE = Histogram("lidroute_lid_batch_size", "Windows per model call", buckets=(1, 2, 4, 8, 16, 32, 64))


class LidSettings(ComputeSettings):
    """Language-identification service."""

    listen_address: str = Field("[::]:50052", description="gRPC listen address")
    lid_model: str = Field(
        "speechbrain/lang-id-voxlingua107-ecapa",
        description="hub id or local SpeechBrain directory of the LID model; several, comma-separated,"
        " are served as one, their log-posteriors averaged (they must know the same languages)",
    )
    lid_savedir: Path = Field(Path.home() / ".cache/lidroute/lid", description="SpeechBrain savedir")
    device: str = Field("cpu", description="torch device (cpu, cuda, cuda:1)")
    max_window_seconds: float = Field(10.0, gt=0, description="longest window accepted")
    max_connection_age_seconds: float = Field(
        300.0, ge=0, description="close connections this old so routers spread over new LID pods (0: never)"
    )
    grace_seconds: float = Field(5.0, ge=0, description="drain time on SIGTERM")


class LanguageIdentifierServicer(pb_grpc.LanguageIdentifierServicer):
    """Registered before the model loads, so that probes see NOT_SERVING rather than a refused port."""

    def __init__(self, max_window_seconds: float) -> None:
        self.max_samples = int(max_window_seconds * TARGET_RATE)
        self._model: LanguageIdModel | None = None
        self._batcher: MicroBatcher[LidRequest, list[tuple[str, float]]] | None = None

    def attach(
        self, model: LanguageIdModel, batcher: MicroBatcher[LidRequest, list[tuple[str, float]]]
    ) -> None:
        self._model, self._batcher = model, batcher

    @property
    def model(self) -> LanguageIdModel:
        if self._model is None:
            raise Unavailable("the language-ID model is still loading")
        return self._model

    async def Identify(
        self, request: pb.IdentifyRequest, context: grpc.aio.ServicerContext
    ) -> pb.IdentifyResponse:
        audio = pcm16_to_float(request.audio_content[: len(request.audio_content) // 2 * 2])
        if len(audio) < MIN_SECONDS * TARGET_RATE:
            raise InvalidArgument(f"a window needs at least {MIN_SECONDS} s of 16 kHz audio")
        if len(audio) > self.max_samples:
            raise LimitExceeded(
                f"window longer than {self.max_samples / TARGET_RATE:g} s (max_window_seconds)"
            )
        candidates = tuple(request.candidate_language_codes)
        self.model.resolve_candidates(candidates)  # fail fast, outside the batch
        assert self._batcher is not None
        scores = await self._batcher.submit(LidRequest(audio, candidates))
        if request.top_k > 0:
            scores = scores[: request.top_k]
        return pb.IdentifyResponse(
            languages=[pb.LanguageScore(language_code=c, probability=p) for c, p in scores],
            model=self.model.source,
        )

    async def ListModelLanguages(
        self, request: pb.ListModelLanguagesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListModelLanguagesResponse:
        return pb.ListModelLanguagesResponse(language_codes=self.model.codes, model=self.model.source)


async def serve(settings: LidSettings) -> None:
    torch.set_num_threads(settings.threads())
    server = GrpcServer(
        settings.listen_address,
        [pb.DESCRIPTOR.services_by_name["LanguageIdentifier"].full_name],
        # Each router holds one long-lived channel to the LID Service; without a maximum age it stays
        # on the pod it first reached, and LID pods added later never get its traffic.
        max_connection_age_s=settings.max_connection_age_seconds,
        grace_s=settings.grace_seconds,
    )
    start_metrics(settings.metrics_port)
    servicer = LanguageIdentifierServicer(settings.max_window_seconds)
    pb_grpc.add_LanguageIdentifierServicer_to_server(servicer, server.server)
    await server.start()
    model = await asyncio.to_thread(
        LanguageIdModel, settings.lid_model, settings.lid_savedir, settings.device
    )
    batcher: MicroBatcher[LidRequest, list[tuple[str, float]]] = MicroBatcher(
        model.identify,
        max_batch=settings.max_batch,
        max_wait_s=settings.batch_wait_ms / 1000,
        on_batch=BATCH_SIZE.observe,
    )
    # The first decision pays one-time costs (kernel choice, allocations: 0.24 s against 0.05 s
    # here): paid now, before any client waits on it.
    noise = np.random.default_rng(0).normal(0, 0.01, 16000).astype(np.float32)
    await asyncio.to_thread(model.identify, [LidRequest(noise, ())])
    batcher.start()
    servicer.attach(model, batcher)
    await server.set_serving(True)
    log.info("serving", extra={"languages": model.codes})
    await server.wait_for_stop()
    await server.shutdown()
    await batcher.stop()


def main(argv: list[str] | None = None) -> None:
    run_service(serve, LidSettings, argv, prog="lid_service serve", service="lid_service")
