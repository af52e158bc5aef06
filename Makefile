# `make demo` and `make test` work on a fresh machine: each creates .venv and installs the project.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench studies install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip "setuptools>=68" wheel

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/pam-jax demo

# ruff, then two passes: the suite under XLA's legacy CPU emitters (faster to compile), then the tests of
# bit-identity between programs under the default emitters users run (tests/conftest.py).
test: $(STAMP)
	$(BIN)/ruff check pam_jax tests experiments data_builders benchmarks
	$(BIN)/python -m pytest -n 2 -q --timeout 600 --durations 15 -m "not bit_identity" tests
	PAM_JAX_TESTS_CODEGEN=default $(BIN)/python -m pytest -n 2 -q --timeout 600 -m bit_identity tests

bench: $(STAMP)
	$(BIN)/pam-jax bench train
	$(BIN)/pam-jax bench sampler

# The full study of each task (hours on 2 cores). Resumable: run it again to continue,
# on this machine or another; the small results land in docs/results/study_TASK (commit them).
# Cloth's committed study has 8 training seeds, each fine-tuned on its own preferences.
STUDY_TASKS ?= granular rope cloth
studies: $(STAMP)
	for t in $(STUDY_TASKS); do \
	  case $$t in cloth) d=study_cloth_pp; x="--train-seeds 8 --per-seed-preferences";; *) d=study_$$t; x="";; esac; \
	  $(BIN)/pam-jax study --task $$t --scale full $$x --run-dir runs/$$d --results docs/results/$$d --no-progress || exit 1; \
	done

clean:
	rm -rf $(VENV) runs .pytest_cache
