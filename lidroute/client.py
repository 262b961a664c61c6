"""The Python client library: stream files or audio to a lidroute router, and write what comes
back as subtitles.

Files are decoded on the client and streamed as LINEAR16 at their own sample rate, so that
the router can detect the language from the first second while the rest is still on its way.
A transcript's segments are cut where the speaker pauses (and before they grow past `longest`
seconds): where subtitles break, and near what Whisper's segments are.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np
import soundfile as sf
from grpc._cython import cygrpc

from lidroute.audio import float_to_pcm16
from lidroute.jobs import join_results
from lidroute.v1 import transcriber_pb2 as pb
from lidroute.v1 import transcriber_pb2_grpc as pb_grpc

Encoding = pb.RecognitionConfig.AudioEncoding


@dataclass
class Transcription:
    request_id: str = ""
    language: str = ""
    probability: float = 0.0
    source: str = ""
    alternatives: list[tuple[str, float]] = field(default_factory=list)
    transcript: str = ""
    confidence: float = 0.0
    words: list[tuple[str, float, float, float]] = field(default_factory=list)
    partials: list[str] = field(default_factory=list)
    model: str = ""
    worker: str = ""
    timing: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Word:
    word: str
    start: float
    end: float
    confidence: float


@dataclass(frozen=True)
class Segment:
    id: int
    start: float
    end: float
    words: tuple[Word, ...]

    @property
    def text(self) -> str:
        return " ".join(w.word for w in self.words)


def segments(result: Transcription, *, pause: float = 0.6, longest: float = 15.0) -> list[Segment]:
    """The transcript cut at pauses of at least `pause` s and before a segment passes `longest` s;
    without word timings, one segment over the whole audio."""
    words = [Word(*w) for w in result.words]
    if not words:
        if not result.transcript:
            return []
        audio = result.timing.get("audio", 0.0)
        return [
            Segment(
                0,
                0.0,
                audio,
                tuple(Word(w, 0.0, audio, result.confidence) for w in result.transcript.split()),
            )
        ]
    groups: list[list[Word]] = [[words[0]]]
    for word in words[1:]:
        current = groups[-1]
        if word.start - current[-1].end >= pause or word.end - current[0].start > longest:
            groups.append([word])
        else:
            current.append(word)
    return [Segment(i, g[0].start, g[-1].end, tuple(g)) for i, g in enumerate(groups)]


def clock(seconds: float, decimal: str) -> str:
    """A subtitle timestamp, HH:MM:SS followed by `decimal` and milliseconds."""
    ms = round(max(seconds, 0.0) * 1000)
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    secs, ms = divmod(ms, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal}{ms:03d}"


def srt(parts: list[Segment]) -> str:
    return "".join(
        f"{i}\n{clock(s.start, ',')} --> {clock(s.end, ',')}\n{s.text}\n\n" for i, s in enumerate(parts, 1)
    )


def vtt(parts: list[Segment]) -> str:
    return "WEBVTT\n\n" + "".join(
        f"{clock(s.start, '.')} --> {clock(s.end, '.')}\n{s.text}\n\n" for s in parts
    )


def _seconds(d: object) -> float:
    return d.seconds + d.nanos / 1e9  # type: ignore[attr-defined]


def read_pcm16(path: Path | str) -> tuple[bytes, int, int]:
    """A file as LINEAR16 bytes, sample rate and channel count.

    Read as floats and scaled, not as int16: libsndfile hands a float WAV's samples (-1..1) to an
    int16 read unscaled, which is silence.
    """
    try:
        audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, TypeError) as exc:  # TypeError: a .raw name, which libsndfile takes as RAW
        detail = getattr(exc, "error_string", "no header")
        raise ValueError(
            f"not an audio file lidroute reads (WAV, FLAC, OGG, MP3): {detail}; "
            "raw audio needs --encoding and --rate"
        ) from None
    return float_to_pcm16(audio), rate, audio.shape[1]


async def _send(call: grpc.aio.StreamStreamCall, request: pb.TranscribeRequest) -> bool:
    """Writes one request; False once the call has ended. Mirrors grpc.aio's write() minus the
    status overwrite of grpc/grpc#36066 (the fix proposed upstream), with the public API as the
    fallback should grpc's internals change."""
    cython_call = getattr(call, "_cython_call", None)
    metadata_sent = getattr(call, "_metadata_sent", None)
    if cython_call is None or metadata_sent is None:
        await call.write(request)
        return True
    if call.done():
        return False
    await metadata_sent.wait()
    if call.done():
        return False
    try:
        await cython_call.send_serialized_message(request.SerializeToString())
    except cygrpc.InternalError:
        return False
    return True


