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

.PHONY: setup test test-all demo lint clean

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
	@for card in models/*.yaml; do $(BIN)/fss info "$$card" || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
