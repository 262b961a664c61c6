# One entry point for everything: `make demo` and `make test` work on a fresh machine.
VENV := .venv
PY := $(VENV)/bin/python
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: setup demo test lint format proto models bench up clean

setup:
	@bash scripts/setup.sh

demo: setup
	@$(PY) -m lidroute.cli demo

up: setup
	@$(PY) -m lidroute.cli up

test: setup
	@$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check -q . && $(PY) -m pytest

lint: setup
	@$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

format: setup
	@$(VENV)/bin/ruff format . && $(VENV)/bin/ruff check --fix .

proto: setup
	@$(PY) scripts/gen_proto.py

models: setup
	@$(PY) -m lidroute.cli models build --out models

bench: setup
	@$(PY) -m lidroute.bench

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
