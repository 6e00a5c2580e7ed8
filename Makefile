# The two commands a fresh machine needs: `make demo` and `make test`.
VENV   ?= .venv
PY     := $(VENV)/bin/python
CILP   := $(VENV)/bin/cilp
DATA   ?= data/synthetic
N_PER_CLASS ?= 1000

export FIFTYONE_DO_NOT_TRACK := true
export FIFTYONE_DATABASE_VALIDATION := false
export FIFTYONE_PLUGINS_DIR := $(CURDIR)
export WANDB_MODE ?= offline

.PHONY: setup setup-test demo test bench clean

setup:
	@bash scripts/setup.sh

setup-test:
	@bash scripts/setup.sh --test

demo: setup
	@if [ -d "$(DATA)" ]; then echo "demo: using the data in $(DATA)"; \
	else $(CILP) generate $(DATA) --n-per-class $(N_PER_CLASS); fi
	$(CILP) validate $(DATA)

test: setup-test
	$(VENV)/bin/pytest -q $(PYTEST_ARGS)

bench: setup
	$(PY) benchmarks/bench_generate.py

clean:
	rm -rf $(VENV) data/synthetic .pytest_cache
