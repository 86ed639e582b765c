# Every target creates .venv and installs what it needs; nothing is installed by hand.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
SOURCE ?= binance

.PHONY: up test check lint types bench clean compose-validator

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

up: $(STAMP)
	$(BIN)/crypto-live up --source $(SOURCE)

test: $(STAMP) compose-validator
	$(BIN)/pytest

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

types: $(STAMP)
	$(BIN)/mypy

check: lint types test

bench: $(STAMP)
	$(BIN)/python -m bench.producer
	$(BIN)/python -m bench.dynamodb_consumer
	$(BIN)/python -m bench.s3_consumer

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
