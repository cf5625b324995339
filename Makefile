# medmtl — everyday commands. `make demo` and `make test` set everything up on a fresh clone.
# The venv gets the dev, sweep (joblib/SLURM launchers) and optuna extras.
PY_SYS ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.medmtl-installed
# torch is pinned to the CPU-capable release served from this machine's disk; pip's
# machine-wide constraint (/etc/xdg/pip) keeps it there, so it is never downloaded.
TORCH  ?= torch==2.14.1 torchvision==0.29.1

export WANDB_MODE ?= offline
export NO_ALBUMENTATIONS_UPDATE := 1
export HYDRA_FULL_ERROR ?= 0
# BUSI: the BUSI_ROOT environment variable, else data/Dataset_BUSI_with_GT in the repository
# (conf/data/busi.yaml); the tests that need it are skipped without it (CI sets it: .ci/run)

.PHONY: install demo train eval serve test test-full lint format audit bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PY_SYS) -m venv $(VENV)
	$(PIP) install -q --upgrade "pip<26.2" wheel setuptools
	$(PIP) install -q $(TORCH)
	$(PIP) install -q -e ".[dev,sweep,optuna]"
	touch $(STAMP)

demo: install
	$(VENV)/bin/medmtl-train experiment=demo
	@echo "Demo finished: metrics.json and the checkpoints are in the run folder printed above."

train: install
	$(VENV)/bin/medmtl-train $(ARGS)

eval: install
	$(VENV)/bin/medmtl-eval $(ARGS)

# the web page and API; without ARGS the model of the newest `make demo` run
serve: install
	$(VENV)/bin/medmtl-serve $(ARGS)

audit: install
	$(VENV)/bin/medmtl-data audit data=busi

bench: install
	$(VENV)/bin/medmtl-bench preprocess
	$(VENV)/bin/medmtl-bench inference
	$(VENV)/bin/medmtl-bench train
	$(VENV)/bin/medmtl-bench serve
	$(VENV)/bin/medmtl-bench data

# two tiers: the unit tests first (seconds; a broken setting stops here), then the integration
# tests on two workers (pytest-xdist), a test file each at a time so that its fixtures are built
# once; TEST_WORKERS=0 runs them in this process
TEST_WORKERS ?= 2
test: install
	WANDB_MODE=disabled $(PY) -m pytest -q -x -m "unit and not slow"
	WANDB_MODE=disabled $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile -m "integration and not slow" --durations=25

test-full: install
	WANDB_MODE=disabled $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile -m ""

lint: install
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/ruff format --check src tests

format: install
	$(VENV)/bin/ruff check --fix src tests
	$(VENV)/bin/ruff format src tests

clean:
	rm -rf outputs multirun .pytest_cache .ruff_cache .cache build src/*.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
