"""The OpenAI-compatible REST front: `POST /v1/audio/transcriptions` and `GET /v1/models` over the router.

Clients built on OpenAI's SDKs (or curl) point their base URL here and transcribe unchanged. The
gateway holds no model and no queue: each upload becomes one `Recognize` call to the router over
gRPC, so detection, routing, limits and error reasons are the router's; its status becomes the
HTTP status and OpenAI's JSON error shape. Any `model` name is accepted (clients hard-code
`whisper-1`) and means lidroute's automatic routing; `language` pins the language; `prompt` and
`temperature` are accepted and have no effect.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import grpc
import uvicorn
from fastapi import APIRouter, FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import Counter, Histogram
from pydantic import Field
from starlette.exceptions import HTTPException

from lidroute import client as transcripts
from lidroute import logs
from lidroute.auth import AccessSettings, token_of
from lidroute.client import Client
from lidroute.registry import language_of
from lidroute.server import start_metrics
from lidroute.v1 import transcriber_pb2 as pb
from rest_gateway import formats

log = logging.getLogger(__name__)

#: The model `GET /v1/models` lists; every other name means the same.
MODEL_ID = "lidroute"

REQUESTS = Counter("lidroute_gateway_requests_total", "HTTP requests", ["route", "status"])
LATENCY = Histogram(
    "lidroute_gateway_request_seconds",
    "Time to answer a transcription",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300),
)
AUDIO = Counter("lidroute_gateway_audio_seconds_total", "Seconds of audio transcribed")

#: A router status as (HTTP status, OpenAI error type).
HTTP_OF_GRPC = {
    grpc.StatusCode.INVALID_ARGUMENT: (400, "invalid_request_error"),
    grpc.StatusCode.FAILED_PRECONDITION: (400, "invalid_request_error"),
    grpc.StatusCode.OUT_OF_RANGE: (400, "invalid_request_error"),
    grpc.StatusCode.NOT_FOUND: (404, "invalid_request_error"),
    grpc.StatusCode.UNAUTHENTICATED: (401, "authentication_error"),
    grpc.StatusCode.PERMISSION_DENIED: (403, "permission_error"),
    grpc.StatusCode.RESOURCE_EXHAUSTED: (429, "rate_limit_error"),
    grpc.StatusCode.CANCELLED: (499, "invalid_request_error"),
    grpc.StatusCode.UNAVAILABLE: (503, "server_error"),
    grpc.StatusCode.DEADLINE_EXCEEDED: (504, "server_error"),
}


class GatewaySettings(AccessSettings):
    """REST gateway: OpenAI's /v1/audio/transcriptions over the router.

    With `auth_tokens_file`, /v1/ wants an API key (OpenAI's `Authorization: Bearer`); the key a
    caller sends is passed on to the router, which may check it too.
    """

    http_host: str = Field("127.0.0.1", description="HTTP listen address (0.0.0.0 for every interface)")
    http_port: int = Field(8000, ge=0, le=65535, description="HTTP port")
    router_address: str = Field("localhost:50051", description="the router's gRPC address")
    router_tls: bool = Field(False, description="dial the router with TLS (system roots, or router_ca_file)")
    router_ca_file: str = Field("", description="PEM CA bundle that signed the router's certificate")
    request_timeout_seconds: float = Field(300.0, gt=0, description="deadline of one transcription")
    max_upload_bytes: int = Field(25 * 1024 * 1024, gt=0, description="largest audio file accepted")
    grace_seconds: float = Field(10.0, ge=0, description="drain time on SIGTERM")


def openai_error(
    status: int, message: str, kind: str, code: str | None = None, param: str | None = None
) -> Response:
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return JSONResponse(body, status_code=status)


def _from_grpc(exc: grpc.aio.AioRpcError) -> Response:
    status, kind = HTTP_OF_GRPC.get(exc.code(), (500, "server_error"))
    response = openai_error(status, exc.details() or exc.code().name, kind, code=exc.code().name.lower())
    # The router's admission control says when to come back; HTTP clients (and OpenAI's SDK) read it here.
    for key, value in exc.trailing_metadata() or ():
        if key == "retry-after":
            response.headers["retry-after"] = str(value)
    return response


api = APIRouter()


def create_app(settings: GatewaySettings) -> FastAPI:
    """The ASGI app: the routes below, OpenAI's error shape for every error, the API key check;
    its settings, tokens and router client live in `app.state` (the client opens and closes
    with the app's lifespan)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.client = Client(
            settings.router_address, tls=settings.router_tls, ca_file=settings.router_ca_file
        )
        try:
            yield
        finally:
            await app.state.client.close()

    app = FastAPI(title="lidroute", summary="OpenAI-compatible speech recognition", lifespan=lifespan)
    app.state.settings = settings
    app.state.tokens = settings.tokens()
    app.middleware("http")(require_key)
    app.exception_handler(HTTPException)(http_error)
    app.exception_handler(RequestValidationError)(invalid_request)
    app.include_router(api)
    return app


async def require_key(request: Request, call_next: Any) -> Response:
    """The API wants a key when tokens are configured; probes (/livez, /healthz) never do."""
    tokens = request.app.state.tokens
    if tokens is not None and request.url.path.startswith("/v1/"):
        key = token_of(list(request.headers.items()))
        if not tokens.accepts(key):
            message = (
                "Incorrect API key provided."
                if key
                else "You didn't provide an API key: send it as 'Authorization: Bearer <key>'."
            )
            return openai_error(401, message, "invalid_request_error", code="invalid_api_key")
    return await call_next(request)


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    kind = "invalid_request_error" if exc.status_code < 500 else "server_error"
    return openai_error(exc.status_code, str(exc.detail), kind)


async def invalid_request(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0]
    param = str(first["loc"][-1]) if first.get("loc") else None
    return openai_error(400, f"{param}: {first['msg']}", "invalid_request_error", param=param)


@api.get("/v1/models")
async def models() -> dict[str, Any]:
    return {"object": "list", "data": [_model()]}


@api.get("/v1/models/{model}")
async def model(model: str) -> Response:
    if model != MODEL_ID:
        return openai_error(
            404, f"The model '{model}' does not exist", "invalid_request_error", "model_not_found"
        )
    return JSONResponse(_model())


@api.get("/livez")
async def livez() -> dict[str, str]:
    return {"status": "ok"}


@api.get("/healthz")
async def healthz(request: Request) -> Response:
    """Ready when the router says it is serving."""
    stub = health_pb2_grpc.HealthStub(request.app.state.client.channel)
    try:
        reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=2)
        serving = reply.status == health_pb2.HealthCheckResponse.SERVING
    except grpc.aio.AioRpcError:
        serving = False
    body = {"router": "serving" if serving else "unavailable"}
    return JSONResponse(body, status_code=200 if serving else 503)


