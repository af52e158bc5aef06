# `make demo` and `make test` work on a fresh machine: each creates .venv and installs the project.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip "setuptools>=68" wheel

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/pam-jax demo

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 -q --timeout 600 --durations 15 tests

bench: $(STAMP)
	$(BIN)/pam-jax bench train
	$(BIN)/pam-jax bench sampler

clean:
	rm -rf $(VENV) runs .pytest_cache
