# Every target creates .venv (from python3, 3.11+) and installs qrt into it when missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml $(shell find runtime cli -name "*.py")
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# strict editable mode: a link tree that mypy can follow (the default editable finder hides it)
	$(PY) -m pip install --quiet -e '.[dev]' --config-settings editable_mode=strict
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m examples.demo

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check runtime cli tests bench examples
	$(VENV)/bin/mypy -p qrt

bench: $(STAMP)
	$(PY) -m bench.run_all

clean:
	rm -rf $(VENV) build *.egg-info qrt-data .pytest_cache .mypy_cache .ruff_cache
