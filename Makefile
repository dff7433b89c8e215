# Every target installs the project into .venv first if it is missing or older than pyproject.toml.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

TASK ?= dates
MODEL ?= transformer
EPOCHS ?=
OUT ?=
DATA ?=
PRESET ?=
SEED ?=
RUN ?=

TRAIN_ARGS := --task $(TASK) --model $(MODEL) \
	$(if $(EPOCHS),--epochs $(EPOCHS)) $(if $(OUT),--out $(OUT)) $(if $(DATA),--data $(DATA)) \
	$(if $(PRESET),--preset $(PRESET)) $(if $(SEED),--seed $(SEED))

.PHONY: install train evaluate test lint clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP)

train: $(STAMP)
	$(PY) -m keras_nlp_week4 train $(TRAIN_ARGS)

evaluate: $(STAMP)
	$(PY) -m keras_nlp_week4 evaluate $(RUN)

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf artifacts .pytest_cache .ruff_cache
