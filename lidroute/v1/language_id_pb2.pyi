from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class IdentifyRequest(_message.Message):
    __slots__ = ("audio_content", "candidate_language_codes", "top_k")
    AUDIO_CONTENT_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_LANGUAGE_CODES_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    audio_content: bytes
    candidate_language_codes: _containers.RepeatedScalarFieldContainer[str]
    top_k: int
    def __init__(self, audio_content: _Optional[bytes] = ..., candidate_language_codes: _Optional[_Iterable[str]] = ..., top_k: _Optional[int] = ...) -> None: ...

class LanguageScore(_message.Message):
    __slots__ = ("language_code", "probability")
    LANGUAGE_CODE_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    language_code: str
    probability: float
    def __init__(self, language_code: _Optional[str] = ..., probability: _Optional[float] = ...) -> None: ...

class IdentifyResponse(_message.Message):
    __slots__ = ("languages", "model")
    LANGUAGES_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    languages: _containers.RepeatedCompositeFieldContainer[LanguageScore]
    model: str
    def __init__(self, languages: _Optional[_Iterable[_Union[LanguageScore, _Mapping]]] = ..., model: _Optional[str] = ...) -> None: ...

class ListModelLanguagesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListModelLanguagesResponse(_message.Message):
    __slots__ = ("language_codes", "model")
    LANGUAGE_CODES_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    language_codes: _containers.RepeatedScalarFieldContainer[str]
    model: str
    def __init__(self, language_codes: _Optional[_Iterable[str]] = ..., model: _Optional[str] = ...) -> None: ...
