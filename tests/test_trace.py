"""The run directory: files a user can open, tables pandas reads in one line."""

from __future__ import annotations

import json

import pandas as pd
import pytest

import hybridsgd as h
from hybridsgd.cli import main
from tests.helpers import assert_consistent, small_config


def test_run_directory_round_trip(tmp_path):
    cfg = small_config(
        policy={"name": "backup", "workers": 5, "backups": 1}, run={"target_accuracy": 0.99}
    )
    result = h.run(cfg, out=tmp_path)
    g = pd.read_csv(tmp_path / "gradients.csv")
    assert list(g.columns) == [
        "gid",
        "worker",
        "minibatch",
        "read_version",
        "start_time",
        "end_time",
        "staleness",
        "fate",
        "update",
    ]
    assert set(g.fate) == {"applied", "cancelled"}
    assert list(pd.read_csv(tmp_path / "updates.csv").columns) == [
        "version",
        "time",
        "n_gradients",
        "mean_staleness",
        "max_staleness",
        "regime",
        "lr",
        "momentum",
    ]
    assert list(pd.read_csv(tmp_path / "evals.csv").columns) == [
        "version",
        "time",
        "loss",
        "accuracy",
    ]
    summary = json.loads((tmp_path / "summary.json").read_text())  # strict JSON: no NaN
    assert summary["gradients"]["applied"] == 4 * 40 and summary["gradients"]["cancelled"] == 40
    assert summary["time_to_target"] is None  # 99% is not reached in 40 updates
    trace = h.Trace.read(tmp_path)
    assert_consistent(trace)
    assert trace.summary["final_accuracy"] == result.summary["final_accuracy"]
    # the written config repeats the run
    again = h.run(h.Config.load(tmp_path / "config.toml"))
    assert again.trace.gradients.equals(result.trace.gradients)


def test_cli_commands_of_the_issue(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    example = __import__("pathlib").Path(__file__).parents[1] / "examples" / "digits-backup.toml"
    fast = ["--set", "run.updates=30", "--set", "run.eval_every=10"]
    assert main(["run", str(example), "--out", "runs/backup", *fast]) == 0
    assert (
        main(
            [
                "run",
                str(example),
                "--set",
                "policy.name=sync",
                "--set",
                "run.seed=3",
                "--out",
                "runs/sync",
                *fast,
            ]
        )
        == 0
    )
    out = capsys.readouterr()
    assert "policy.backups is not used by sync" in out.err
    b = json.loads((tmp_path / "runs/backup/summary.json").read_text())
    s = json.loads((tmp_path / "runs/sync/summary.json").read_text())
    assert b["policy"].startswith("backup") and s["policy"].startswith("sync") and s["seed"] == 3
    assert b["gradients"]["cancelled"] == 2 * 30 and s["gradients"]["cancelled"] == 0


def test_a_trace_row_names_the_samples_its_gradient_used():
    """samplers_for rebuilds each gradient's minibatch from (worker, minibatch): the first
    sync update, recomputed by hand from the trace rows, is the run's."""
    import torch

    import hybridsgd as h

    cfg = h.Config.from_dict(
        {"policy": {"name": "sync", "workers": 3}, "run": {"updates": 1}, "optimizer": {"lr": 0.1}}
    )
    result = h.run(cfg)
    task = h.build_task(cfg.task, cfg.run.seed)
    feeds = h.samplers_for(cfg, task)
    g = result.trace.gradients
    rows = g[g["update"] == 1]
    grads = []
    for worker, k in zip(rows.worker, rows.minibatch, strict=True):
        x, y = task.batch(feeds[worker].batch(k))
        grads.append(task.grad(task.initial_params(), x, y)[0].clone())
    want = task.initial_params() - 0.1 * torch.stack(grads).mean(dim=0)
    assert torch.allclose(result.params, want, atol=1e-6)


def test_build_policy_takes_a_spec_string():
    import hybridsgd as h

    assert h.build_policy("k_sync:k=4,workers=6").describe() == "k_sync(W=6, quorum=4)"
    with pytest.raises(h.ConfigError):
        h.build_policy("k_sync:k=9,workers=6")
