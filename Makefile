# The kit's two commands: `make reproduce` (tables and figures) and `make test`.
# Everything else is a step they run, or a tool for developers.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# Extra arguments for `paperlib reproduce` (and the other commands), e.g.
# make reproduce ARGS="--device cuda"; `$(PY) -m paperlib COMMAND --help` lists the flags
ARGS   ?=

.PHONY: reproduce reproduce-matrix test lint env data lab train-attention benchmark readme lock book

reproduce: env data
	$(PY) -m paperlib reproduce $(ARGS)

# The claim matrix (3 black boxes x 2 layers; hours on a 2-core CPU; resumable): trains missing
# attention checkpoints, evaluates each cell, writes results/claim_matrix.* and refreshes README.
reproduce-matrix: env data
	$(PY) -m paperlib matrix $(ARGS)

# Lint (ruff), types (mypy), README.md / RESULTS.md up to date with results/, unit tests, then every notebook re-executed by nbval (outputs marked
# NBVAL_CHECK_OUTPUT compared); notebooks write into temporary folders, never into results/ and
# figures/, and download nothing.
test: env data lint
	PAPERLIB_OFFLINE=1 PAPERLIB_RESULTS=$$(mktemp -d) PAPERLIB_FIGURES=$$(mktemp -d) \
	  $(PY) -m pytest -q --nbval-lax --durations=15 tests notebooks

lint: env
	$(PY) -m ruff check paperlib tests benchmarks
	$(PY) -m mypy
	$(PY) -m paperlib readme --check

# The virtual environment with the kit installed (editable) and its Jupyter kernel "paperlib".
env: $(STAMP)
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e '.[test]'
	$(PY) -m ipykernel install --sys-prefix --name paperlib --display-name "Python (paperlib)" >/dev/null
	touch $(STAMP)

# The exact versions of this environment (the one the tests and the committed results ran with):
# requirements.lock; `pip install -r requirements.lock` pins them (tests/test_environment.py checks
# it against pyproject.toml's bounds).
lock: env
	{ echo "# pip freeze of the kit's environment (make lock): $$($(PY) -c 'import platform; print(platform.python_version(), platform.machine())')"; \
	  $(PY) -m pip freeze --exclude-editable | grep -v -i '^paperlib[= ]'; } > requirements.lock

# The rendered book (Jupyter Book 1, offline) of the full run: build/book/_build/html/index.html,
# from results/notebooks/ (make reproduce's full-size copies) where present, else the committed
# notebooks; ARGS="--source committed --check" is what CI builds.
book: env
	$(PY) -c "import jupyter_book" 2>/dev/null || $(PY) -m pip install -q -e '.[book]'
	$(PY) -m paperlib book $(ARGS)

# Images: $PAPERLIB_DATA, else data/imagenet-sample; downloaded (pinned) only when missing.
data: env
	$(PY) -m paperlib data

# Open the notebooks interactively with the kit's kernel.
lab: env
	$(VENV)/bin/jupyter lab notebooks/

train-attention: env data
	$(PY) -m paperlib train-attention --model efficientnet_lite0 $(ARGS)

benchmark: env data
	$(PY) benchmarks/bench_cam.py

# results/RESULTS.md and the README's generated blocks, rewritten from the files in results/.
readme: env
	$(PY) -m paperlib readme $(ARGS)
