"""Each policy tuned on its own (docs/tuning.md).

For every policy, every grid point runs on ``seeds`` seeds and is scored on a validation
split held out from the training data (``task.validation``), never on the test set. The
best point of each policy is then rerun on fresh seeds with the whole training set, and
those runs, evaluated on the test set, are what the report compares.

Or, in the shape of AlgoPerf's external tuning ruleset (mlcommons/algorithmic-efficiency,
DOCUMENTATION.md): ``studies`` independent studies of ``trials`` trials, each trial a point
of a search space drawn quasi-randomly (a scrambled Sobol sequence, one per study), each
study on its own seed; a policy's score is the median over studies of its best trial, and
a trial that diverges or misses the target scores infinity.

A run that diverges (a non-finite loss, or one 100 times the initial) is recorded as
diverged and ranked after every run that did not; it never stops the tuning.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hybridsgd.app.compare import sweep_dir
from hybridsgd.app.inputs import check_sweep, label_of
from hybridsgd.app.space import (  # noqa: F401  (tuning's names)
    DEFAULT_LRS,
    MOMENTUM_RANGE,
    Dim,
    _override,
    default_grid,
    default_space,
    parse_grid,
    parse_space,
    points,
    sobol_points,
)
from hybridsgd.app.sweep import Outcome, check_jobs, run_many, sweep_config
from hybridsgd.config import Config
from hybridsgd.errors import ConfigError
from hybridsgd.policies import parse_spec
from hybridsgd.rundir import holds

OBJECTIVES = ("final-loss", "time-to-target")
FINAL_SEED_OFFSET = 1000  # the winners' fresh seeds: run.seed + 1000, + 1001, ...


@dataclass
class Plan:
    """Every run of a tuning, checked before the first one starts."""

    base: Config
    specs: list[str]
    grid: dict[str, list[Any]]
    seeds: int
    final_seeds: int
    objective: str
    validation: float
    trials: list[tuple[str, dict[str, Any], Config]] = field(default_factory=list)
    #: replay each policy's grid in one pass (faster; equal to separate runs only to float
    #: tolerance, see run_many)
    grouped: bool = False
    #: AlgoPerf's shape instead of the grid: studies of trials drawn from a search space
    studies: int = 0
    trials_per_study: int = 0
    space: list[str] = field(default_factory=list)  # --space items; [] for the default


def plan(
    base: Config,
    specs: Sequence[str],
    grid: dict[str, list[Any]] | None = None,
    *,
    seeds: int = 1,
    final_seeds: int | None = None,
    objective: str = "final-loss",
    validation: float = 0.2,
    grouped: bool = False,
    studies: int = 0,
    trials: int = 0,
    space: Sequence[str] = (),
    task: Any = None,
) -> Plan:
    """The tuning's runs, each config validated (a bad key, value or spec is a ConfigError
    naming it, before anything runs). With ``studies`` and ``trials``: ``studies`` studies
    of ``trials`` trials each per policy, drawn from ``space`` (``--space`` items; the
    :func:`default_space` when empty), study ``s`` on seed ``run.seed + s``, instead of
    the grid."""
    check_sweep(specs, seeds)
    final_seeds = seeds if final_seeds is None else final_seeds
    if final_seeds < 1:
        raise ConfigError("--final-seeds", f"must be >= 1 (got {final_seeds})")
    if objective not in OBJECTIVES:
        raise ConfigError(
            "--objective", f"unknown {objective!r}; use one of: {', '.join(OBJECTIVES)}"
        )
    if (studies > 0) != (trials > 0) or studies < 0 or trials < 0:
        raise ConfigError(
            "--studies",
            f"give --studies S and --trials T together, both >= 1 (got {studies}, {trials})",
        )
    if studies and grid:
        raise ConfigError("--grid", "a tuning by studies draws its points: use --space, not --grid")
    if space and not studies:
        raise ConfigError("--space", "is for a tuning by studies: add --studies S --trials T")
    if studies and seeds != 1:
        raise ConfigError(
            "--seeds", "a tuning by studies runs each study on its own seed: drop --seeds"
        )
    dims = parse_space(space)
    grid = dict(grid) if grid else ({} if studies else default_grid(base))
    for key, values in grid.items():
        if not values:
            raise ConfigError("--grid", f"{key} has an empty list of values; give at least one")
    _check_split(base, validation, task)
    if objective == "time-to-target":
        _check_target(base)
    p = Plan(base, list(specs), grid, seeds, final_seeds, objective, validation, grouped=grouped)
    p.studies, p.trials_per_study, p.space = studies, trials, list(space)
    lean = unneeded(base, objective)
    for spec in specs if studies else ():
        _, policy = parse_spec(spec)
        own = dims or default_space(base, spec)
        for s in range(studies):
            # every policy gets the same draws in a study (the same search luck)
            for point in sobol_points(own, trials, seed=base.run.seed + s):
                settings = [_override(k, v) for k, v in point.items()]
                cfg = base.replace(
                    *policy, *settings, f"task.validation={validation}",
                    f"run.seed={base.run.seed + s}", "run.log=[]", *lean,
                )  # fmt: skip
                p.trials.append((spec, {"study": s, **point}, cfg))
    for spec in specs if not studies else ():
        _, policy = parse_spec(spec)
        for point in points(grid):
            settings = [_override(k, v) for k, v in point.items()]
            for s in range(seeds):
                # grid runs keep no logs: only the winners' test runs are worth a dashboard
                cfg = base.replace(
                    *policy, *settings, f"task.validation={validation}",
                    f"run.seed={base.run.seed + s}", "run.log=[]", *lean,
                )  # fmt: skip
                p.trials.append((spec, point, cfg))
    return p


#: whether grid runs skip the work their score does not read (:func:`unneeded`); False
#: only to measure what that saves (benchmarks/answer.py)
LEAN_GRID = True


def unneeded(base: Config, objective: str) -> list[str]:
    """Overrides that spare a grid run work its score does not read: scored on its final
    loss, it does not search for the first update at ``run.target_accuracy`` (the search
    evaluates every version until the target, and a grid run's row reads only its first
    and last evaluations and whether it diverged). Its evaluations every
    ``run.eval_every`` stay: they decide whether it diverged. The search would add the
    evaluations of the interval where the accuracy first reaches the target, which could
    change that only with a loss 100 times the initial one just before the target is
    reached; tests/test_tune.py checks that the tables and choices are the same."""
    if LEAN_GRID and objective == "final-loss" and base.run.target_accuracy is not None:
        return ["run.target_accuracy=none"]
    return []


def _check_split(base: Config, validation: float, task: Any = None) -> None:
    """``task``: a user's own Task the tuning trains (else the config's)."""
    from hybridsgd.tasks import build_task

    if not 0 <= validation <= 0.5:
        raise ConfigError(
            "--validation", f"is a fraction of the training set, 0 to 0.5 (got {validation})"
        )
    if validation == 0:
        task = task if task is not None else build_task(base.task, base.run.seed)
        if task.x_test is not task.x_train:
            raise ConfigError(
                "--validation",
                f"0 would tune on {task.name}'s test set; hold out a fraction (e.g. 0.2)",
            )


def _check_target(base: Config) -> None:
    from hybridsgd.tasks import build_task

    if base.run.target_accuracy is None:
        raise ConfigError(
            "--objective",
            "time-to-target needs run.target_accuracy (e.g. --set run.target_accuracy=0.9)",
        )
    if build_task(base.task, base.run.seed).metric != "accuracy":
        raise ConfigError(
            "--objective",
            f"time-to-target needs a task with accuracy; {base.task.name} has none: use final-loss",
        )


def score(outcome: Outcome, objective: str) -> tuple[float, bool]:
    """A run's objective (lower is better) and whether it diverged; a failed or diverged
    run scores +inf, as does one that never reached the target."""
    if outcome.trace is None:
        return math.inf, True
    s = outcome.trace.summary
    if s.get("diverged"):
        return math.inf, True
    if objective == "final-loss":
        loss = float(s["final_loss"])
        return (loss if math.isfinite(loss) else math.inf), not math.isfinite(loss)
    t = s.get("time_to_target")
    return (float(t) if t is not None else math.inf), False


def trial_row(p: Plan, i: int, o: Outcome) -> dict[str, Any]:
    """Trial ``i``'s row of tune.csv."""
    spec, point, cfg = p.trials[i]
    value, diverged = score(o, p.objective)
    s = o.trace.summary if o.trace is not None else {}
    return {
        "policy": label_of(spec),
        **point,
        "seed": cfg.run.seed,
        "objective": value,
        "diverged": diverged,
        "initial_loss": _initial_loss(o),
        "final_loss": float(s.get("final_loss", math.nan)),
        "final_accuracy": float(s.get("final_accuracy", math.nan)),
        "error": o.error,
    }


