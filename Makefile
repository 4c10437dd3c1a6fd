# Two entry points, both from nothing: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
WEB_STAMP := web/node_modules/.installed-stamp
DATA   ?= demo-data

.PHONY: run test lint typecheck unit peers clean bench

## the browser side's npm packages (JsSIP), exactly as web/package-lock.json pins them
$(WEB_STAMP): web/package.json web/package-lock.json
	npm ci --prefix web --no-audit --no-fund --loglevel=error
	touch $(WEB_STAMP)

## the browser client, bundled from web/client with JsSIP (served by the web listener)
CLIENT := conclave/web/static/app.js
$(CLIENT): $(WEB_STAMP) $(wildcard web/client/*)
	mkdir -p conclave/web/static
	web/node_modules/.bin/esbuild web/client/app.js --bundle --minify --format=iife \
	  --target=es2020 --log-level=warning --outfile=$(CLIENT)
	cp web/client/index.html web/client/app.css conclave/web/static/

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

## run: set up and run a Standard Edition server on embedded storage.
## The first time it creates the demo deployment (example.test, alice, bob)
## in $(DATA) and prints the passwords and how to point a client at it.
run: $(STAMP)
	@$(MAKE) --no-print-directory $(CLIENT) \
	  || echo "web client not built (it needs node and npm): the server runs without it"
	$(BIN)/conclave demo --dir $(DATA)
	exec $(BIN)/conclave serve --dir $(DATA)

## test: set up and run ruff, mypy (strict on conclave/sip) and pytest
test: $(STAMP) peers lint typecheck unit

peers:
	@if [ "$$(id -u)" = "0" ]; then bash scripts/install-peers.sh; \
	else echo "not root: skipping Debian test peers (scripts/install-peers.sh)"; fi

lint: $(STAMP)
	$(BIN)/ruff check conclave tests
	$(BIN)/ruff format --check conclave tests

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP) $(WEB_STAMP) $(CLIENT)
	$(BIN)/pytest

clean:
	rm -rf $(VENV) web/node_modules conclave/web/static .pytest_cache .mypy_cache .ruff_cache .hypothesis

## bench: the benchmark suite against Kamailio (see BENCHMARKS.md).
## Installs kamailio, sipp and stunnel (as root) and the bench extras, then runs
## every scenario; writes bench/results/results.json and latency.png.
## BENCH_ARGS passes options, e.g. BENCH_ARGS="--scenarios 1,2 --profile".
BENCH_ARGS ?= --profile
bench: $(STAMP)
	bash scripts/install-bench.sh
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	$(BIN)/python -m bench $(BENCH_ARGS)
