# The README's commands. Every target that needs Python runs inside .venv/.
PYTHON      ?= python3.11
VENV        := .venv
BIN         := $(VENV)/bin
HOST        ?= 127.0.0.1
PORT        ?= 8000
MODELS_ROOT ?= models
export HOST PORT MODELS_ROOT

# The default model the service ships with (see docs/method-benchmark.md for why this method).
DEFAULT_TASK   ?= digit-bits
DEFAULT_MODEL  ?= digit-bits
TRAIN_ARGS     ?= --task $(DEFAULT_TASK) --name $(DEFAULT_MODEL) --method sine --epochs 30 --seed 0

.PHONY: setup system-deps run train default-model test bench lint format soak clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[train,serve,dev]'
	touch $@

# Debian packages the test suite drives (headless Chromium, a private dockerd, wrk).
system-deps:
	scripts/system-deps.sh

# Train a new version of the default model (never overwrites an older one).
train: setup
	$(BIN)/python -m model.train $(TRAIN_ARGS) --models-root $(MODELS_ROOT)

# Train the default model only when the models root has none.
default-model: setup
	@if ls -d $(MODELS_ROOT)/$(DEFAULT_MODEL)/[0-9]* >/dev/null 2>&1; then \
		echo "default model present in $(MODELS_ROOT)/$(DEFAULT_MODEL)"; \
	else \
		$(BIN)/python -m model.train $(TRAIN_ARGS) --models-root $(MODELS_ROOT); \
	fi

run: setup default-model
	$(BIN)/python -m app

test: setup system-deps
	$(BIN)/python -m pytest

soak: setup
	$(BIN)/python -m pytest tests/reliability -m soak --soak-seconds 60

bench: setup system-deps
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python -m bench

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
