"""Settings: flags over environment over defaults; malformed values stop with a clear message."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from asr_worker.worker import WorkerSettings
from router.core import RouterSettings


def test_flags_override_environment_which_overrides_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIDROUTE_REDIS_URL", "redis://from-env:6379/0")
    monkeypatch.setenv("LIDROUTE_LID_THRESHOLD", "0.8")
    settings = RouterSettings.from_args(["--lid-threshold", "0.7", "--lid-windows", "0.1,0.3"])
    assert settings.redis_url == "redis://from-env:6379/0"
    assert settings.lid_threshold == 0.7
    assert settings.lid_windows == [0.1, 0.3]
    assert RouterSettings.from_args([]).max_audio_seconds == 4 * 3600.0


def test_list_settings_read_commas_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIDROUTE_LANGUAGES", "sw, mr,qu")
    assert WorkerSettings.from_args([]).languages == ["sw", "mr", "qu"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--lid-threshold", "1.5"], "lid_threshold"),
        (["--lid-windows", "1.0,0.5"], "ascending"),
        (["--max-audio-seconds", "abc"], "max_audio_seconds"),
        (["--log-level", "LOUD"], "log_level"),
    ],
)
def test_malformed_settings_exit_with_the_setting_named(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        RouterSettings.from_args(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_malformed_environment_is_reported_too(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LIDROUTE_CONCURRENCY", "zero")
    with pytest.raises(SystemExit):
        WorkerSettings.from_args([])
    assert "concurrency" in capsys.readouterr().err


def test_a_models_threads_default_to_the_cpus_its_container_may_use(tmp_path: Path) -> None:

    from lidroute.settings import usable_cpus

    pinned = len(os.sched_getaffinity(0))
    cpu_max = tmp_path / "cpu.max"
    assert usable_cpus(tmp_path / "absent") == pinned  # no cgroup v2: the CPUs it is pinned to
    cpu_max.write_text("max 100000\n")
    assert usable_cpus(cpu_max) == pinned
    cpu_max.write_text("50000 100000\n")  # half a CPU: one thread
    assert usable_cpus(cpu_max) == 1
    cpu_max.write_text(f"{100000 * (pinned + 3)} 100000\n")  # a quota above the pinned CPUs
    assert usable_cpus(cpu_max) == pinned
