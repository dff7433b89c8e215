# Every target installs the project into .venv first if it is missing or older than pyproject.toml.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Every install: the build backend's notes on editable installs are for packagers, not for someone
# running make.
PIP_QUIET := PYTHONWARNINGS=ignore $(PY) -m pip install -q
# onnxruntime-node and onnxruntime-web (js/package-lock.json pins 1.30.0): the Node example
# (examples/node/) and the in-page runtime (python -m serving.page_server serves onnxruntime-web at /ort/).
NPM ?= npm
JS_STAMP := js/node_modules/.installed

TASK ?= dates
MODEL ?= transformer
EPOCHS ?=
OUT ?=
DATA ?=
# Translation data as two line-aligned files, and REVERSE=1 to swap source and target.
SRC ?=
TGT ?=
REVERSE ?=
# `make compare`: comma-separated model names (default: one per family).
MODELS ?=
PRESET ?=
# Scaling out: STRATEGY=default|mirrored|multi-worker (TF_CONFIG), PRECISION=mixed_float16|..., JIT=1.
STRATEGY ?=
PRECISION ?=
JIT ?=
SEED ?=
RUN ?=
# `make bench QUICK=1`: the short benchmark (4.4 min on a 2-core Xeon after `make train` in a fresh clone), written to artifacts/bench-quick/
QUICK ?=
# `make export QUANTIZE=1`: also dynamic-int8 ONNX graphs, with their test-split quality in the report.
QUANTIZE ?=
# `make export FUSED_ATTENTION=1`: the Transformer step with onnxruntime's fused attention (onnxruntime >= 1.32).
FUSED_ATTENTION ?=
# `make export TARGET=triton` (or tfserving, or both: TARGET=triton,tfserving): server-ready layouts too;
# TARGET=ctranslate2: a Transformer run as a CTranslate2 model (RUN/ctranslate2/), validated against Keras.
TARGET ?=
comma := ,
# Serving: the newest export (artifacts/*/export/manifest.json) unless EXPORT=DIR is given.
EXPORT ?= $(patsubst %/manifest.json,%,$(firstword $(shell ls -t artifacts/*/export/manifest.json 2>/dev/null)))
TEXT ?=
HOST ?= 127.0.0.1
PORT ?= 8000

DATA_ARGS := $(if $(DATA),--data $(DATA)) $(if $(SRC),--src $(SRC)) $(if $(TGT),--tgt $(TGT)) \
	$(if $(filter 1 yes true,$(REVERSE)),--reverse)
TRAIN_ARGS := --task $(TASK) --model $(MODEL) \
	$(if $(EPOCHS),--epochs $(EPOCHS)) $(if $(OUT),--out $(OUT)) $(DATA_ARGS) \
	$(if $(PRESET),--preset $(PRESET)) $(if $(SEED),--seed $(SEED)) \
	$(if $(STRATEGY),--strategy $(STRATEGY)) $(if $(PRECISION),--precision $(PRECISION)) \
	$(if $(filter 1 yes true,$(JIT)),--jit)

.PHONY: install js train evaluate compare plot test test-large lint clean infer serve page export bench notebooks

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PIP_QUIET) -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP)

# --ignore-scripts (also js/.npmrc): onnxruntime-node's postinstall would download CUDA libraries from
# nuget.org on Linux x64 (and fail the install where that host is unreachable); its CPU binaries ship in
# the package. `npm ci` prints its summary on stdout; errors still reach stderr.
$(JS_STAMP): js/package.json js/package-lock.json
	@command -v $(NPM) >/dev/null || { echo "error: npm not found; install Node.js 18 or newer (with npm) for make js" >&2; exit 2; }
	$(NPM) ci --prefix js --no-audit --no-fund --ignore-scripts --loglevel=error >/dev/null
	@touch $(JS_STAMP)

js: $(JS_STAMP)

train: $(STAMP)
	$(PY) -m keras_nlp_week4 train $(TRAIN_ARGS)

evaluate: $(STAMP)
	$(PY) -m keras_nlp_week4 evaluate $(RUN)

# Trains and evaluates every model family on the same splits: artifacts/compare-$(TASK)/comparison.md
compare: $(STAMP)
	$(PY) -m keras_nlp_week4 compare --task $(TASK) $(DATA_ARGS) $(if $(MODELS),--models $(MODELS)) \
		$(if $(EPOCHS),--epochs $(EPOCHS)) $(if $(OUT),--out $(OUT)) $(if $(SEED),--seed $(SEED))

# Attention heatmap for TEXT and training curves of RUN, into RUN/plots/.
plot: $(STAMP)
	$(PY) -m keras_nlp_week4 plot $(RUN) $${TEXT:+--text "$$TEXT"}

# SavedModel + ONNX graphs of RUN (default: the last trained run) into RUN/export/, installed only after
# parity validation (Keras vs SavedModel vs onnxruntime; the same checks as `python -m export.validate RUN`).
export: $(STAMP)
	@$(if $(findstring ctranslate2,$(TARGET)),$(PY) -c "import ctranslate2" 2>/dev/null || \
		$(PIP_QUIET) -e ".[ctranslate2]")
	$(PY) -m export $(RUN) $(if $(filter 1 yes true,$(QUANTIZE)),--quantize) \
		$(if $(filter 1 yes true,$(FUSED_ATTENTION)),--fused-attention) \
		$(foreach t,$(subst $(comma), ,$(TARGET)),--target $(t))

# Training/inference/server benchmarks against the peers: BENCHMARKS.md, docs/benchmarks.json and
# docs/bench_output_length.png (QUICK=1: artifacts/bench-quick/). keras-hub comes from the `bench` extra.
# On a fresh clone it first trains and exports the default model (about 4 min) if RUN has no export.
BENCH_RUN = $(or $(RUN),artifacts/dates-transformer)
bench: $(STAMP)
	@$(PY) -c "import keras_hub" 2>/dev/null || $(PIP_QUIET) -e ".[bench]" || \
		echo "warning: keras-hub unavailable; benchmarking without the keras-hub peer" >&2
	@test -f $(BENCH_RUN)/model.keras || $(PY) -m keras_nlp_week4 train --task dates --model transformer \
		--out $(BENCH_RUN)
	@test -f $(BENCH_RUN)/export/manifest.json || $(PY) -m export $(BENCH_RUN)
	$(PY) -m bench --run $(BENCH_RUN) \
		$(if $(filter 1 yes true,$(QUICK)),--quick --out-dir artifacts/bench-quick)

# The lecture notebooks (notebooks/*.py, jupytext), run top to bottom into artifacts/notebooks/*.ipynb with
# their outputs and pictures (about 11 minutes in all on 2 cores; SMALL=1: the test suite's setting).
SMALL ?=
notebooks: $(STAMP)
	$(PY) notebooks/execute.py --check
	$(PY) notebooks/execute.py $(if $(filter 1 yes true,$(SMALL)),--small)

# `make test`: the suite without the large tier (under 10 minutes on 2 cores); `make test-large`: the
# large tier alone (whole notebooks, two-worker training, kill/resume, the recipes end to end, every
# family's export; `.ci/run` runs both). With npm on PATH it installs the node packages first (make js);
# without it the Node and onnxruntime-web tests skip, saying why.
test: $(STAMP) $(if $(shell command -v $(NPM) 2>/dev/null),$(JS_STAMP))
	$(PY) -m pytest -q

test-large: $(STAMP)
	$(PY) -m pytest -q --run-large -m large

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf artifacts .pytest_cache .ruff_cache

# `make infer TEXT="september 27, 1994"` (no TEXT: one text per line on stdin), onnxruntime only.
infer: $(STAMP)
	@test -n "$(EXPORT)" || { echo "error: no export under artifacts/*/export/; export a run first (python -m export RUN_DIR) or pass EXPORT=DIR" >&2; exit 2; }
	@$(PY) -m serving $(EXPORT) $${TEXT:+"$$TEXT"}

serve: $(STAMP)
	@test -n "$(EXPORT)" || { echo "error: no export under artifacts/*/export/; export a run first (python -m export RUN_DIR) or pass EXPORT=DIR" >&2; exit 2; }
	$(PY) -m serving.server $(EXPORT) --host $(HOST) --port $(PORT)

# The try-it page with the model running in the browser (onnxruntime-web, WebAssembly): no model server,
# only files handed out; open http://$(HOST):$(PAGE_PORT)/
PAGE_PORT ?= 8001
page: $(STAMP) $(JS_STAMP)
	@test -n "$(EXPORT)" || { echo "error: no export under artifacts/*/export/; export a run first (python -m export RUN_DIR) or pass EXPORT=DIR" >&2; exit 2; }
	$(PY) -m serving.page_server $(EXPORT) --host $(HOST) --port $(PAGE_PORT)
