"""Google Cloud Speech-to-Text v1 on the wire, so that clients written for Google talk to lidroute unchanged.

The router serves `google.cloud.speech.v1.Speech` (Recognize, StreamingRecognize,
LongRunningRecognize) and `google.longrunning.Operations` beside `lidroute.v1.Transcriber`, on the
same port, with the message types of the published `google-cloud-speech` package. Each call is
translated into a lidroute request and runs through the same `Router`: detection, routing,
limits and error statuses are those of the native API.

Languages: Google's tags name a region (`es-ES`), lidroute's models a language (`es`). A tag is
read as its language; an empty `language_code` or `und` means "detect among everything served",
and `alternative_language_codes` (with `language_code`) are the candidates to detect among, as
Google documents them. Results carry the tag the client used for the language found.

Long-running recognitions run in the router that took them; their state lives in Redis, so any
router of the deployment answers GetOperation. One whose router stopped before it finished is
reported failed (ABORTED) once its deadline has passed, never left running forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc
import redis.asyncio as aioredis
from google.cloud.speech_v1.types import cloud_speech
from google.longrunning import operations_pb2, operations_pb2_grpc
from google.protobuf import descriptor_pb2, descriptor_pool, empty_pb2, timestamp_pb2
from google.rpc import status_pb2

from lidroute.audio import duration
from lidroute.errors import Cancelled, InvalidArgument, LidrouteError, NotFound, Unavailable, status_of
from lidroute.keys import Keys
from lidroute.registry import language_of
from lidroute.server import HANDLER_FACTORIES
from lidroute.v1 import transcriber_pb2 as pb
from router.core import Router, config_and_audio

# The published package's messages are proto-plus wrappers; gRPC reads and writes their protobuf classes.
G_RecognitionConfig = cloud_speech.RecognitionConfig.pb()
G_RecognizeRequest = cloud_speech.RecognizeRequest.pb()
G_RecognizeResponse = cloud_speech.RecognizeResponse.pb()
G_LongRunningRecognizeRequest = cloud_speech.LongRunningRecognizeRequest.pb()
G_LongRunningRecognizeResponse = cloud_speech.LongRunningRecognizeResponse.pb()
G_LongRunningRecognizeMetadata = cloud_speech.LongRunningRecognizeMetadata.pb()
G_StreamingRecognizeRequest = cloud_speech.StreamingRecognizeRequest.pb()
G_StreamingRecognizeResponse = cloud_speech.StreamingRecognizeResponse.pb()
G_StreamingRecognitionResult = cloud_speech.StreamingRecognitionResult.pb()
G_SpeechRecognitionResult = cloud_speech.SpeechRecognitionResult.pb()
G_SpeechRecognitionAlternative = cloud_speech.SpeechRecognitionAlternative.pb()
G_WordInfo = cloud_speech.WordInfo.pb()

SPEECH_SERVICE = "google.cloud.speech.v1.Speech"
OPERATIONS_SERVICE = "google.longrunning.Operations"

GEncoding = G_RecognitionConfig.AudioEncoding
Encoding = pb.RecognitionConfig.AudioEncoding
#: Google's encodings lidroute decodes; MP3 and unspecified are files read from their header.
ENCODINGS = {
    GEncoding.ENCODING_UNSPECIFIED: Encoding.ENCODING_UNSPECIFIED,
    GEncoding.LINEAR16: Encoding.LINEAR16,
    GEncoding.FLAC: Encoding.FLAC,
    GEncoding.MULAW: Encoding.MULAW,
    GEncoding.OGG_OPUS: Encoding.OGG_OPUS,
    GEncoding.MP3: Encoding.MP3,
}
SpeechEvent = G_StreamingRecognizeResponse.SpeechEventType
NO_SPEECH = pb.LanguageDetected.Source.NO_SPEECH


class Languages:
    """The tags of one request by language, so that a result speaks the client's dialect back."""

    def __init__(self, config: Any) -> None:
        self.tags: dict[str, str] = {}
        for tag in [config.language_code, *config.alternative_language_codes]:
            self.tags.setdefault(language_of(tag), tag)
        self.tags.pop("", None)
        self.primary = language_of(config.language_code)
        self.alternatives = list(self.tags) if config.alternative_language_codes else []

    def tag(self, lang: str) -> str:
        return self.tags.get(lang, lang)


