# The two commands at the top of README.md. Both build .venv on first use.
PY      ?= python3.11
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed

.PHONY: demo test test-slow test-ray test-gpu package-check lint format bench clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first and pinned: anything that declares a looser torch range must find it installed.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/hybridsgd tune examples/digits-stragglers.toml --out runs/demo --force \
		--policy sync --policy backup:backups=2 --policy async \
		--policy hybrid:threshold=linear:start=0,end=1500 \
		--grid optimizer.lr=[0.01,0.03,0.1,0.3,1] --objective time-to-target --final-seeds 3 \
		--set run.time=600
	@echo "open runs/demo/report.html"

test: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow and not ray"

# the tests marked slow (whole tunings, subprocesses, local workers, long closed-form checks):
# CI runs them after `make test`
test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m "slow and not ray"

# the Ray tests (marked ray): installs the ray extra into .venv first
test-ray: $(STAMP)
	$(BIN)/pip install -q -e '.[dev,ray]'
	RAY_AUTH_MODE=disabled $(BIN)/python -m pytest -q -m ray

# the GPU tests (marked gpu; skipped without CUDA)
test-gpu: $(STAMP)
	$(BIN)/python -m pytest -q -m gpu -rs

# build the wheel and sdist, install the wheel into a fresh venv (in a temporary directory of
# its own) that already has torch, and run every snippet of the README's usage sections with
# it from outside the checkout (.ci/readme_snippets.py): a broken package fails here (CI runs
# this)
package-check: $(STAMP)
	rm -rf dist
	$(BIN)/python -m build --no-isolation --outdir dist . >/dev/null
	set -e; tmp=$$(mktemp -d -t hybridsgd-package-check.XXXXXX); trap 'rm -rf "$$tmp"' EXIT; \
	$(PY) -m venv $$tmp/venv; \
	$$tmp/venv/bin/pip install -q torch==2.13.0; \
	$$tmp/venv/bin/pip install -q dist/hybridsgd-*.whl; \
	$$tmp/venv/bin/python .ci/readme_snippets.py README.md --bin $$tmp/venv/bin

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/ruff format --check src tests benchmarks examples
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format src tests benchmarks examples
	$(BIN)/ruff check --fix src tests benchmarks examples

bench: $(STAMP)
	$(BIN)/python benchmarks/sim_speed.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
