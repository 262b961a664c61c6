"""Fixtures: a real redis-server on a free port, models built by the project's own training code,
and the whole stack as real processes (or an existing deployment named by LIDROUTE_ROUTER_ADDR)."""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from lidroute.keys import Keys
from workbench.stack import RedisServer

ROOT = Path(__file__).resolve().parent.parent
EXTERNAL_ROUTER = os.environ.get("LIDROUTE_ROUTER_ADDR", "")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def redis_client(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_server.url)
    await client.flushdb()
    yield client
    await client.aclose()


@pytest.fixture
def keys() -> Keys:
    return Keys("test:")


# ---------------------------------------------------------------------- a certificate authority
def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _cert(subject: str, key, issuer=None, issuer_key=None, *, ca: bool = False):  # type: ignore[no-untyped-def]
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return builder.sign(issuer_key or key, hashes.SHA256())


def _pem(tmp: Path, name: str, cert, key) -> tuple[Path, Path]:  # type: ignore[no-untyped-def]
    cert_path, key_path = tmp / f"{name}.crt", tmp / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A certificate authority made here, with a server pair for localhost and 127.0.0.1 and a client pair."""
    tmp = tmp_path_factory.mktemp("pki")
    ca_key = _key()
    ca = _cert("lidroute test CA", ca_key, ca=True)
    server_key, client_key = _key(), _key()
    ca_crt, _ = _pem(tmp, "ca", ca, ca_key)
    server_crt, server_pem = _pem(tmp, "server", _cert("localhost", server_key, ca, ca_key), server_key)
    client_crt, client_pem = _pem(tmp, "client", _cert("a client", client_key, ca, ca_key), client_key)
    return {
        "ca": ca_crt,
        "server": server_crt,
        "server_key": server_pem,
        "client": client_crt,
        "client_key": client_pem,
    }


# ---------------------------------------------------------------------- models
TEST_LANGUAGES = ("en", "es", "sw")


def _test_plan():  # type: ignore[no-untyped-def]
    """The bundled models' recipe, restricted to the test languages (used when models/ lacks them)."""
    from workbench.build import BuildPlan

    # The Whisper language ID and the heads on Whisper's encoder have tests of their own
    # (tests/test_whisper.py, tests/test_heads.py).
    return BuildPlan(
        lid_languages=TEST_LANGUAGES, asr_languages=TEST_LANGUAGES, whisper_lid="", head_languages=()
    )


def _models_fingerprint() -> str:
    """Changes whenever the code or the budget that makes the test models changes."""
    digest = hashlib.sha256()
    for path in sorted(
        [
            *(ROOT / "lidroute" / "train").glob("*.py"),
            *ROOT.glob("*/recipes/*.py"),
            ROOT / "workbench" / "build.py",
        ]
    ):
        digest.update(path.read_bytes())
    digest.update(repr(_test_plan()).encode())
    return digest.hexdigest()[:12]


def models_path() -> Path:
    """Where the test models live: `LIDROUTE_TEST_MODELS`, else the bundled `models/` when they
    cover the test languages, else models trained by the suite into a cache."""
    from lidroute.cli import BUNDLED_MODELS, CACHE, model_dirs

    if os.environ.get("LIDROUTE_TEST_MODELS"):
        return Path(os.environ["LIDROUTE_TEST_MODELS"])
    lid, asr = model_dirs(BUNDLED_MODELS)
    if (lid[0] / "hyperparams.yaml").exists() and set(TEST_LANGUAGES) <= set(asr):
        return BUNDLED_MODELS
    return CACHE / f"test-models-{_models_fingerprint()}"


def ensure_test_models() -> Path:
    """Small LID and CTC models trained by `lidroute models build`, cached between runs."""
    from lidroute.cli import has_models
    from workbench.build import build_models

    path = models_path()
    if not has_models(path):
        build_models(path, _test_plan())
    return path