def lidroute_config(config: Any) -> tuple[pb.RecognitionConfig, Languages]:
    """A Google RecognitionConfig as lidroute's; what lidroute cannot do is refused, not ignored,
    where ignoring it would give the client something else than it asked for."""
    if config.encoding not in ENCODINGS:
        name = GEncoding.Name(config.encoding) if config.encoding in GEncoding.values() else config.encoding
        raise InvalidArgument(
            f"encoding {name} is not supported; use LINEAR16, MULAW, FLAC, OGG_OPUS, MP3 or "
            "ENCODING_UNSPECIFIED (WAV, FLAC, OGG or MP3 files)"
        )
    if config.enable_separate_recognition_per_channel:
        raise InvalidArgument(
            "enable_separate_recognition_per_channel is not supported: channels are mixed down to one; "
            "send each channel as a request of its own"
        )
    languages = Languages(config)
    ours = pb.RecognitionConfig(
        encoding=ENCODINGS[config.encoding],
        sample_rate_hertz=config.sample_rate_hertz,
        audio_channel_count=config.audio_channel_count,
        enable_word_time_offsets=config.enable_word_time_offsets,
        enable_word_confidence=config.enable_word_confidence,
    )
    if languages.alternatives:
        ours.alternative_language_codes.extend(languages.alternatives)
    elif languages.primary:
        ours.language_code = languages.primary
    return ours, languages


def _alternative(alt: pb.SpeechRecognitionAlternative) -> Any:
    return G_SpeechRecognitionAlternative(
        transcript=alt.transcript,
        confidence=alt.confidence,
        words=[
            G_WordInfo(start_time=w.start_offset, end_time=w.end_offset, word=w.word, confidence=w.confidence)
            for w in alt.words
        ],
    )


def recognition_results(result: pb.RecognitionResult, languages: Languages) -> list[Any]:
    """A final lidroute result as Google's results: none when nothing was said, as Google answers."""
    if not any(alt.transcript for alt in result.alternatives):
        return []
    return [
        G_SpeechRecognitionResult(
            alternatives=[_alternative(alt) for alt in result.alternatives],
            result_end_time=result.result_end_offset,
            language_code=languages.tag(result.language_code),
        )
    ]


def response_fields(response: pb.RecognizeResponse, languages: Languages) -> dict[str, Any]:
    """What Google's RecognizeResponse and LongRunningRecognizeResponse both carry."""
    return {
        "results": [
            one
            for segment in response.segments or [response.result]
            for one in recognition_results(segment, languages)
        ],
        "total_billed_time": duration(response.result.timing.audio_seconds),
        "request_id": request_number(response.request_id),
    }


def request_number(request_id: str) -> int:
    """Google's request ids are int64; lidroute's (in its logs) are hex: the first 60 bits of it."""
    return int(request_id[:15], 16) if request_id else 0


def recognition_audio(audio: Any) -> bytes:
    if audio.uri:
        raise InvalidArgument(
            "audio.uri is not supported: lidroute reads no cloud storage; send the bytes in audio.content"
        )
    if not audio.content:
        raise InvalidArgument("audio.content is empty")
    return bytes(audio.content)


