"""The `lidroute` command as a user runs it: registry commands, `models sync`, `up`, `transcribe`, Ctrl-C."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import redis
import soundfile as sf
import soxr

from lidroute.keys import WORKER_GROUP, Keys
from workbench.cli import main as cli
from workbench.stack import RedisServer, free_port

LIDROUTE = [sys.executable, "-m", "workbench.cli"]


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


def _asr_model(root: Path, lang: str) -> Path:
    path = root / "asr" / lang
    path.mkdir(parents=True)
    (path / "config.json").write_text("{}")
    return path


def test_models_sync_registers_missing_models_keeps_hand_registered_ones_and_creates_groups(
    redis_server: RedisServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """What the compose service and the Helm hook run on every deploy."""
    prefix = "sync-test:"
    en, sw = _asr_model(tmp_path, "en"), _asr_model(tmp_path, "sw")
    client = redis.Redis.from_url(redis_server.url)
    keys = Keys(prefix)
    common = ["--redis-url", redis_server.url, "--key-prefix", prefix, "--wait-seconds", "5"]
    try:
        assert cli(["models", "sync", f"en={en}", *common]) == 0
        client.hset(keys.models, "sw", json.dumps({"uri": "/hand/registered/sw"}))
        assert cli(["models", "sync", "--models-dir", str(tmp_path), *common]) == 0
        specs = {k.decode(): json.loads(v)["uri"] for k, v in client.hgetall(keys.models).items()}
        assert specs == {"en": str(en), "sw": "/hand/registered/sw"}, (
            "a hand-registered model was overwritten"
        )
        for lang in ("en", "sw"):
            groups = client.xinfo_groups(keys.jobs(lang))
            assert [g["name"].decode() for g in groups] == [WORKER_GROUP]
        assert "sw: kept /hand/registered/sw" in capsys.readouterr().out
        assert cli(["models", "sync", f"sw={sw}", "--force", *common]) == 0
        assert json.loads(client.hget(keys.models, "sw"))["uri"] == str(sw)
        assert f"sw: registered {sw}" in capsys.readouterr().out
    finally:
        for key in client.scan_iter(f"{prefix}*"):
            client.delete(key)
        client.close()


@pytest.mark.parametrize("where", ["pair", "models-dir"])
def test_models_sync_stops_the_deploy_when_the_models_volume_is_missing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str
) -> None:
    """Before Redis is even dialled: nothing listens on port 1."""
    target = (
        [f"en={tmp_path / 'asr' / 'en'}"] if where == "pair" else ["--models-dir", str(tmp_path / "nope")]
    )
    assert cli(["models", "sync", *target, "--redis-url", "redis://127.0.0.1:1/0"]) == 1
    assert "is the models volume mounted" in capsys.readouterr().err


@pytest.mark.parametrize("pair", ["en", "en=", "English=/models/asr/en"])
def test_models_sync_refuses_malformed_pairs(pair: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli(["models", "sync", pair])
    err = capsys.readouterr().err
    assert "LANG=URI" in err or "language code" in err


def test_models_sync_waits_for_redis_to_start(tmp_path: Path) -> None:
    """compose and a fresh cluster start Redis and the registration together."""
    late = RedisServer(tmp_path / "redis", port=free_port())
    model = _asr_model(tmp_path, "en")
    starter = threading.Timer(1.5, late.start)
    starter.start()
    try:
        result = run(["models", "sync", f"en={model}", "--redis-url", late.url, "--wait-seconds", "60"], {})
        assert result.returncode == 0, result.stderr
        assert f"en: registered {model}" in result.stdout
    finally:
        starter.join()
        late.stop()


def test_models_sync_gives_up_on_redis_after_the_wait(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    model = _asr_model(tmp_path, "en")
    url = f"redis://127.0.0.1:{free_port()}/0"
    assert cli(["models", "sync", f"en={model}", "--redis-url", url, "--wait-seconds", "0"]) == 1
    assert "Redis unreachable after 0 s" in capsys.readouterr().err


def test_an_unreachable_redis_is_named_without_its_password(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"rediss://:hunter2@127.0.0.1:{free_port()}/0"
    assert cli(["models", "list", "--redis-url", url]) == 1
    err = capsys.readouterr().err
    assert "cannot reach Redis at rediss://:***@127.0.0.1" in err and "hunter2" not in err


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
        # 32-bit float WAV, torchaudio.save's and soundfile's float default: read as floats, not as ints
        audio = np.concatenate([np.zeros(4000, np.float32), speech[lang][0].audio])
        sf.write(path, audio, 16000, subtype="FLOAT" if lang == "en" else "PCM_16")
        files.append(path)
    (tmp_path / "broken.wav").write_bytes(b"RIFF....WAVEnope")
    port, rest_port, metrics_port = free_port(), free_port(), free_port()
    # The stack says where it is in the cache (here the test's own), for commands given no address.
    env = {"LIDROUTE_CACHE": str(tmp_path / "cache")}
    up = subprocess.Popen(
        [
            *LIDROUTE,
            "up",
            "--models-dir",
            str(models_dir),
            "--port",
            str(port),
            "--rest-port",
            str(rest_port),
            "--metrics-port",
            str(metrics_port),
            "--log-dir",
            str(tmp_path / "logs"),
            "--workers",  # the languages of the sample files; the demo covers all bundled ones
            "en,es,sw",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **env},
    )
    try:
        deadline = time.monotonic() + 180
        banner = ""
        while "Ctrl-C stops everything" not in banner:
            line = up.stdout.readline()  # type: ignore[union-attr]
            assert line or up.poll() is None, f"lidroute up exited: {banner}"
            banner += line
            assert time.monotonic() < deadline, banner
        assert f"on 127.0.0.1:{port}" in banner and f"http://127.0.0.1:{rest_port}/v1" in banner, banner
        assert "this machine only" in banner
        result = run(["transcribe", *map(str, files), str(tmp_path / "broken.wav")], env)
        for path, lang in zip(files, ("en", "es", "sw"), strict=True):
            assert re.search(rf"{re.escape(str(path))}: \[{lang} p=\d\.\d\d detected\] \S", result.stdout), (
                result
            )
        assert "broken.wav: ERROR" in result.stdout
        assert result.returncode == 1  # one file failed
        listed = run(["models", "list"], env)  # up's Redis, on a free port, found without --redis-url
        assert listed.returncode == 0 and re.search(r"^sw +\S+ +workers=1", listed.stdout, re.M), listed
        phone = tmp_path / "call.ulaw"  # raw telephony audio: 8 kHz μ-law, no header
        sf.write(phone, soxr.resample(speech["sw"][0].audio, 16000, 8000), 8000, format="RAW", subtype="ULAW")
        raw = run(["transcribe", "--encoding", "mulaw", "--rate", "8000", str(phone)], env)
        assert re.search(r"call.ulaw: \[sw p=\d\.\d\d detected\] \S", raw.stdout), raw
        srt = run(["transcribe", "--format", "srt", str(files[2])], env)
        assert srt.stdout.startswith("1\n00:00:00,") and " --> " in srt.stdout, srt
        # Each process exports its metrics on its own port, listed in the banner.
        ports = dict(
            re.findall(r"(\w[\w-]*) :(\d+)", banner.split("Prometheus /metrics:")[1].splitlines()[0])
        )
        assert {"router", "lid", "rest", "worker-1"} <= set(ports), banner
        with urllib.request.urlopen(f"http://127.0.0.1:{ports['router']}/metrics", timeout=10) as reply:
            metrics = reply.read().decode()
        heard = re.search(r'^lidroute_router_audio_seconds_total\{language="sw"\} (\S+)', metrics, re.M)
        assert heard and float(heard.group(1)) > 1.0, metrics
        assert "lidroute_router_streams_in_flight 0.0" in metrics and "lidroute_router_queue_depth" in metrics
        # One access-log line per request, with its request id.
        access = [
            json.loads(line)
            for line in (tmp_path / "logs" / "router.log").read_text().splitlines()
            if '"request"' in line
        ]
        assert access and all(len(r["request_id"]) == 32 and r["outcome"] for r in access), access[:2]
    finally:
        up.send_signal(signal.SIGINT)
        out, _ = up.communicate(timeout=90)
    assert up.returncode == 0, out
    assert "stopping" in out
    gone = run(["languages"], env)
    assert gone.returncode == 1 and "Traceback" not in gone.stderr
    assert "no answer from a router at localhost:50051" in gone.stderr or "lidroute up" in gone.stderr
    leftovers = subprocess.run(["pgrep", "-f", f"127.0.0.1:{port}"], capture_output=True, text=True).stdout
    assert not leftovers.strip(), "services still running after Ctrl-C"


def test_up_serves_the_language_id_it_is_given_instead_of_the_models_folders(models_dir: Path) -> None:
    import argparse

    from lidroute.cli import lid_source, model_dirs
    from workbench.cli import build_parser, stack_config

    def config(*flags: str) -> str:
        args: argparse.Namespace = build_parser().parse_args(["up", "--models-dir", str(models_dir), *flags])
        return stack_config(models_dir, args).lid_model

    assert config() == lid_source(model_dirs(models_dir)[0])
    assert config("--lid-model", "models/whisper-lid") == "models/whisper-lid"


def test_version_and_help_say_only_what_the_command_takes() -> None:
    version = run(["--version"], {})
    assert version.returncode == 0 and re.fullmatch(r"lidroute \S+\n", version.stdout), version
    models_help = run(["models", "list", "--help"], {}).stdout
    assert (
        "--redis-url" in models_help
        and "--log-level" not in models_help
        and "--metrics-port" not in models_help
    )
    register_help = run(["models", "register", "--help"], {}).stdout
    assert "hub id" in register_help and "revision" in register_help.split("--revision", 1)[1]


def test_commands_without_a_stack_say_what_to_do_in_one_line(tmp_path: Path) -> None:
    env = {"LIDROUTE_CACHE": str(tmp_path), "LIDROUTE_ROUTER_ADDR": f"127.0.0.1:{free_port()}"}
    for args in (["languages"], ["models", "list", "--redis-url", f"redis://127.0.0.1:{free_port()}/0"]):
        done = run(args, env)
        assert done.returncode == 1 and "Traceback" not in done.stderr, done
        assert len(done.stderr.strip().splitlines()) == 1 and "lidroute up" in done.stderr, done.stderr
    raw = tmp_path / "call.raw"
    raw.write_bytes(b"\x00\x01" * 800)
    unreadable = run(["transcribe", str(raw)], env)
    assert "raw audio needs --encoding and --rate" in unreadable.stdout, unreadable
    assert run(["transcribe", "--encoding", "mulaw", str(raw)], env).returncode == 2
