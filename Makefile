# Two entry points: `make run` (every study, quick profile, then the report) and `make test`.
# Both create the virtual environment on first use and install the pinned CPU torch.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.installed
PROFILE ?= quick
RESULTS ?= results
PYTEST_WORKERS ?= 2

.PHONY: run test lint install notebooks publish clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev,notebooks,hf]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/scratchformer run all --profile $(PROFILE) --out $(RESULTS)
	$(VENV)/bin/scratchformer report --results $(RESULTS)

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks notebooks

test: $(STAMP) lint
	$(PY) -m pytest -n $(PYTEST_WORKERS) tests

# Execute the notebooks and store their outputs in place; tests/test_notebooks.py fails when the
# stored outputs no longer match a fresh run.
notebooks: $(STAMP)
	$(PY) -m scratchformer.notebooks --store notebooks/*.ipynb

# Full-profile figures that the docs and notebooks cite (small PNGs under docs/results/).
publish: $(STAMP)
	$(VENV)/bin/scratchformer run all --profile full --out $(RESULTS)/full
	$(PY) -m scratchformer.publish --results $(RESULTS)/full --dest docs/results

clean:
	rm -rf $(RESULTS) .pytest_cache .ruff_cache