#: a grid point has learned when its final validation loss is at most this share of the
#: initial one (mean over seeds); a policy none of whose points learned is flagged
LEARNED = 0.9


def _initial_loss(outcome: Outcome) -> float:
    """The loss a run started from (its evaluation at version 0)."""
    if outcome.trace is None or not len(outcome.trace.evals):
        return math.nan
    return float(outcome.trace.evals.loss.iloc[0])


def choose(table: pd.DataFrame, grid: dict[str, list[Any]]) -> tuple[dict[str, dict], list[str]]:
    """Per policy, the best grid point (mean objective over seeds; any diverged seed makes
    the point diverged; a point whose final loss is not below :data:`LEARNED` times its
    initial loss ranks after every point that learned; ties go to the lower mean final
    loss), and the warnings: a winner at the edge of its grid, a policy with no point that
    did not diverge, a policy with no point that learned ("nothing learned")."""
    keys = list(grid)
    if "initial_loss" not in table:  # a table written before the column existed
        table = table.assign(initial_loss=math.nan)
    chosen: dict[str, dict] = {}
    warnings: list[str] = []
    for label, runs in table.groupby("policy", sort=False):
        per_point = runs.groupby(keys, sort=False).agg(
            objective=("objective", "mean"),
            diverged=("diverged", "any"),
            final_loss=("final_loss", "mean"),
            initial_loss=("initial_loss", "mean"),
        )
        per_point = per_point.reset_index()
        # NaN initial loss (an old table): counted as learned, as before the rule
        per_point["stuck"] = per_point.final_loss > LEARNED * per_point.initial_loss
        ranked = per_point.sort_values(
            ["diverged", "stuck", "objective", "final_loss"], kind="stable"
        )
        best = ranked.iloc[0]
        point = {k: _plain(best[k]) for k in keys}
        chosen[str(label)] = {
            "settings": point,
            "objective": float(best.objective),
            "diverged": bool(best.diverged),
            "nothing_learned": bool(best.stuck and not best.diverged),
        }
        if best.diverged or not math.isfinite(best.objective):
            warnings.append(
                f"{label}: every grid point diverged or missed the target; widen or shift the grid"
            )
            continue
        if best.stuck:
            warnings.append(
                f"{label}: nothing learned: no grid point ended below {LEARNED:g}x its initial "
                f"validation loss (best {best.final_loss:.4g} against {best.initial_loss:.4g} "
                "at the start); its choice is no better than the starting point: shift the grid"
            )
            continue
        for k in keys:
            values = sorted(grid[k]) if all(isinstance(v, int | float) for v in grid[k]) else None
            # (with two values any winner is at an edge: that is no news)
            if values and len(values) > 2 and point[k] in (values[0], values[-1]):
                side = "smallest" if point[k] == values[0] else "largest"
                warnings.append(
                    f"{label}: the best {k} = {point[k]:g} is the {side} of its grid; "
                    "extend the grid past it"
                )
    return chosen, warnings


