# `make run` and `make test` are all a fresh clone needs (Python 3.11 on PATH).
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PATH := $(CURDIR)/$(BIN):$(PATH)
export GX_ANALYTICS_ENABLED := false
export MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR := false

.PHONY: install run test repro mlflow-ui data-push data-pull clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet --upgrade pip
	# torch first, by exact version, so pip takes the local CPU wheel instead of a CUDA build.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test]'
	sh infra/install_chromium.sh
	sh infra/install_postgres.sh
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/deocclude run

repro: $(STAMP)
	$(BIN)/deocclude repro

# Two workers, whole test modules each: the suite keeps one core busy on average (process start-ups,
# servers), so two workers on two cores take about three quarters of the time (BENCHMARKS.md).
# TEST_WORKERS=0 runs it in one process.
TEST_WORKERS ?= 2

test: $(STAMP)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

mlflow-ui: $(STAMP)
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1 --port 5000

# The DVC-tracked data and models to / from params.yaml's remote (DEOCCLUDE_REMOTE_* over it);
# S3 credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, AWS_PROFILE or ~/.aws.
data-push: $(STAMP)
	$(BIN)/deocclude data push

data-pull: $(STAMP)
	$(BIN)/deocclude data pull

clean:
	rm -rf mlflow.db mlartifacts data/dataset models reports .dvc/tmp
