# Portal Pulse — developer entry points. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PP := $(VENV)/bin/portal-pulse

.PHONY: help demo test test-faults test-loop lint format lock broker-start broker-stop broker-status kafka-libs browser prometheus-tools bench clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

# Every package comes from requirements/test.lock, pinned with its hashes (pip refuses anything
# else); the project itself is then installed without resolving dependencies or fetching a
# build backend (setuptools is in the lock).
$(VENV)/.installed: pyproject.toml requirements/test.lock
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --require-hashes -r requirements/test.lock
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $@

demo: $(VENV)/.installed ## simulate practices → Kafka → worker → chDB, then show what landed
	$(PP) demo

test: $(VENV)/.installed kafka-libs browser prometheus-tools ## run the whole test suite (unit + integration on a real broker)
	$(PY) -m pytest

test-faults: $(VENV)/.installed kafka-libs ## the fault-injection suite (kills, outages, poison records; slow)
	$(PY) -m pytest -m faults tests/integration/test_fault_injection.py

RUNS ?= 20
test-loop: $(VENV)/.installed kafka-libs ## the fault and roles suites RUNS times in a row, no rerun (docs/testing.md)
	$(PY) tests/loop_suites.py --runs $(RUNS)

lint: $(VENV)/.installed ## ruff check and format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(VENV)/.installed ## apply ruff format and safe fixes
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

lock: ## re-pin requirements/*.lock (with hashes) after a change to pyproject.toml's dependencies
	$(PYTHON) -m venv $(VENV)-lock && $(VENV)-lock/bin/pip install -q uv
	for lock in test runtime; do \
	  extra=$$([ $$lock = test ] && echo --extra test); \
	  $(VENV)-lock/bin/uv pip compile pyproject.toml requirements/build.in $$extra --generate-hashes \
	    --python-version 3.11 --python-platform x86_64-manylinux_2_28 --custom-compile-command "make lock" \
	    -q -o requirements/$$lock.lock; done

kafka-libs: $(VENV)/.installed ## assemble the Kafka broker from Maven Central (once)
	$(PP) broker assemble

broker-start: $(VENV)/.installed ## start the native KRaft broker on 127.0.0.1:19092
	$(PP) broker start

broker-stop: $(VENV)/.installed ## stop it
	$(PP) broker stop

broker-status: $(VENV)/.installed
	$(PP) broker status

browser: ## install Debian's headless Chromium for the dashboard rendering test (if missing)
	@command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    (apt-get install -y -q chromium >/dev/null 2>&1 || (apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null)) \
	      && echo "installed chromium"; \
	  else echo "chromium not installed: the browser test will be skipped"; fi; }

# Tests start their own Prometheus and Alertmanager on free ports with their own config and data
# directories: the packages' own services (on 9090 and 9093, where the system starts them) are
# neither used nor in the way.
prometheus-tools: ## install Debian's Prometheus (promtool) and Alertmanager for the rules and alerting tests (if missing)
	@{ command -v promtool >/dev/null && command -v prometheus-alertmanager >/dev/null; } || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    (apt-get install -y -q prometheus prometheus-alertmanager >/dev/null 2>&1 \
	      || (apt-get update -q >/dev/null && apt-get install -y -q prometheus prometheus-alertmanager >/dev/null)) \
	      && echo "installed prometheus and prometheus-alertmanager"; \
	  else echo "prometheus or prometheus-alertmanager not installed: the rules and alerting tests will be skipped"; fi; }

bench: $(VENV)/.installed kafka-libs ## end-to-end and raw-baseline throughput, alert latency, dashboard query time
	$(PY) benchmarks/run.py

clean: ## remove local state (chDB, broker data, demo files)
	rm -rf var
