# yellowcart — `make run` starts the system, `make test` proves it. Both install first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.install-stamp

.PHONY: install test chaos fuzz lint typecheck format run up demo bench bench-store \
	bench-load bench-drain bench-replay clean lock deploy-check compose-smoke

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

test: install
	$(BIN)/pytest -q

# kills every process of `yellowcart up` under a steady flow; prints recovery times (~2-3 min)
chaos: install
	$(BIN)/python -m tests.chaos $(CHAOS_ARGS)

fuzz: install
	$(BIN)/python -m tests.fuzz.gateway

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy shared services operations
	$(BIN)/lint-imports

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

run: install
	$(BIN)/yellowcart up

up: run

demo: install
	$(BIN)/yellowcart demo

bench: bench-store bench-replay bench-load bench-drain

bench-store: install
	$(BIN)/python -m bench.store

bench-replay: install
	$(BIN)/python -m bench.replay

bench-load: install
	$(BIN)/python -m bench.load

bench-drain: install
	$(BIN)/python -m bench.drain

# uv.lock from pyproject.toml, and the image's hash-pinned runtime requirements exported from it
lock: install
	$(BIN)/uv lock
	$(BIN)/uv export --frozen --no-emit-project --no-header --format requirements-txt \
	  -o deploy/requirements.txt --quiet

# What can be proven without a Docker engine or a cluster (CI runs it): hadolint on every
# Dockerfile (no findings allowed), shellcheck on the deployment scripts, the lock file against
# pyproject.toml, compose validated with and without each profile and read property by
# property, every Kubernetes manifest (base and overlays, rendered) against the API schemas.
deploy-check: install
	git ls-files -co --exclude-standard -- '*Dockerfile*' | xargs $(BIN)/hadolint --failure-threshold=style
	$(BIN)/shellcheck deploy/compose/*.sh .ci/run
	$(BIN)/uv lock --check --offline --quiet
	$(BIN)/pytest -q -p no:cacheprovider tests/deploy tests/unit/test_lock_file.py

# On a host with Docker: build, start the stack, wait for ready, play the demo through the
# gateway, tear everything down (volumes too).
compose-smoke:
	deploy/compose/smoke.sh

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
