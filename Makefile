# Two commands set everything up from a bare Python 3.11+:
#   make study   -> virtualenv, install, run the quickstart study (real GPT trainer on CPU)
#   make test    -> virtualenv, install with dev extras, lint (ruff), run the whole test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build is installed first so the project's torch range is already satisfied and pip
# never pulls a multi-GB CUDA build on a machine without a GPU. Override for a GPU box:
#   make study TORCH_SPEC='torch==2.13.0'  (with your CUDA index configured in pip)
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: study test bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

study: $(STAMP)
	$(BIN)/python -m engine.study experiments/quickstart.toml

# Two test processes, each taking whole files (pytest-xdist): the suite fits CI's time on 2 cores.
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

clean:
	rm -rf $(VENV) studies bench_out .pytest_cache .hypothesis
