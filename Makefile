# Two commands do all the set-up on a fresh machine:
#   make demo   - the main job on its embedded default
#   make test   - the test suite
# Both create/refresh .venv from pinned versions (constraints.txt); a second run installs nothing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: venv peer test test-all test-experiments demo lint typecheck check bench clean

$(STAMP): requirements.txt constraints.txt setup.py setup.cfg
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -r requirements.txt -c constraints.txt
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	@touch $@

venv: $(STAMP)

# The learning benchmark's offline-RL peer (d3rlpy IQL/BC), pinned, into the same venv with
# --no-deps (its gymnasium pin conflicts with metaworld's; requirements-peer.txt says why).
PEER_STAMP := $(VENV)/.peer-installed
$(PEER_STAMP): $(STAMP) requirements-peer.txt
	$(BIN)/python -m pip install -q --no-deps -r requirements-peer.txt
	@touch $@

peer: $(PEER_STAMP)

test: venv peer
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Slow tests too (reliability loops, end-to-end runs).
test-all: venv peer
	$(BIN)/python -m pytest -m "" $(PYTEST_ARGS)

# The tests of the one-off study scripts in experiments/ (not part of `make test`).
test-experiments: venv
	$(BIN)/python -m pytest experiments -m "" $(PYTEST_ARGS)

demo: venv
	$(BIN)/vmerpo demo

lint: venv
	$(BIN)/ruff check perception learning sim robot_nodes vmerpo tests experiments

# mypy on the packages ([tool.mypy] in pyproject.toml).
typecheck: venv
	$(BIN)/mypy

# What CI runs besides the tests.
check: lint typecheck

# Every benchmark: `vmerpo bench --help`; this one is quick (store + sampler).
bench: venv
	$(BIN)/vmerpo bench store --out results/bench_store.json

clean:
	rm -rf $(VENV) build *.egg-info
