# The README's two commands: `make demo` and `make test`. Everything they need is installed here.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The demo's broker: a real single-node Kafka from Maven Central jars, on 127.0.0.1.
KAFKA_PORT ?= 9092
KAFKA_DIR ?= .cfstream/kafka

.PHONY: setup demo test lint check-deploy check-browser bench chaos chaos-cluster kafka-start kafka-stop clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

setup: $(BIN)/.installed

kafka-start: setup
	$(BIN)/cfstream kafka start --port $(KAFKA_PORT) --data-dir $(KAFKA_DIR)

kafka-stop: setup
	$(BIN)/cfstream kafka stop --data-dir $(KAFKA_DIR)

demo: kafka-start
	CFSTREAM_BOOTSTRAP_SERVERS=127.0.0.1:$(KAFKA_PORT) $(BIN)/cfstream demo
	@echo "The broker keeps running for more: 'make kafka-stop' stops it."

lint: setup
	$(BIN)/ruff check cfstream bench tests
	$(BIN)/mypy

check-deploy: setup
	bash scripts/install-helm.sh
	bash scripts/install-promtool.sh
	PYTHON=$(BIN)/python bash scripts/check-deploy.sh

# The console's tests drive a real headless Chromium: installed from Debian if missing.
check-browser:
	bash scripts/install-chromium.sh

# Three test processes share one broker; each test module runs whole, in order, in one of them.
# Most tests wait on Kafka and the services more than they compute: on two cores, three
# processes ran the suite in 8 min 35 s against two's 10 min 28 s (fresh clones, 2026-12-06).
test: check-browser lint check-deploy
	$(BIN)/pytest -n 3 --dist loadscope --no-loadscope-reorder --durations=15

# Benchmarks beside raw Kafka (~15 min; `--quick` runs in the test suite). Results: bench/results.
bench: setup
	$(BIN)/python -m bench

# Kill processors, workers and the broker under load; reconcile (100k calls, ~15 min).
chaos: setup
	$(BIN)/python -m bench.chaos

# A 3-node Kafka cluster: kill -9 the leader of a calls, a changelog and an executions partition
# under load (500 calls/s for 3 min: what this 2-core box carries beside three JVMs), each
# restarted; nothing lost or run twice, no cfstream process restarted, worst extra delay <= 15 s
# (~4 min).
chaos-cluster: setup
	$(BIN)/python -m bench.chaos --nodes 3

clean:
	rm -rf .cfstream .pytest_cache .mypy_cache .ruff_cache
