"""Domain errors and the one place that maps them to gRPC status codes.

Core logic raises these; servicers only translate, and the servers' interceptor
(`lidroute.server`) turns them into a status with `grpc_errors`. A client therefore
gets the same status for the same problem whichever code path found it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import grpc
import redis.exceptions

log = logging.getLogger(__name__)


class LidrouteError(Exception):
    """An error whose status a client should see; each kind names its code where it is declared."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init_subclass__(cls, code: grpc.StatusCode | None = None, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if code is not None:
            cls.code = code

    @classmethod
    def from_status(cls, code_name: str, message: str) -> LidrouteError:
        """Rebuilds an error another process reported by status name (e.g. a worker's error event)."""
        error = cls(message)
        error.code = grpc.StatusCode[code_name] if code_name in grpc.StatusCode.__members__ else cls.code
        return error


class InvalidArgument(LidrouteError, code=grpc.StatusCode.INVALID_ARGUMENT):
    """Bad config or audio from the client; retrying the same request cannot succeed."""


class LimitExceeded(InvalidArgument):
    """The request is over a configured limit; the message names the limit."""


class NotFound(LidrouteError, code=grpc.StatusCode.NOT_FOUND):
    """What the request names does not exist (or no longer)."""


class LanguageNotFound(NotFound):
    """No model is registered for the language."""


class LanguageNotServed(LidrouteError, code=grpc.StatusCode.FAILED_PRECONDITION):
    """A model is registered but no live worker serves it, or the request allows none that is served."""


class AudioTimeout(LidrouteError, code=grpc.StatusCode.OUT_OF_RANGE):
    """A stream that stopped sending audio, or sends it far slower than it is spoken, ends rather
    than hold a worker's slot (Google answers the same with OUT_OF_RANGE)."""


class ResourceExhausted(LidrouteError, code=grpc.StatusCode.RESOURCE_EXHAUSTED):
    """At a limit that protects work already admitted; the same request may succeed after
    `retry_after` seconds, which the client gets as `retry-after` metadata."""

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Unavailable(LidrouteError, code=grpc.StatusCode.UNAVAILABLE):
    """A backend (Redis, the language-ID service, the workers) cannot be reached; retry later."""


class DeadlineExceeded(LidrouteError, code=grpc.StatusCode.DEADLINE_EXCEEDED):
    """The request's deadline (the client's, or max_request_seconds) passed before its result."""


class JobFailed(LidrouteError, code=grpc.StatusCode.ABORTED):
    """A worker gave up on the job (e.g. after too many deliveries)."""


class Cancelled(LidrouteError, code=grpc.StatusCode.CANCELLED):
    """The client went away; its job is stopped."""


#: Seconds a client is asked to wait when Redis refused a write for want of memory.
FULL_REDIS_RETRY_AFTER = 2.0


def status_of(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status a client should see for an exception raised while serving it."""
    if isinstance(exc, LidrouteError):
        return exc.code, str(exc)
    if isinstance(exc, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError):
        return grpc.StatusCode.UNAVAILABLE, f"queue backend (Redis) unavailable: {exc}"
    if isinstance(exc, redis.exceptions.OutOfMemoryError):
        # Redis at its maxmemory (noeviction) refuses writes: the work that is queued drains, so
        # the same request may well pass in a moment.
        return (
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "queue backend (Redis) is full (its maxmemory); retry shortly",
        )
    if isinstance(exc, grpc.aio.AioRpcError):
        return exc.code(), exc.details() or exc.code().name
    if isinstance(exc, TimeoutError):
        return grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded"
    return grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}"


@asynccontextmanager
async def grpc_errors(context: grpc.aio.ServicerContext, **log_fields: object) -> AsyncIterator[None]:
    """Turns exceptions raised inside a handler into a gRPC status with a useful message."""
    try:
        yield
    except asyncio.CancelledError:
        raise
    except grpc.aio.AbortError:
        raise
    except Exception as exc:
        code, message = status_of(exc)
        if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
            retry_after = exc.retry_after if isinstance(exc, ResourceExhausted) else FULL_REDIS_RETRY_AFTER
            context.set_trailing_metadata((("retry-after", f"{retry_after:g}"),))
        level = logging.ERROR if code == grpc.StatusCode.INTERNAL else logging.INFO
        log.log(
            level,
            "request failed",
            exc_info=code == grpc.StatusCode.INTERNAL,
            extra={"status": code.name, "detail": message, **log_fields},
        )
        await context.abort(code, message)
