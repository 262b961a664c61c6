"""The locked dependency set: pyproject.toml, requirements/ and the installed environment agree."""

from __future__ import annotations

import sys
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import lock  # noqa: E402

LOCK_HINT = "pyproject.toml and requirements/lock.txt disagree: run `make lock`"


@pytest.fixture(scope="module")
def locked() -> dict[str, lock.Entry]:
    return lock.parse_lock(lock.LOCK.read_text())


def all_requirements() -> list[Requirement]:
    runtime, extras = lock.project_requirements()
    return runtime + extras


def test_every_requirement_of_pyproject_is_locked_within_its_range(locked: dict[str, lock.Entry]) -> None:
    for req in all_requirements():
        entry = locked.get(canonicalize_name(req.name))
        assert entry is not None, f"{req.name} is in pyproject.toml, not in the lock. {LOCK_HINT}"
        assert req.specifier.contains(entry.version, prereleases=True), (
            f"{req.name}=={entry.version} is locked, pyproject.toml asks {req.specifier}. {LOCK_HINT}"
        )
        assert lock.PROJECT_VIA in entry.via, f"the lock does not say pyproject.toml asks for {req.name}"


def test_the_lock_asks_for_nothing_in_the_project_s_name_that_pyproject_dropped(
    locked: dict[str, lock.Entry],
) -> None:
    asked = {canonicalize_name(r.name) for r in all_requirements()}
    stale = sorted(n for n, e in locked.items() if lock.PROJECT_VIA in e.via and n not in asked)
    assert not stale, f"locked for pyproject.toml but no longer in it: {stale}. {LOCK_HINT}"


def test_every_locked_package_is_needed_by_something_and_hash_pinned(locked: dict[str, lock.Entry]) -> None:
    for name, entry in locked.items():
        assert entry.via, f"{name} is locked but nothing needs it. {LOCK_HINT}"
        assert "--hash=sha256:" in entry.block, f"{name} has no hash in the lock"


def test_the_lock_holds_the_torch_pair_of_torch_in(locked: dict[str, lock.Entry]) -> None:
    pins = lock.torch_pins()
    assert set(pins) == {"torch", "torchaudio"}
    for name, version in pins.items():
        assert locked[name].version == version, f"{name}: torch.in has {version}. {LOCK_HINT}"


def test_runtime_txt_is_the_lock_s_runtime_part_without_the_torch_build() -> None:
    derived = lock.derive_runtime(lock.LOCK.read_text())
    assert lock.RUNTIME.read_text() == derived, "requirements/runtime.txt is stale: run `make lock`"
    runtime = lock.parse_lock(derived)
    assert not [n for n in runtime if lock.TORCH_BUILD.match(n)]
    for name in ("grpcio", "speechbrain", "transformers", "redis", "sympy"):
        assert name in runtime, f"the image would lack {name}"
    for name in ("pytest", "ruff", "pip-tools", "grpcio-tools"):
        assert name not in runtime, f"the image would carry the dev tool {name}"


def test_parse_lock_reads_pins_and_every_dependent() -> None:
    text = (
        "#\n# header\n#\nalpha==1.0 \\\n    --hash=sha256:aa\n    # via lidroute (pyproject.toml)\n"
        "beta==2.0 \\\n    --hash=sha256:bb \\\n    --hash=sha256:cc\n    # via\n    #   alpha\n"
        "    #   -c requirements/torch.in\n\n# The following packages are considered to be unsafe\n"
        "setuptools==80.0 \\\n    --hash=sha256:dd\n    # via beta\n"
    )
    entries = lock.parse_lock(text)
    assert {n: e.version for n, e in entries.items()} == {"alpha": "1.0", "beta": "2.0", "setuptools": "80.0"}
    assert entries["beta"].via == ["alpha", "-c requirements/torch.in"]
    assert entries["setuptools"].block.endswith("# via beta\n")
    with pytest.raises(ValueError, match="not a pinned requirement"):
        lock.parse_lock("gamma>=1\n")


def test_the_environment_holds_exactly_the_locked_versions(locked: dict[str, lock.Entry]) -> None:
    wrong = {}
    for name, entry in locked.items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = "missing"
        if installed != entry.version:
            wrong[name] = f"{installed} installed, {entry.version} locked"
    assert not wrong, f"this environment is not the lock ({wrong}): run `make setup`"
