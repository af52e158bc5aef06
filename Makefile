# `make demo` and `make test` work on a fresh machine: each creates .venv and installs the project
# (editable) and its test extra from uv.lock, the exact versions every machine gets. uv is the one
# on PATH, or else uv from PyPI installed into .tools/uv by pip. After changing pyproject.toml's
# dependencies, `make lock` re-locks (and commit uv.lock).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
UV_VERSION := 0.13.9
UV := $(or $(shell command -v uv 2>/dev/null),.tools/uv/bin/uv)
# only ever the Python on this machine (PYTHON), never a downloaded one
export UV_PYTHON_DOWNLOADS := never

.PHONY: demo test bench studies install lock check-lock clean

.tools/uv/bin/uv:
	$(PYTHON) -m pip install --quiet --disable-pip-version-check --target .tools/uv "uv==$(UV_VERSION)"

$(STAMP): pyproject.toml uv.lock packages/pam-jax-client/pyproject.toml | $(UV)
	$(UV) sync --quiet --frozen --extra test --python $(PYTHON)
	touch $(STAMP)

install: $(STAMP)

# re-resolve uv.lock after a change to pyproject.toml (keeps the locked versions that still fit)
lock: | $(UV)
	$(UV) lock

# fails when uv.lock and pyproject.toml disagree (CI runs it)
check-lock: | $(UV)
	$(UV) lock --check

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

# The full study of each task with the current code (hours on 2 cores). Resumable: run it again
# to continue, on this machine or another; the small results land in docs/results/full_TASK
# (commit them). The committed docs/results/study_* folders were made by an earlier version:
# `pam-jax study ... --report-only` rebuilds their tables.
STUDY_TASKS ?= granular cloth rope
# the pre-registered studies of docs/preregistration.md: arm A (100 preference states per seed),
# then arm B (300) reusing arm A's SL runs, per task
PREREG = --scale full --train-seeds 5 --baseline-seeds 3 --oracle-every-seed --per-seed-preferences \
	--expert-episodes 40 --tune-episodes 1 --report-episodes 30 --report-seed 3000 \
	--estimator-samples --preregistration docs/preregistration.md --no-progress
studies: $(STAMP)
	for t in $(STUDY_TASKS); do \
	  steps=4000; [ $$t = granular ] && steps=8000; \
	  $(BIN)/pam-jax study --task $$t --run-dir runs/prereg_$$t --results docs/results/prereg_$$t \
	    --sl-steps $$steps --states 100 $(PREREG) || exit 1; \
	  $(BIN)/pam-jax study --task $$t --run-dir runs/prereg_$${t}_b --results docs/results/prereg_$${t}_b \
	    --reuse runs/prereg_$$t --sl-steps $$steps --states 300 $(PREREG) || exit 1; \
	done

clean:
	rm -rf $(VENV) .tools runs .pytest_cache
