# Every target creates .venv (from python3, 3.11+) and installs qrt into it when missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

BENCH_STAMP := $(VENV)/.bench-stamp

.PHONY: demo test lint chaos fuzz bench bench-qrt clean browser screenshots

$(STAMP): pyproject.toml $(shell find runtime cli -name "*.py")
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# strict editable mode: a link tree that mypy can follow (the default editable finder hides it)
	$(PY) -m pip install --quiet -e '.[dev,otel]' --config-settings editable_mode=strict
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m examples.demo

test: $(STAMP) browser
	$(PY) -m pytest -q

# The dashboard's browser tests drive Debian's chromium through playwright (whose own browser
# download is not reachable here): installed with apt-get where it is missing and we may; where it
# cannot be, those tests skip and say why.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  { DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1 || \
	    { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1; }; } \
	  && echo "installed Debian's chromium for the browser tests"; } || \
	  echo "chromium is not installed and could not be: the browser tests will skip"

# The README's screenshots of the dashboard, from the browser tests' real run.
screenshots: $(STAMP) browser
	QRT_SCREENSHOT_DIR=docs/screenshots $(PY) -m pytest -q tests/dashboard/test_browser.py

# 10 minutes of seeded faults under load (tests/chaos); prints the seed, the checks and where the logs
# and its chaos-summary.json are; SEED=N replays a run.
chaos: $(STAMP)
	$(PY) -m tests.chaos.harness --duration 600 $(if $(SEED),--seed $(SEED))

# 100,000 hostile frames to each socket of a live coordinator and of a live worker (tests/fuzz); SEED=N
# replays a run. `make test` sends 2,000.
fuzz: $(STAMP)
	$(PY) -m tests.fuzz.harness --frames 100000 $(if $(SEED),--seed $(SEED))

lint: $(STAMP)
	$(VENV)/bin/ruff check runtime cli tests bench examples
	$(VENV)/bin/mypy -p qrt
	$(VENV)/bin/mypy bench

# The comparison with Celery and Dramatiq (it sets up .venv-peers and redis-server itself), then the
# control plane at 1,000 workers: bench/results/<date>.json, .md and .png, and a control_plane JSON.
bench: $(BENCH_STAMP)
	$(PY) -m bench.compare
	$(PY) -m bench.control_plane

# qrt's own benchmarks (throughput, round trip, memory, flow control), without peers.
bench-qrt: $(STAMP)
	$(PY) -m bench.run_all

$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[dev,otel,bench]' --config-settings editable_mode=strict
	touch $(BENCH_STAMP)

clean:
	rm -rf $(VENV) .venv-peers build *.egg-info qrt-data .pytest_cache .mypy_cache .ruff_cache
