# The two commands a fresh machine needs: `make demo` and `make test`.
VENV   ?= .venv
PY     := $(VENV)/bin/python
CILP   := $(VENV)/bin/cilp
DATA   ?=
N_PER_CLASS ?=
SUBSET ?=
DATASET ?= cilp-assessment
PORT   ?= 5151
RUNS   ?= runs
EPOCHS ?=
PRESET ?=
PRECISION ?= auto

export FIFTYONE_DO_NOT_TRACK := true
export FIFTYONE_DATABASE_VALIDATION := false
export FIFTYONE_PLUGINS_DIR := $(CURDIR)
export WANDB_MODE ?= offline

.PHONY: setup setup-test demo test test-quick lint app bench clean

setup:
	@bash scripts/setup.sh

setup-test:
	@bash scripts/setup.sh --test

demo: setup
	@DATA=$(DATA) N_PER_CLASS=$(N_PER_CLASS) SUBSET=$(SUBSET) DATASET=$(DATASET) RUNS=$(RUNS) PRESET=$(PRESET) EPOCHS=$(EPOCHS) PRECISION=$(PRECISION) \
		CILP=$(CILP) PY=$(PY) bash scripts/demo.sh

# The App on PORT and an executor for what its forms schedule (training runs longer than the
# App's 600 s request limit), started and stopped together (Ctrl-C): plugin/service/app.py.
app: setup
	$(CILP) app $(DATASET) --port $(PORT)

# The whole suite (what CI runs); test-quick: the unit tier for the inner loop (no browser, no
# process-level faults, no training to a target, no whole benchmarks), a few minutes on 2 cores.
test: setup-test lint
	$(VENV)/bin/pytest -q $(PYTEST_ARGS)

test-quick: setup-test lint
	$(VENV)/bin/pytest -q -m "not browser and not slow and not faults and not cuda" $(PYTEST_ARGS)

lint: setup-test
	$(VENV)/bin/ruff check .

bench: setup
	$(PY) benchmarks/bench_generate.py
	$(PY) benchmarks/bench_ingest.py

clean:
	rm -rf $(VENV) data/synthetic data/synthetic-9999 .pytest_cache
