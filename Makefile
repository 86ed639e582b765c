# Every target creates .venv and installs what it needs; nothing is installed by hand.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
# Two installs: `make up` (and dashboard, lake) needs the package with its `embedded` extra (moto's
# server); tests, lint, types and benchmarks add `dev`. The Docker image has neither.
STAMP := $(VENV)/.installed-stamp
UP_STAMP := $(VENV)/.installed-up-stamp
PIP := $(BIN)/pip install --quiet --disable-pip-version-check
SOURCE ?= binance

.PHONY: up test check lint types bench bench-peer clean compose-validator chromium kinesis-local lock dashboard lake

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip

$(UP_STAMP): pyproject.toml | $(BIN)/python
	$(PIP) -e '.[embedded]'
	touch $(UP_STAMP)

$(STAMP): pyproject.toml | $(BIN)/python
	$(PIP) -e '.[dev,embedded]'
	touch $(STAMP) $(UP_STAMP)

up: $(UP_STAMP)
	$(BIN)/crypto-live up --source $(SOURCE)

test: $(STAMP) compose-validator chromium kinesis-local
	$(BIN)/pytest

# kinesis-mock (npm kinesis-local, pinned in tests/support/kinesis_mock.py) into .cache/, the
# engine tests' second Kinesis; without node or npm that backend skips and says why.
kinesis-local: $(STAMP)
	@$(BIN)/python -m tests.support.kinesis_mock install

# The Docker image installs from these, hashes checked: every dependency pinned, for Python 3.11
# on any platform. Regenerate after changing dependencies in pyproject.toml.
LOCK := $(BIN)/uv pip compile pyproject.toml --quiet --universal --python-version 3.11 \
	--generate-hashes --custom-compile-command "make lock"
lock: $(STAMP)
	$(LOCK) -o requirements.lock
	$(LOCK) --extra embedded -o requirements-embedded.lock

# `docker-compose config` validates docker-compose.yml in the tests (Debian's package; no engine
# needed). Installed when missing and root; otherwise those tests skip and say why.
compose-validator:
	@command -v docker-compose >/dev/null 2>&1 || docker compose version >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose >/dev/null) \
	      || echo "make: could not install docker-compose; compose tests will skip"; \
	  else echo "make: docker-compose missing (apt-get install docker-compose as root); compose tests will skip"; fi; }

lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/lint-imports

types: $(STAMP)
	$(BIN)/mypy

check: lint types test

bench: $(STAMP)
	$(BIN)/python -m bench.producer
	$(BIN)/python -m bench.dynamodb_consumer
	$(BIN)/python -m bench.s3_consumer
	$(BIN)/python -m bench.producer_ws
	$(BIN)/python -m bench.latency
	$(BIN)/python -m bench.soak
	$(BIN)/python -m bench.scaling
	$(BIN)/python -m bench.peer
	$(BIN)/python -m bench.report

# Our producer and consumer against async-kinesis's (pinned, installed into .cache/peer-venv by
# bench.peer; the consumer half is bench.peer_consumer).
bench-peer: $(STAMP)
	$(BIN)/python -m bench.peer
	$(BIN)/python -m bench.report

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache

# Debian's Chromium and ChromeDriver for the dashboard's browser test; skipped without root.
chromium:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
	    || echo "make: could not install chromium; the browser test will skip"; \
	else echo "make: chromium not installed (needs root): the browser test will skip"; fi

LOCAL_AWS := $(or $(AWS_ENDPOINT_URL),http://127.0.0.1:$(or $(EMBEDDED_AWS_PORT),4566))

dashboard: $(UP_STAMP)
	$(BIN)/crypto-live dashboard --endpoint-url $(LOCAL_AWS)

lake: $(UP_STAMP)
	$(BIN)/crypto-live lake compact --endpoint-url $(LOCAL_AWS)
	$(BIN)/crypto-live lake candles --endpoint-url $(LOCAL_AWS)
	$(BIN)/crypto-live lake report --date $$(date -u +%F) --force --endpoint-url $(LOCAL_AWS)
