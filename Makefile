# The two commands of the README: `make demo` (set up + run the main job) and `make test`
# (set up + pass the tests). Both create .venv on first use.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.fss-installed
# Everything is installed from the lock (exact versions the suite passed with; `make lock` regenerates it), then
# the package itself without dependencies. The lock pins torch's CPU build (2.13.0+cpu): here it resolves to the
# local wheel; on another CPU machine add PyTorch's CPU index, e.g.
#   make test TORCH_PIP_ARGS="--extra-index-url https://download.pytorch.org/whl/cpu"
LOCK := requirements/lock.txt
TORCH_PIP_ARGS ?=
PIP_TOOLS ?= pip-tools==7.6.2
# LOCK_ARGS=--upgrade moves every pin to the newest release the ranges of pyproject.toml allow
LOCK_ARGS ?=

.PHONY: setup lock test test-all demo lint clean default-model obb-model bench-deps bench ablation ablation-gpu reference-fixtures gpu-check gpu-prep gpu-wheels

$(STAMP): pyproject.toml Makefile $(LOCK)
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q $(TORCH_PIP_ARGS) -r $(LOCK)
	$(BIN)/pip install --disable-pip-version-check -q --no-deps --no-build-isolation -e .
	@touch $(STAMP)

# the lock: pyproject.toml's ranges with the dev, geo and openvino extras, plus the torch pin of requirements/torch.in,
# resolved by pip-tools in a venv of its own (Python and platform of this machine: CPython 3.11, Linux x86_64)
lock:
	$(PY) -m venv $(VENV)-lock
	$(VENV)-lock/bin/pip install --disable-pip-version-check -q "$(PIP_TOOLS)"
	$(VENV)-lock/bin/pip-compile -q $(LOCK_ARGS) --extra dev --extra geo --extra openvino --allow-unsafe --strip-extras \
		--no-emit-find-links --no-emit-index-url -o $(LOCK) pyproject.toml requirements/torch.in

setup: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .

test: $(STAMP) lint
	$(BIN)/python -m pytest -q -m "not slow" --durations=15

test-all: $(STAMP)
	$(BIN)/python -m pytest -q

demo: $(STAMP)
	$(BIN)/fss demo --out runs/demo

# the recipe of the embedded default model (fss_core/models/fss-n-aerial.pt); ~45 min on 2 CPU cores
default-model: $(STAMP)
	FSS=$(BIN)/fss ./scripts_default_model.sh
	$(BIN)/python -m fss_core.checkpoint slim runs/default-model/run/best.pt fss_core/models/fss-n-aerial.pt

# the recipe of the embedded oriented model (fss_core/models/fss-n-obb.pt), fine-tuned from the default model
obb-model: $(STAMP)
	FSS=$(BIN)/fss ./scripts_obb_model.sh
	$(BIN)/python -m fss_core.checkpoint slim runs/obb-model/run/best.pt fss_core/models/fss-n-obb.pt

# SAHI for benchmarks/tiled_vs_sahi.py, without its opencv-python (we use the headless build)
bench-deps: $(STAMP)
	$(BIN)/pip install -q --no-deps sahi==0.12.8
	$(BIN)/pip install -q shapely fire termcolor click tqdm requests

bench: bench-deps
	$(BIN)/python benchmarks/assigners.py
	$(BIN)/python benchmarks/tiled_vs_sahi.py

# the assignment study (issue #14); CPU: resumable run by run (~26 min per synthetic run on 2 cores);
# finished runs land in docs/results/ablation/decide/*.json and the report in docs/results/ablation.md
ablation: $(STAMP)
	$(BIN)/python benchmarks/ablation.py --budget decide

# on a lent GPU machine (bare; no venv there): the checks and measurements of issue #16, then the study's
# GPU mode (several trainings at once, hard end 460 s after its data is ready); results under OUT.
# `make gpu-prep` first, here (network + ../shared), and carry .gpu-carry/ with the working tree.
OUT ?= runs/gpu-out
gpu-check:
	bash benchmarks/gpu_run.sh $(OUT) check

ablation-gpu:
	bash benchmarks/gpu_run.sh $(OUT) ablation

gpu-prep: $(STAMP)
	$(PY) -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
		--platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .gpu-carry/wheels pycocotools==2.0.10
	$(PY) -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
		--platform manylinux_2_28_x86_64 -d .gpu-carry/wheels faster-coco-eval==1.8.0
	$(BIN)/python benchmarks/ablation.py --budget decide --datasets dota --prepare-only --out runs/gpu-prep
	rm -rf .gpu-carry/data && mkdir -p .gpu-carry/data
	cp -r runs/gpu-prep/decide/data/dota_train_tiles runs/gpu-prep/decide/data/dota_val_tiles .gpu-carry/data/

gpu-wheels: gpu-prep

# golden fixtures of the baseline assigners from the reference code (side venv under runs/refenv; needs
# network for PyPI; YOLOX_MAIN=DIR YOLOX_MAIN_REV=COMMIT adds YOLOX main's 2023 SimOTA)
reference-fixtures:
	$(PY) benchmarks/reference_fixtures.py --setup $(if $(YOLOX_MAIN),--yolox-main $(YOLOX_MAIN) --yolox-main-rev "$(YOLOX_MAIN_REV)")

clean:
	rm -rf $(VENV) $(VENV)-lock .pytest_cache .ruff_cache