def _refused_options(response_format: str, granularities: list[str]) -> Response | None:
    if response_format not in formats.FORMATS:
        return _bad(f"response_format must be one of {', '.join(formats.FORMATS)}", "response_format")
    if any(g not in formats.GRANULARITIES for g in granularities):
        return _bad("timestamp_granularities[] takes 'segment' and 'word'", "timestamp_granularities")
    if granularities and response_format != "verbose_json":
        return _bad("timestamp_granularities[] needs response_format verbose_json", "timestamp_granularities")
    return None


@api.post("/v1/audio/transcriptions", response_model=None)
async def transcriptions(
    request: Request,
    file: Annotated[UploadFile, File()],
    model: Annotated[str, Form()],
    language: Annotated[str, Form()] = "",
    prompt: Annotated[str, Form()] = "",
    response_format: Annotated[str, Form()] = "json",
    temperature: Annotated[float, Form()] = 0.0,
    granularities: Annotated[list[str] | None, Form(alias="timestamp_granularities[]")] = None,
) -> Response:
    """One upload, one Recognize call to the router; `model`, `prompt` and `temperature` are
    accepted for OpenAI's clients and change nothing."""
    started = time.perf_counter()
    settings: GatewaySettings = request.app.state.settings
    granularities = granularities or []
    refused = _refused_options(response_format, granularities)
    if refused is not None:
        return refused
    data = await file.read(settings.max_upload_bytes + 1)
    if len(data) > settings.max_upload_bytes:
        limit = settings.max_upload_bytes
        return openai_error(413, f"Maximum content size limit ({limit}) exceeded", "invalid_request_error")
    config = pb.RecognitionConfig(
        language_code=language_of(language), enable_word_time_offsets=True, enable_word_confidence=True
    )
    try:
        result = await request.app.state.client.recognize(
            data,
            config,
            timeout=settings.request_timeout_seconds,
            token=token_of(list(request.headers.items())) or None,
        )
    except grpc.aio.AioRpcError as exc:
        REQUESTS.labels("transcriptions", exc.code().name).inc()
        log.info("transcription failed", extra={"status": exc.code().name, "detail": exc.details()})
        return _from_grpc(exc)
    _observe(result, time.perf_counter() - started, response_format)
    response = _render(result, response_format, granularities)
    response.headers["x-request-id"] = result.request_id
    return response


