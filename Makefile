# `make run` and `make test` set up everything they need on a fresh machine and are
# cheap to re-run: the venv is rebuilt only when pyproject.toml changes, and the
# livekit-server build is cached (in .cache/ unless LIVEKIT_SERVER_CACHE says otherwise).

PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# `make test` runs the tests in TEST_JOBS processes, 2 unless told, spread with
# pytest-xdist (a file's tests in one process, the CPU-bound real-server files one after
# another, each process with its own livekit-server; see tests/livekit/conftest.py): about
# 11 minutes of tests here instead of 19. TEST_JOBS=1 runs them in one process, in order.
# `make test-fast` always spreads its tests over two processes.
TEST_JOBS ?= 2
pytest = $(VENV)/bin/python -m pytest $(if $(filter-out 1,$(1)),-n $(1) --dist loadgroup)

.PHONY: run lint test test-fast docs docs-serve livekit-server prometheus redis chromium espeak-ng web agents-venv

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet -e '.[test,docs]'
	touch $@

# livekit-agents for `benchmarks/dispatch.py`, in a venv of its own: it pins the rtc SDK
# (livekit-agents 1.8.9 pins livekit 1.1.21) below what this project needs. Rebuilt only
# when its pin changes; under a lock, since two test processes may ask for it at once.
AGENTS_VENV := .venv-agents
AGENTS_STAMP := $(AGENTS_VENV)/.installed

$(AGENTS_STAMP): benchmarks/agents-requirements.txt
	flock $(AGENTS_VENV).lock sh -c 'test $@ -nt $< || { \
		$(PYTHON) -m venv $(AGENTS_VENV) && \
		$(AGENTS_VENV)/bin/python -m pip install --quiet -r $< && touch $@; }'

agents-venv: $(AGENTS_STAMP)

livekit-server: $(STAMP)
	$(VENV)/bin/python -m supervisor.livekit_server ensure

# The try-it page's JavaScript SDK (livekit-client, pinned by package-lock.json),
# installed beside the page: served from there, never from a CDN.
WEB := supervisor/web
WEB_STAMP := $(WEB)/node_modules/.installed

$(WEB_STAMP): $(WEB)/package.json $(WEB)/package-lock.json
	cd $(WEB) && npm ci --silent --no-audit --no-fund
	touch $@

web: $(WEB_STAMP)

run: livekit-server web espeak-ng
	$(VENV)/bin/supervisor run config.toml

# $(call debian,COMMANDS,PACKAGE,TESTS): Debian's PACKAGE, installed when one of
# COMMANDS is missing and we are root; otherwise TESTS skip (and fail under CI) with
# the reason.
define debian
	@if $(foreach c,$(1),command -v $(c) >/dev/null &&) true; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing Debian's $(2) package ($(1))"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(2) >/dev/null; \
	else echo "$(1) missing and not root: install Debian's $(2) package" \
		"(apt-get install $(2)) or $(3) skip"; fi
endef

# The observability tests run a real Prometheus and promtool.
prometheus:
	$(call debian,prometheus promtool,prometheus,the observability tests)

# The try-it page's test drives a real Chromium (through playwright, no browser download).
chromium:
	$(call debian,chromium,chromium,the try-it page's browser test)

# The talker bot (`supervisor.bots.talker`) speaks with espeak-ng, as do its tests.
espeak-ng:
	$(call debian,espeak-ng,espeak-ng,the talker's tests)

# The cluster tests (tests/livekit/test_cluster.py) run two livekit-server nodes on a Redis.
redis:
	$(call debian,redis-server,redis-server,the cluster tests)

# Lint and types (configured in pyproject.toml) before any test: ruff over everything,
# mypy over the product (strict on actors/). A finding fails the build.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

# The documentation site (mkdocs.yml, docs/), built strictly: a broken link, a missing
# anchor or a page left out of the navigation fails it. The generated references must
# match the code first (the config schema, the metrics collectors). Into site/;
# `make docs-serve` serves it on http://127.0.0.1:8000/ and rebuilds as pages change.
docs: $(STAMP)
	$(VENV)/bin/python -m supervisor.config.reference --check
	$(VENV)/bin/python -m supervisor.observability.reference --check
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet

docs-serve: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs serve --strict

test: lint docs livekit-server prometheus redis chromium espeak-ng web
	$(call pytest,$(TEST_JOBS)) $(PYTEST_ARGS)

# The inner loop: lint and types, then every test that needs no real LiveKit server (the
# kernel, config, CLI, protocol and unit tests) and the real-server smoke tests (a room's
# echo, a dispatched room, `supervisor run` on its embedded server): about a minute here.
test-fast: lint livekit-server
	$(call pytest,2) -m "not livekit or smoke" $(PYTEST_ARGS)
