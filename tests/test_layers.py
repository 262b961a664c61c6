"""The layers hold: core, services and workbench import only downwards, and serving loads no training code."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("lidroute", "router", "lid_service", "asr_worker", "rest_gateway", "workbench")
#: Not serving code: training, the core's and each service's.
TRAINING = ("lidroute.train", "lid_service.recipes", "asr_worker.recipes")
TRAINING_ONLY = (*TRAINING, "workbench.build")
TRAINING_PACKAGES = ("babel", "datasets", "jiwer", "num2words")


def contracts() -> dict[str, dict]:  # type: ignore[type-arg]
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    return {c["id"]: c for c in config["contracts"]}


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    lint = Path(sys.executable).with_name("lint-imports")
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(root), "HOME": str(root)}
    return subprocess.run(
        [str(lint), "--no-cache", "--no-logo"], cwd=root, capture_output=True, text=True, timeout=120, env=env
    )


def test_the_import_contracts_are_kept() -> None:
    done = lint_imports(ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


def test_every_serving_module_is_bound_by_the_serving_contract() -> None:
    """A new module of the core or a service is serving code, unless training or `python -m` dispatch."""
    sources = set(contracts()["serving"]["source_modules"])
    for package in PACKAGES[:-1]:
        for path in (ROOT / package).glob("*.py"):
            if path.stem not in ("__init__", "__main__"):
                module = f"{package}.{path.stem}"
                assert module in sources, f"{module} is serving code: add it to the serving contract"
    assert "lidroute.v1" in sources


def test_a_serving_module_that_imports_training_code_breaks_a_contract(tmp_path: Path) -> None:
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    audio = tmp_path / "lidroute" / "audio.py"
    audio.write_text(audio.read_text() + "\nfrom lidroute.train.budget import Budget  # noqa\n")
    worker = tmp_path / "asr_worker" / "worker.py"
    worker.write_text(worker.read_text() + "\nimport router.core  # noqa\n")
    done = lint_imports(tmp_path)
    assert done.returncode != 0
    assert "lidroute.audio -> lidroute.train.budget" in done.stdout
    assert "asr_worker.worker -> router.core" in done.stdout


def test_serving_commands_of_the_lidroute_command_load_no_training_code() -> None:
    probe = (
        "import sys\n"
        "from workbench.cli import main\n"
        "for argv in (['models', 'sync', '--help'], ['transcribe', '--help'], ['languages', '--help']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        f"print(sorted(m for m in sys.modules if m.startswith({TRAINING_ONLY + TRAINING_PACKAGES!r})))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
    assert "--models-dir" in done.stdout, "the help of `models sync` was printed"
    assert done.stdout.strip().splitlines()[-1] == "[]"