class TranscribeStream:
    """A Transcribe call whose requests are written by a task of their own.

    When the server ends a call early (a bad config, say) while requests are still being sent,
    grpc.aio's own `write()` turns the failed write into INTERNAL and can overwrite the status
    the server sent (grpc/grpc#36066). The reader must see the server's status, so a write that
    fails because the call has ended is simply the end of writing here.
    """

    def __init__(
        self, call: grpc.aio.StreamStreamCall, requests: AsyncIterator[pb.TranscribeRequest]
    ) -> None:
        self.call = call
        self._writer = asyncio.create_task(self._write(requests))

    async def _write(self, requests: AsyncIterator[pb.TranscribeRequest]) -> None:
        try:
            async for request in requests:
                if not await _send(self.call, request):
                    return
            await self.call.done_writing()
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError, grpc.aio.UsageError):
            pass  # the call has ended; reading it gives the status that says why

    async def __aiter__(self) -> AsyncIterator[pb.TranscribeResponse]:
        try:
            while True:
                response = await self.call.read()
                if response is grpc.aio.EOF:
                    return
                yield response
        finally:
            self._writer.cancel()

    def cancel(self) -> None:
        self._writer.cancel()
        self.call.cancel()


def channel_credentials(
    tls: bool = False, ca_file: str = "", cert_file: str = "", key_file: str = ""
) -> grpc.ChannelCredentials | None:
    """TLS to a router (with `ca_file` for a private CA; a client certificate for mutual TLS), or
    None for plaintext."""
    if not (tls or ca_file or cert_file):
        return None
    read = lambda path: Path(path).read_bytes() if path else None  # noqa: E731
    return grpc.ssl_channel_credentials(read(ca_file), read(key_file), read(cert_file))


