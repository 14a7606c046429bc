"""Shared checks for tests."""

from __future__ import annotations

import os
import signal
import subprocess

import numpy as np
import torch

from hybridsgd import Cluster, Config, parse_model
from hybridsgd.trace import Trace


def as_in_a_terminal(cli: list[str], env: dict | None = None) -> subprocess.Popen:
    """Start a command as a terminal would, in its own process group, with SIGINT at its
    default (a shell runs background jobs with it ignored, and children inherit that)."""
    return subprocess.Popen(
        cli,
        env=env,
        start_new_session=True,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def signal_when(
    proc: subprocess.Popen, ready, signals, timeout: float = 120, poll: float = 0.2
) -> str:
    """Wait (up to 120 s) until ``ready()``, then send ``signals`` 0.3 s apart (SIGINT to
    the process group, as a terminal's Ctrl-C; others to the process); ``proc``'s stderr
    once it ends (it is killed if it does not)."""
    import time

    try:
        deadline = time.monotonic() + 120
        while not ready() and time.monotonic() < deadline:
            time.sleep(poll)
        for sig in signals:
            os.killpg(proc.pid, sig) if sig == signal.SIGINT else os.kill(proc.pid, sig)
            time.sleep(0.3)
        return proc.communicate(timeout=timeout)[1]
    finally:
        if proc.poll() is None:
            proc.kill()


def ctrl_c(proc: subprocess.Popen, timeout: float = 60) -> str:
    """Press Ctrl-C on ``proc``'s terminal (SIGINT to its group); its stderr once it ends."""
    os.killpg(proc.pid, signal.SIGINT)
    return proc.communicate(timeout=timeout)[1]


def const_cluster(speeds: list[float], seed: int = 0) -> Cluster:
    """Workers whose minibatches take exactly ``speeds[w]`` time units."""
    return Cluster(parse_model("constant:value=1"), len(speeds), seed=seed, speeds=speeds)


def make_config(base: dict, **sections: dict) -> Config:
    """The one config factory of the tests: a module's ``base`` tables, each section in
    ``sections`` merged over its table (keys replaced, others kept)."""
    tables = {name: dict(values) for name, values in base.items()}
    for name, values in sections.items():
        tables[name] = {**tables.get(name, {}), **values}
    return Config.from_dict(tables)


def small_config(**sections) -> Config:
    return make_config({"run": {"updates": 40, "eval_every": 10}, "task": {"batch_size": 16}},
                       **sections)  # fmt: skip


def assert_consistent(trace: Trace) -> None:
    """The trace invariants every policy and backend must keep."""
    g, u = trace.gradients, trace.updates
    applied = g[g.fate == "applied"]
    # versions increase by one, update times never go back
    assert (u.version.to_numpy() == np.arange(1, len(u) + 1)).all()
    assert (np.diff(u.time.to_numpy()) >= 0).all()
    # every applied gradient is counted in exactly one update, and only applied ones are
    assert applied.gid.is_unique
    assert (applied["update"] >= 1).all() and (g[g.fate != "applied"]["update"] == -1).all()
    counts = applied.groupby("update").size().reindex(u.version, fill_value=0).to_numpy()
    assert (counts == u.n_gradients.to_numpy()).all()
    # staleness is never negative and matches versions: applied at update v+1 means arrival at
    # v; a policy with a gradient table may hold a gradient for a later update (Ringleader's
    # next cycle), never apply it before it arrived
    assert (g.staleness >= 0).all()
    at_arrival = applied["update"] - 1 - applied.read_version
    if _has_table(trace):
        assert (applied.staleness <= at_arrival).all()
    else:
        assert (applied.staleness == at_arrival).all()
    assert (g.end_time >= g.start_time).all()
    # a worker's minibatch slots are used in order, once each
    for _, rows in g.groupby("worker"):
        slots = np.sort(rows.minibatch.to_numpy())
        assert (slots == np.arange(len(slots))).all()


def _has_table(trace: Trace) -> bool:
    from hybridsgd.policies import REGISTRY

    policy = str(trace.summary.get("policy", "")).split("(")[0]
    return policy in REGISTRY and REGISTRY[policy].table is not None


def registered_examples(real: bool = False) -> list[tuple[str, str, dict]]:
    """(spec, policy name, its own [policy] keys) for every example every registered policy
    declares: the conformance tables, generated from the registry (``real``: only those
    that run on real backends, not on the simulator alone)."""
    from hybridsgd.policies import REGISTRY, policy_config

    out = []
    for entry in REGISTRY.values():
        for spec in entry.examples:
            p = policy_config(spec)
            if real and entry.sim_only(p) is not None:
                continue
            own = {k: v for k, v in p.options.items()}
            if p.staleness != "none":
                own["staleness"] = p.staleness
            out.append((spec, entry.name, own))
    return out


def mounted_tmpfs(tmp_path, size: str):
    """A tmpfs of ``size`` (e.g. "64k") under ``tmp_path`` for a fixture to yield, unmounted
    after; the test is skipped where it cannot be mounted (it needs root)."""
    import pytest

    mnt = tmp_path / "disk"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)]).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)])


def async_from_trace(cfg: Config, trace: Trace) -> torch.Tensor:
    """The parameters an asynchronous run with plain SGD must end on, rebuilt from its trace
    alone in float64: update u subtracts lr_u times the gradient, on the worker's minibatch,
    at the version the trace says it read. Independent of any backend's transport: a
    worker that read a version being rewritten, or a gradient read before it was written,
    ends elsewhere."""
    from hybridsgd.backends.build import samplers_for, training_task

    task = training_task(cfg)
    feeds = samplers_for(cfg, task)
    versions = [task.initial_params().to(torch.float64)]
    g = trace.gradients
    applied = g[g.fate == "applied"].sort_values("update")
    assert applied["update"].tolist() == list(range(1, len(trace.updates) + 1))  # one each
    for row, lr in zip(applied.itertuples(), trace.updates["lr"], strict=True):
        x, y = task.batch(feeds[row.worker].batch(row.minibatch))
        read = versions[row.read_version].to(torch.float32)
        grad, _ = task.grad(read, x, y)
        versions.append(versions[-1] - lr * grad.to(torch.float64))
    return versions[-1].to(torch.float32)
