# Quick start: `make run` then `make test`. Both are idempotent: they create .venv and install the project only
# when missing or out of date, and install the Debian dataset only when its files are missing.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The quick-start cell: LSQ W4A4 on the TVM profile, fine-tuned from the shipped FP32 resnet18_mini baseline.
RUN_ARGS ?= algo=lsq hw=tvm

.PHONY: run test test-slow test-cluster venv dataset lint clean site

run: venv dataset
	@echo ">>> python -m bench run $(RUN_ARGS)   (starts from the shipped FP32 baseline, then QAT)"
	$(BIN)/python -m bench run $(RUN_ARGS)

test: venv dataset
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

# Every slow test (none needs a GPU): sweeps on a real one-node Slurm cluster on localhost (installs slurm-wlm +
# munge; root), a sweep killed at random points, the wheel installed outside the repository, the shipped FP32
# baselines retrained from their recipe. CI runs them after `make test`.
test-slow: venv dataset
	bash scripts/slurm/install.sh
	BENCH_REQUIRE_SLURM=1 $(BIN)/python -m pytest -q -m slow

test-cluster: test-slow

# The results as a static site (python -m bench site): the committed leaderboard in site/ (not committed); open
# site/index.html in a browser, or serve the folder with any static web server.
site: venv
	$(BIN)/python -m bench site results=results/fmnist-mini out=site

lint: venv
	$(BIN)/ruff check .

venv: $(BIN)/.installed

$(BIN)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || { \
	  echo "error: could not create $(VENV); install venv support: sudo apt-get install -y python3-venv"; exit 1; }
	$(BIN)/pip install --upgrade-strategy only-if-needed -e '.[dev]'
	@touch $@

dataset:
	@bash scripts/ensure_dataset.sh

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache
