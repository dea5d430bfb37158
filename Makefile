# `make test` does every set-up step itself on a fresh machine: virtualenv,
# dependencies (CPU torch first, so pip never pulls CUDA wheels), redis-server.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
LOCK := constraints/lock.txt
TORCH_VERSION := $(shell sed -n 's/^torch==//p' $(LOCK))
TORCH_SPEC ?= torch==$(TORCH_VERSION)
# PyTorch's CPU-only wheels. When it cannot be reached, the package registry's torch is taken: on a registry
# that holds only CUDA builds for Linux (PyPI), that is a CUDA build of the same version.
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
EXTRAS ?= worker,discord,slack,test,eval

FLOOR := .cache/transformers-floor

# Bytecode caches on, whatever the shell says: the suite starts many Python processes (workers, clients, bots),
# and pytest keeps its rewritten test modules only in them; without them `make unit` spent seconds recompiling.
unexport PYTHONDONTWRITEBYTECODE

PROMTOOL_DIR := .cache/promtool

.PHONY: test suite setup redis promtool iproute2 lint typecheck tiny-model unit test-floor bench gpu-bundle gpu-dry-run lock clean demo compose-check

# The suite runs in TEST_WORKERS processes (pytest-xdist; the GPU-check tests stay together, they share one
# bundle). Lint, type check, the tiny model and the transformers floor's install run side by side first.
TEST_WORKERS ?= 2
XDIST := -n $(TEST_WORKERS) --dist loadgroup

test: setup
	$(MAKE) --no-print-directory -j2 --output-sync=target lint typecheck tiny-model $(FLOOR)/.installed
	@echo "the transformers floor's tests and the suite run side by side; each one's output comes when it ends"
	$(MAKE) --no-print-directory -j2 --output-sync=target test-floor suite

# Every test, in TEST_WORKERS processes.
suite: setup tiny-model
	$(PY) -m pytest $(XDIST) --durations=12

# The tests' tiny model (the demo model, inference/demo.py), trained once (under a minute on 2 cores; cached in .cache/)
# before pytest starts, so no test's timeout has to cover training on a busy machine.
tiny-model: setup
	$(PY) -m testkit.tiny_model

setup: $(VENV)/.installed redis promtool iproute2

# A newcomer's first run: the whole service on the demo model (built here, no GPU, no download). Ctrl-C stops it;
# `.venv/bin/kullm ask "딥러닝이 뭐야?"` in another terminal, in this directory, asks it.
demo: setup
	$(VENV)/bin/kullm up --demo

# The compose stack run for real in Docker (docker/check.py): a daemon (a private one when none runs and this is
# root), Compose v2, the base images (stand-ins when no registry answers), both images built, every step checked;
# the table goes to docs/DEPLOYMENT.md.
compose-check: setup tiny-model
	$(PY) docker/check.py

$(VENV)/.installed: pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@if $(PY) -c "import urllib.request as r; r.urlopen('$(TORCH_CPU_INDEX)/torch/', timeout=5)" 2>/dev/null; then \
		echo "$(TORCH_SPEC), CPU build, from $(TORCH_CPU_INDEX)"; \
		$(PY) -m pip install -q --index-url "$(TORCH_CPU_INDEX)" "$(TORCH_SPEC)"; \
	else \
		echo "$(TORCH_CPU_INDEX) not reachable: $(TORCH_SPEC) from the package registry"; \
		$(PY) -m pip install -q "$(TORCH_SPEC)"; \
	fi
	$(PY) -m pip install -q -c $(LOCK) -e ".[$(EXTRAS)]"
	touch $@

# Re-pin constraints/lock.txt to what the virtualenv holds (after changing pyproject.toml and `make setup`).
lock: setup
	{ sed -n '/^#/p' $(LOCK); { $(PY) -m pip freeze --exclude-editable | sed 's/^torch==\(.*\)+cpu$$/torch==\1/'; \
		grep -E '^(async-timeout|bitsandbytes|setuptools)==' $(LOCK); } | sort -f; } > $(LOCK).new
	mv $(LOCK).new $(LOCK)
	$(PY) docker/cuda_pins.py $(LOCK)  # and what PyPI's CUDA torch brings to the worker image, resolved from PyPI

redis:
	@command -v redis-server >/dev/null 2>&1 || { \
		echo "redis-server not found: installing it with apt-get"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -q && $$SUDO apt-get install -y -q redis-server; }

# `ip` makes the network namespaces of the multi-host run (tests/test_netsplit.py). Only root can make them, so only
# root gets it installed; the test skips, saying why, elsewhere.
iproute2:
	@command -v ip >/dev/null 2>&1 || [ "$$(id -u)" != 0 ] || { \
		echo "ip not found: installing iproute2 with apt-get"; \
		apt-get update -q && apt-get install -y -q iproute2; }

# promtool checks and unit-tests the alerting rules (deploy/monitoring): taken from Debian's prometheus package,
# unpacked under .cache (nothing installed, no service started) where no promtool is on the PATH.
promtool:
	@command -v promtool >/dev/null 2>&1 || [ -x $(PROMTOOL_DIR)/usr/bin/promtool ] || { \
		echo "promtool not found: unpacking it from Debian's prometheus package into $(PROMTOOL_DIR)"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		mkdir -p $(PROMTOOL_DIR) && cd $(PROMTOOL_DIR) && \
		{ apt-get download -q prometheus 2>/dev/null || { $$SUDO apt-get update -q && apt-get download -q prometheus; }; } && \
		dpkg-deb -x prometheus_*.deb . && rm -f prometheus_*.deb; }

lint: setup
	$(PY) -m ruff check .

typecheck: setup
	$(PY) -m mypy

# Every test that starts no process (tests/conftest.py marks the others e2e): under 30 s.
unit: setup tiny-model
	$(PY) -m pytest -m "not e2e" $(XDIST)

# The engines on the lowest transformers pyproject.toml allows (the GPU hosts' version), CPU-only: the builtin
# and paged engines' contract, the engine, prompt and benchmark tests, and the GPU tests on the CPU (a worker
# process included). ENGINE=openai and `transformers serve` talk HTTP: their tests run in the suite, and the GPU
# check's dry run there (tests/test_gpu_check.py) runs them on this floor too, as the GPU hosts do.
test-floor: setup tiny-model $(FLOOR)/.installed
	PYTHONPATH=$(FLOOR) $(PY) -c "import transformers as t; v = '$(shell sed -n 's/^transformers==//p' constraints/transformers-floor.txt)'; assert t.__version__ == v, (t.__version__, v)"
	PYTHONPATH=$(FLOOR) KULLM_GPU_TESTS_DEVICE=cpu OMP_NUM_THREADS=1 $(PY) -m pytest -q -p no:cacheprovider \
		tests/test_engine_contract.py -k "not openai and not transformers_serve" \
		tests/test_engine.py tests/test_prompt.py tests/test_bench.py tests/test_gpu.py

$(FLOOR)/.installed: constraints/transformers-floor.txt $(VENV)/.installed
	rm -rf $(FLOOR)
	$(PY) -m pip install -q --no-deps --target $(FLOOR) -r constraints/transformers-floor.txt
	touch $@

bench: setup
	$(PY) -m bench.engine

# Everything a bare GPU host lacks, into .gpu/ (see bench/gpu/run.sh and README "GPU check").
gpu-bundle: setup
	$(PY) -m bench.gpu.bundle

gpu-dry-run: setup
	DRY_RUN=1 PYTHON=$(PY) bash bench/gpu/run.sh

clean:
	rm -rf $(VENV) .cache .pytest_cache .mypy_cache .ruff_cache .gpu bench/gpu/results
