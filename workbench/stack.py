"""Starting and stopping the whole stack as real processes: `lidroute up`, the demo, the tests.

Each service runs as its own process, exactly as in a deployment, configured by flags with
the same names as its settings. Start-up waits for every gRPC health check to say SERVING,
and a process that dies on the way is reported with the tail of its log instead of a hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import grpc
import redis
import redis.asyncio as aioredis
from grpc_health.v1 import health_pb2, health_pb2_grpc

from lidroute.keys import Keys
from lidroute.registry import Registry


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def memory_mb(pid: int, field: str = "VmRSS") -> float:
    """A live process's memory from /proc, MB: resident now (VmRSS) or at its peak (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/{pid}/status has no {field}")


def cpu_seconds(pid: int) -> float:
    """The CPU time (user and system) a live process has used, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_serving(
    address: str, timeout: float, proc: subprocess.Popen[bytes] | None = None, log_path: Path | None = None
) -> None:
    """Blocks until the gRPC health check at `address` answers SERVING."""
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            if proc is not None and proc.poll() is not None:
                tail = log_path.read_text(errors="replace")[-3000:] if log_path and log_path.exists() else ""
                raise RuntimeError(f"process for {address} exited with {proc.returncode}:\n{tail}")
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{address} did not become SERVING within {timeout:g} s")
            time.sleep(0.1)


def wait_http(url: str, timeout: float, proc: subprocess.Popen[bytes], log_path: Path) -> None:
    """Blocks until GET `url` answers 200."""
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace")[-3000:] if log_path.exists() else ""
            raise RuntimeError(f"process for {url} exited with {proc.returncode}:\n{tail}")
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1.0) as reply:
            if reply.status == 200:
                return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not answer 200 within {timeout:g} s")
        time.sleep(0.1)


@dataclass(frozen=True)
class RedisTLS:
    """Redis on TLS alone: its certificate pair, and the authority clients check it against."""

    cert_file: Path
    key_file: Path
    ca_file: Path


class RedisServer:
    """A private redis-server on a free port, with append-only persistence so a restart keeps data;
    with `tls` it listens on TLS alone, with `password` it refuses clients without it."""

    def __init__(
        self, workdir: Path, port: int | None = None, *, password: str = "", tls: RedisTLS | None = None
    ) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError(
                "redis-server not found: install it (apt-get install redis-server) or pass --redis-url"
            )
        self.binary = binary
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.password = password
        self.tls = tls
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        if self.tls:
            return f"rediss://{auth}127.0.0.1:{self.port}/0?ssl_ca_certs={quote(str(self.tls.ca_file))}"
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def _listen_args(self) -> list[str]:
        args = ["--requirepass", self.password] if self.password else []
        if not self.tls:
            return [*args, "--port", str(self.port)]
        return [
            *args,
            "--port",
            "0",
            "--tls-port",
            str(self.port),
            "--tls-cert-file",
            str(self.tls.cert_file),
            "--tls-key-file",
            str(self.tls.key_file),
            "--tls-ca-cert-file",
            str(self.tls.ca_file),
            # Clients prove who they are by the password; a client certificate is not asked for.
            "--tls-auth-clients",
            "no",
        ]

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                self.binary,
                *self._listen_args(),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.dir),
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
                "--daemonize",
                "no",
                "--logfile",
                str(self.dir / "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start; see {self.dir / 'redis.log'}") from None
                time.sleep(0.05)
            finally:
                client.close()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@dataclass
class StackConfig:
    lid_model: str
    #: language -> model uri, registered when the registry has no entry for the language
    models: dict[str, str]
    #: one worker process per group; an empty group serves every registered language
    worker_groups: list[list[str]] = field(default_factory=lambda: [[]])
    redis_url: str | None = None
    #: the Redis the stack starts when it is given no redis_url: its password and TLS
    redis_password: str = ""
    redis_tls: RedisTLS | None = None
    router_port: int = 0
    #: where the router (and the REST gateway) listen: loopback unless asked for more
    host: str = "127.0.0.1"
    #: the OpenAI-compatible REST gateway's port: None for none, 0 for a free one
    rest_port: int | None = None
    #: Prometheus /metrics: each process on its own port from this one up (0: none)
    metrics_port: int = 0
    key_prefix: str = "lidroute:"
    log_dir: Path | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    router_args: list[str] = field(default_factory=list)
    worker_args: list[str] = field(default_factory=list)
    start_timeout: float = 180.0


class Stack:
    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self._tmp = tempfile.TemporaryDirectory(prefix="lidroute-")
        self.log_dir = config.log_dir or Path(self._tmp.name) / "logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.redis: RedisServer | None = None
        self.redis_url = config.redis_url or ""
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.addresses: dict[str, str] = {}
        #: process name -> its /metrics port
        self.metrics: dict[str, int] = {}
        #: process name -> how it was started (module, args, health address), to start it again
        self.commands: dict[str, tuple[str, list[str], str]] = {}
        self.restarts: dict[str, int] = {}
        self.router_address = ""
        self.rest_url = ""
        self._worker_seq = 0

    def pids(self) -> dict[str, int]:
        """Every process of the stack by name, Redis (when the stack started it) included."""
        pids = {name: proc.pid for name, proc in self.procs.items()}
        if self.redis is not None and self.redis.proc is not None:
            pids["redis"] = self.redis.proc.pid
        return pids

    def peak_mb(self) -> dict[str, float]:
        """Each lidroute process's peak resident memory so far, MB."""
        return {name: memory_mb(proc.pid, "VmHWM") for name, proc in self.procs.items()}

    # ------------------------------------------------------------------ processes
    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "LIDROUTE_REDIS_URL": self.redis_url,
                "LIDROUTE_KEY_PREFIX": self.config.key_prefix,
                "LIDROUTE_LOG_FORMAT": env.get("LIDROUTE_LOG_FORMAT", "json"),
                "PYTHONUNBUFFERED": "1",
                "HF_HUB_OFFLINE": env.get("HF_HUB_OFFLINE", "1"),
                "TOKENIZERS_PARALLELISM": "false",
                # The services share this machine's cores: each computing on all of them makes
                # their threads spin waiting for one another (a language-ID decision of 50 ms took
                # over 5 s with the workers busy beside it). One each, as a deployment would size them.
                "LIDROUTE_TORCH_THREADS": env.get("LIDROUTE_TORCH_THREADS", "1"),
            }
        )
        env.update(self.config.extra_env)
        return env

    def spawn(self, name: str, module: str, args: list[str], health_address: str, timeout: float) -> None:
        """Starts a service and waits for its health check: gRPC at `health_address`, or HTTP GET
        when it is a URL."""
        log_path = self.log_dir / f"{name}.log"
        self.commands[name] = (module, args, health_address)
        if self.config.metrics_port:
            self.metrics.setdefault(name, self.config.metrics_port + len(self.metrics))
            args = [*args, "--metrics-port", str(self.metrics[name])]
        log_file = log_path.open("ab")
        proc = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            env=self._env(),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log_file.close()
        self.procs[name] = proc
        self.addresses[name] = health_address
        if health_address.startswith("http"):
            wait_http(health_address, timeout, proc, log_path)
        else:
            wait_serving(health_address, timeout, proc, log_path)

    def add_worker(self, languages: list[str], extra_args: list[str] | None = None) -> str:
        self._worker_seq += 1
        name = f"worker-{self._worker_seq}"
        port = free_port()
        args = [
            "serve",
            "--health-address",
            f"127.0.0.1:{port}",
            "--worker-id",
            name,
            *self.config.worker_args,
            *(extra_args or []),
        ]
        if languages:
            args += ["--languages", ",".join(languages)]
        self.spawn(name, "asr_worker", args, f"127.0.0.1:{port}", self.config.start_timeout)
        return name

    def start_rest_gateway(self, port: int) -> None:
        self.rest_url = f"http://{self.config.host}:{port}"
        args = [
            "--http-host",
            self.config.host,
            "--http-port",
            str(port),
            "--router-address",
            self.router_address,
        ]
        self.spawn("rest", "rest_gateway", args, f"{self.rest_url}/healthz", self.config.start_timeout)

    def supervise(self, max_restarts: int = 5) -> list[str]:
        """Starts again a worker that died (its jobs are reclaimed by the others meanwhile, or by
        itself once back); returns the processes that died and are not restarted: any other
        service, or a worker past `max_restarts`, which ends the stack (`lidroute up`)."""
        lost = []
        for name, proc in list(self.procs.items()):
            if proc.poll() is None:
                continue
            if not name.startswith("worker-") or self.restarts.get(name, 0) >= max_restarts:
                lost.append(name)
                continue
            self.restarts[name] = self.restarts.get(name, 0) + 1
            module, args, health = self.commands[name]
            self.spawn(name, module, args, health, self.config.start_timeout)
        return lost

    def signal(self, name: str, sig: int) -> None:
        proc = self.procs[name]
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, sig)
        if sig in (signal.SIGKILL, signal.SIGTERM):
            proc.wait(30)

    # ------------------------------------------------------------------ lifecycle
    def register_models(self) -> None:
        """Registers the configured models for languages the registry does not have yet, the same
        way a deployment does (`lidroute models sync`)."""

        async def register() -> None:
            client = aioredis.Redis.from_url(self.redis_url)
            try:
                await Registry(client, Keys(self.config.key_prefix)).register_missing(self.config.models)
            finally:
                await client.aclose()

        asyncio.run(register())

    def start(self) -> Stack:
        try:
            if not self.redis_url:
                self.redis = RedisServer(
                    Path(self._tmp.name) / "redis",
                    password=self.config.redis_password,
                    tls=self.config.redis_tls,
                )
                self.redis.start()
                self.redis_url = self.redis.url
            self.register_models()
            lid_port = free_port()
            self.spawn(
                "lid",
                "lid_service",
                [
                    "serve",
                    "--listen-address",
                    f"127.0.0.1:{lid_port}",
                    "--lid-model",
                    self.config.lid_model,
                    "--lid-savedir",
                    str(Path(self._tmp.name) / "lid"),
                ],
                f"127.0.0.1:{lid_port}",
                self.config.start_timeout,
            )
            for group in self.config.worker_groups:
                self.add_worker(group)
            port = self.config.router_port or free_port()
            self.router_address = f"{self.config.host}:{port}"
            self.spawn(
                "router",
                "router",
                [
                    "--listen-address",
                    self.router_address,
                    "--lid-address",
                    f"127.0.0.1:{lid_port}",
                    *self.config.router_args,
                ],
                self.router_address,
                self.config.start_timeout,
            )
            if self.config.rest_port is not None:
                self.start_rest_gateway(self.config.rest_port or free_port())
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for proc in reversed(list(self.procs.values())):
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(40)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self.redis:
            self.redis.stop()
        self._tmp.cleanup()

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
