# Two commands a newcomer needs: `make run` (demo company, full batch) and
# `make test`. Both create the virtual environment on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
MART ?= outputs/demo.duckdb
OUT ?= outputs/runs
WORKERS ?= 2

.PHONY: env run demo test lint format dashboards lab bench clean

env: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (cockpit)"
	touch $@

demo: env
	$(BIN)/cockpit demo --mart $(MART)

run: demo
	$(BIN)/cockpit run --mart $(MART) --out $(OUT) --workers $(WORKERS) --params parameters/demo.yaml

test: env
	$(BIN)/ruff check lib tests benchmarks
	$(BIN)/ruff format --check lib tests benchmarks
	$(BIN)/python -m pytest

lint: env
	$(BIN)/ruff check lib tests benchmarks

format: env
	$(BIN)/ruff format lib tests benchmarks
	$(BIN)/ruff check --fix lib tests benchmarks

dashboards: demo
	$(BIN)/cockpit serve --mart $(MART)

lab: env
	$(BIN)/jupyter lab notebooks

bench: demo
	$(BIN)/python benchmarks/bench_batch.py --mart $(MART)

clean:
	rm -rf outputs
