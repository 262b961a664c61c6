"""The `lidroute` command as a user runs it: registry commands, `up`, `transcribe`, Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from lidroute.stack import RedisServer, free_port

LIDROUTE = [sys.executable, "-m", "lidroute.cli"]


def run(args: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*LIDROUTE, *args], env={**os.environ, **env}, capture_output=True, text=True, timeout=timeout
    )


def test_models_register_list_remove(redis_server: RedisServer, tmp_path: Path) -> None:
    env = {"LIDROUTE_REDIS_URL": redis_server.url, "LIDROUTE_KEY_PREFIX": "cli-test:"}
    (tmp_path / "mr").mkdir()
    assert run(["models", "register", "mr", str(tmp_path / "mr")], env).returncode == 0
    assert (
        run(["models", "register", "qu", "someorg/wav2vec2-xls-r-qu", "--revision", "v1"], env).returncode
        == 0
    )
    listing = run(["models", "list"], env).stdout
    assert re.search(rf"mr\s+ctc\s+workers=0\s+{re.escape(str(tmp_path / 'mr'))}", listing)
    assert "someorg/wav2vec2-xls-r-qu@v1" in listing
    assert run(["models", "remove", "qu"], env).returncode == 0
    missing = run(["models", "remove", "qu"], env)
    assert missing.returncode == 1 and "was not registered" in missing.stderr
    bad = run(["models", "register", "Quechua", "x"], env)
    assert bad.returncode != 0 and "not a valid language code" in bad.stderr


def test_malformed_redis_url_is_reported(tmp_path: Path) -> None:
    result = run(["models", "list", "--redis-url", "http://nope"], {})
    assert result.returncode != 0
    assert "redis" in result.stderr.lower()


@pytest.mark.integration
def test_up_serves_transcribe_prints_results_and_ctrl_c_stops_everything(
    models_dir: Path, speech, tmp_path: Path
) -> None:
    files = []
    for lang in ("en", "es", "sw"):
        path = tmp_path / f"{lang}.wav"
        sf.write(path, np.concatenate([np.zeros(4000, np.float32), speech[lang][0].audio]), 16000)
        files.append(path)
    (tmp_path / "broken.wav").write_bytes(b"RIFF....WAVEnope")
    port = free_port()
    up = subprocess.Popen(
        [
            *LIDROUTE,
            "up",
            "--models-dir",
            str(models_dir),
            "--port",
            str(port),
            "--log-dir",
            str(tmp_path / "logs"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 180
        banner = ""
        while "router listening" not in banner:
            line = up.stdout.readline()  # type: ignore[union-attr]
            assert line or up.poll() is None, f"lidroute up exited: {banner}"
            banner += line
            assert time.monotonic() < deadline, banner
        assert f":{port}" in banner
        result = run(
            ["transcribe", "--address", f"127.0.0.1:{port}", *map(str, files), str(tmp_path / "broken.wav")],
            {},
        )
        for path, lang in zip(files, ("en", "es", "sw"), strict=True):
            assert re.search(rf"{re.escape(str(path))}: \[{lang} p=\d\.\d\d detected\] \S", result.stdout), (
                result
            )
        assert "broken.wav: ERROR" in result.stdout
        assert result.returncode == 1  # one file failed
    finally:
        up.send_signal(signal.SIGINT)
        out, _ = up.communicate(timeout=90)
    assert up.returncode == 0, out
    assert "stopping" in out
    leftovers = subprocess.run(["pgrep", "-f", f"127.0.0.1:{port}"], capture_output=True, text=True).stdout
    assert not leftovers.strip(), "services still running after Ctrl-C"
