# The two commands a fresh machine needs: `make demo` and `make test`.
VENV   ?= .venv
PY     := $(VENV)/bin/python
CILP   := $(VENV)/bin/cilp
DATA   ?= data/synthetic
N_PER_CLASS ?= 1000
DATASET ?= cilp-assessment
PORT   ?= 5151
RUNS   ?= runs
EPOCHS ?= 6

export FIFTYONE_DO_NOT_TRACK := true
export FIFTYONE_DATABASE_VALIDATION := false
export FIFTYONE_PLUGINS_DIR := $(CURDIR)
export WANDB_MODE ?= offline

.PHONY: setup setup-test demo test app bench clean

setup:
	@bash scripts/setup.sh

setup-test:
	@bash scripts/setup.sh --test

demo: setup
	@if [ -d "$(DATA)" ]; then echo "demo: using the data in $(DATA)"; \
	else $(CILP) generate $(DATA) --n-per-class $(N_PER_CLASS); fi
	$(CILP) validate $(DATA)
	$(CILP) ingest $(DATA) --name $(DATASET)
	$(CILP) split $(DATASET) --val 0.2 --seed 42 --to-json $(DATA).split.json
	$(CILP) train $(DATASET) --suite fusion --epochs $(EPOCHS) --runs-dir $(RUNS) --overwrite
	$(CILP) train-cilp $(DATASET) --runs-dir $(RUNS) --overwrite
	for run in late intermediate_concat intermediate_add intermediate_mul intermediate_add_strided cilp rgb2lidar; do \
		$(CILP) apply $(DATASET) $$run || exit 1; done
	$(CILP) search $(DATASET) $$($(PY) -c "import json; print(json.load(open('$(DATA).split.json'))['val'][0])")
	$(CILP) report --dataset $(DATASET) --out $(RUNS)/report
	@echo
	@echo "demo: dataset '$(DATASET)' holds the predictions, evaluations and embedding maps of every run,"
	@echo "      CILP's per-slice embeddings, similarity indexes, maps and pair scores;"
	@echo "      results in $(RUNS)/report (report.md, report.csv, curves.png, confusion.png, embedding_maps.png),"
	@echo "      CILP's similarity matrix and matches in $(RUNS)/cilp (similarity.png, matches.png)."
	@echo "      Open the App with: make app"
	@echo "      (or: .venv/bin/cilp app $(DATASET) --port $(PORT), then http://127.0.0.1:$(PORT))"

app: setup
	$(CILP) app $(DATASET) --port $(PORT)

test: setup-test
	$(VENV)/bin/pytest -q $(PYTEST_ARGS)

bench: setup
	$(PY) benchmarks/bench_generate.py
	$(PY) benchmarks/bench_ingest.py

clean:
	rm -rf $(VENV) data/synthetic .pytest_cache