def _observe(result: Any, seconds: float, response_format: str) -> None:
    """Metrics and the access-log line of one transcription."""
    audio = result.timing.get("audio", 0.0)
    REQUESTS.labels("transcriptions", "OK").inc()
    LATENCY.observe(seconds)
    AUDIO.inc(audio)
    log.info(
        "transcribed",
        extra={
            "request_id": result.request_id,
            "language": result.language,
            "audio_s": round(audio, 3),
            "seconds": round(seconds, 3),
            "format": response_format,
        },
    )


def _bad(message: str, param: str) -> Response:
    return openai_error(400, message, "invalid_request_error", param=param)


def _model() -> dict[str, Any]:
    return {"id": MODEL_ID, "object": "model", "created": 0, "owned_by": "lidroute"}


def _render(result: Any, response_format: str, granularities: list[str]) -> Response:
    if response_format == "json":
        return JSONResponse({"text": result.transcript})
    if response_format == "text":
        return PlainTextResponse(result.transcript + "\n")
    parts = transcripts.segments(result)
    if response_format == "srt":
        return PlainTextResponse(transcripts.srt(parts))
    if response_format == "vtt":
        return PlainTextResponse(transcripts.vtt(parts), media_type="text/vtt")
    return JSONResponse(formats.verbose_json(result, parts, granularities))


async def serve(settings: GatewaySettings) -> None:
    start_metrics(settings.metrics_port)
    config = uvicorn.Config(
        create_app(settings),
        host=settings.http_host,
        port=settings.http_port,
        log_config=None,  # lidroute's structured logs, set up by main
        access_log=False,  # one line per transcription, with its request id, instead
        timeout_graceful_shutdown=int(settings.grace_seconds),
        ssl_certfile=settings.tls_cert_file or None,
        ssl_keyfile=settings.tls_key_file or None,
        ssl_ca_certs=settings.tls_client_ca_file or None,
        ssl_cert_reqs=ssl.CERT_REQUIRED if settings.tls_client_ca_file else ssl.CERT_NONE,
    )
    server = uvicorn.Server(config)
    log.info("listening", extra={"address": f"http://{settings.http_host}:{settings.http_port}"})
    await server.serve()


def main(argv: list[str] | None = None) -> None:
    settings = GatewaySettings.from_args(argv, prog="rest_gateway")
    logs.configure(settings.log_level, settings.log_format, service="rest-gateway")
    asyncio.run(serve(settings))
