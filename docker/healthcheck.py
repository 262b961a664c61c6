"""Container health check: asks a server whether it is ready, over gRPC health or HTTP.

Docker's HEALTHCHECK runs this every few seconds, so it must stay light: it imports grpc and the
health stubs only (and those only for a gRPC check), never a service module (those pull in torch).
The port comes from the same `LIDROUTE_*` variable the service reads, so a changed listen address
or port moves the check with it; so does TLS (`LIDROUTE_TLS_CERT_FILE`): a TLS port is asked over TLS.

    python healthcheck.py LIDROUTE_LISTEN_ADDRESS '[::]:50051'          # gRPC health: SERVING?
    python healthcheck.py --http LIDROUTE_HTTP_PORT 8000 /healthz       # HTTP: 200 on the path?
"""

from __future__ import annotations

import http.client
import os
import sys
from pathlib import Path

USAGE = (
    "usage: healthcheck.py ENV_VARIABLE DEFAULT_LISTEN_ADDRESS\n"
    "       healthcheck.py --http ENV_VARIABLE DEFAULT_PORT PATH"
)


def probe_target(listen_address: str) -> str:
    """The loopback address to dial for a server listening on `listen_address` (`[::]:50051`, `0.0.0.0:1`)."""
    _, sep, port = listen_address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"{listen_address!r} is not a host:port listen address")
    return f"localhost:{port}"


def certificate_name(pem: bytes) -> str:
    """A name the certificate holds (its first DNS name, else its common name): the probe dials
    localhost, so it must ask TLS to verify that name instead."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    cert = x509.load_pem_x509_certificate(pem)
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = names.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        dns = []
    if dns:
        return dns[0].replace("*.", "probe.", 1)
    common = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(common[0].value) if common else "localhost"


def open_channel(target: str):  # type: ignore[no-untyped-def]
    """A channel as the server's port speaks: TLS when the server has a certificate (the same
    `LIDROUTE_TLS_*` variables it reads), trusting the `ca.crt` beside it (a kubernetes.io/tls
    Secret's layout) or else the certificate itself; with mutual TLS, the server's own pair
    stands as the client's."""
    import grpc

    cert_file = os.environ.get("LIDROUTE_TLS_CERT_FILE", "")
    if not cert_file:
        return grpc.insecure_channel(target)
    cert = Path(cert_file)
    ca = cert.with_name("ca.crt")
    roots = (ca if ca.is_file() else cert).read_bytes()
    pair: tuple[bytes | None, bytes | None] = (None, None)
    if os.environ.get("LIDROUTE_TLS_CLIENT_CA_FILE"):
        pair = (Path(os.environ.get("LIDROUTE_TLS_KEY_FILE", "")).read_bytes(), cert.read_bytes())
    credentials = grpc.ssl_channel_credentials(roots, *pair)
    name = certificate_name(cert.read_bytes())
    return grpc.secure_channel(target, credentials, options=[("grpc.ssl_target_name_override", name)])


def check(target: str, timeout: float = 3.0) -> bool:
    """Whether the gRPC server at `target` says its overall health is SERVING."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with open_channel(target) as channel:
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


def http_port(value: str) -> int:
    """The port of an HTTP server from its port setting (`8000`)."""
    if not value.strip().isdigit() or not 0 < int(value) < 65536:
        raise ValueError(f"{value!r} is not a port")
    return int(value)


def check_http(port: int, path: str, timeout: float = 3.0) -> bool:
    """Whether GET `path` on the loopback `port` answers 200 (no proxy: the server is in this container)."""
    connection = http.client.HTTPConnection("localhost", port, timeout=timeout)
    try:
        connection.request("GET", path)
        status = connection.getresponse().status
    except OSError as exc:
        print(f"localhost:{port}{path}: {exc}", file=sys.stderr)
        return False
    finally:
        connection.close()
    if status != 200:
        print(f"localhost:{port}{path}: HTTP {status}", file=sys.stderr)
    return status == 200


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["--http"] and len(args) == 4:
        env_name, default, path = args[1:]
        return 0 if check_http(http_port(os.environ.get(env_name, default)), path) else 1
    if len(args) != 2 or args[0].startswith("-"):
        print(USAGE, file=sys.stderr)
        return 2
    env_name, default = args
    return 0 if check(probe_target(os.environ.get(env_name, default))) else 1


if __name__ == "__main__":
    sys.exit(main())
