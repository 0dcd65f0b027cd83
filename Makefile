# The two set-up commands of the README: `make run` and `make test`.
VENV ?= .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install run test test-fast lint bench clean

install:
	@VENV=$(VENV) bash scripts/install.sh

## install everything, prepare the default library + retriever, start llama.cpp + gateway
run: install
	$(BIN)/guide-align up

## install everything and run the whole test suite (end-to-end tests included)
test: install
	$(BIN)/python -m pytest -q -ra

test-fast: install
	$(BIN)/python -m pytest -q -ra -m "not e2e and not slow"

lint: install
	$(BIN)/ruff check app cli guide guideline_lib judge retriever finetune evaluation redteam scale tests bench
	$(BIN)/mypy

bench: install
	$(BIN)/python bench/gateway_overhead.py

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
