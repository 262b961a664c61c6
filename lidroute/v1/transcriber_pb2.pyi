import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RecognitionConfig(_message.Message):
    __slots__ = ("encoding", "sample_rate_hertz", "audio_channel_count", "language_code", "alternative_language_codes", "enable_word_time_offsets", "enable_word_confidence", "on_undetermined", "fallback_language_code")
    class AudioEncoding(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        ENCODING_UNSPECIFIED: _ClassVar[RecognitionConfig.AudioEncoding]
        LINEAR16: _ClassVar[RecognitionConfig.AudioEncoding]
        FLAC: _ClassVar[RecognitionConfig.AudioEncoding]
        MULAW: _ClassVar[RecognitionConfig.AudioEncoding]
        OGG_OPUS: _ClassVar[RecognitionConfig.AudioEncoding]
        MP3: _ClassVar[RecognitionConfig.AudioEncoding]
    ENCODING_UNSPECIFIED: RecognitionConfig.AudioEncoding
    LINEAR16: RecognitionConfig.AudioEncoding
    FLAC: RecognitionConfig.AudioEncoding
    MULAW: RecognitionConfig.AudioEncoding
    OGG_OPUS: RecognitionConfig.AudioEncoding
    MP3: RecognitionConfig.AudioEncoding
    class UndeterminedAction(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        BEST_SERVED: _ClassVar[RecognitionConfig.UndeterminedAction]
        FALLBACK: _ClassVar[RecognitionConfig.UndeterminedAction]
        FAIL: _ClassVar[RecognitionConfig.UndeterminedAction]
    BEST_SERVED: RecognitionConfig.UndeterminedAction
    FALLBACK: RecognitionConfig.UndeterminedAction
    FAIL: RecognitionConfig.UndeterminedAction
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_HERTZ_FIELD_NUMBER: _ClassVar[int]
    AUDIO_CHANNEL_COUNT_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_CODE_FIELD_NUMBER: _ClassVar[int]
    ALTERNATIVE_LANGUAGE_CODES_FIELD_NUMBER: _ClassVar[int]
    ENABLE_WORD_TIME_OFFSETS_FIELD_NUMBER: _ClassVar[int]
    ENABLE_WORD_CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    ON_UNDETERMINED_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_LANGUAGE_CODE_FIELD_NUMBER: _ClassVar[int]
    encoding: RecognitionConfig.AudioEncoding
    sample_rate_hertz: int
    audio_channel_count: int
    language_code: str
    alternative_language_codes: _containers.RepeatedScalarFieldContainer[str]
    enable_word_time_offsets: bool
    enable_word_confidence: bool
    on_undetermined: RecognitionConfig.UndeterminedAction
    fallback_language_code: str
    def __init__(self, encoding: _Optional[_Union[RecognitionConfig.AudioEncoding, str]] = ..., sample_rate_hertz: _Optional[int] = ..., audio_channel_count: _Optional[int] = ..., language_code: _Optional[str] = ..., alternative_language_codes: _Optional[_Iterable[str]] = ..., enable_word_time_offsets: _Optional[bool] = ..., enable_word_confidence: _Optional[bool] = ..., on_undetermined: _Optional[_Union[RecognitionConfig.UndeterminedAction, str]] = ..., fallback_language_code: _Optional[str] = ...) -> None: ...

class StreamingRecognitionConfig(_message.Message):
    __slots__ = ("config", "interim_results")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    INTERIM_RESULTS_FIELD_NUMBER: _ClassVar[int]
    config: RecognitionConfig
    interim_results: bool
    def __init__(self, config: _Optional[_Union[RecognitionConfig, _Mapping]] = ..., interim_results: _Optional[bool] = ...) -> None: ...

class TranscribeRequest(_message.Message):
    __slots__ = ("streaming_config", "audio_content")
    STREAMING_CONFIG_FIELD_NUMBER: _ClassVar[int]
    AUDIO_CONTENT_FIELD_NUMBER: _ClassVar[int]
    streaming_config: StreamingRecognitionConfig
    audio_content: bytes
    def __init__(self, streaming_config: _Optional[_Union[StreamingRecognitionConfig, _Mapping]] = ..., audio_content: _Optional[bytes] = ...) -> None: ...

class LanguageAlternative(_message.Message):
    __slots__ = ("language_code", "probability")
    LANGUAGE_CODE_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    language_code: str
    probability: float
    def __init__(self, language_code: _Optional[str] = ..., probability: _Optional[float] = ...) -> None: ...

class LanguageDetected(_message.Message):
    __slots__ = ("language_code", "probability", "alternatives", "source", "speech_onset", "detection_window")
    class Source(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        SOURCE_UNSPECIFIED: _ClassVar[LanguageDetected.Source]
        HINT: _ClassVar[LanguageDetected.Source]
        DETECTED: _ClassVar[LanguageDetected.Source]
        SINGLE_CANDIDATE: _ClassVar[LanguageDetected.Source]
        NO_SPEECH: _ClassVar[LanguageDetected.Source]
        UNDETERMINED: _ClassVar[LanguageDetected.Source]
    SOURCE_UNSPECIFIED: LanguageDetected.Source
    HINT: LanguageDetected.Source
    DETECTED: LanguageDetected.Source
    SINGLE_CANDIDATE: LanguageDetected.Source
    NO_SPEECH: LanguageDetected.Source
    UNDETERMINED: LanguageDetected.Source
    LANGUAGE_CODE_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    ALTERNATIVES_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    SPEECH_ONSET_FIELD_NUMBER: _ClassVar[int]
    DETECTION_WINDOW_FIELD_NUMBER: _ClassVar[int]
    language_code: str
    probability: float
    alternatives: _containers.RepeatedCompositeFieldContainer[LanguageAlternative]
    source: LanguageDetected.Source
    speech_onset: _duration_pb2.Duration
    detection_window: _duration_pb2.Duration
    def __init__(self, language_code: _Optional[str] = ..., probability: _Optional[float] = ..., alternatives: _Optional[_Iterable[_Union[LanguageAlternative, _Mapping]]] = ..., source: _Optional[_Union[LanguageDetected.Source, str]] = ..., speech_onset: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., detection_window: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class WordInfo(_message.Message):
    __slots__ = ("start_offset", "end_offset", "word", "confidence")
    START_OFFSET_FIELD_NUMBER: _ClassVar[int]
    END_OFFSET_FIELD_NUMBER: _ClassVar[int]
    WORD_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    start_offset: _duration_pb2.Duration
    end_offset: _duration_pb2.Duration
    word: str
    confidence: float
    def __init__(self, start_offset: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., end_offset: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., word: _Optional[str] = ..., confidence: _Optional[float] = ...) -> None: ...

class SpeechRecognitionAlternative(_message.Message):
    __slots__ = ("transcript", "confidence", "words")
    TRANSCRIPT_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    WORDS_FIELD_NUMBER: _ClassVar[int]
    transcript: str
    confidence: float
    words: _containers.RepeatedCompositeFieldContainer[WordInfo]
    def __init__(self, transcript: _Optional[str] = ..., confidence: _Optional[float] = ..., words: _Optional[_Iterable[_Union[WordInfo, _Mapping]]] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("language_code", "uri", "revision", "kind")
    LANGUAGE_CODE_FIELD_NUMBER: _ClassVar[int]
    URI_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    language_code: str
    uri: str
    revision: str
    kind: str
    def __init__(self, language_code: _Optional[str] = ..., uri: _Optional[str] = ..., revision: _Optional[str] = ..., kind: _Optional[str] = ...) -> None: ...

class Timing(_message.Message):
    __slots__ = ("audio_seconds", "language_id_seconds", "queue_seconds", "inference_seconds", "total_seconds")
    AUDIO_SECONDS_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_ID_SECONDS_FIELD_NUMBER: _ClassVar[int]
    QUEUE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    INFERENCE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    audio_seconds: float
    language_id_seconds: float
    queue_seconds: float
    inference_seconds: float
    total_seconds: float
    def __init__(self, audio_seconds: _Optional[float] = ..., language_id_seconds: _Optional[float] = ..., queue_seconds: _Optional[float] = ..., inference_seconds: _Optional[float] = ..., total_seconds: _Optional[float] = ...) -> None: ...

class RecognitionResult(_message.Message):
    __slots__ = ("alternatives", "is_final", "language_code", "result_end_offset", "model", "timing", "worker_id")
    ALTERNATIVES_FIELD_NUMBER: _ClassVar[int]
    IS_FINAL_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_CODE_FIELD_NUMBER: _ClassVar[int]
    RESULT_END_OFFSET_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TIMING_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    alternatives: _containers.RepeatedCompositeFieldContainer[SpeechRecognitionAlternative]
    is_final: bool
    language_code: str
    result_end_offset: _duration_pb2.Duration
    model: ModelInfo
    timing: Timing
    worker_id: str
    def __init__(self, alternatives: _Optional[_Iterable[_Union[SpeechRecognitionAlternative, _Mapping]]] = ..., is_final: _Optional[bool] = ..., language_code: _Optional[str] = ..., result_end_offset: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., model: _Optional[_Union[ModelInfo, _Mapping]] = ..., timing: _Optional[_Union[Timing, _Mapping]] = ..., worker_id: _Optional[str] = ...) -> None: ...

class TranscribeResponse(_message.Message):
    __slots__ = ("language_detected", "result", "request_id")
    LANGUAGE_DETECTED_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    language_detected: LanguageDetected
    result: RecognitionResult
    request_id: str
    def __init__(self, language_detected: _Optional[_Union[LanguageDetected, _Mapping]] = ..., result: _Optional[_Union[RecognitionResult, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class RecognizeRequest(_message.Message):
    __slots__ = ("config", "audio_content")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    AUDIO_CONTENT_FIELD_NUMBER: _ClassVar[int]
    config: RecognitionConfig
    audio_content: bytes
    def __init__(self, config: _Optional[_Union[RecognitionConfig, _Mapping]] = ..., audio_content: _Optional[bytes] = ...) -> None: ...

class RecognizeResponse(_message.Message):
    __slots__ = ("language_detected", "result", "request_id", "segments")
    LANGUAGE_DETECTED_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SEGMENTS_FIELD_NUMBER: _ClassVar[int]
    language_detected: LanguageDetected
    result: RecognitionResult
    request_id: str
    segments: _containers.RepeatedCompositeFieldContainer[RecognitionResult]
    def __init__(self, language_detected: _Optional[_Union[LanguageDetected, _Mapping]] = ..., result: _Optional[_Union[RecognitionResult, _Mapping]] = ..., request_id: _Optional[str] = ..., segments: _Optional[_Iterable[_Union[RecognitionResult, _Mapping]]] = ...) -> None: ...

class ListLanguagesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ServedLanguage(_message.Message):
    __slots__ = ("language_code", "model", "live_workers", "served", "detectable")
    LANGUAGE_CODE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    LIVE_WORKERS_FIELD_NUMBER: _ClassVar[int]
    SERVED_FIELD_NUMBER: _ClassVar[int]
    DETECTABLE_FIELD_NUMBER: _ClassVar[int]
    language_code: str
    model: ModelInfo
    live_workers: int
    served: bool
    detectable: bool
    def __init__(self, language_code: _Optional[str] = ..., model: _Optional[_Union[ModelInfo, _Mapping]] = ..., live_workers: _Optional[int] = ..., served: _Optional[bool] = ..., detectable: _Optional[bool] = ...) -> None: ...

class ListLanguagesResponse(_message.Message):
    __slots__ = ("languages",)
    LANGUAGES_FIELD_NUMBER: _ClassVar[int]
    languages: _containers.RepeatedCompositeFieldContainer[ServedLanguage]
    def __init__(self, languages: _Optional[_Iterable[_Union[ServedLanguage, _Mapping]]] = ...) -> None: ...
