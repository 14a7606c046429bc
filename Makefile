# The two commands at the top of README.md. Both build .venv on first use.
PY      ?= python3.11
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed

.PHONY: demo test test-ray lint format bench clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first and pinned: anything that declares a looser torch range must find it installed.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/hybridsgd compare examples/digits-stragglers.toml --out runs/demo --force \
		--policy sync --policy backup:backups=2 --policy async \
		--policy hybrid:threshold=linear:start=2000,end=4000 \
		--seeds 2 --set optimizer.lr=0.05 --set run.time=600
	@echo "open runs/demo/report.html"

test: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow and not ray"

# the Ray tests (marked ray): installs the ray extra into .venv first
test-ray: $(STAMP)
	$(BIN)/pip install -q -e '.[dev,ray]'
	RAY_AUTH_MODE=disabled $(BIN)/python -m pytest -q -m ray

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/ruff format --check src tests benchmarks examples

format: $(STAMP)
	$(BIN)/ruff format src tests benchmarks examples
	$(BIN)/ruff check --fix src tests benchmarks examples

bench: $(STAMP)
	$(BIN)/python benchmarks/sim_speed.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
