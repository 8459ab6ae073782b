PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install dev dev-s3 test lint typecheck bench bench-cluster chaos clean lock images

$(BIN)/callrec: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,test]'
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
	tests/docker-up.sh
	@mkdir -p test-report
	@# The images build while lint, types and the other tests run (at the lowest CPU
	@# priority); the container tests run last and wait for that build (a file lock), or
	@# build what is still missing.
	nice -n 19 $(BIN)/python -m tests.images > test-report/images.log 2>&1 &
	$(BIN)/ruff check --no-cache .
	$(BIN)/mypy
	$(BIN)/python -m pytest -q
	@cat test-report/images.log

## Crash-safety trials: kill -9 of workers mid-download, CHAOS_TRIALS times (default 50);
## prints lost / duplicated / torn / max recovery time. Then, on a 3-primary cluster, a
## primary killed and a busy slot migrated mid-run, CLUSTER_CHAOS_TRIALS times each (5).
chaos: install
	$(BIN)/python -m pytest -q -s -m chaos tests/test_chaos.py
	CLUSTER_CHAOS_TRIALS=$${CLUSTER_CHAOS_TRIALS:-5} $(BIN)/python -m pytest -q -s -m 'chaos or not chaos' tests/test_cluster_chaos.py

## requirements.txt, the pinned runtime dependencies (image and PaaS builds), from
## pyproject.toml: every Python 3.11 on Linux (markers kept), with hashes.
lock: install
	$(BIN)/uv pip compile --quiet --native-tls --universal --python-version 3.11 \
		--generate-hashes --no-strip-markers --index-url https://pypi.org/simple \
		--custom-compile-command 'make lock' pyproject.toml -o requirements.txt

## The container images of the tests (Valkey, a debootstrap Python base, deploy/Dockerfile);
## starts a Docker engine first when none runs (tests/docker-up.sh).
images: install
	tests/docker-up.sh
	$(BIN)/python -m tests.images

lint: install
	$(BIN)/ruff check --no-cache .

## Speed, measured: callrec against nginx, a bare Starlette FileResponse and granian, the
## download pipeline against the peer queues (../shared/peers), fairness and memory
## (installs nginx, wrk, granian and the peers' virtualenv when missing; about 9 minutes).
bench: install
	bench/install-tools.sh $(VENV)
	$(BIN)/python -m bench $(BENCH_ARGS)

## The download pipeline against a 3-primary cluster: 10,000 businesses, workers 1, 2, 4
## and 8, downloads/s and Redis CPU per primary (bench/cluster.py; several minutes).
bench-cluster: install
	$(BIN)/python -m bench.cluster $(BENCH_ARGS)

typecheck: install
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .callrec-dev
