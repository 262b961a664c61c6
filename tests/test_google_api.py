"""Google Cloud Speech-to-Text v1 on the router's port, driven by Google's own Python client, unchanged.

Integration tests run against the suite's stack (en + es, sw); the translation rules are tested
without a network.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterator

import grpc
import numpy as np
import pytest
import soundfile as sf
from google.api_core import exceptions as gexc
from google.cloud import speech_v1 as gspeech
from google.cloud.speech_v1.services.speech.transports import SpeechGrpcTransport

from lidroute.audio import MULAW_TABLE, AudioLimits, StreamDecoder, float_to_pcm16
from lidroute.errors import InvalidArgument
from lidroute.registry import language_of
from router.google import G_RecognitionConfig, Languages, lidroute_config
from tests.test_transcribe import of_this_audio, pad, wav

Encoding = gspeech.RecognitionConfig.AudioEncoding


# ---------------------------------------------------------------------- translation, no network
def test_a_tag_is_read_as_its_language_and_und_means_detect() -> None:
    assert [language_of(t) for t in ["es-ES", "en_US", "SW", "cmn-Hans-CN", "und", "", " "]] == [
        "es",
        "en",
        "sw",
        "cmn",
        "",
        "",
        "",
    ]


def test_language_code_alone_is_a_hint_and_with_alternatives_the_candidates() -> None:
    hint, _ = lidroute_config(G_RecognitionConfig(language_code="es-MX"))
    assert (hint.language_code, list(hint.alternative_language_codes)) == ("es", [])
    config = G_RecognitionConfig(
        language_code="es-ES", alternative_language_codes=["en-US", "sw-KE", "es-MX"]
    )
    ours, languages = lidroute_config(config)
    assert (ours.language_code, list(ours.alternative_language_codes)) == ("", ["es", "en", "sw"])
    # A result speaks the tag the client used, the first one for its language.
    assert (languages.tag("es"), languages.tag("sw"), languages.tag("fr")) == ("es-ES", "sw-KE", "fr")
    detect, _ = lidroute_config(G_RecognitionConfig(language_code="und"))
    assert (detect.language_code, list(detect.alternative_language_codes)) == ("", [])
    assert Languages(G_RecognitionConfig(alternative_language_codes=["en-GB"])).alternatives == ["en"]


@pytest.mark.parametrize(
    ("config", "match"),
    [
        (G_RecognitionConfig(encoding=Encoding.AMR), "encoding AMR is not supported"),
        (G_RecognitionConfig(encoding=Encoding.WEBM_OPUS), "encoding WEBM_OPUS is not supported"),
        (G_RecognitionConfig(encoding=42), "encoding 42 is not supported"),
        (G_RecognitionConfig(enable_separate_recognition_per_channel=True), "send each channel"),
    ],
)
def test_what_lidroute_cannot_do_is_refused_with_a_reason(config, match: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidArgument, match=match):
        lidroute_config(config)


def test_mulaw_decodes_as_libsndfile_decodes_it() -> None:
    tone = (0.5 * np.sin(np.linspace(0, 400 * np.pi, 8000))).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, tone, 8000, format="RAW", subtype="ULAW")
    data = buf.getvalue()
    reference, _ = sf.read(
        io.BytesIO(data), format="RAW", subtype="ULAW", samplerate=8000, channels=1, dtype="float32"
    )
    assert np.abs(MULAW_TABLE[np.frombuffer(data, np.uint8)] - reference).max() < 1e-6
    decoder = StreamDecoder.raw(8000, 1, AudioLimits(), mulaw=True)
    audio = np.concatenate([decoder.feed(data[:1001]), decoder.feed(data[1001:]), decoder.finish()])
    assert abs(len(audio) - 16000) <= 2 and np.abs(audio).max() > 0.4


# ---------------------------------------------------------------------- Google's client, unchanged
@pytest.fixture(scope="module")
def google_client(router_addr: str) -> Iterator[gspeech.SpeechClient]:
    channel = grpc.insecure_channel(router_addr)
    yield gspeech.SpeechClient(transport=SpeechGrpcTransport(channel=channel))
    channel.close()


@pytest.mark.integration
def test_google_recognize_detects_among_the_alternatives_and_answers_in_the_clients_tag(
    google_client: gspeech.SpeechClient, speech
) -> None:
    utt = speech["es"][0]
    response = google_client.recognize(
        config=speech_config(language_code="en-US", alternative_language_codes=["es-ES", "sw-KE"]),
        audio={"content": wav(pad(utt.audio, 0.3, 0.3))},
        timeout=60,
    )
    (result,) = response.results
    assert result.language_code == "es-ES"
    assert of_this_audio(utt, result.alternatives[0].transcript, speech)
    words = result.alternatives[0].words
    assert words and all(w.start_time.total_seconds() <= w.end_time.total_seconds() for w in words)
    assert 0 < result.alternatives[0].confidence <= 1
    assert response.total_billed_time.total_seconds() > 0 and response.request_id > 0


def speech_config(**fields: object) -> gspeech.RecognitionConfig:
    return gspeech.RecognitionConfig(enable_word_time_offsets=True, **fields)  # type: ignore[arg-type]


@pytest.mark.integration
def test_google_recognize_takes_a_hint_mp3_and_mulaw(google_client: gspeech.SpeechClient, speech) -> None:
    import soxr

    utt = speech["sw"][1]
    buf = io.BytesIO()
    sf.write(buf, pad(utt.audio, 0.3, 0.3), 16000, format="MP3")
    mp3 = google_client.recognize(
        config=speech_config(encoding=Encoding.MP3, language_code="sw-TZ"),
        audio={"content": buf.getvalue()},
        timeout=60,
    )
    assert mp3.results[0].language_code == "sw-TZ"
    assert of_this_audio(utt, mp3.results[0].alternatives[0].transcript, speech)
    phone = soxr.resample(pad(utt.audio, 0.3, 0.3), 16000, 8000).astype(np.float32)
    ulaw = io.BytesIO()
    sf.write(ulaw, phone, 8000, format="RAW", subtype="ULAW")
    telephony = google_client.recognize(
        config=speech_config(encoding=Encoding.MULAW, sample_rate_hertz=8000, language_code="sw"),
        audio={"content": ulaw.getvalue()},
        timeout=60,
    )
    assert telephony.results[0].alternatives[0].transcript


@pytest.mark.integration
def test_google_streaming_recognize_streams_interim_and_one_final_result(
    google_client: gspeech.SpeechClient, speech
) -> None:
    utt = speech["en"][0]
    # Shorter than the suite's final_after_seconds (4 s): longer audio gets a final per stretch.
    audio = float_to_pcm16(pad(utt.audio, 0.5, 0.2))
    step = 3200  # 0.1 s

    def requests() -> Iterator[gspeech.StreamingRecognizeRequest]:
        for i in range(0, len(audio), step):
            yield gspeech.StreamingRecognizeRequest(audio_content=audio[i : i + step])
            time.sleep(0.1)

    config = gspeech.StreamingRecognitionConfig(
        config=speech_config(encoding=Encoding.LINEAR16, sample_rate_hertz=16000, language_code=""),
        interim_results=True,
        enable_voice_activity_events=True,
    )
    responses = list(google_client.streaming_recognize(config, requests(), timeout=60))
    events = [r.speech_event_type for r in responses if r.speech_event_type]
    assert events == [
        gspeech.StreamingRecognizeResponse.SpeechEventType.SPEECH_ACTIVITY_BEGIN,
        gspeech.StreamingRecognizeResponse.SpeechEventType.SPEECH_ACTIVITY_END,
    ]
    results = [r.results[0] for r in responses if r.results]
    finals = [r for r in results if r.is_final]
    assert len(finals) == 1 and results[-1].is_final and len(results) > 1
    assert finals[0].language_code == "en"
    assert finals[0].alternatives[0].words


@pytest.mark.integration
def test_google_streaming_of_long_audio_pairs_the_speech_events_of_each_stretch(
    google_client: gspeech.SpeechClient, speech
) -> None:
    """Past the suite's final_after_seconds (4 s), each stretch between pauses is a final result:
    the speech ends with each, and begins again where it ended, as Google's server says of a
    stream whose speaker stops and starts."""
    utt = speech["en"][0]
    gap = np.zeros(16000, np.float32)
    audio = float_to_pcm16(pad(np.concatenate([utt.audio, gap, utt.audio, gap, utt.audio]), 0.5, 0.2))
    config = gspeech.StreamingRecognitionConfig(
        config=speech_config(encoding=Encoding.LINEAR16, sample_rate_hertz=16000, language_code="en"),
        enable_voice_activity_events=True,
    )
    requests = (
        gspeech.StreamingRecognizeRequest(audio_content=audio[i : i + 32000])
        for i in range(0, len(audio), 32000)
    )
    responses = list(google_client.streaming_recognize(config, requests, timeout=60))
    kind = gspeech.StreamingRecognizeResponse.SpeechEventType
    events = [r.speech_event_type for r in responses if r.speech_event_type]
    finals = [r.results[0] for r in responses if r.results and r.results[0].is_final]
    assert len(finals) >= 2
    assert events == [kind.SPEECH_ACTIVITY_BEGIN, kind.SPEECH_ACTIVITY_END] * len(finals)
    times = [r.speech_event_time.total_seconds() for r in responses if r.speech_event_type]
    assert times == sorted(times)


@pytest.mark.integration
def test_google_long_running_recognize_is_an_operation_any_client_can_poll(
    google_client: gspeech.SpeechClient, speech
) -> None:
    utt = speech["en"][1]
    operation = google_client.long_running_recognize(
        config=speech_config(language_code="en-GB"), audio={"content": wav(pad(utt.audio, 0.3, 0.3))}
    )
    result = operation.result(timeout=60)
    assert result.results[0].language_code == "en-GB"
    assert of_this_audio(utt, result.results[0].alternatives[0].transcript, speech)
    assert operation.metadata.progress_percent == 100
    listed = google_client.transport.operations_client.list_operations("", "")
    assert operation.operation.name in {op.name for op in listed}


@pytest.mark.integration
@pytest.mark.parametrize(
    ("config", "audio", "error", "match"),
    [
        ({"language_code": "xx-XX"}, None, gexc.NotFound, "'xx' has no registered model"),
        ({"encoding": Encoding.AMR, "sample_rate_hertz": 8000}, None, gexc.InvalidArgument, "AMR"),
        ({}, {"uri": "gs://bucket/a.wav"}, gexc.InvalidArgument, "audio.uri is not supported"),
        ({}, {"content": b"garbage" * 100}, gexc.InvalidArgument, "not a file lidroute reads"),
        ({"encoding": Encoding.LINEAR16}, None, gexc.InvalidArgument, "sample_rate_hertz is required"),
    ],
)
def test_google_clients_get_googles_exceptions_with_lidroutes_reasons(
    google_client: gspeech.SpeechClient, speech, config, audio, error, match
) -> None:
    content = {"content": wav(speech["en"][0].audio)} if audio is None else audio
    with pytest.raises(error, match=match):
        google_client.recognize(config=gspeech.RecognitionConfig(**config), audio=content, timeout=30)


@pytest.mark.integration
@pytest.mark.parametrize("version", ["v1", "v1alpha"])
def test_reflection_describes_googles_service_for_grpcurl_and_postman(router_addr: str, version: str) -> None:
    from google.protobuf import descriptor_pb2
    from grpc_reflection.v1alpha import reflection_pb2 as rpb

    with grpc.insecure_channel(router_addr) as channel:
        call = channel.stream_stream(
            f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo",
            request_serializer=rpb.ServerReflectionRequest.SerializeToString,
            response_deserializer=rpb.ServerReflectionResponse.FromString,
        )
        listed, described = call(
            iter(
                [
                    rpb.ServerReflectionRequest(list_services=""),
                    rpb.ServerReflectionRequest(file_containing_symbol="google.cloud.speech.v1.Speech"),
                ]
            ),
            timeout=10,
        )
    names = {s.name for s in listed.list_services_response.service}
    assert {
        "lidroute.v1.Transcriber",
        "google.cloud.speech.v1.Speech",
        "google.longrunning.Operations",
    } <= names
    files = [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in described.file_descriptor_response.file_descriptor_proto
    ]
    methods = {m.name: m for f in files for s in f.service if s.name == "Speech" for m in s.method}
    assert set(methods) == {"Recognize", "LongRunningRecognize", "StreamingRecognize"}
    assert methods["StreamingRecognize"].client_streaming and methods["StreamingRecognize"].server_streaming
    assert any(m.name == "RecognitionConfig" for f in files for m in f.message_type)
