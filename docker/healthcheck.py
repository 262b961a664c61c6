"""Container health check: asks the server's gRPC health service whether it is SERVING.

Docker's HEALTHCHECK runs this every few seconds, so it must stay light: it imports grpc and the
health stubs only, never a service module (those pull in torch). The port comes from the same
`LIDROUTE_*` variable the service reads, so a changed listen address moves the check with it.

    python healthcheck.py LIDROUTE_LISTEN_ADDRESS '[::]:50051'
"""

from __future__ import annotations

import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def probe_target(listen_address: str) -> str:
    """The loopback address to dial for a server listening on `listen_address` (`[::]:50051`, `0.0.0.0:1`)."""
    _, sep, port = listen_address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"{listen_address!r} is not a host:port listen address")
    return f"localhost:{port}"


def check(target: str, timeout: float = 3.0) -> bool:
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
        except grpc.RpcError as exc:
            print(f"{target}: {exc.code().name}", file=sys.stderr)  # type: ignore[attr-defined]
            return False
    serving = reply.status == health_pb2.HealthCheckResponse.SERVING
    if not serving:
        print(f"{target}: {health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)}", file=sys.stderr)
    return serving


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: healthcheck.py ENV_VARIABLE DEFAULT_LISTEN_ADDRESS", file=sys.stderr)
        return 2
    env_name, default = args
    return 0 if check(probe_target(os.environ.get(env_name, default))) else 1


if __name__ == "__main__":
    sys.exit(main())
