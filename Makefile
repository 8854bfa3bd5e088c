# The two commands of the README: `make demo` (set up + run the main job) and `make test`
# (set up + pass the tests). Both create .venv on first use.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.fss-installed
# torch is installed first and pinned: here `torch==2.13.0` resolves to the local CPU wheel.
# On another CPU machine add the CPU index, e.g.
#   make test TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu"
TORCH_SPEC ?= torch==2.13.0
TORCH_PIP_ARGS ?=

.PHONY: setup test test-all demo lint clean default-model bench-deps bench

$(STAMP): pyproject.toml Makefile
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q $(TORCH_PIP_ARGS) "$(TORCH_SPEC)"
	$(BIN)/pip install --disable-pip-version-check -q -e ".[dev]"
	@touch $(STAMP)

setup: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .

test: $(STAMP) lint
	$(BIN)/python -m pytest -q -m "not slow"

test-all: $(STAMP)
	$(BIN)/python -m pytest -q

demo: $(STAMP)
	$(BIN)/fss demo --out runs/demo

# the recipe of the embedded default model (models/fss-n-aerial.pt); ~45 min on 2 CPU cores
default-model: $(STAMP)
	FSS=$(BIN)/fss ./scripts_default_model.sh
	$(BIN)/python -m fss_train.slim runs/default-model/run/best.pt models/fss-n-aerial.pt

# SAHI for benchmarks/tiled_vs_sahi.py, without its opencv-python (we use the headless build)
bench-deps: $(STAMP)
	$(BIN)/pip install -q --no-deps sahi==0.12.8
	$(BIN)/pip install -q shapely fire termcolor click tqdm requests

bench: bench-deps
	$(BIN)/python benchmarks/assigners.py
	$(BIN)/python benchmarks/tiled_vs_sahi.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
