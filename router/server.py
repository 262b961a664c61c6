"""The router's gRPC servicers (translation only: lidroute's API here, Google's in `router.google`)
and its process entry point."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import grpc
import redis.asyncio as aioredis

from lidroute.auth import server_security
from lidroute.keys import Keys
from lidroute.server import GrpcServer, run_service, start_metrics
from lidroute.v1 import transcriber_pb2 as pb
from lidroute.v1 import transcriber_pb2_grpc as pb_grpc
from router import google
from router.core import Router, RouterSettings, config_and_audio

log = logging.getLogger(__name__)


class TranscriberServicer(pb_grpc.TranscriberServicer):
    """Messages in, messages out: errors, metrics and logs are the server's interceptor's."""

    def __init__(self, router: Router) -> None:
        self.router = router

    async def Transcribe(
        self, request_iterator: AsyncIterator[pb.TranscribeRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.TranscribeResponse]:
        streaming_config, audio = await config_and_audio(request_iterator)
        async for response in self.router.transcribe(streaming_config, audio, context.time_remaining()):
            yield response

    async def Recognize(
        self, request: pb.RecognizeRequest, context: grpc.aio.ServicerContext
    ) -> pb.RecognizeResponse:
        return await self.router.recognize(request.config, request.audio_content, context.time_remaining())

    async def ListLanguages(
        self, request: pb.ListLanguagesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListLanguagesResponse:
        return await self.router.list_languages()


async def serve(settings: RouterSettings) -> None:
    google.register_service_descriptor()
    credentials, interceptors = server_security(settings)
    server = GrpcServer(
        settings.listen_address,
        [
            pb.DESCRIPTOR.services_by_name["Transcriber"].full_name,
            google.SPEECH_SERVICE,
            google.OPERATIONS_SERVICE,
        ],
        # Headroom over the audio limit so that an oversize file gets our message naming the limit.
        max_message_bytes=settings.max_audio_bytes + 1024 * 1024,
        max_connection_age_s=settings.max_connection_age_seconds,
        grace_s=settings.grace_seconds,
        credentials=credentials,
        interceptors=interceptors,
    )
    start_metrics(settings.metrics_port)
    # Bounded, and sized from the admission limits: a burst waits for a connection rather than
    # failing with "Too many connections" in the middle of admitted requests.
    pool = aioredis.BlockingConnectionPool.from_url(
        settings.redis_url, max_connections=settings.redis_connections(), timeout=10, health_check_interval=10
    )
    client = aioredis.Redis(connection_pool=pool)
    channel = grpc.aio.insecure_channel(settings.lid_address)
    router = Router(settings, client, channel)
    pb_grpc.add_TranscriberServicer_to_server(TranscriberServicer(router), server.server)
    operations = google.Operations(router, client, Keys(settings.key_prefix), settings.operation_ttl_seconds)
    google.add_to_server(
        server.server, google.SpeechServicer(router, operations), google.OperationsServicer(operations)
    )
    await server.start()
    await server.set_serving(True)
    sampler = asyncio.create_task(router.watch_redis(), name="watch-redis")
    abandoner = asyncio.create_task(router.keep_abandoning(), name="keep-abandoning")
    try:
        await server.wait_for_stop()
        await asyncio.gather(server.shutdown(), operations.close(settings.grace_seconds))
    finally:
        sampler.cancel()
        abandoner.cancel()
        await router.close()
        await channel.close()
        await client.aclose()


def main(argv: list[str] | None = None) -> None:
    run_service(serve, RouterSettings, argv, prog="router", service="router")