def pytest_collection_finish(session: pytest.Session) -> None:
    """Trains the test models before the first test, when a collected test needs them.

    Training takes minutes; inside a fixture it would count against the first test's timeout.
    """
    if session.config.option.collectonly:
        return
    if not any("models_dir" in getattr(item, "fixturenames", ()) for item in session.items):
        return
    from lidroute.cli import has_models

    if has_models(models_path()):
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"training the test models into {models_path()} (one time, minutes)")
    ensure_test_models()


@pytest.fixture(scope="session")
def models_dir() -> Path:
    return ensure_test_models()


REAL_SPEECH = ROOT.parent / "shared" / "eval" / "real-speech"


@pytest.fixture(scope="session")
def real_speech_files() -> list[Path]:
    """Real recorded clips (Ogg Opus and WAV) kept beside the repository for evaluation."""
    files = sorted(REAL_SPEECH.glob("fleurs/**/*.ogg"))[:3] + sorted(REAL_SPEECH.glob("leopard/**/*.wav"))[:3]
    if not files:
        pytest.skip(f"no real speech clips under {REAL_SPEECH}")
    return files


# ---------------------------------------------------------------------- the stack
#: Settings that make failure paths fast enough to test; names are the services' own flags.
WORKER_TEST_ARGS = [
    "--reclaim-idle-seconds",
    "2",
    "--reclaim-interval-seconds",
    "0.5",
    "--max-deliveries",
    "2",
    "--interim-interval-seconds",
    "0.5",
    "--heartbeat-seconds",
    "0.5",
    # Requests past 4 s come as a final result per stretch between pauses: every test of a longer
    # request runs through the long-audio path, with its results joined by the client.
    "--final-after-seconds",
    "4",
]
ROUTER_TEST_ARGS = [
    "--max-audio-seconds",
    "20",
    "--max-audio-bytes",
    "2000000",
    "--queue-timeout-seconds",
    "20",
    "--worker-ttl-seconds",
    "3",
]


def make_stack(models_dir: Path, groups: list[list[str]], **kwargs: object):  # type: ignore[no-untyped-def]
    from lidroute.cli import lid_source, model_dirs
    from workbench.stack import Stack, StackConfig

    lid, asr = model_dirs(models_dir)
    config = StackConfig(
        lid_model=lid_source(lid),
        models={lang: str(path) for lang, path in asr.items()},
        worker_groups=groups,
        worker_args=WORKER_TEST_ARGS,
        router_args=ROUTER_TEST_ARGS,
        extra_env={
            "LIDROUTE_LOG_FORMAT": "text",
            "LIDROUTE_WORKER_TTL_SECONDS": "3",
            "LIDROUTE_TORCH_THREADS": "1",
        },
        **kwargs,  # type: ignore[arg-type]
    )
    return Stack(config)


@pytest.fixture(scope="session")
def stack(models_dir: Path):  # type: ignore[no-untyped-def]
    """The shared stack: two worker processes (en+es, sw). None against an external deployment."""
    if EXTERNAL_ROUTER:
        yield None
        return
    with make_stack(models_dir, [["en", "es"], ["sw"]]) as running:
        yield running


@pytest.fixture(scope="session")
def router_addr(stack) -> str:  # type: ignore[no-untyped-def]
    return EXTERNAL_ROUTER or stack.router_address


@pytest.fixture
def own_stack(stack):  # type: ignore[no-untyped-def]
    """Tests that look inside Redis or signal processes need the stack this suite started."""
    if stack is None:
        pytest.skip("needs the processes this suite starts (LIDROUTE_ROUTER_ADDR is set)")
    return stack


@pytest.fixture(scope="session")
def speech(models_dir: Path) -> dict[str, list]:
    """Two held-out utterances per language: sentences and voices the models were not trained on."""
    from lidroute.train.synth import synth_utterances
    from workbench.cli import training_vocabulary

    return {
        lang: synth_utterances(
            lang,
            2,
            seed=777,
            vocab=training_vocabulary(models_dir, lang),
            speeds=(150, 170),
            min_words=3,
            max_words=5,
        )
        for lang in TEST_LANGUAGES
    }
