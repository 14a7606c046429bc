"""Run every policy of a comparison on the same task, data, timing model and seeds."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hybridsgd.app.inputs import check_sweep, label_of
from hybridsgd.app.sweep import check_jobs, run_many, sweep_config
from hybridsgd.config import Config
from hybridsgd.errors import ConfigError, WorkerLost
from hybridsgd.policies import parse_spec
from hybridsgd.rundir import holds, writable_dir

#: what a comparison or a tuning writes at the top of its directory (besides runs/ and plots)
OWN_FILES = (
    "report.html",
    "summary.csv",
    "policies.txt",
    "tune.csv",
    "tune.json",
    "tune-plan.json",
    "tune-trials.jsonl",
    "compare-plan.json",
)


def sweep_dir(out: str | Path, force: bool = False, resume: bool = False) -> Path:
    """``out`` ready for a new comparison or tuning. One that already holds one (a report,
    or runs/ from an interrupted sweep) is refused unless ``force``, which removes that
    comparison first: runs/, the report, its plots and tables, nothing else. Old runs left
    there would join the new report. ``resume`` takes ``out`` as it is: the sweep there
    goes on."""
    if resume:
        if not Path(out).is_dir():
            raise ConfigError("--resume", f"{out}: no such directory")
        return writable_dir(out, "--resume")
    out = writable_dir(out)
    old = [n for n in OWN_FILES if (out / n).exists()] + (
        ["runs/"] if (out / "runs").exists() else []
    )
    if old and not force:
        raise ConfigError(
            "--out",
            f"{out} already holds a comparison ({', '.join(old)}); pass another --out or --force",
        )
    if old:
        shutil.rmtree(out / "runs", ignore_errors=True)
        for name in OWN_FILES:
            (out / name).unlink(missing_ok=True)
        for png in out.glob("*.png"):
            png.unlink()
    return out


def compare(
    base: Config,
    specs: list[str],
    seeds: int,
    out: str | Path,
    progress: Callable[[int, int, str], None] | None = None,
    *,
    jobs: int | None = None,
    ray_address: str = "",
    force: bool = False,
    resume: bool = False,
    task: Any = None,
) -> Path:
    """Run ``specs`` x ``seeds`` (run.seed, run.seed + 1, ...) into ``out/runs/<label>-s<seed>``.

    Every spec is validated before the first run starts, so a typo costs nothing. The runs
    go ``jobs`` at a time, or on the Ray cluster at ``ray_address`` (:func:`run_many`). A
    directory that holds a comparison already is refused unless ``force`` (:func:`sweep_dir`).
    Each run's directory is written as the run ends; with ``resume`` (the same plan, see
    :func:`resume_compare`) the runs whose directories hold them are not run again.
    """
    labels = check_sweep(specs, seeds)
    configs = []
    for spec in specs:
        _, overrides = parse_spec(spec)
        for i in range(seeds):
            cfg = base.replace(*overrides, f"run.seed={base.run.seed + i}")
            configs.append((spec, cfg))
    check_jobs(jobs, [c for _, c in configs])
    record = {"base": base.to_dict(), "specs": list(specs), "seeds": seeds}
    if resume:
        out = sweep_dir(out, resume=True)
        if _plan_of(out) != json.loads(json.dumps(record)):
            raise ConfigError(
                "--resume", f"{out} holds a comparison planned otherwise: resume it as it was"
            )
    else:
        out = sweep_dir(out, force)
        (out / PLAN).write_text(json.dumps(record, indent=2))
    (out / "policies.txt").write_text("\n".join(labels) + "\n")
    dirs = [out / "runs" / f"{label_of(spec)}-s{cfg.run.seed}" for spec, cfg in configs]
    have = {
        i
        for i, ((_, c), d) in enumerate(zip(configs, dirs, strict=True))
        if holds(d, sweep_config(c))
    }
    tick = (lambda done, total: progress(done, total, "")) if progress else None
    outcomes = run_many(
        [c for _, c in configs], jobs=jobs, ray_address=ray_address, progress=tick, outs=dirs,
        skip=have, task=task,
    )  # fmt: skip
    failed = [(spec, o) for (spec, _), o in zip(configs, outcomes, strict=True) if o.error]
    if failed:
        spec, first = failed[0]
        raise WorkerLost(
            f"{len(failed)} of {len(configs)} runs failed; {spec} (seed "
            f"{first.config.run.seed}): {first.error}"
        )
    return out


#: the plan a comparison keeps in its directory, so that ``compare --resume DIR`` can go on
PLAN = "compare-plan.json"


def _plan_of(out: Path) -> dict:
    path = out / PLAN
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError("--resume", f"{out} holds no comparison to resume ({PLAN})") from None
    except (OSError, ValueError) as exc:
        raise ConfigError("--resume", f"{path} cannot be read ({exc})") from None


def resume_compare(
    out: str | Path,
    progress: Callable[[int, int, str], None] | None = None,
    *,
    jobs: int | None = None,
    ray_address: str = "",
) -> Path:
    """Go on with the interrupted comparison in ``out``: its missing runs, as planned."""
    r = _plan_of(Path(out))
    base = Config.from_dict(r["base"])
    return compare(base, r["specs"], r["seeds"], out, progress, jobs=jobs,
                   ray_address=ray_address, resume=True)  # fmt: skip
