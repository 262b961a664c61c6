"""Locks the whole dependency set: `make lock` writes requirements/lock.txt and requirements/runtime.txt.

pip-compile resolves pyproject.toml (runtime and every extra) with the torch pair of
requirements/torch.in into `lock.txt`, hash-pinned: what scripts/setup.sh and CI install. It keeps
the pins of the previous lock unless told to upgrade, so a refresh after editing pyproject.toml
moves only what the edit needs.

`runtime.txt` is derived from the same lock, not resolved again, so its versions and hashes are
the lock's by construction: the packages the services need at run time (no dev tools), without
torch, torchaudio and the CUDA packages of PyPI's torch build. The image installs that pair from
the PyTorch index of its TORCH_VARIANT (cpu or a CUDA version) at the versions of torch.in, then
runtime.txt without dependencies. The tests derive runtime.txt again and compare.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
REQUIREMENTS = ROOT / "requirements"
TORCH_PINS = REQUIREMENTS / "torch.in"
LOCK = REQUIREMENTS / "lock.txt"
RUNTIME = REQUIREMENTS / "runtime.txt"
# What pip-compile writes in `# via` for a requirement of pyproject.toml itself.
PROJECT_VIA = "lidroute (pyproject.toml)"
# PyPI's Linux build of torch and what only it needs; an image takes these from its variant's index.
TORCH_BUILD = re.compile(r"^(torch|torchaudio|triton|nvidia-.*|cuda-.*)$")

RUNTIME_HEADER = """\
# The runtime part of requirements/lock.txt, derived from it by `make lock` (scripts/lock.py):
# what the services need, without dev tools and without torch, torchaudio and the CUDA packages
# of PyPI's torch build. docker/Dockerfile installs torch and torchaudio at the versions of
# requirements/torch.in from the PyTorch index of its TORCH_VARIANT, then this file with
# `pip install --no-deps --require-hashes`.
"""


@dataclass
class Entry:
    """One pinned package of a pip-compile output: its text block, version and dependents."""

    name: str
    version: str
    block: str
    via: list[str] = field(default_factory=list)


def parse_lock(text: str) -> dict[str, Entry]:
    """The pinned packages of a pip-compile output, by canonical name."""
    entries: dict[str, Entry] = {}
    current: Entry | None = None
    in_via = False
    for line in text.splitlines(keepends=True):
        if current is not None and line[:1].isspace():
            current.block += line
            comment = line.strip()
            if comment.startswith("# via"):
                rest = comment.removeprefix("# via").strip()
                current.via += [rest] if rest else []
                in_via = not rest
            elif in_via and comment.startswith("#   "):
                current.via.append(comment.removeprefix("#").strip())
            else:
                in_via = False
        elif line.strip() and not line.startswith("#"):
            match = re.match(r"([A-Za-z0-9._-]+)==([^\s\\;]+)", line)
            if not match:
                raise ValueError(f"not a pinned requirement: {line.strip()!r}")
            current = Entry(canonicalize_name(match[1]), match[2], line)
            entries[current.name] = current
            in_via = False
        else:
            current = None
    return entries


def project_requirements() -> tuple[list[Requirement], list[Requirement]]:
    """pyproject.toml's runtime requirements, and those of every extra."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = [Requirement(r) for r in project["dependencies"]]
    extras = [Requirement(r) for group in project.get("optional-dependencies", {}).values() for r in group]
    return runtime, extras


def torch_pins() -> dict[str, str]:
    """The torch pair of requirements/torch.in, name → version."""
    pins = {}
    for line in TORCH_PINS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[canonicalize_name(name)] = version
    return pins


def runtime_closure(entries: dict[str, Entry], runtime: list[Requirement]) -> set[str]:
    """The locked packages that the runtime requirements pull in, through `# via` back-edges."""
    needed = {canonicalize_name(r.name) for r in runtime}
    changed = True
    while changed:
        changed = False
        for name, entry in entries.items():
            if name not in needed and any(canonicalize_name(v) in needed for v in entry.via):
                needed.add(name)
                changed = True
    return needed


def derive_runtime(lock_text: str) -> str:
    """runtime.txt's content: the lock's runtime closure minus PyPI's torch build, blocks verbatim."""
    entries = parse_lock(lock_text)
    runtime, _ = project_requirements()
    keep = sorted(n for n in runtime_closure(entries, runtime) if not TORCH_BUILD.match(n))
    missing = [n for n in keep if n not in entries]
    if missing:
        raise ValueError(f"the lock lacks runtime requirements {missing}: run `make lock`")
    return RUNTIME_HEADER + "".join(entries[n].block for n in keep)


def compile_lock(upgrade: bool) -> None:
    cmd = [
        str(Path(sys.executable).with_name("pip-compile")),
        "--quiet",
        "--generate-hashes",
        "--allow-unsafe",
        "--strip-extras",
        "--all-extras",
        "--no-emit-index-url",
        "--no-emit-find-links",
        f"--constraint={TORCH_PINS.relative_to(ROOT)}",
        f"--output-file={LOCK.relative_to(ROOT)}",
        *(["--upgrade"] if upgrade else []),
        "pyproject.toml",
    ]
    # Old sdists' build warnings say nothing about the lock.
    subprocess.run(cmd, cwd=ROOT, check=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upgrade", action="store_true", help="take the newest releases the ranges allow")
    parser.add_argument(
        "--runtime-only", action="store_true", help="derive runtime.txt from the present lock.txt only"
    )
    args = parser.parse_args()
    if not args.runtime_only:
        compile_lock(args.upgrade)
    RUNTIME.write_text(derive_runtime(LOCK.read_text()))
    print(f"{LOCK.relative_to(ROOT)}, {RUNTIME.relative_to(ROOT)}: written")


if __name__ == "__main__":
    main()
