PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install dev dev-s3 test lint typecheck bench chaos clean

$(BIN)/callrec: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

install: $(BIN)/callrec

## Run the service locally: embedded Redis, disk storage, Twilio simulator with demo calls.
dev: install
	$(BIN)/callrec dev

## The same with STORAGE=s3 against a local S3-compatible server (moto) and a fresh bucket.
dev-s3: install
	$(BIN)/callrec dev --local-s3

## The test suite (what CI runs): lint, types, then pytest against real Redis and HTTP.
test: install
	tests/install-browser.sh
	tests/install-redis-tls.sh
	$(BIN)/ruff check --no-cache .
	$(BIN)/mypy
	$(BIN)/python -m pytest -q

## Crash-safety trials: kill -9 of workers mid-download, CHAOS_TRIALS times (default 50);
## prints lost / duplicated / torn / max recovery time.
chaos: install
	$(BIN)/python -m pytest -q -s -m chaos tests/test_chaos.py

lint: install
	$(BIN)/ruff check --no-cache .

## Speed, measured: callrec against nginx and a bare Starlette FileResponse, the download
## pipeline, fairness and memory (installs nginx and wrk when missing; about 5 minutes).
bench: install
	bench/install-tools.sh
	$(BIN)/python -m bench $(BENCH_ARGS)

typecheck: install
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .callrec-dev
