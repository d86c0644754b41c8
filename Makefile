# `make run` and `make test` set up everything they need on a fresh machine and are
# cheap to re-run: the venv is rebuilt only when pyproject.toml changes, and the
# livekit-server build is cached (in .cache/ unless LIVEKIT_SERVER_CACHE says otherwise).

PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: run test livekit-server

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet -e '.[test]'
	touch $@

livekit-server: $(STAMP)
	$(VENV)/bin/python -m supervisor.livekit_server ensure

run: livekit-server
	$(VENV)/bin/supervisor run config.toml

test: livekit-server
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)
