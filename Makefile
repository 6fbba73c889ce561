# dcr-gateway — `make run` and `make test` are all a newcomer needs (Debian, Python 3.11).
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
RUN_STAMP := $(VENV)/.installed-run

.PHONY: run test test-fast bench lint typecheck clean help examples

help:
	@echo "make run    start the gateway (8080) and the sandbox bank (8081), admin on 9090"
	@echo "make test   run the whole test suite"
	@echo "make test-fast  the fast tier (under a minute): no subprocess, redis-server, helm or browser"
	@echo "make bench  measure the gateway against a bare proxy and direct upstream"
	@echo "make lint   ruff + mypy + import contracts + policy lint"
	@echo "make examples  record the OpenAPI document's examples from real exchanges (gateway/sandbox/reference)"

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (Debian: apt-get install python3.11 python3.11-venv)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Development and CI: every extra (tests, linters, the Helm engine for chart tests).
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e '.[speed,test,lint,helm,browser]'
	@touch $(STAMP) $(RUN_STAMP)

# `make run` needs only the gateway itself (and uvloop).
$(RUN_STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e '.[speed]'
	@touch $(RUN_STAMP)

run: $(RUN_STAMP)
	$(BIN)/dcr-gateway serve --config config.yaml

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The fast tier (tests/README.md): every package, in-process only; `make test` (CI) runs everything.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

# The OpenAPI document's examples: the product started on other ports, the flow walked, every exchange written
# to gateway/sandbox/reference/examples.json (tests/sandbox/test_examples.py fails when they drift).
examples: $(RUN_STAMP)
	$(BIN)/python -m gateway.sandbox.examples --config config.yaml

bench: $(STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache
	$(BIN)/dcr-gateway policy lint --config config.yaml
	$(BIN)/dcr-gateway policy lint policies/ob_standard --config config.yaml

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
