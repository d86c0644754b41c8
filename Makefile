# `make run` and `make test` set up everything they need on a fresh machine and are
# cheap to re-run: the venv is rebuilt only when pyproject.toml changes, and the
# livekit-server build is cached (in .cache/ unless LIVEKIT_SERVER_CACHE says otherwise).

PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: run lint test livekit-server prometheus espeak-ng agents-venv

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet -e '.[test]'
	touch $@

# livekit-agents for `benchmarks/dispatch.py`, in a venv of its own: it pins the rtc SDK
# (livekit-agents 1.8.9 pins livekit 1.1.21) below what this project needs. Rebuilt only
# when its pin changes.
AGENTS_VENV := .venv-agents
AGENTS_STAMP := $(AGENTS_VENV)/.installed

$(AGENTS_STAMP): benchmarks/agents-requirements.txt
	$(PYTHON) -m venv $(AGENTS_VENV)
	$(AGENTS_VENV)/bin/python -m pip install --quiet -r $<
	touch $@

agents-venv: $(AGENTS_STAMP)

livekit-server: $(STAMP)
	$(VENV)/bin/python -m supervisor.livekit_server ensure

run: livekit-server espeak-ng
	$(VENV)/bin/supervisor run config.toml

# The observability tests run a real Prometheus and promtool (Debian's `prometheus`
# package). Installed when missing and we are root; otherwise those tests skip (and
# fail under CI) with the reason.
prometheus:
	@if command -v prometheus >/dev/null && command -v promtool >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing Debian's prometheus package (prometheus, promtool)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; \
	else echo "prometheus/promtool missing and not root: install Debian's prometheus package" \
		"(apt-get install prometheus) or the observability tests skip"; fi

# The talker bot (`supervisor.bots.talker`) speaks with espeak-ng (Debian's package), as do
# its tests. Installed when missing and we are root; otherwise those tests skip (and fail
# under CI) with the reason.
espeak-ng:
	@if command -v espeak-ng >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing Debian's espeak-ng package"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends espeak-ng >/dev/null; \
	else echo "espeak-ng missing and not root: install Debian's espeak-ng package" \
		"(apt-get install espeak-ng) or the talker's tests skip"; fi

# Lint and types (configured in pyproject.toml) before any test: ruff over everything,
# mypy over the product (strict on actors/). A finding fails the build.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

test: lint livekit-server prometheus espeak-ng
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)
