"""The router's gRPC servicer (translation only) and its process entry point."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import grpc
import redis.asyncio as aioredis

from lidroute.errors import InvalidArgument
from lidroute.server import GrpcServer, run_service, start_metrics
from lidroute.v1 import transcriber_pb2 as pb
from lidroute.v1 import transcriber_pb2_grpc as pb_grpc
from router.core import Router, RouterSettings

log = logging.getLogger(__name__)


async def _audio_after_config(requests: AsyncIterator[pb.TranscribeRequest]) -> AsyncIterator[bytes]:
    async for request in requests:
        if request.HasField("streaming_config"):
            raise InvalidArgument("streaming_config may be sent only in the first message")
        yield request.audio_content


class TranscriberServicer(pb_grpc.TranscriberServicer):
    """Messages in, messages out: errors, metrics and logs are the server's interceptor's."""

    def __init__(self, router: Router) -> None:
        self.router = router

    async def Transcribe(
        self, request_iterator: AsyncIterator[pb.TranscribeRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.TranscribeResponse]:
        requests = aiter(request_iterator)
        try:
            first = await anext(requests)
        except StopAsyncIteration:
            raise InvalidArgument("empty stream: the first message must carry streaming_config") from None
        if not first.HasField("streaming_config"):
            raise InvalidArgument("the first message must carry streaming_config, not audio")
        async for response in self.router.transcribe(
            first.streaming_config, _audio_after_config(requests), context.time_remaining()
        ):
            yield response

    async def Recognize(
        self, request: pb.RecognizeRequest, context: grpc.aio.ServicerContext
    ) -> pb.RecognizeResponse:
        return await self.router.recognize(request, context.time_remaining())

    async def ListLanguages(
        self, request: pb.ListLanguagesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListLanguagesResponse:
        return await self.router.list_languages()


async def serve(settings: RouterSettings) -> None:
    server = GrpcServer(
        settings.listen_address,
        [pb.DESCRIPTOR.services_by_name["Transcriber"].full_name],
        # Headroom over the audio limit so that an oversize file gets our message naming the limit.
        max_message_bytes=settings.max_audio_bytes + 1024 * 1024,
        max_connection_age_s=settings.max_connection_age_seconds,
        grace_s=settings.grace_seconds,
    )
    start_metrics(settings.metrics_port)
    client = aioredis.Redis.from_url(settings.redis_url, health_check_interval=10)
    channel = grpc.aio.insecure_channel(settings.lid_address)
    router = Router(settings, client, channel)
    pb_grpc.add_TranscriberServicer_to_server(TranscriberServicer(router), server.server)
    await server.start()
    await server.set_serving(True)
    try:
        await server.wait_for_stop()
        await server.shutdown()
    finally:
        await channel.close()
        await client.aclose()


def main(argv: list[str] | None = None) -> None:
    run_service(serve, RouterSettings, argv, prog="router", service="router")
