#!/usr/bin/env bash
# The GPU checks of docs/gpu.md in one go, for a machine with CUDA and the project's
# dependencies except those carried as wheels in .whl/ (tomli-w, mlxtend): the GPU tests,
# the built wheel installed next to that machine's own torch running the demo config, and
# benchmarks/gpu.py. Everything it prints also goes to $OUT (or ./gpu-check).
set -uo pipefail
OUT=${OUT:-gpu-check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site
fi
{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
    nproc
} 2>&1 | tee "$OUT/machine.txt"

echo "== GPU tests"
PYTHONPATH=src:${PYTHONPATH:-} timeout 240 python3 -m pytest -q -p no:cacheprovider -m gpu -rs \
    tests/test_devices.py 2>&1 | tee "$OUT/gpu-tests.txt"

echo "== the wheel next to this machine's torch"
rm -rf /tmp/wheel-venv
python3 -m venv --system-site-packages /tmp/wheel-venv
/tmp/wheel-venv/bin/pip install -q --no-index --no-deps dist/hybridsgd-*.whl 2>&1 | tail -2
(cd /tmp && timeout 120 /tmp/wheel-venv/bin/hybridsgd run "$OLDPWD/examples/digits-stragglers.toml" \
    --quiet --set run.updates=50 --set run.device=cuda --out /tmp/wheel-run --force \
    && /tmp/wheel-venv/bin/python -c "import json, hybridsgd; s = json.load(open('/tmp/wheel-run/summary.json')); print('wheel', hybridsgd.__file__, 'device', s['device'], 'updates', s['updates'], 'loss', s['final_loss'])") \
    2>&1 | tee "$OUT/wheel.txt"

echo "== benchmark"
PYTHONPATH=src:${PYTHONPATH:-} timeout "${BENCH_TIMEOUT:-420}" python3 benchmarks/gpu.py \
    --repeats "${REPEATS:-1}" --json "$OUT/gpu-bench.json" 2>&1 | tee "$OUT/gpu-bench.txt"
