# Quick start:  make demo   (set up, then run the default recipe)
#               make test   (set up, then run the whole test suite offline)
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0
RECIPE ?= recipes/tictactoe.yaml

.PHONY: setup demo test test-fast lint format clean

# torch is installed first and pinned: an unpinned torch would pull several GB of CUDA packages on a CPU
# machine. The package's own "torch>=2.4" is then already satisfied.
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==$(TORCH_VERSION)
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(VENV)/bin/minigpt run $(RECIPE)

test: setup
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(PY) -m pytest -q

test-fast: setup
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(PY) -m pytest -q -m "not slow"

lint: setup
	$(VENV)/bin/ruff check minigpt tests
	$(VENV)/bin/ruff format --check minigpt tests

format: setup
	$(VENV)/bin/ruff format minigpt tests

clean:
	rm -rf runs/ .pytest_cache