class Client:
    def __init__(
        self,
        address: str,
        *,
        token: str = "",
        tls: bool = False,
        ca_file: str = "",
        cert_file: str = "",
        key_file: str = "",
        options: Sequence[tuple[str, int]] = (),
    ) -> None:
        """`token`: sent as `authorization: Bearer` on every call; TLS when `tls` or any file is given."""
        options = [
            ("grpc.max_send_message_length", 64 * 1024 * 1024),
            ("grpc.max_receive_message_length", 64 * 1024 * 1024),
            *options,
        ]
        credentials = channel_credentials(tls, ca_file, cert_file, key_file)
        self.channel = (
            grpc.aio.insecure_channel(address, options=options)
            if credentials is None
            else grpc.aio.secure_channel(address, credentials, options=options)
        )
        self.token = token
        self.stub = pb_grpc.TranscriberStub(self.channel)

    async def close(self) -> None:
        await self.channel.close()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def stream(
        self,
        config: pb.RecognitionConfig,
        chunks: AsyncIterator[bytes] | Sequence[bytes],
        *,
        interim_results: bool = False,
        timeout: float | None = None,
        pace_seconds: float = 0.0,
    ) -> TranscribeStream:
        """Starts a Transcribe call; iterate the returned stream for responses, or cancel it."""

        async def requests() -> AsyncIterator[pb.TranscribeRequest]:
            yield pb.TranscribeRequest(
                streaming_config=pb.StreamingRecognitionConfig(config=config, interim_results=interim_results)
            )
            if isinstance(chunks, Sequence):
                for chunk in chunks:
                    yield pb.TranscribeRequest(audio_content=chunk)
                    if pace_seconds:
                        await asyncio.sleep(pace_seconds)
            else:
                async for chunk in chunks:
                    yield pb.TranscribeRequest(audio_content=chunk)

        return TranscribeStream(self.stub.Transcribe(timeout=timeout, metadata=self._auth()), requests())

    async def transcribe_pcm(
        self,
        pcm: bytes,
        sample_rate: int,
        *,
        channels: int = 1,
        language: str = "",
        alternatives: Sequence[str] = (),
        interim_results: bool = False,
        word_time_offsets: bool = True,
        chunk_seconds: float = 0.1,
        realtime: bool = False,
        timeout: float | None = None,
        encoding: int = Encoding.LINEAR16,
    ) -> Transcription:
        """Streams raw audio (LINEAR16, or 8-bit MULAW) in `chunk_seconds` pieces."""
        width = 1 if encoding == Encoding.MULAW else 2
        step = max(width * channels, int(sample_rate * chunk_seconds) * width * channels)
        config = pb.RecognitionConfig(
            encoding=encoding,  # type: ignore[arg-type]
            sample_rate_hertz=sample_rate,
            audio_channel_count=channels,
            language_code=language,
            alternative_language_codes=list(alternatives),
            enable_word_time_offsets=word_time_offsets,
            enable_word_confidence=word_time_offsets,
        )
        chunks = [pcm[i : i + step] for i in range(0, len(pcm), step)]
        call = self.stream(
            config,
            chunks,
            interim_results=interim_results,
            timeout=timeout,
            pace_seconds=chunk_seconds if realtime else 0.0,
        )
        return await collect(call)

    async def transcribe_file(self, path: Path | str, **kwargs: object) -> Transcription:
        pcm, rate, channels = await asyncio.to_thread(read_pcm16, path)
        return await self.transcribe_pcm(pcm, rate, channels=channels, **kwargs)  # type: ignore[arg-type]

    def _auth(self, token: str | None = None) -> tuple[tuple[str, str], ...] | None:
        token = self.token if token is None else token
        return (("authorization", f"Bearer {token}"),) if token else None

    async def recognize(
        self,
        data: bytes,
        config: pb.RecognitionConfig,
        timeout: float | None = None,
        token: str | None = None,
    ) -> Transcription:
        """`token`: this call's, instead of the client's (a gateway passing its callers' on)."""
        reply = await self.stub.Recognize(
            pb.RecognizeRequest(config=config, audio_content=data),
            timeout=timeout,
            metadata=self._auth(token),
        )
        out = Transcription(request_id=reply.request_id)
        _apply_language(out, reply.language_detected)
        _apply_result(out, reply.result)
        return out

    async def list_languages(self, timeout: float | None = 10.0) -> pb.ListLanguagesResponse:
        return await self.stub.ListLanguages(
            pb.ListLanguagesRequest(), timeout=timeout, metadata=self._auth()
        )


def _apply_language(out: Transcription, detected: pb.LanguageDetected) -> None:
    out.language = detected.language_code
    out.probability = detected.probability
    out.source = pb.LanguageDetected.Source.Name(detected.source)
    out.alternatives = [(a.language_code, a.probability) for a in detected.alternatives]


def _apply_result(out: Transcription, result: pb.RecognitionResult) -> None:
    if result.alternatives:
        best = result.alternatives[0]
        out.transcript = best.transcript
        out.confidence = best.confidence
        out.words = [
            (w.word, _seconds(w.start_offset), _seconds(w.end_offset), w.confidence) for w in best.words
        ]
    out.model = result.model.uri
    out.worker = result.worker_id
    t = result.timing
    out.timing = {
        "audio": t.audio_seconds,
        "language_id": t.language_id_seconds,
        "queue": t.queue_seconds,
        "inference": t.inference_seconds,
        "total": t.total_seconds,
    }


async def collect(call: TranscribeStream | AsyncIterator[pb.TranscribeResponse]) -> Transcription:
    """Folds a Transcribe response stream into one Transcription."""
    out = Transcription()
    finals: list[pb.RecognitionResult] = []  # one per stretch of a long stream
    async for response in call:
        out.request_id = response.request_id
        if response.HasField("language_detected"):
            _apply_language(out, response.language_detected)
        elif response.result.is_final:
            finals.append(response.result)
        elif response.result.alternatives:
            out.partials.append(response.result.alternatives[0].transcript)
    if finals:
        _apply_result(out, join_results(finals))
    return out


def encode_wav(audio: np.ndarray, rate: int = 16000) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, audio, rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()
