# The README's two commands: `make demo` runs the main job, `make test` runs every check.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.ONESHELL:

PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install demo run test lint bench-ingest bench-quality bench-serving bench-online bench-replay bench-soak bench-ranker

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

demo: install
	$(BIN)/recstream demo

run: install
	$(BIN)/recstream up

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

test: install lint
	export RECSTREAM_DATA_DIR=$$(mktemp -d)
	trap '$(BIN)/recstream stack down' EXIT
	eval "$$($(BIN)/recstream stack up)"
	$(BIN)/pytest --durations=15  # the slowest, so CI's time stays in sight

bench-ingest: install
	export RECSTREAM_DATA_DIR=$$(mktemp -d)
	trap '$(BIN)/recstream stack down' EXIT
	eval "$$($(BIN)/recstream stack up)"
	$(BIN)/python -m bench.ingest

bench-quality: install
	$(BIN)/recstream eval --events "$$($(BIN)/recstream data ml-100k)" --json ml-100k-eval.json

bench-serving: install
	export RECSTREAM_DATA_DIR=$$(mktemp -d)
	$(BIN)/python -m bench.serving --sizes 10000 100000
	$(BIN)/python -m bench.serving --sizes 100000 1000000 --factory IDMap2,HNSW32
	$(BIN)/python -m bench.index_recall

bench-online: install
	$(BIN)/recstream demo --json online-loop.json

bench-replay: install
	export RECSTREAM_DATA_DIR=$$(mktemp -d)
	$(BIN)/python bench/replay.py --events 100000 1000000 --json replay-rebuild.json

bench-soak: install
	$(BIN)/python -m bench.soak --seconds 600 --rate 500 --qps 100 --users 2000 --items 1000 --history-len 20 --trainer-dedup-window 50000 --feed-retention-s 120 --json soak.json

bench-ranker: install
	$(BIN)/python bench/ranker.py
