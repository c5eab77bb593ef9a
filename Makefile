# The two commands a newcomer needs: `make demo` (the main job) and `make test`.
# Both create .venv with the pinned dependencies when it is missing and reuse it otherwise.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.speechrank-installed

.PHONY: demo test lint setup clean-venv

setup: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/speechrank demo

test: $(STAMP)
	bash scripts/ensure-test-tools.sh
	$(BIN)/python -m pytest -q --durations=15

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks examples

clean-venv:
	rm -rf $(VENV)
