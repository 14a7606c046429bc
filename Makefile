# The two commands at the top of README.md. Both build .venv on first use.
PY      ?= python3.11
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed

.PHONY: demo test test-ray test-gpu package-check lint format bench clean

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

# the Ray tests (marked ray): installs the ray extra into .venv first
test-ray: $(STAMP)
	$(BIN)/pip install -q -e '.[dev,ray]'
	RAY_AUTH_MODE=disabled $(BIN)/python -m pytest -q -m ray

# the GPU tests (marked gpu; skipped without CUDA)
test-gpu: $(STAMP)
	$(BIN)/python -m pytest -q -m gpu -rs

# build the wheel and sdist, install the wheel into a fresh venv that already has torch, and
# run the demo config with it: a broken package fails here (CI runs this)
PKG_VENV ?= /tmp/hybridsgd-package-check
package-check: $(STAMP)
	rm -rf dist $(PKG_VENV)
	$(BIN)/python -m build --no-isolation --outdir dist . >/dev/null
	$(PY) -m venv $(PKG_VENV)
	$(PKG_VENV)/bin/pip install -q torch==2.13.0
	$(PKG_VENV)/bin/pip install -q dist/hybridsgd-*.whl
	cd $(PKG_VENV) && bin/hybridsgd run $(CURDIR)/examples/digits-stragglers.toml --quiet \
		--set run.updates=20 --out $(PKG_VENV)/run --force
	$(PKG_VENV)/bin/python -c "import json; s = json.load(open('$(PKG_VENV)/run/summary.json')); \
		assert s['updates'] == 20, s; print('package-check: the wheel ran the demo config')"

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
