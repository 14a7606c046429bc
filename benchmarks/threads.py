"""The simulator's torch threads: the default (run.threads = 0) against 1 thread and every
core, side by side in one run, best of --repeats, on the workloads users run first.

    python benchmarks/threads.py [--repeats 3] [--quick] [--busy]

Each row times `h.run` of one config (simulated, with its numerics) at run.threads = 1, at
every core, and at the default, interleaved so that a drifting machine slows all three
alike. "default / best" is the default's time over the faster of the two fixed settings:
issue 38's bar is at most 1.1. Each default run probes afresh (the probe's cache is
cleared), as a user's single run does; the load it measures is the machine's as the run
starts. `--busy` keeps one core busy with another process (a spinning loop) all along: the
shared machine of the issue's newcomer. The last column says what the default chose and
why (`summary["threads_choice"]`).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import hybridsgd as h
from hybridsgd import threads
from hybridsgd.backends.local import available_cores

HERE = Path(__file__).resolve().parent.parent / "examples"

CASES = {
    # issue 38's newcomer: a BatchNorm (+ dropout) CNN on digits, W = 8, 60 sync updates
    "own BN CNN, sync W=8": (HERE / "own-model.toml", ["run.updates=60"]),
    "digits-backup.toml": (HERE / "digits-backup.toml", []),
    "cnn-digits sync W=16": (
        None,
        ["task.name=cnn-digits", "policy.workers=16", "run.updates=100", "run.eval_every=25"],
    ),
    "mlp-digits async W=16": (
        None,
        ["policy.name=async", "policy.workers=16", "run.updates=1000", "run.eval_every=100"],
    ),
    "mlp-mnist sync W=16": (
        None,
        ["task.name=mlp-mnist", "policy.workers=16", "run.updates=60", "run.eval_every=20"],
    ),
    "cnn-mnist sync W=16": (
        None,
        ["task.name=cnn-mnist", "policy.workers=16", "run.updates=30", "run.eval_every=10"],
    ),
    "lm sync W=8": (
        None,
        [
            "task.name=lm",
            "optimizer.name=adamw",
            "optimizer.lr=0.003",
            "policy.workers=8",
            "run.updates=15",
            "run.eval_every=15",
        ],
    ),  # fmt: skip
}
QUICK = ("own BN CNN, sync W=8", "digits-backup.toml", "cnn-digits sync W=16")


def config(path: Path | None, overrides: list[str]) -> h.Config:
    if path is None:
        return h.Config.from_dict({"policy": {"name": "sync"}}, overrides)
    return h.Config.load(path, overrides)


def wall(cfg: h.Config) -> tuple[float, dict]:
    t0 = time.perf_counter()
    r = h.run(cfg, progress=False)
    return time.perf_counter() - t0, r.summary


def spin() -> None:
    """Another process's work: one core kept busy until killed."""
    while True:
        pass


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="the first three cases only")
    ap.add_argument("--busy", action="store_true", help="another process spins on one core")
    args = ap.parse_args()
    other = None
    if args.busy:
        import multiprocessing

        other = multiprocessing.get_context("spawn").Process(target=spin, daemon=True)
        other.start()
        time.sleep(1.0)
    try:
        table(args)
    finally:
        if other is not None:
            other.terminate()


def table(args: argparse.Namespace) -> None:
    cores = available_cores()
    names = QUICK if args.quick else tuple(CASES)
    busy = ", one core kept busy by another process" if args.busy else ""
    print(f"{cores} cores{busy}; best of {args.repeats}, interleaved; seconds per run")
    print(f"{'case':24} {'1 thread':>9} {f'{cores} threads':>10} {'default':>8} "
          f"{'default/best':>13}  default chose")  # fmt: skip
    for name in names:
        path, overrides = CASES[name]
        settings = {"1": "run.threads=1", "all": f"run.threads={cores}", "default": "run.threads=0"}
        cfgs = {k: config(path, [*overrides, v]) for k, v in settings.items()}
        wall(cfgs["1"])  # warm up: imports, the data set, the first compilation
        best = dict.fromkeys(cfgs, float("inf"))
        chose = {}
        for _ in range(args.repeats):
            for k, cfg in cfgs.items():
                if k == "default":  # a user's single run pays for the probe: so does each here
                    threads._CACHE.clear()
                t, summary = wall(cfg)
                best[k] = min(best[k], t)
                if k == "default":
                    chose = summary
        ratio = best["default"] / min(best["1"], best["all"])
        why = chose.get("threads_choice", f"{chose.get('torch_threads')} threads")
        print(f"{name:24} {best['1']:9.2f} {best['all']:10.2f} {best['default']:8.2f} "
              f"{ratio:13.2f}  {why}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