class Operations:
    """Long-running recognitions: each runs as a task of the router that took it; its state, an
    `Operation` kept in Redis for `ttl` seconds, can be read, listed, cancelled and deleted from any
    router."""

    def __init__(self, router: Router, client: aioredis.Redis, keys: Keys, ttl: int) -> None:
        self.router = router
        self.client = client
        self.keys = keys
        self.ttl = ttl
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.closing = False

    async def start(self, config: pb.RecognitionConfig, languages: Languages, audio: bytes) -> Any:
        # Refused now, as Recognize would be, rather than accepted and failed in the operation.
        self.router.admit(coming=1)
        name = uuid.uuid4().hex
        now = _now()
        operation = operations_pb2.Operation(name=name)
        operation.metadata.Pack(G_LongRunningRecognizeMetadata(start_time=now, last_update_time=now))
        # A result later than this cannot come: past it, a running operation's router has stopped.
        deadline = time.time() + self.router.settings.max_request_seconds + 60
        await self._save(operation, deadline)
        task = asyncio.create_task(self._run(operation, config, languages, audio), name=f"op-{name}")
        self.tasks[name] = task
        task.add_done_callback(lambda _: self.tasks.pop(name, None))
        return operation

    async def _run(
        self, operation: Any, config: pb.RecognitionConfig, languages: Languages, audio: bytes
    ) -> None:
        try:
            response = await self.router.recognize(config, audio, None)
            operation.response.Pack(G_LongRunningRecognizeResponse(**response_fields(response, languages)))
        except asyncio.CancelledError:
            stopped = Unavailable("the router stopped before the operation finished; send it again")
            operation.error.CopyFrom(
                _status(stopped if self.closing else Cancelled("the operation was cancelled"))
            )
        except Exception as exc:
            operation.error.CopyFrom(_status(exc))
        await self._finish(operation)

    async def _finish(self, operation: Any) -> None:
        """Records the outcome unless the operation ended already (cancelled, or deleted)."""
        current = await self.client.hget(self.keys.operation(operation.name), "operation")
        if current is None or operations_pb2.Operation.FromString(current).done:
            return
        metadata = G_LongRunningRecognizeMetadata()
        operation.metadata.Unpack(metadata)
        metadata.progress_percent = 100
        metadata.last_update_time.CopyFrom(_now())
        operation.metadata.Pack(metadata)
        operation.done = True
        await self._save(operation, 0.0)

    async def _save(self, operation: Any, deadline: float) -> None:
        key = self.keys.operation(operation.name)
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping={"operation": operation.SerializeToString(), "deadline": deadline})
            pipe.expire(key, self.ttl)
            await pipe.execute()

    async def get(self, name: str) -> Any:
        stored = await self.client.hmget(self.keys.operation(name), ["operation", "deadline"])
        if stored[0] is None:
            raise NotFound(f"operation {name!r} not found (unknown, deleted or expired)")
        operation = operations_pb2.Operation.FromString(stored[0])
        if not operation.done and time.time() > float(stored[1] or 0):
            stopped = "the router running this operation stopped before it finished; send it again"
            operation.error.CopyFrom(_status(LidrouteError.from_status("ABORTED", stopped)))
            await self._finish(operation)
            operation.done = True
        return operation

    async def cancel(self, name: str) -> None:
        operation = await self.get(name)
        if not operation.done:
            operation.error.CopyFrom(_status(Cancelled("the operation was cancelled")))
            await self._finish(operation)
        self._stop(name)

    async def delete(self, name: str) -> None:
        await self.get(name)
        await self.client.delete(self.keys.operation(name))
        self._stop(name)

    def _stop(self, name: str) -> None:
        """Stops the operation's work, when it runs in this router."""
        task = self.tasks.get(name)
        if task is not None:
            task.cancel()

    async def list(self, page_size: int, page_token: str) -> tuple[list[Any], str]:
        """A page of operations in Redis key order; the token is where the scan goes on."""
        cursor = int(page_token) if page_token.isdigit() else 0
        names: list[str] = []
        size = page_size or 100
        pattern = self.keys.operation("*")
        while True:
            cursor, keys = await self.client.scan(cursor, match=pattern, count=max(size, 100))
            names += [k.decode().removeprefix(self.keys.operation("")) for k in keys]
            if cursor == 0 or len(names) >= size:
                break
        operations = []
        for name in names:
            with contextlib.suppress(NotFound):  # expired between the scan and the read
                operations.append(await self.get(name))
        return operations, str(cursor) if cursor else ""

    async def wait(self, name: str, timeout: float) -> Any:
        until = time.monotonic() + timeout
        while True:
            operation = await self.get(name)
            if operation.done or time.monotonic() >= until:
                return operation
            await asyncio.sleep(min(0.25, max(until - time.monotonic(), 0.0)))

    async def close(self, grace: float) -> None:
        """On shutdown: operations still running get `grace` seconds, then are recorded as aborted."""
        self.closing = True
        running = list(self.tasks.values())
        if running:
            _, pending = await asyncio.wait(running, timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)


def _now() -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.GetCurrentTime()
    return stamp


def _status(exc: BaseException) -> status_pb2.Status:
    code, message = status_of(exc)
    return status_pb2.Status(code=code.value[0], message=message)


