"""What every lidroute gRPC server shares: health, reflection, metrics, graceful shutdown.

A server reports NOT_SERVING until its models are loaded and again while it drains, so that
load balancers and Kubernetes readiness probes send traffic only where it can be served.
SIGTERM and SIGINT start a graceful stop: health flips first, in-flight calls get `grace`
seconds, then the server stops.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Iterable

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import start_http_server

log = logging.getLogger(__name__)

OVERALL = ""  # the health service name that means "the whole server"


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
    ) -> None:
        self.listen = listen
        self.service_names = list(service_names)
        self.grace_s = grace_s
        self.server = grpc.aio.server(options=server_options(max_message_bytes, max_connection_age_s))
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            [*self.service_names, health.SERVICE_NAME, reflection.SERVICE_NAME], self.server
        )
        self._stop = asyncio.Event()
        self.port = 0

    async def start(self) -> int:
        self.port = self.server.add_insecure_port(self.listen)
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


def start_metrics(port: int) -> None:
    if port:
        start_http_server(port)
        log.info("metrics exported", extra={"port": port})
