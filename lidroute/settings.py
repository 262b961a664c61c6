"""Typed settings shared by every service, read once in `main` and passed down.

Each service has one settings class. Values come from flags, then environment variables
(`LIDROUTE_<FIELD>`), then defaults, so that the same names work on a command line, in
docker-compose and in a Helm chart. A malformed value stops the process with a message that
names the setting, instead of failing later somewhere deep.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, Self, TypeVar, get_args, get_origin
from urllib.parse import urlsplit

from pydantic import BeforeValidator, Field, ValidationError
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

ENV_PREFIX = "LIDROUTE_"


def comma_list(text: str | None) -> list[str]:
    """The items of a comma-separated flag or variable ("en, fr," is ["en", "fr"]; None is [])."""
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def _split_commas(value: Any) -> Any:
    return comma_list(value) if isinstance(value, str) else value


def without_password(url: str) -> str:
    """The URL with its password masked, to print: a Redis URL carries the password in it."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1)).geturl()


SettingsT = TypeVar("SettingsT", bound=BaseSettings)

CommaList = Annotated[list[str], NoDecode, BeforeValidator(_split_commas)]
FloatList = Annotated[list[float], NoDecode, BeforeValidator(_split_commas)]


class CommonSettings(BaseSettings):
    """What every lidroute process needs: where Redis is, how to log, where to export metrics."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    redis_url: str = Field("redis://localhost:6379/0", description="Redis URL (redis:// or rediss://)")
    key_prefix: str = Field("lidroute:", description="prefix of every Redis key this deployment uses")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="log level")
    log_format: Literal["json", "text"] = Field("json", description="json for machines, text for people")
    metrics_port: int = Field(0, ge=0, le=65535, description="Prometheus /metrics port (0: disabled)")

    @classmethod
    def from_args(cls, argv: Sequence[str] | None = None, prog: str | None = None) -> Self:
        """Builds the settings from flags over the environment; exits 2 with a clear message when invalid."""
        parser = argparse.ArgumentParser(prog=prog, description=cls.__doc__)
        add_setting_flags(parser, cls)
        args = parser.parse_args(argv)
        return settings_from_namespace(cls, args, parser)


class QueueSettings(CommonSettings):
    """What the router and the workers must agree on about the queue in Redis, declared once."""

    stream_ttl_seconds: int = Field(900, ge=10, description="TTL of per-job audio and event streams")
    worker_ttl_seconds: float = Field(10.0, gt=0, description="a worker silent this long is not live")
    client_lease_seconds: int = Field(
        15,
        ge=2,
        description="a job whose router stopped renewing its client's lease this long ago is dropped",
    )


def usable_cpus(cpu_max: Path = Path("/sys/fs/cgroup/cpu.max")) -> int:
    """The CPUs this process may use: those it is pinned to, fewer where a cgroup quota (a
    container's CPU limit) allows less. torch counts the host's cores, and a pod limited to 2
    of 32 would run 32 threads that take turns on 2."""
    cpus = len(os.sched_getaffinity(0))
    try:
        quota, period = cpu_max.read_text().split()[:2]  # cgroup v2: "QUOTA PERIOD" or "max PERIOD"
    except (OSError, ValueError):
        return cpus
    if quota == "max":
        return cpus
    return max(1, min(cpus, math.ceil(int(quota) / int(period))))


class ComputeSettings(CommonSettings):
    """How a model computes (the LID service and the workers): on how many threads, and how many
    concurrent requests' items one call takes (`lidroute.batching.MicroBatcher`)."""

    torch_threads: int = Field(
        0,
        ge=0,
        description="torch CPU threads (0: the CPUs the process may use, its container's limit included;"
        " where several services share the cores, set each its share: threads that outnumber the cores"
        " spin waiting for each other)",
    )

    max_batch: int = Field(16, ge=1, le=256, description="most items (windows, audio parts) per model call")
    batch_wait_ms: float = Field(
        5.0, ge=0, description="how long the first item of a model call waits for company"
    )

    def threads(self) -> int:
        return self.torch_threads or usable_cpus()


def _is_bool(annotation: Any) -> bool:
    return annotation is bool


def _is_list(annotation: Any) -> bool:
    origin = get_origin(annotation)
    if origin is Annotated:
        return _is_list(get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return any(_is_list(a) for a in get_args(annotation))
    return origin is list


def add_setting_flags(
    parser: argparse.ArgumentParser, cls: type[BaseSettings], only: Sequence[str] = ()
) -> None:
    """Adds one `--kebab-name` flag per field (or per field named in `only`); a flag left out falls
    through to env and default."""
    group = parser.add_argument_group("settings (flags override LIDROUTE_* environment variables)")
    for name, field in cls.model_fields.items():
        if only and name not in only:
            continue
        flag = "--" + name.replace("_", "-")
        env = ENV_PREFIX + name.upper()
        help_text = f"{field.description or ''} [env {env}; default {field.default!r}]"
        if _is_bool(field.annotation):
            group.add_argument(
                flag,
                dest=name,
                action=argparse.BooleanOptionalAction,
                default=argparse.SUPPRESS,
                help=help_text,
            )
        elif _is_list(field.annotation):
            group.add_argument(flag, dest=name, default=argparse.SUPPRESS, metavar="A,B", help=help_text)
        else:
            group.add_argument(flag, dest=name, default=argparse.SUPPRESS, help=help_text)


def settings_from_namespace(
    cls: type[SettingsT], args: argparse.Namespace, parser: argparse.ArgumentParser | None = None
) -> SettingsT:
    given = {k: v for k, v in vars(args).items() if k in cls.model_fields}
    try:
        return cls(**given)
    except ValidationError as exc:
        lines = [f"invalid setting {'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
        message = "\n".join(lines)
        if parser is not None:
            parser.error(message)
        print(message, file=sys.stderr)
        raise SystemExit(2) from None


def run_subcommand(prog: str, commands: Mapping[str, str], argv: Sequence[str] | None = None) -> None:
    """`python -m SERVICE [COMMAND] [FLAGS]`: runs `main(flags)` of the module named for COMMAND
    (or the function named after a colon, `module:function`).

    The first command is the default, so `python -m lid_service --flag` serves. Modules are
    imported only when chosen: training code pulls in what a serving container never needs.
    """
    import importlib

    args = list(sys.argv[1:] if argv is None else argv)
    default = next(iter(commands))
    command, rest = (args[0], args[1:]) if args and not args[0].startswith("-") else (default, args)
    if command not in commands:
        raise SystemExit(f"{prog}: unknown command {command!r}; use: {', '.join(commands)}")
    module, _, function = commands[command].partition(":")
    getattr(importlib.import_module(module), function or "main")(rest)
