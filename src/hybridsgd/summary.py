"""A run's summary (summary.json): totals, health (divergence, rejected gradients), notes."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from hybridsgd import __version__
from hybridsgd.config import Config
from hybridsgd.policies import POLICY_KEYS
from hybridsgd.policies.registry import PARAMS, SHARED_KEYS
from hybridsgd.record import Evals, Schedule
from hybridsgd.tasks import Task


def notes_for(cfg: Config) -> list[str]:
    """Settings the chosen policy or task ignores, and old names of keys that moved (said
    once, not an error)."""
    from hybridsgd.sections import MOVED_RUN_KEYS

    moved = [f"run.{old} is now run.{'.'.join(MOVED_RUN_KEYS[old])}" for old in cfg.moved]
    unused = [f"task.{key} is not used by {cfg.task.name}" for key in cfg.task.unused()]
    return (
        _policy_notes(cfg)
        + unused
        + ([f"{'; '.join(moved)} (read from the old name; write the new one)"] if moved else [])
    )


def _policy_notes(cfg: Config) -> list[str]:
    p = cfg.policy
    defaults = type(p)()
    used = POLICY_KEYS[p.name]

    def changed(key: str) -> bool:  # a shared key, or another policy's key that was set
        if key in SHARED_KEYS:
            return getattr(p, key) != getattr(defaults, key)
        return key in p.options and p.options[key] != PARAMS[key].default

    return [
        f"policy.{key} is not used by {p.name}"
        for key in sorted({k for keys in POLICY_KEYS.values() for k in keys})
        if key not in used and changed(key)
    ]


def summarize(
    cfg: Config, task: Task, policy: str, s: Schedule, evals, wall: float
) -> dict[str, Any]:
    counts = s.counts()
    applied = s.staleness[s.fate == 0]
    target = cfg.run.target_accuracy
    hit = next(
        (i for i, a in enumerate(evals.accuracy) if target is not None and a >= target), None
    )
    sim_time = s.end_time
    return {
        "hybridsgd": __version__,
        "task": task.name,
        "policy": policy,
        "backend": cfg.run.backend,
        "workers": cfg.policy.workers,
        "seed": cfg.run.seed,
        "updates": s.n_updates,
        "gradients": {
            "computed": counts["applied"]
            + counts["dropped"]
            + counts["pending"]
            + counts["rejected"],
            **counts,
        },
        **health(s, evals, task.evaluated_on),
        "evaluated_on": task.evaluated_on,  # "test", or "validation" (task.validation)
        "mean_staleness": float(applied.mean()) if len(applied) else math.nan,
        "max_staleness": int(applied.max()) if len(applied) else 0,
        "momentum": cfg.optimizer.momentum,
        "final_loss": evals.loss[-1],
        "final_accuracy": evals.accuracy[-1],
        "final_from_loss": {k: f(evals.loss[-1]) for k, f in task.from_loss.items()},
        "best_accuracy": max(evals.accuracy) if task.metric == "accuracy" else math.nan,
        "target_accuracy": target,
        "time_to_target": evals.time[hit] if hit is not None else None,
        "updates_to_target": evals.version[hit] if hit is not None else None,
        # "update": the first update that reached the target (hybridsgd.target); "interval":
        # the first after the last evaluation below it (run.target_search); a backend that
        # reads it off its evaluations says "evaluation" (rounded up to the next one)
        "time_to_target_resolution": "update" if cfg.run.target_search == "exact" else "interval",
        "clock": "virtual",
        "end_time": sim_time,
        "samples_per_time": counts["applied"] * cfg.task.batch_size / sim_time
        if sim_time > 0
        else math.nan,
        "wall_time_s": wall,
        "schedule_path": s.path,
        "notes": notes_for(cfg)
        + (
            [
                f"{cfg.policy.workers} workers share {task.n_train} training samples: every "
                "worker draws from the whole training set"
            ]
            if cfg.policy.workers > task.n_train and not getattr(task, "stream", False)
            else []
        ),
        "config": cfg.to_dict(),
        # each job was this many inner steps (docs/local-steps.md)
        **({} if cfg.worker.plain else {"local_steps": cfg.worker.steps}),
    }


DIVERGENCE_FACTOR = 100.0  # a test loss this many times the initial one has diverged


def health(s: Schedule, evals: Evals, evaluated_on: str = "test") -> dict[str, Any]:
    """Whether the run diverged (a non-finite evaluated loss, or one ``DIVERGENCE_FACTOR`` times
    the initial loss) and from which evaluated version, how many gradients the server
    rejected and why; ``warnings`` says each problem in one line."""
    loss = np.asarray(evals.loss, dtype=float)
    first = loss[0] if len(loss) and np.isfinite(loss[0]) else math.nan
    bad = ~np.isfinite(loss) | (loss > DIVERGENCE_FACTOR * abs(first))
    at = int(np.argmax(bad)) if bad.any() else None
    counts = s.counts()
    offered = counts["applied"] + counts["rejected"]
    reasons: dict[str, int] = {}
    for why in s.reasons.values():
        reasons[why] = reasons.get(why, 0) + 1
    warnings = []
    mostly_rejected = bool(offered and counts["rejected"] > offered / 2)
    if at is not None:
        warnings.append(
            f"diverged: the {evaluated_on} loss is {loss[at]:.4g} at update {evals.version[at]} "
            f"(initial {first:.4g}); lower optimizer.lr"
        )
    if mostly_rejected:
        why = ", ".join(f"{k}: {v}" for k, v in sorted(reasons.items()))
        warnings.append(
            f"{counts['rejected']} of {offered} gradients were rejected ({why}): "
            "most of the run's work was thrown out"
        )
    return {
        # False when the run completed but what it trained is not usable: it diverged, or
        # the server rejected most gradients (the CLI's exit status 3)
        "healthy": at is None and not mostly_rejected,
        "diverged": at is not None,
        "diverged_at": evals.version[at] if at is not None else None,
        "rejected_reasons": reasons,
        "warnings": warnings,
    }
