# yellowcart — `make run` starts the system, `make test` proves it. Both install first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.install-stamp

.PHONY: install test chaos fuzz lint typecheck format run up demo bench bench-store bench-load bench-drain clean

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

bench: bench-store bench-load bench-drain

bench-store: install
	$(BIN)/python -m bench.store

bench-load: install
	$(BIN)/python -m bench.load

bench-drain: install
	$(BIN)/python -m bench.drain

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
