"""Who may call a public server: TLS on its port (client certificates optional) and bearer tokens.

Tokens live in a file, one per line (a Kubernetes Secret mounted as a file, say), read again
whenever the file changes, so a token is added or revoked without a restart. A call carries one
as `authorization: Bearer <token>` (what Google's and OpenAI's clients send) or `x-api-key`. One
interceptor checks every method of the server but those of the services named exempt (health
checks by default, so probes need no token); a refusal is UNAUTHENTICATED, counted like any other
status. With no tokens file, no token is asked for.
"""

from __future__ import annotations

import hmac
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc
from pydantic import Field

from lidroute.server import HANDLER_FACTORIES, MethodInterceptor
from lidroute.settings import CommaList, CommonSettings

log = logging.getLogger(__name__)

HEALTH_SERVICE = "grpc.health.v1.Health"


class AccessSettings(CommonSettings):
    """TLS and tokens of a public server (the router's port, the REST gateway)."""

    tls_cert_file: str = Field("", description="PEM certificate chain: serve TLS ('' : plaintext)")
    tls_key_file: str = Field("", description="PEM private key of tls_cert_file")
    tls_client_ca_file: str = Field(
        "", description="PEM CA bundle: also require client certificates it signed (mutual TLS)"
    )
    auth_tokens_file: str = Field(
        "",
        description="file of accepted bearer tokens, one per line, re-read on change ('' : no token needed)",
    )
    auth_exempt_services: CommaList = Field(
        [HEALTH_SERVICE], description="gRPC services callable without a token (health checks by default)"
    )

    def server_credentials(self) -> grpc.ServerCredentials | None:
        """TLS credentials for the port, or None for plaintext; a half-given pair is refused."""
        if not (self.tls_cert_file or self.tls_key_file):
            if self.tls_client_ca_file:
                raise ValueError("tls_client_ca_file needs tls_cert_file and tls_key_file")
            return None
        if not (self.tls_cert_file and self.tls_key_file):
            raise ValueError("TLS needs both tls_cert_file and tls_key_file")
        pair = (Path(self.tls_key_file).read_bytes(), Path(self.tls_cert_file).read_bytes())
        client_ca = Path(self.tls_client_ca_file).read_bytes() if self.tls_client_ca_file else None
        return grpc.ssl_server_credentials(
            [pair], root_certificates=client_ca, require_client_auth=client_ca is not None
        )

    def tokens(self) -> Tokens | None:
        return Tokens(Path(self.auth_tokens_file)) if self.auth_tokens_file else None


class Tokens:
    """The tokens of a file, read again when its modification time or size changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[float, int] | None = None
        self._tokens: list[bytes] = []
        self._load()  # a missing or empty file stops the server at start, not at the first call
        if not self._tokens:
            raise ValueError(f"{path} holds no token: every call would be refused")

    def _load(self) -> None:
        info = os.stat(self.path)
        stamp = (info.st_mtime, info.st_size)
        if stamp == self._stamp:
            return
        lines = self.path.read_text(encoding="utf-8").splitlines()
        self._tokens = [t.strip().encode() for t in lines if t.strip() and not t.lstrip().startswith("#")]
        self._stamp = stamp
        log.info("tokens loaded", extra={"path": str(self.path), "tokens": len(self._tokens)})

    def accepts(self, token: str) -> bool:
        try:
            self._load()
        except OSError as exc:  # a Secret being replaced: keep the tokens read last
            log.warning("tokens file unreadable; keeping the last tokens", extra={"error": str(exc)})
        given = token.encode()
        # Compared in constant time, and with every token, so timing tells nothing.
        return bool(token) and sum(hmac.compare_digest(given, t) for t in self._tokens) > 0


def token_of(metadata: Sequence[tuple[str, Any]] | None) -> str:
    """The bearer token or API key a call carries; "" for none."""
    for key, value in metadata or ():
        text = value.decode() if isinstance(value, bytes) else str(value)
        if key == "authorization" and text[:7].lower() == "bearer ":
            return text[7:].strip()
        if key == "x-api-key":
            return text.strip()
    return ""


class AuthInterceptor(MethodInterceptor):
    """Refuses, as UNAUTHENTICATED, every call without an accepted token to a service not exempt."""

    def __init__(self, tokens: Tokens, exempt: Sequence[str]) -> None:
        self.tokens = tokens
        self.exempt = frozenset(exempt)

    def wrap(
        self, handler: grpc.RpcMethodHandler, service: str, method: str, details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler:
        given = token_of(details.invocation_metadata)
        if service in self.exempt or self.tokens.accepts(given):
            return handler
        message = (
            "this token is not accepted"
            if given
            else "a token is required: send 'authorization: Bearer <token>' (or 'x-api-key') metadata"
        )

        async def deny(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

        async def deny_stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)
            yield  # an async generator, as a streaming handler must be

        make = HANDLER_FACTORIES[handler.request_streaming, handler.response_streaming]
        return make(
            deny_stream if handler.response_streaming else deny,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


def server_security(
    settings: AccessSettings,
) -> tuple[grpc.ServerCredentials | None, list[grpc.aio.ServerInterceptor]]:
    """The port's credentials and the interceptors that check tokens, from the settings."""
    tokens = settings.tokens()
    interceptors = [AuthInterceptor(tokens, settings.auth_exempt_services)] if tokens else []
    return settings.server_credentials(), interceptors
