# Latent Loom: `make run` starts the server with the embedded model; `make test` runs every test.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: setup run test test-fast bench browser web web-check clean

setup: $(STAMP) input/example.png

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[test]'
	touch $(STAMP)

input/example.png: workflows/input/example.png
	mkdir -p input
	cp -n workflows/input/* input/ || true

run: setup
	$(PY) server.py

# The browser tests need Debian's Chromium; `browser` installs it where it is missing.
browser:
	@test -x /usr/bin/chromium || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)

test: setup browser
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not slow and not browser"

bench: setup
	$(PY) benchmarks/engine_overhead.py

web:
	$(MAKE) -C web build

web-check:
	$(MAKE) -C web check

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
