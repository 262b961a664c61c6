"""The Redis key schema: every key and stream name lidroute uses is built here and nowhere else."""

from __future__ import annotations

from dataclasses import dataclass

#: Consumer group that ASR workers of one language share on `jobs:{lang}`.
WORKER_GROUP = "asr-workers"


@dataclass(frozen=True)
class Keys:
    prefix: str = "lidroute:"

    @property
    def models(self) -> str:
        """Hash: language code -> JSON model spec."""
        return f"{self.prefix}models"

    @property
    def models_changed(self) -> str:
        """Pub/sub channel published on every registry change."""
        return f"{self.prefix}models:changed"

    def workers(self, lang: str) -> str:
        """Sorted set: worker id -> last heartbeat (Redis server time, seconds)."""
        return f"{self.prefix}workers:{lang}"

    def jobs(self, lang: str) -> str:
        """Stream with consumer group WORKER_GROUP: one entry per request."""
        return f"{self.prefix}jobs:{lang}"

    def audio(self, job_id: str) -> str:
        """Stream of PCM16 16 kHz chunks, then an end or cancel marker."""
        return f"{self.prefix}audio:{job_id}"

    def events(self, job_id: str) -> str:
        """Stream of partial / final / error events for one job."""
        return f"{self.prefix}events:{job_id}"

    def wake(self, reader_id: str) -> str:
        """Stream with TTL: a router's event reader is woken through it when a job joins its read."""
        return f"{self.prefix}wake:{reader_id}"

    def progress(self, job_id: str) -> str:
        """Hash with TTL: how much of a long job's audio its final results cover, and where in its
        audio stream a worker that takes the job over goes on from (`JobQueue.commit`)."""
        return f"{self.prefix}progress:{job_id}"

    def lease(self, job_id: str) -> str:
        """String with TTL: present while the job's client is connected (its router renews it)."""
        return f"{self.prefix}lease:{job_id}"

    def operation(self, name: str) -> str:
        """Hash, with TTL: a long-running recognition (Google's `Operation`) and its deadline."""
        return f"{self.prefix}operations:{name}"

    @property
    def dead(self) -> str:
        """Stream of jobs delivered too many times, with their last error."""
        return f"{self.prefix}dead"
