"""The model registry and worker liveness, in Redis.

`models` maps a language code to the model that serves it; `workers:{lang}` records worker
heartbeats. A language is *served* when it is registered and has a live worker: that is the
set the router detects among (or, with the router's `scale_from_zero`, when it is registered
at all). Heartbeats use Redis' clock so that hosts with skewed clocks still agree on who is
alive.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import redis.asyncio as aioredis
import redis.exceptions

from lidroute.errors import InvalidArgument
from lidroute.jobs import JobQueue
from lidroute.keys import Keys

log = logging.getLogger(__name__)

_LANG_RE = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$")
MODEL_KINDS = ("ctc", "head")
#: What marks a folder as kind `head`: a per-language head on a shared backbone
#: (`asr_worker.heads`), not a whole model.
HEAD_FILE = "head.json"


def kind_of(uri: str) -> str:
    """The kind of the model at `uri`: `head` for a local head folder, else `ctc` (a whole CTC model,
    local or on a hub)."""
    return "head" if (Path(uri) / HEAD_FILE).is_file() else "ctc"


def check_language_code(code: str) -> str:
    """Language codes are BCP-47-like (`sw`, `pt-BR`); anything else is a client error, not a lookup miss."""
    if not _LANG_RE.match(code):
        raise InvalidArgument(f"{code!r} is not a valid language code (expected e.g. 'sw' or 'pt-BR')")
    return code


def language_of(tag: str) -> str:
    """The language of a BCP-47 tag, which is what models are registered by ("es-ES" -> "es"); ""
    for no tag or `und` (undetermined: detect it). Clients of other APIs send regional tags."""
    code = tag.strip().replace("_", "-").split("-")[0].lower()
    return "" if code in ("", "und") else code


@dataclass(frozen=True)
class ModelSpec:
    uri: str
    revision: str = ""
    #: Empty: read from the folder (`kind_of`), so a head folder is never loaded as a whole model.
    kind: str = ""
    sample_rate: int = 16000
    metrics: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.uri:
            raise InvalidArgument("model uri is empty")
        if not self.kind:
            object.__setattr__(self, "kind", kind_of(self.uri))
        if self.kind not in MODEL_KINDS:
            raise InvalidArgument(f"model kind {self.kind!r} is not one of {', '.join(MODEL_KINDS)}")

    @property
    def name(self) -> str:
        """The model as clients are told of it: a hub id as it is, a local folder by its last two
        parts (`asr/sw`), never where it lies on a server's disk."""
        if not self.uri.startswith(("/", ".")):
            return self.uri
        path = Path(self.uri)
        return f"{path.parent.name}/{path.name}" if path.parent.name else path.name

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> ModelSpec:
        data: dict[str, Any] = json.loads(text)
        known = {k: data[k] for k in ("uri", "revision", "kind", "sample_rate", "metrics") if k in data}
        return cls(**known)


@dataclass(frozen=True)
class Registration:
    """What `Registry.register_missing` did for one language, and the model that serves it now."""

    action: Literal["registered", "kept"]
    spec: ModelSpec


class Registry:
    def __init__(self, client: aioredis.Redis, keys: Keys, worker_ttl: float = 10.0) -> None:
        self.redis = client
        self.keys = keys
        self.worker_ttl = worker_ttl

    async def register(self, lang: str, spec: ModelSpec) -> None:
        check_language_code(lang)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self.keys.models, lang, spec.to_json())
            pipe.publish(self.keys.models_changed, lang)
            await pipe.execute()

    async def register_missing(
        self, models: Mapping[str, str], *, force: bool = False
    ) -> dict[str, Registration]:
        """Registers each language's model unless the registry already has one (or `force`), and
        creates the language's job-stream consumer group.

        This is what a deploy runs on every start (`lidroute models sync`, the compose service, the
        Helm hook, `lidroute up`), so it must be safe to repeat: a model an operator registered by
        hand survives the next deploy unless `force` says otherwise. The consumer group is created
        here rather than by the first worker because KEDA's lag trigger reads it: a pool that
        starts at zero replicas has no worker to create it, and without it nothing would wake the
        pool.
        """
        for lang in models:
            check_language_code(lang)
        current = await self.models()
        queue = JobQueue(self.redis, self.keys)
        done: dict[str, Registration] = {}
        for lang, uri in sorted(models.items()):
            if lang in current and not force:
                done[lang] = Registration("kept", current[lang])
            else:
                spec = ModelSpec(uri=uri)
                await self.register(lang, spec)
                done[lang] = Registration("registered", spec)
            await queue.ensure_group(lang)
        return done

    async def remove(self, lang: str) -> bool:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hdel(self.keys.models, lang)
            pipe.publish(self.keys.models_changed, lang)
            removed, _ = await pipe.execute()
        return bool(removed)

    async def models(self) -> dict[str, ModelSpec]:
        raw = await self.redis.hgetall(self.keys.models)
        specs: dict[str, ModelSpec] = {}
        for lang, text in raw.items():
            code = lang.decode() if isinstance(lang, bytes) else lang
            try:
                specs[code] = ModelSpec.from_json(text)
            except (ValueError, TypeError, InvalidArgument) as exc:
                log.warning("ignoring malformed registry entry", extra={"language": code, "error": str(exc)})
        return specs

    async def _now(self) -> float:
        seconds, micros = await self.redis.time()
        return seconds + micros / 1e6

    async def heartbeat(self, worker_id: str, langs: list[str]) -> None:
        now = await self._now()
        async with self.redis.pipeline(transaction=False) as pipe:
            for lang in langs:
                pipe.zadd(self.keys.workers(lang), {worker_id: now})
                pipe.zremrangebyscore(self.keys.workers(lang), "-inf", now - self.worker_ttl)
            await pipe.execute()

    async def leave(self, worker_id: str, langs: list[str]) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            for lang in langs:
                pipe.zrem(self.keys.workers(lang), worker_id)
            await pipe.execute()

    async def live_workers(self, langs: list[str]) -> dict[str, int]:
        if not langs:
            return {}
        cutoff = await self._now() - self.worker_ttl
        async with self.redis.pipeline(transaction=False) as pipe:
            for lang in langs:
                pipe.zcount(self.keys.workers(lang), cutoff, "+inf")
            counts = await pipe.execute()
        return dict(zip(langs, counts, strict=True))

    async def live_ids(self, lang: str) -> set[str]:
        """The workers of `lang` whose heartbeat is recent."""
        cutoff = await self._now() - self.worker_ttl
        ids = await self.redis.zrangebyscore(self.keys.workers(lang), cutoff, "+inf")
        return {i.decode() if isinstance(i, bytes) else i for i in ids}

    async def served(self) -> tuple[dict[str, ModelSpec], dict[str, int]]:
        """All registered models and the live worker count of each."""
        models = await self.models()
        return models, await self.live_workers(sorted(models))

    async def changes(self) -> AsyncIterator[str]:
        """Yields a language code on every registry change, and "*" after (re)subscribing.

        Pub/sub is at-most-once: after a reconnect the subscriber may have missed changes, so
        "*" tells it to re-read the whole registry.
        """
        while True:
            pubsub = self.redis.pubsub()
            try:
                await pubsub.subscribe(self.keys.models_changed)
                yield "*"
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        data = message["data"]
                        yield data.decode() if isinstance(data, bytes) else str(data)
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as exc:
                log.warning("registry subscription lost; resubscribing", extra={"error": str(exc)})
                await asyncio.sleep(1.0)
            finally:
                await pubsub.aclose()
