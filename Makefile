# Warren. Quick start on a fresh Debian machine: `make up`, then `make test`.
# Every target installs what it needs (scripts/deps.sh: apt, only what is missing).

SHELL := /bin/bash
CARGO ?= cargo
# Firecracker's API spec and facts live beside the checkout (not part of it);
# tests that need them skip with a message when they are absent.
export WARREN_SHARED ?= $(abspath $(CURDIR)/../shared)
export CARGO_TERM_COLOR ?= never

# Where cargo puts binaries (CARGO_TARGET_DIR if set).
TARGET := $(or $(CARGO_TARGET_DIR),$(CURDIR)/target)
VENV_E2B := target/venv-e2b
PYTEST_WORKERS ?= 2

.PHONY: up down test test-rust test-e2b test-wrenn test-console bench fuzz fmt lint deps build web

deps:
	@scripts/deps.sh

build: deps web
	$(CARGO) build --workspace --release --bins

## web: the web console (web/dist, embedded into warren-control by the
## warren-console crate), rebuilt only when its sources change.
WEB_SRC := $(shell find web/src web/docs web/public web/scripts -type f 2>/dev/null) \
	web/index.html web/vite.config.ts web/svelte.config.js web/tsconfig.json web/package.json

web/node_modules/.package-lock.json: web/package-lock.json
	npm ci --prefix web --no-audit --no-fund
	@touch $@

web/dist/index.html: web/node_modules/.package-lock.json $(WEB_SRC)
	npm run --prefix web build
	@touch $@

web: deps web/dist/index.html

## up: install what is missing, build, start Postgres + control + agent
## (data in $WARREN_DIR, default /var/lib/warren), print the URL and an API key.
up: build
	$(TARGET)/release/warren up --detach

down:
	$(TARGET)/release/warren down

## test: everything CI runs.
test: deps web
	$(CARGO) fmt --all -- --check
	$(CARGO) build --workspace --bins
	$(MAKE) test-rust test-e2b test-wrenn test-console
	$(CARGO) check --quiet --manifest-path fuzz/Cargo.toml

# WARREN_TEST_MINIMAL=1: the `minimal` tests build Debian with debootstrap
# from this host's apt mirror (about a minute each).
test-rust:
	WARREN_TEST_MINIMAL=1 WARREN_TEST_PYTHON=$$(scripts/wrenn-venv.sh) $(CARGO) test --workspace --no-fail-fast

$(VENV_E2B)/.requirements.sha256: tests/e2b/requirements.txt
	scripts/pyenv.sh $(VENV_E2B) tests/e2b/requirements.txt

tests/connect-npm/node_modules: tests/connect-npm/package-lock.json
	npm ci --prefix tests/connect-npm --no-audit --no-fund
	@touch $@

# The e2b SDK (and the npm Connect client) against the real envd binary, one
# network namespace per test.
test-e2b: $(VENV_E2B)/.requirements.sha256 tests/connect-npm/node_modules
	cd tests/e2b && ENVD_BIN=$(TARGET)/debug/envd ../../$(VENV_E2B)/bin/pytest -n $(PYTEST_WORKERS) -q

# The wrenn SDK against a whole local Warren (`warren up`: Postgres, control,
# the real agent with namespace capsules).
test-wrenn:
	tests/wrenn/run.sh

# The web console: type check, component tests (vitest, jsdom), then the
# end-to-end tests in Debian's chromium against a whole local Warren.
test-console: web
	npm run --prefix web check
	npm test --prefix web
	web/e2e/run.sh

## bench: criterion benchmarks and side-by-side comparisons (prints tables).
bench: deps web
	$(CARGO) build --release --workspace --bins
	$(CARGO) bench -p warren-benches
	benches/scripts/proxy-compare.sh
	benches/scripts/fc-restore.sh
	PROFILE=release tests/wrenn/run.sh benches/scripts/api_latency.py -k api_latency -s

## fuzz: runs every fuzz target for FUZZ_SECONDS each (cargo-fuzz; installed on demand).
FUZZ_SECONDS ?= 60
fuzz:
	@scripts/fuzz.sh $(FUZZ_SECONDS)

fmt:
	$(CARGO) fmt --all

lint: web
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
