# One entry point for everything: `make demo` and `make test` work on a fresh machine.
VENV := .venv
PY := $(VENV)/bin/python
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: setup demo test faults lint format proto lock models transfer bench eval-real up clean

setup:
	@bash scripts/setup.sh

demo: setup
	@$(PY) -m workbench.cli demo

up: setup
	@$(PY) -m workbench.cli up

test: setup
	@$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check -q . && $(PY) -m pytest

# The fault tests alone (also part of `make test`): killed workers and Redis, load past the limits,
# hostile bytes, slow and vanished clients, missing tokens.
faults: setup
	@$(PY) -m pytest -m faults

lint: setup
	@$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check . && $(VENV)/bin/lint-imports --no-logo

format: setup
	@$(VENV)/bin/ruff format . && $(VENV)/bin/ruff check --fix .

proto: setup
	@$(PY) scripts/gen_proto.py

# requirements/lock.txt and runtime.txt from pyproject.toml and requirements/torch.in, keeping the
# present pins where they still fit; `make lock UPGRADE=1` takes the newest releases the ranges allow.
lock: setup
	@$(PY) scripts/lock.py $(if $(UPGRADE),--upgrade)

models: setup
	@$(PY) -m workbench.cli models build --out models

# The transfer table of docs/models.md: corpus, phoneme backbone, then fine-tuning from the backbone
# and from random initialisation on 10 and 60 minutes of sw and mr (about 80 minutes on 2 cores).
TRANSFER := build/transfer
transfer: setup
	@$(PY) -m workbench.cli corpus synth --out $(TRANSFER)/corpus --languages en,es,fr,de,pt,it,ru,sw,mr \
	  --train 1800 --dev 50 --test 100 --test-hard 100 --seed 0
	@$(PY) -m asr_worker pretrain --data $(TRANSFER)/corpus --out $(TRANSFER)/backbone --utterances 1000 --steps 3000
	@$(PY) -m asr_worker transfer --backbone $(TRANSFER)/backbone --data $(TRANSFER)/corpus --out $(TRANSFER)/table \
	  --languages sw,mr --minutes 10,60 --steps 800 --zero-shot models/asr/es

bench: setup
	@$(PY) -m workbench.bench

# The yardstick: recorded human speech (FLEURS and Picovoice clips), the bundled models beside Whisper
# base on the same clips, windows and candidate languages; every number in build/eval-real.json.
# `make eval-real LID=models/whisper-lid` scores that language ID instead of the default.
REAL_SPEECH ?= ../shared/eval/real-speech
LID ?=
eval-real: setup
	@mkdir -p build && $(PY) -m workbench.cli evaluate $(REAL_SPEECH) --models-dir models --candidates model \
	  $(if $(LID),--lid-model $(LID)) --anchor whisper-base --quiet --json build/eval-real.json

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache

# Deploy files (docker/, deploy/k8s/): Helm and kubectl offline from npm, the static checks, and a
# rendered release manifest for plain-kubectl users: make deploy-manifest DEPLOY_ENV=prod NAMESPACE=speech
.PHONY: deploy-tools deploy-check deploy-manifest
DEPLOY_ENV ?= dev
NAMESPACE ?= lidroute

deploy-tools:
	@bash scripts/deploy_tools.sh

deploy-check: setup
	@$(PY) -m pytest tests/test_deploy.py -q

deploy-manifest:
	@tools=$$(bash scripts/deploy_tools.sh) && mkdir -p build/k8s && \
	  $$tools/helm/helm template lidroute deploy/k8s/lidroute --namespace $(NAMESPACE) \
	    -f deploy/k8s/values/$(DEPLOY_ENV).yaml > build/k8s/lidroute-$(DEPLOY_ENV).yaml && \
	  echo "build/k8s/lidroute-$(DEPLOY_ENV).yaml: kubectl apply -n $(NAMESPACE) -f build/k8s/lidroute-$(DEPLOY_ENV).yaml"
