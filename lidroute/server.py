"""What every lidroute gRPC server shares: health, reflection, errors, metrics, graceful shutdown.

A server reports NOT_SERVING until its models are loaded and again while it drains, so that
load balancers and Kubernetes readiness probes send traffic only where it can be served.
SIGTERM and SIGINT start a graceful stop: health flips first, in-flight calls get `grace`
seconds, then the server stops. One interceptor turns every method's exceptions into a status
(`lidroute.errors`) and counts and times every call, so servicers only translate messages.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2
from prometheus_client import Counter, Histogram, start_http_server

from lidroute import logs
from lidroute.errors import InvalidArgument, grpc_errors, status_of
from lidroute.settings import CommonSettings

log = logging.getLogger(__name__)

SettingsT = TypeVar("SettingsT", bound=CommonSettings)
OVERALL = ""  # the health service name that means "the whole server"
#: What a server interceptor is given to reach the handler of a call (None: no such method).
Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]]

HANDLED = Counter(
    "lidroute_grpc_server_handled_total",
    "RPCs completed, by service, method and status code",
    ["grpc_service", "grpc_method", "grpc_code"],
)
HANDLING = Histogram(
    "lidroute_grpc_server_handling_seconds",
    "Time to complete an RPC, by service and method",
    ["grpc_service", "grpc_method"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120),
)
#: gRPC reflection's stable name, which grpcurl, Postman and grpcui ask for first; grpcio-reflection
#: serves only v1alpha, whose messages are v1's field for field, so one servicer answers both.
REFLECTION_V1 = "grpc.reflection.v1.ServerReflection"
#: Probes and tooling: not the traffic the metrics are about.
UNOBSERVED = frozenset({health.SERVICE_NAME, reflection.SERVICE_NAME, REFLECTION_V1})


class MethodInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """An interceptor that sees each method's handler beside its service's and method's names and
    the call's details, and answers with the handler to serve (the same one to let it be)."""

    async def intercept_service(
        self, continuation: Continuation, details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None:  # no such method: gRPC answers UNIMPLEMENTED
            return handler
        service, _, method = details.method.lstrip("/").rpartition("/")
        return self.wrap(handler, service, method, details)

    def wrap(
        self, handler: grpc.RpcMethodHandler, service: str, method: str, details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler:
        raise NotImplementedError


class ServingInterceptor(MethodInterceptor):
    """Every method of the server: exceptions become a status, each call is counted and timed."""

    def wrap(
        self, handler: grpc.RpcMethodHandler, service: str, method: str, details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler:
        if service in UNOBSERVED:
            return handler
        behavior = (
            handler.unary_unary or handler.stream_unary or handler.unary_stream or handler.stream_stream
        )
        wrap = _streaming if handler.response_streaming else _unary
        make = HANDLER_FACTORIES[handler.request_streaming, handler.response_streaming]
        return make(
            wrap(_checked(behavior, handler.request_streaming), service, method),
            request_deserializer=_lenient(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )


#: (request streaming, response streaming) -> the factory of such a handler.
HANDLER_FACTORIES = {
    (False, False): grpc.unary_unary_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}


class _Undecodable:
    """What a request that is not a valid message parses to, so the call can say so as a status."""

    def __init__(self, error: Exception) -> None:
        self.error = f"{type(error).__name__}: {error}"


def _lenient(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """gRPC turns a request that fails to parse (bad bytes, a string that is not UTF-8) into an
    INTERNAL or UNKNOWN status and an error log; it is the client's error, so it is kept for
    `_checked` to refuse as INVALID_ARGUMENT."""
    if deserializer is None:
        return None

    def parse(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception as exc:
            return _Undecodable(exc)

    return parse


def _refuse(request: Any) -> Any:
    if isinstance(request, _Undecodable):
        raise InvalidArgument(f"the request is not a valid message of this method ({request.error})")
    return request


def _checked(behavior: Callable[..., Any], request_streaming: bool) -> Callable[..., Any]:
    """`behavior` seeing only requests that parsed; an undecodable one ends the call as INVALID_ARGUMENT."""
    if not request_streaming:
        return lambda request, context: behavior(_refuse(request), context)

    async def each(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
        async for request in requests:
            yield _refuse(request)

    return lambda requests, context: behavior(each(requests), context)


def _code(context: grpc.aio.ServicerContext, exc: BaseException) -> grpc.StatusCode:
    """The status the client got: the one the handler set or aborted with, else the error map's."""
    if isinstance(exc, asyncio.CancelledError | GeneratorExit):
        return grpc.StatusCode.CANCELLED
    return context.code() or status_of(exc)[0]


@asynccontextmanager
async def _served(context: grpc.aio.ServicerContext, service: str, method: str) -> AsyncIterator[None]:
    """One call: its errors mapped to a status (`grpc_errors`), then counted by that status and timed."""
    started, code = time.perf_counter(), grpc.StatusCode.OK
    try:
        async with grpc_errors(context, method=method):
            yield
    except BaseException as exc:
        code = _code(context, exc)
        raise
    finally:
        HANDLED.labels(service, method, code.name).inc()
        HANDLING.labels(service, method).observe(time.perf_counter() - started)


def _unary(behavior: Callable[..., Awaitable[Any]], service: str, method: str) -> Callable[..., Any]:
    async def handle(request: Any, context: grpc.aio.ServicerContext) -> Any:
        async with _served(context, service, method):
            return await behavior(request, context)

    return handle


def _streaming(behavior: Callable[..., AsyncIterator[Any]], service: str, method: str) -> Callable[..., Any]:
    async def handle(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        async with _served(context, service, method):
            async for response in behavior(request, context):
                yield response

    return handle


def server_options(max_message_bytes: int, max_connection_age_s: float) -> list[tuple[str, int]]:
    """Channel options: message size cap, and a maximum connection age so that clients behind a
    Kubernetes Service re-resolve and spread over pods that were added later."""
    options = [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.so_reuseport", 0),
    ]
    if max_connection_age_s > 0:
        options += [
            ("grpc.max_connection_age_ms", int(max_connection_age_s * 1000)),
            ("grpc.max_connection_age_grace_ms", int(max_connection_age_s * 1000)),
        ]
    return options


class GrpcServer:
    def __init__(
        self,
        listen: str,
        service_names: Iterable[str],
        *,
        max_message_bytes: int = 4 * 1024 * 1024,
        max_connection_age_s: float = 0.0,
        grace_s: float = 10.0,
        credentials: grpc.ServerCredentials | None = None,
        interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
    ) -> None:
        """`credentials`: TLS on the port (None: plaintext); `interceptors` run inside the one that
        maps errors and counts calls, so their refusals are counted too (`lidroute.auth`)."""
        self.listen = listen
        self.service_names = list(service_names)
        self.grace_s = grace_s
        self.credentials = credentials
        self.server = grpc.aio.server(
            options=server_options(max_message_bytes, max_connection_age_s),
            interceptors=[ServingInterceptor(), *interceptors],
        )
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflecting = reflection.aio.ReflectionServicer(
            [*self.service_names, health.SERVICE_NAME, reflection.SERVICE_NAME, REFLECTION_V1]
        )
        handler = grpc.stream_stream_rpc_method_handler(
            reflecting.ServerReflectionInfo,
            request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
            response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
        )
        for name in (reflection.SERVICE_NAME, REFLECTION_V1):
            self.server.add_generic_rpc_handlers(
                [grpc.method_handlers_generic_handler(name, {"ServerReflectionInfo": handler})]
            )
        self._stop = asyncio.Event()
        self.port = 0

    async def start(self) -> int:
        if self.credentials is None:
            self.port = self.server.add_insecure_port(self.listen)
        else:
            self.port = self.server.add_secure_port(self.listen, self.credentials)
        if self.port == 0:
            raise RuntimeError(f"could not bind {self.listen}")
        await self.set_serving(False)
        await self.server.start()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        log.info("listening", extra={"address": self.listen, "port": self.port})
        return self.port

    async def set_serving(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in [OVERALL, *self.service_names]:
            await self.health.set(name, status)

    def request_stop(self) -> None:
        self._stop.set()

    async def wait_for_stop(self) -> None:
        await self._stop.wait()

    async def shutdown(self) -> None:
        log.info("draining", extra={"grace_s": self.grace_s})
        await self.health.enter_graceful_shutdown()
        await self.server.stop(self.grace_s)
        log.info("stopped")


def run_service(
    serve: Callable[[SettingsT], Awaitable[None]],
    settings_type: type[SettingsT],
    argv: Sequence[str] | None,
    *,
    prog: str,
    service: str,
) -> None:
    """A service process: its settings from flags over the environment, structured logs, then `serve`."""
    settings = settings_type.from_args(argv, prog=prog)
    logs.configure(settings.log_level, settings.log_format, service=service)
    asyncio.run(serve(settings))


def start_metrics(port: int) -> None:
    if port:
        start_http_server(port)
        log.info("metrics exported", extra={"port": port})