def choose_studies(table: pd.DataFrame, p: Plan) -> tuple[dict[str, dict], list[str]]:
    """Per policy, AlgoPerf's score: the median over studies of its best trial (ranked as
    :func:`choose` ranks grid points; a best trial that diverged, missed the target or
    learned nothing scores infinity), and the settings to rerun: the best trial of the
    median study (the lower of the two middle ones for an even number). ``best_per_study``
    lists each study's best score."""
    if "initial_loss" not in table:
        table = table.assign(initial_loss=math.nan)
    chosen: dict[str, dict] = {}
    warnings: list[str] = []
    for spec in p.specs:
        label = label_of(spec)
        keys = next([k for k in pt if k != "study"] for sp, pt, _ in p.trials if sp == spec)
        runs = table[table.policy == label]
        runs = runs.assign(stuck=runs.final_loss > LEARNED * runs.initial_loss)
        ranked = runs.sort_values(["diverged", "stuck", "objective", "final_loss"], kind="stable")
        bests = ranked.groupby("study", sort=True).head(1).sort_values("study")
        values = [
            math.inf if (b.diverged or b.stuck) else float(b.objective) for b in bests.itertuples()
        ]
        order = sorted(range(len(values)), key=lambda i: values[i])
        best = bests.iloc[order[(len(order) - 1) // 2]]
        median = float(np.median(values))
        stuck = bool(bests.stuck.all() and not bests.diverged.any())
        chosen[label] = {
            "settings": {k: _plain(best[k]) for k in keys},
            "objective": median,
            "diverged": bool(bests.diverged.all()),
            "nothing_learned": stuck,
            "best_per_study": values,
            "study": int(best.study),
        }
        if stuck:
            warnings.append(
                f"{label}: nothing learned: in no study did a trial end below {LEARNED:g}x its "
                "initial validation loss; its choice is no better than the starting point: "
                "shift the search space"
            )
        elif not math.isfinite(median):
            warnings.append(
                f"{label}: in half of the studies or more, no trial reached the objective "
                "(diverged, missed the target or learned nothing): widen or shift the space"
            )
    return chosen, warnings


def _plain(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


#: what a tuning keeps in its directory to be resumed: its plan, and each trial's row as it
#: ends (JSON lines, appended and flushed one by one)
PLAN_FILE = "tune-plan.json"
JOURNAL = "tune-trials.jsonl"


def plan_record(p: Plan) -> dict[str, Any]:
    """What :func:`plan` was given, as JSON: enough to plan the same tuning again."""
    return {
        "base": p.base.to_dict(),
        "specs": p.specs,
        "grid": p.grid,
        "seeds": p.seeds,
        "final_seeds": p.final_seeds,
        "objective": p.objective,
        "validation": p.validation,
        "grouped": p.grouped,
        **(
            {"studies": p.studies, "trials": p.trials_per_study, "space": p.space}
            if p.studies
            else {}
        ),
    }


def _plan_record_in(out: str | Path) -> dict[str, Any]:
    """The plan record kept in ``out`` by the tuning being resumed."""
    path = Path(out) / PLAN_FILE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(
            "--resume", f"{out} holds no tuning to resume ({PLAN_FILE} is missing)"
        ) from None
    except (OSError, ValueError) as exc:
        raise ConfigError("--resume", f"{path} cannot be read ({exc})") from None


def resumed_plan(out: str | Path) -> Plan:
    """The plan of the interrupted tuning in ``out`` (``tune --resume DIR``)."""
    r = _plan_record_in(out)
    return plan(
        Config.from_dict(r["base"]), r["specs"], r["grid"], seeds=r["seeds"],
        final_seeds=r["final_seeds"], objective=r["objective"], validation=r["validation"],
        grouped=r.get("grouped", True),  # a plan from before this key replayed its grids grouped
        studies=r.get("studies", 0), trials=r.get("trials", 0), space=r.get("space", []),
    )  # fmt: skip


def _journal(out: Path, p: Plan) -> dict[int, dict[str, Any]]:
    """The rows of the trials an interrupted tuning finished (the last line of each wins;
    a line cut short by the interruption is ignored)."""
    rows: dict[int, dict[str, Any]] = {}
    path = out / JOURNAL
    if not path.is_file():
        return rows
    for line in path.read_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        i = entry.get("i")
        if isinstance(i, int) and 0 <= i < len(p.trials):
            rows[i] = entry["row"]
    return rows


@dataclass
class Tuned:
    out: Path
    chosen: dict[str, dict]
    warnings: list[str]
    trials: pd.DataFrame


def tune(
    p: Plan,
    out: str | Path,
    *,
    jobs: int | None = None,
    ray_address: str = "",
    progress: Callable[[int, int, str], None] | None = None,
    force: bool = False,
    resume: bool = False,
    task: Any = None,
) -> Tuned:
    """Run a :func:`plan`: the grid on the validation split, then each policy's winner on
    fresh seeds into ``out/runs/<label>-s<seed>`` (the report's runs). Writes
    ``tune.csv`` (every grid run) and ``tune.json`` (the choices and warnings). A directory
    that holds a comparison already is refused unless ``force``.

    Each grid run's row is kept in ``out`` as it ends, and each winner's run directory as
    it ends: with ``resume`` (the plan must be the one in ``out``, :func:`resumed_plan`),
    only what is missing runs, and the tables and the report are those an uninterrupted
    tuning writes."""
    finals_n = len(p.specs) * p.final_seeds
    check_jobs(jobs, [c for _, _, c in p.trials])
    if resume:
        out = sweep_dir(out, resume=True)
        if json.loads(json.dumps(plan_record(p))) != {"grouped": True, **_plan_record_in(out)}:
            raise ConfigError(
                "--resume", f"{out} holds a tuning planned otherwise: resume it as it was"
            )
        rows = _journal(out, p)
    else:
        out = sweep_dir(out, force)
        (out / PLAN_FILE).write_text(json.dumps(plan_record(p), indent=2))
        rows = {}
    total = len(p.trials) + finals_n
    tick = (lambda d, _t: progress(d, total, "tuning")) if progress else None
    with open(out / JOURNAL, "a") as journal:

        def keep(i: int, o: Outcome) -> None:
            rows[i] = json.loads(json.dumps(trial_row(p, i, o)))  # as the journal reads it
            journal.write(json.dumps({"i": i, "row": rows[i]}) + "\n")
            journal.flush()

        run_many(
            [c for _, _, c in p.trials], jobs=jobs, ray_address=ray_address, progress=tick,
            skip=set(rows), on_outcome=keep, grouped=p.grouped, task=task,
        )  # fmt: skip
    table = pd.DataFrame([rows[i] for i in range(len(p.trials))])
    table.to_csv(out / "tune.csv", index=False)
    chosen, warnings = choose_studies(table, p) if p.studies else choose(table, p.grid)
    finals, dirs = [], []
    for spec in p.specs:
        label = label_of(spec)
        _, policy = parse_spec(spec)
        settings = [_override(k, v) for k, v in chosen[label]["settings"].items()]
        for i in range(p.final_seeds):
            seed = p.base.run.seed + FINAL_SEED_OFFSET + i
            finals.append(
                p.base.replace(*policy, *settings, f"run.seed={seed}", "task.validation=0")
            )
            dirs.append(out / "runs" / f"{label}-s{seed}")
    (out / "policies.txt").write_text("\n".join(label_of(s) for s in p.specs) + "\n")
    tick2 = (lambda d, _t: progress(len(p.trials) + d, total, "final runs")) if progress else None
    have = {
        i for i, (c, d) in enumerate(zip(finals, dirs, strict=True)) if holds(d, sweep_config(c))
    }
    ends = run_many(
        finals, jobs=jobs, ray_address=ray_address, progress=tick2, outs=dirs, skip=have,
        task=task,
    )  # fmt: skip
    failed = [o for o in ends if o.error]
    warnings += [f"{o.config.policy.name} seed {o.config.run.seed}: {o.error}" for o in failed]
    record = {
        "objective": p.objective,
        "validation": p.validation,
        "grid": p.grid,
        "seeds": p.seeds,
        "final_seeds": p.final_seeds,
        **({"studies": p.studies, "trials": p.trials_per_study} if p.studies else {}),
        "chosen": chosen,
        "warnings": warnings,
    }
    (out / "tune.json").write_text(json.dumps(record, indent=2, default=str))
    return Tuned(out, chosen, warnings, table)


def check_ranking(
    base: Config,
    specs: Sequence[str],
    predicted: Sequence[float],
    out: str | Path,
    *,
    jobs: int | None = None,
    progress: Callable[[int, int, str], None] | None = None,
) -> pd.DataFrame:
    """``recommend --check N``: tune ``specs`` (a prediction's top N, best first, their
    predicted times in ``predicted``) in the simulator on ``base`` (time to its
    ``run.target_accuracy`` on a validation split, the default lr grid, one seed) into
    ``out``, and compare: a row per policy with its predicted and simulated rank, its tuned
    lr and time. ``table.attrs`` holds ``spearman`` (rank correlation of the predicted
    order with the tuned times) and ``first_within_20`` (whether the predicted #1's tuned
    time is within 20% of the best tuned time)."""
    from scipy.stats import rankdata, spearmanr

    p = plan(base, list(specs), objective="time-to-target", final_seeds=1)
    result = tune(p, out, jobs=jobs, progress=progress, force=True)
    tuned = [result.chosen[label_of(s)] for s in specs]
    times = [c["objective"] for c in tuned]
    ranks = rankdata(times, method="min")
    table = pd.DataFrame(
        {
            "policy": list(specs),
            "predicted_rank": range(1, len(specs) + 1),
            "predicted_time": list(predicted),
            "simulated_rank": [int(r) for r in ranks],
            "tuned_lr": [c["settings"].get("optimizer.lr") for c in tuned],
            "tuned_time": times,
        }
    )
    rho = spearmanr(range(len(specs)), times).statistic if len(specs) > 1 else math.nan
    best = min(times)
    table.attrs["spearman"] = float(rho)
    table.attrs["first_within_20"] = bool(math.isfinite(best) and times[0] <= 1.2 * best)
    return table
