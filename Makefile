# Cultural Property Alert Relay - developer entry points.
#   make demo   create .venv if missing, install, run the end-to-end demo
#   make test   create .venv if missing, install, lint, run the whole test suite
#               (installs redis-server and chromium with apt-get when missing and root)
#   make lint   ruff check, ruff format --check, mypy --strict
#   make bench  run the benchmarks in bench/
#   make messages  extract the console's texts into its catalogue (then translate fr.po)

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint format bench install clean help system-deps messages

help:
	@sed -n 's/^#   //p' Makefile

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/cpar-demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

messages: $(STAMP)
	$(BIN)/python -m clients.console.catalogue

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Debian packages the suite needs beyond pip: redis-server (Redis tests start their
# own servers), chromium (the /ops browser test drives it with Playwright) and
# prometheus (its promtool checks and unit-tests the shipped alert rules).
system-deps:
	@missing=""; \
	command -v redis-server >/dev/null 2>&1 || missing="$$missing redis-server"; \
	[ -x /usr/bin/chromium ] || missing="$$missing chromium"; \
	command -v promtool >/dev/null 2>&1 || missing="$$missing prometheus"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing:$$missing"; apt-get update && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y $$missing; \
	  else \
	    echo "missing:$$missing - install them (sudo apt-get install -y$$missing) and re-run"; exit 1; \
	  fi; \
	fi

test: system-deps lint
	$(BIN)/pytest

bench: $(STAMP)
	$(BIN)/python bench/crypto.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis demo-out
