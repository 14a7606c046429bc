#!/usr/bin/env bash
# The checks of docs/gpu.md in one go, for a machine with CUDA and the project's dependencies
# except those carried as wheels in .whl/ (tomli-w, mlxtend, simpy) and the built wheel in
# dist/. Stages, in order (all by default; name some to run only those):
#   tests    the GPU tests (pytest -m gpu)
#   wheel    the built wheel installed next to that machine's own torch, running the demo
#            config with run.device = "cuda" through its console script
#   bench    benchmarks/gpu.py: the simulator and the local backend on the GPU (the server
#            in CPU memory and on the GPU: run.local.server = "cpu", "gpu")
#   bench-lm benchmarks/gpu.py --quick on benchmarks/lm-256.toml (a 3.3M-parameter
#            transformer): the simulator against a plain GPU loop on a real-size model
#   scaling  benchmarks/local_vs_ddp.py on this machine's CPU cores (W up to cores - 1)
#   suite    the default test suite under this machine's torch and numpy (pytest-xdist)
# Everything it prints also goes to $OUT (or ./gpu-check). Settings from the environment:
# REPEATS (best of, 1), TESTS_/BENCH_/SCALING_/SUITE_TIMEOUT (seconds), BENCH_ARGS (say
# --no-local: the simulator's table only), SCALING_WORKERS, SUITE_PROCS.
#
#     bash benchmarks/gpu_check.sh [tests] [wheel] [bench] [bench-lm] [scaling] [suite]
set -uo pipefail
OUT=${OUT:-gpu-check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
STAGES=${*:-tests wheel bench bench-lm scaling suite}
want() { [[ " $STAGES " == *" $1 "* ]]; }
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site
fi
{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    python3 -c "import sys, numpy, torch; print(sys.version.split()[0], 'numpy', numpy.__version__, 'torch', torch.__version__, 'cuda', torch.version.cuda, 'gpus', torch.cuda.device_count())"
    echo "cores $(nproc)"
} 2>&1 | tee "$OUT/machine.txt"

if want tests; then
    echo "== GPU tests"
    PYTHONPATH=src:${PYTHONPATH:-} timeout "${TESTS_TIMEOUT:-150}" python3 -m pytest -q \
        -p no:cacheprovider -m gpu -rs tests/test_devices.py 2>&1 | tee "$OUT/gpu-tests.txt"
fi

if want wheel; then
    # --target rather than a venv: the machine's python3 may itself be a venv, and a venv
    # made from it with --system-site-packages would not see its torch.
    echo "== the wheel next to this machine's torch"
    rm -rf /tmp/wheel-site /tmp/wheel-run
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/wheel-site \
        dist/hybridsgd-*.whl 2>&1 | tail -2
    (cd /tmp && PYTHONPATH=/tmp/wheel-site:${PYTHONPATH:-} timeout 120 \
        /tmp/wheel-site/bin/hybridsgd run "$OLDPWD/examples/digits-stragglers.toml" \
        --quiet --set run.updates=50 --set run.device=cuda --out /tmp/wheel-run --force \
        && PYTHONPATH=/tmp/wheel-site:${PYTHONPATH:-} python3 -c "import json, hybridsgd; s = json.load(open('/tmp/wheel-run/summary.json')); print('wheel', hybridsgd.__file__, 'device', s['device'], 'updates', s['updates'], 'loss', s['final_loss'])") \
        2>&1 | tee "$OUT/wheel.txt"
fi

if want bench; then
    echo "== benchmark"
    PYTHONPATH=src:${PYTHONPATH:-} timeout "${BENCH_TIMEOUT:-420}" python3 benchmarks/gpu.py \
        --repeats "${REPEATS:-1}" --json "$OUT/gpu-bench.json" ${BENCH_ARGS:-} 2>&1 \
        | tee "$OUT/gpu-bench.txt"
fi

if want bench-lm; then
    echo "== benchmark: the simulator on a real-size model (benchmarks/lm-256.toml)"
    PYTHONPATH=src:${PYTHONPATH:-} timeout "${BENCH_LM_TIMEOUT:-300}" python3 benchmarks/gpu.py \
        --quick --no-local --task benchmarks/lm-256.toml --json "$OUT/gpu-bench-lm.json" 2>&1 \
        | tee "$OUT/gpu-bench-lm.txt"
fi

if want scaling; then
    cores=$(nproc)
    echo "== local backend against DDP (gloo) on $cores CPU cores"
    PYTHONPATH=src:${PYTHONPATH:-} timeout "${SCALING_TIMEOUT:-240}" python3 \
        benchmarks/local_vs_ddp.py --workers ${SCALING_WORKERS:-4 8 $((cores - 1))} \
        --repeats "${REPEATS:-1}" 2>&1 | tee "$OUT/scaling.txt"
fi

if want suite; then
    echo "== the default test suite under this machine's packages"
    xdist=""
    python3 -c "import xdist" 2>/dev/null && xdist="-n ${SUITE_PROCS:-8}"
    PYTHONPATH=src:${PYTHONPATH:-} timeout "${SUITE_TIMEOUT:-300}" python3 -m pytest -q \
        -p no:cacheprovider -m "not slow and not ray and not gpu" $xdist 2>&1 \
        | tail -40 | tee "$OUT/suite.txt"
fi
