"""What a prediction is checked against: the same quantities measured on a schedule."""

from __future__ import annotations

from hybridsgd.record import APPLIED, Schedule


def measure(schedule: Schedule, batch_size: int = 32) -> dict[str, float]:
    """Mean time per update, mean staleness of applied gradients (over the whole run, and in
    the steady state: see :func:`steady_state_staleness`), wasted fraction of started work
    (cancelled or dropped) and throughput in samples per unit time."""
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
        "steady_state_staleness": steady_state_staleness(s),
    }


def steady_state_staleness(schedule: Schedule, warmup: float = 0.05, end: float = 0.5) -> float:
    """Mean staleness of the gradients read between ``warmup`` and ``end`` of the run (as
    fractions of its updates) that were applied: the steady state, without the start-up
    (every worker starts on version 0) or the end (a heavy-tailed straggler still in flight
    when the run stops is never counted, which biases a whole-run mean low)."""
    s = schedule
    U = s.n_updates
    r = s.read_version
    chosen = (r >= warmup * U) & (r < end * U) & (s.fate == APPLIED)
    return float(s.staleness[chosen].mean()) if chosen.any() else float("nan")
