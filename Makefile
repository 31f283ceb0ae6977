# The two commands of the README: `make demo` (set up, run a local federation) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
LADA := $(VENV)/bin/lada

.PHONY: install demo test test-fast protos lint format bench clean

install:
	./scripts/install.sh

demo: install
	$(LADA) up --config deploy/local.yaml

test: install
	./scripts/test.sh

test-fast: install
	$(PY) -m pytest -x -q -m "not slow"

protos: install
	$(PY) -m lada.protogen

lint: install
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff format . && $(VENV)/bin/ruff check --fix .

bench: install
	$(LADA) bench all --out docs/bench

clean:
	rm -rf .lada .pytest_cache
