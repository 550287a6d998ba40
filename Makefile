# Two entry points: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint clean

setup: $(STAMP)

# Re-installs only when the dependency lists change; torch is installed first and
# pinned so that pip never swaps in a different (CUDA, multi-GB) build.
$(STAMP): requirements.txt pyproject.toml pytorch-gradual-warmup-lr/pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check torch==2.13.0
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e ./pytorch-gradual-warmup-lr -e .
	touch $(STAMP)

demo: setup
	$(PY) -m dgunet demo --out demo_out --train-script Denoising/train.py --config Denoising/demo.yml

# One pytest worker per core (at most 8: each holds a torch import and starts training scripts);
# loadgroup keeps the `cuda` tests on one worker (tests/conftest.py). TEST_WORKERS=0: one process.
TEST_WORKERS ?= auto
test: setup
	$(PY) -m pytest -q -n $(TEST_WORKERS) --maxprocesses 8 --dist loadgroup

lint: setup
	$(PY) -m ruff check dgunet tests Deblurring Deraining Denoising Compressive_Sensing pytorch-gradual-warmup-lr

clean:
	rm -rf $(VENV) demo_out .pytest_cache
