# Two commands on a fresh machine: `make run` (main job on the synthetic default) and `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
RUN_DIR ?= runs/synthetic

.PHONY: setup run test lint format bench clean

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found (hsrl needs Python 3.11)"; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# the CPU build of torch first, so that nothing pulls a multi-GB CUDA build
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test,lint,torchrl,scale,tensorboard]'
	touch $(STAMP)

setup: $(STAMP)

# 3 seeds (the default is 5) keep it within 10 minutes; set in the run's config.yaml, so that a later
# `hsrl evaluate` / `hsrl abtest` of the run defaults to the 3 seeds trained. --tuned: HSRL and HAC with
# the values of the studies shipped in configs/tuned/synthetic (copied into the run's tuned/)
run: setup
	$(VENV)/bin/hsrl run --out $(RUN_DIR) --set eval.seeds=3 --tuned

test: setup
	$(PY) -m pytest -q

# ruff (lint + format check) and mypy, as CI runs them; `make format` applies ruff's fixes and format
lint: setup
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/mypy

format: setup
	$(VENV)/bin/ruff check --fix src tests bench
	$(VENV)/bin/ruff format src tests bench

clean:
	rm -rf $(VENV) runs .pytest_cache
