# `make test` does every set-up step itself on a fresh machine: virtualenv,
# dependencies (CPU torch first, so pip never pulls CUDA wheels), redis-server.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= worker,discord,slack,test

.PHONY: test setup redis lint typecheck unit bench clean

test: setup lint typecheck
	$(PY) -m pytest

setup: $(VENV)/.installed redis

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	touch $@

redis:
	@command -v redis-server >/dev/null 2>&1 || { \
		echo "redis-server not found: installing it with apt-get"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -q && $$SUDO apt-get install -y -q redis-server; }

lint: setup
	$(PY) -m ruff check .

typecheck: setup
	$(PY) -m mypy

unit: setup
	$(PY) -m pytest -m "not e2e"

bench: setup
	$(PY) -m bench.engine

clean:
	rm -rf $(VENV) .cache .pytest_cache .mypy_cache .ruff_cache
