"""What a prediction is checked against: the same quantities measured on a schedule."""

from __future__ import annotations

from hybridsgd.backends.sim.schedule import APPLIED, Schedule


def measure(schedule: Schedule, batch_size: int = 32) -> dict[str, float]:
    """Mean time per update, mean staleness of applied gradients, wasted fraction of started
    work (cancelled or dropped) and throughput in samples per unit time."""
    s = schedule
    c = s.counts()
    applied = s.staleness[s.fate == APPLIED]
    return {
        "mean_update_time": s.end_time / s.n_updates,
        "mean_staleness": float(applied.mean()) if len(applied) else 0.0,
        "wasted_fraction": (c["cancelled"] + c["dropped"]) / s.n_gradients
        if s.n_gradients
        else 0.0,
        "throughput": c["applied"] * batch_size / s.end_time,
    }
