"""Who may call: TLS (and mutual TLS) on a server's port, bearer tokens from a file that can change
under a running server, health checks open to probes. Real `grpc.aio` servers built by `GrpcServer`
with a real certificate authority made here; the REST gateway as a process in front of the suite's
router."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import grpc
import openai
import pytest
import requests
from grpc_health.v1 import health_pb2, health_pb2_grpc

from lidroute.auth import AccessSettings, server_security
from lidroute.client import Client
from lidroute.server import GrpcServer
from lidroute.v1 import transcriber_pb2 as pb
from lidroute.v1 import transcriber_pb2_grpc as pb_grpc
from tests.test_rest_gateway import running_gateway
from tests.test_transcribe import of_this_audio, wav

pytestmark = pytest.mark.faults  # refusals: no token, a wrong one, no certificate

TOKEN = "s3cret-token"


# ---------------------------------------------------------------------- a server with access settings
class Languages(pb_grpc.TranscriberServicer):
    async def ListLanguages(self, request, context):  # type: ignore[no-untyped-def]
        return pb.ListLanguagesResponse(languages=[pb.ServedLanguage(language_code="sw", served=True)])


async def _serve(settings: AccessSettings) -> GrpcServer:
    credentials, interceptors = server_security(settings)
    server = GrpcServer(
        "127.0.0.1:0", ["lidroute.v1.Transcriber"], credentials=credentials, interceptors=interceptors
    )
    pb_grpc.add_TranscriberServicer_to_server(Languages(), server.server)
    await server.start()
    await server.set_serving(True)
    return server


@pytest.fixture
def tokens_file(tmp_path: Path) -> Path:
    path = tmp_path / "tokens"
    path.write_text(f"# one token per line\n{TOKEN}\n\nother-token\n")
    return path


async def _languages(address: str, **client: object) -> list[str]:
    async with Client(address, **client) as c:  # type: ignore[arg-type]
        return [lang.language_code for lang in (await c.list_languages(timeout=5)).languages]


async def _status(address: str, **client: object) -> grpc.StatusCode:
    try:
        await _languages(address, **client)
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


async def test_a_token_is_needed_checked_and_revoked_by_editing_its_file(tokens_file: Path) -> None:
    server = await _serve(AccessSettings(auth_tokens_file=str(tokens_file)))
    address = f"127.0.0.1:{server.port}"
    try:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await _languages(address)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "authorization: Bearer" in (err.value.details() or "")
        assert await _status(address, token="guess") == grpc.StatusCode.UNAUTHENTICATED
        assert await _languages(address, token=TOKEN) == ["sw"]
        # Probes need no token.
        async with grpc.aio.insecure_channel(address) as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=5
            )
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        # The Secret changes under the running server: the old token stops, the new one works.
        await asyncio.to_thread(tokens_file.write_text, "rotated-token-with-another-length\n")
        assert await _status(address, token=TOKEN) == grpc.StatusCode.UNAUTHENTICATED
        assert await _languages(address, token="rotated-token-with-another-length") == ["sw"]
    finally:
        await server.shutdown()


async def test_tls_and_mutual_tls_on_the_port(pki: dict[str, Path]) -> None:
    tls = AccessSettings(tls_cert_file=str(pki["server"]), tls_key_file=str(pki["server_key"]))
    server = await _serve(tls)
    address = f"localhost:{server.port}"
    try:
        assert await _languages(address, ca_file=str(pki["ca"])) == ["sw"]
        assert await _status(address) == grpc.StatusCode.UNAVAILABLE  # plaintext to a TLS port
    finally:
        await server.shutdown()
    mutual = AccessSettings(
        tls_cert_file=str(pki["server"]),
        tls_key_file=str(pki["server_key"]),
        tls_client_ca_file=str(pki["ca"]),
    )
    server = await _serve(mutual)
    address = f"localhost:{server.port}"
    try:
        assert await _status(address, ca_file=str(pki["ca"])) == grpc.StatusCode.UNAVAILABLE  # no client cert
        certified = {
            "ca_file": str(pki["ca"]),
            "cert_file": str(pki["client"]),
            "key_file": str(pki["client_key"]),
        }
        assert await _languages(address, **certified) == ["sw"]
    finally:
        await server.shutdown()


async def test_the_container_health_check_asks_a_tls_port_over_tls(
    pki: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """docker/healthcheck.py reads the server's own TLS variables and trusts the ca.crt beside its
    certificate (a kubernetes.io/tls Secret's layout), as the chart's probes of a TLS router need."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "healthcheck", Path(__file__).parents[1] / "docker" / "healthcheck.py"
    )
    assert spec is not None and spec.loader is not None
    healthcheck = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(healthcheck)
    assert (pki["server"].parent / "ca.crt") == pki["ca"]
    server = await _serve(
        AccessSettings(tls_cert_file=str(pki["server"]), tls_key_file=str(pki["server_key"]))
    )
    probe = ["LIDROUTE_LISTEN_ADDRESS", "[::]:1"]
    try:
        monkeypatch.setenv("LIDROUTE_LISTEN_ADDRESS", f"[::]:{server.port}")
        monkeypatch.setenv("LIDROUTE_TLS_CERT_FILE", str(pki["server"]))
        assert await asyncio.to_thread(healthcheck.main, probe) == 0
        monkeypatch.delenv("LIDROUTE_TLS_CERT_FILE")
        assert await asyncio.to_thread(healthcheck.main, probe) == 1  # plaintext to a TLS port
    finally:
        await server.shutdown()


def test_half_configured_access_is_refused_at_start(tmp_path: Path, pki: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match="both tls_cert_file and tls_key_file"):
        AccessSettings(tls_cert_file=str(pki["server"])).server_credentials()
    with pytest.raises(ValueError, match="tls_client_ca_file needs"):
        AccessSettings(tls_client_ca_file=str(pki["ca"])).server_credentials()
    (tmp_path / "empty").write_text("# nothing yet\n")
    with pytest.raises(ValueError, match="holds no token"):
        AccessSettings(auth_tokens_file=str(tmp_path / "empty")).tokens()


# ---------------------------------------------------------------------- the REST gateway
@pytest.fixture(scope="module")
def guarded_gateway(router_addr: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("guarded")
    (folder / "tokens").write_text(f"{TOKEN}\n")
    with running_gateway(router_addr, folder, "--auth-tokens-file", str(folder / "tokens")) as url:
        yield url


@pytest.mark.integration
def test_the_rest_gateway_wants_an_api_key_as_openai_does(guarded_gateway: str, speech) -> None:
    clip = wav(speech["es"][0].audio)
    url = f"{guarded_gateway}/v1/audio/transcriptions"
    refused = requests.post(url, files={"file": ("a.wav", clip)}, data={"model": "m"}, timeout=30)
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
    assert requests.get(f"{guarded_gateway}/v1/models", timeout=30).status_code == 401
    wrong = openai.OpenAI(base_url=f"{guarded_gateway}/v1", api_key="wrong", max_retries=0)
    with wrong as sdk, pytest.raises(openai.AuthenticationError):
        sdk.models.list()
    with openai.OpenAI(base_url=f"{guarded_gateway}/v1", api_key=TOKEN, max_retries=0, timeout=60) as sdk:
        text = sdk.audio.transcriptions.create(model="whisper-1", file=("a.wav", clip)).text
    assert of_this_audio(speech["es"][0], text, speech)