class SpeechServicer:
    """`google.cloud.speech.v1.Speech`: each call translated into a lidroute request and back."""

    def __init__(self, router: Router, operations: Operations) -> None:
        self.router = router
        self.operations = operations

    async def Recognize(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        config, languages = lidroute_config(request.config)
        audio = recognition_audio(request.audio)
        response = await self.router.recognize(config, audio, context.time_remaining())
        return G_RecognizeResponse(**response_fields(response, languages))

    async def LongRunningRecognize(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        if request.HasField("output_config"):
            raise InvalidArgument("output_config is not supported: the result is in the operation")
        config, languages = lidroute_config(request.config)
        return await self.operations.start(config, languages, recognition_audio(request.audio))

    async def StreamingRecognize(
        self, request_iterator: AsyncIterator[Any], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Any]:
        streaming, audio = await config_and_audio(request_iterator)
        config, languages = lidroute_config(streaming.config)
        ours = pb.StreamingRecognitionConfig(config=config, interim_results=streaming.interim_results)
        # Long audio comes as a final result per stretch between pauses: its speech ends with each,
        # and the next stretch's begins where that one ended, so the events come in pairs.
        resumes_at: Any = None
        async for event in self.router.transcribe(ours, audio, context.time_remaining()):
            number = request_number(event.request_id)
            if event.HasField("language_detected"):
                detected = event.language_detected
                if streaming.enable_voice_activity_events and detected.source != NO_SPEECH:
                    yield G_StreamingRecognizeResponse(
                        speech_event_type=SpeechEvent.SPEECH_ACTIVITY_BEGIN,
                        speech_event_time=detected.speech_onset,
                        request_id=number,
                    )
                continue
            result = event.result
            if resumes_at is not None and streaming.enable_voice_activity_events:
                yield G_StreamingRecognizeResponse(
                    speech_event_type=SpeechEvent.SPEECH_ACTIVITY_BEGIN,
                    speech_event_time=resumes_at,
                    request_id=number,
                )
            resumes_at = None
            if result.is_final:
                resumes_at = result.result_end_offset
                results = recognition_results(result, languages)
                if streaming.enable_voice_activity_events:
                    yield G_StreamingRecognizeResponse(
                        speech_event_type=SpeechEvent.SPEECH_ACTIVITY_END,
                        speech_event_time=result.result_end_offset,
                        request_id=number,
                    )
                if results:
                    final = results[0]
                    yield G_StreamingRecognizeResponse(
                        results=[
                            G_StreamingRecognitionResult(
                                alternatives=final.alternatives,
                                is_final=True,
                                result_end_time=final.result_end_time,
                                language_code=final.language_code,
                            )
                        ],
                        total_billed_time=duration(result.timing.audio_seconds),
                        request_id=number,
                    )
                continue
            yield G_StreamingRecognizeResponse(
                results=[
                    G_StreamingRecognitionResult(
                        alternatives=[_alternative(alt) for alt in result.alternatives],
                        result_end_time=result.result_end_offset,
                        language_code=languages.tag(result.language_code),
                    )
                ],
                request_id=number,
            )


class OperationsServicer(operations_pb2_grpc.OperationsServicer):  # type: ignore[misc]
    """`google.longrunning.Operations` over the router's long-running recognitions."""

    def __init__(self, operations: Operations) -> None:
        self.operations = operations

    async def GetOperation(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await self.operations.get(request.name)

    async def ListOperations(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        if request.filter:
            raise InvalidArgument("filter is not supported")
        page, token = await self.operations.list(request.page_size, request.page_token)
        return operations_pb2.ListOperationsResponse(operations=page, next_page_token=token)

    async def CancelOperation(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await self.operations.cancel(request.name)
        return empty_pb2.Empty()

    async def DeleteOperation(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await self.operations.delete(request.name)
        return empty_pb2.Empty()

    async def WaitOperation(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        timeout = request.timeout.ToTimedelta().total_seconds() if request.HasField("timeout") else 60.0
        remaining = context.time_remaining()
        return await self.operations.wait(
            request.name, min(timeout, remaining - 0.5 if remaining is not None else timeout)
        )


# ---------------------------------------------------------------------- the service's definition
#: (method, request type, response type, client streams, server streams)
_METHODS: Sequence[tuple[str, Any, Any, bool, bool]] = (
    ("Recognize", G_RecognizeRequest, G_RecognizeResponse, False, False),
    ("LongRunningRecognize", G_LongRunningRecognizeRequest, operations_pb2.Operation, False, False),
    ("StreamingRecognize", G_StreamingRecognizeRequest, G_StreamingRecognizeResponse, True, True),
)


def register_service_descriptor() -> None:
    """Declares `google.cloud.speech.v1.Speech` in the descriptor pool, over the published messages,
    so that reflection (grpcurl, Postman) can describe the service as it describes lidroute's."""
    pool = descriptor_pool.Default()
    with contextlib.suppress(KeyError):
        pool.FindServiceByName(SPEECH_SERVICE)
        return
    messages_file = G_RecognizeRequest.DESCRIPTOR.file
    service = descriptor_pb2.ServiceDescriptorProto(name=SPEECH_SERVICE.rpartition(".")[2])
    for name, request, response, client_streaming, server_streaming in _METHODS:
        service.method.add(
            name=name,
            input_type="." + request.DESCRIPTOR.full_name,
            output_type="." + response.DESCRIPTOR.full_name,
            client_streaming=client_streaming,
            server_streaming=server_streaming,
        )
    pool.Add(
        descriptor_pb2.FileDescriptorProto(
            name="lidroute/google_speech_v1_service.proto",
            package=messages_file.package,
            syntax="proto3",
            dependency=[messages_file.name, operations_pb2.Operation.DESCRIPTOR.file.name],
            service=[service],
        )
    )


def add_to_server(server: grpc.aio.Server, speech: SpeechServicer, operations: OperationsServicer) -> None:
    handlers = {
        name: HANDLER_FACTORIES[client_streaming, server_streaming](
            getattr(speech, name),
            request_deserializer=request.FromString,
            response_serializer=response.SerializeToString,
        )
        for name, request, response, client_streaming, server_streaming in _METHODS
    }
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SPEECH_SERVICE, handlers)])
    operations_pb2_grpc.add_OperationsServicer_to_server(operations, server)
