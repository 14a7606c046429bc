"""hybridsgd tune: each policy tuned on its own, on a validation split (docs/tuning.md)."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import hybridsgd as h
from hybridsgd.app.tuning import choose, parse_grid, plan, tune
from hybridsgd.errors import ConfigError

H_MIN, H_MAX = 0.1, 1.0
BEST = 2 / (H_MIN + H_MAX)  # full-batch gradient descent on a quadratic: the fastest lr


def quadratic() -> h.Config:
    """Full-batch gradient descent: one worker, every sample in each minibatch."""
    return h.Config.from_dict(
        {
            "task": {
                "name": "quadratic", "dim": 10, "samples": 200, "batch_size": 200,
                "curvature_min": H_MIN, "curvature_max": H_MAX, "noise": 0.0,
            },
            "policy": {"name": "sync", "workers": 1},
            "timing": {"compute": "constant:value=1"},
            "run": {"updates": 40, "eval_every": 40},
        }
    )  # fmt: skip


def test_tune_finds_the_known_best_lr_of_a_quadratic(tmp_path):
    """The contraction of gradient descent is max |1 - lr h| over the Hessian's eigenvalues,
    smallest at 2 / (h_min + h_max); the grid brackets it closely on both sides. The
    quadratic's loss is its training objective (its test set is its training set), so
    --validation 0 tunes on that objective."""
    grid = {"optimizer.lr": [BEST * f for f in (0.5, 0.8, 0.9, 1.0, 1.05, 1.2)]}
    p = plan(quadratic(), ["sync"], grid, validation=0.0)
    result = tune(p, tmp_path, jobs=1)
    assert result.chosen["sync"]["settings"]["optimizer.lr"] == pytest.approx(BEST)
    table = pd.read_csv(tmp_path / "tune.csv")
    ranked = table.sort_values("objective").reset_index()
    assert ranked.loc[0, "optimizer.lr"] == pytest.approx(BEST)
    assert not result.warnings


def test_validation_zero_is_refused_where_it_would_be_the_test_set():
    cfg = h.Config.from_dict({"task": {"name": "mlp-digits"}})
    with pytest.raises(ConfigError, match="--validation.*test set"):
        plan(cfg, ["sync"], validation=0.0)


@pytest.mark.slow
def test_grid_runs_score_the_validation_split_and_winners_the_test_set(tmp_path):
    cfg = h.Config.from_dict(
        {"task": {"name": "mlp-digits"}, "policy": {"workers": 4}, "run": {"updates": 30}}
    )
    p = plan(cfg, ["sync", "async"], {"optimizer.lr": [0.03, 0.1, 0.3]}, seeds=2, final_seeds=2)
    assert len(p.trials) == 2 * 3 * 2
    assert all(c.task.validation == 0.2 for _, _, c in p.trials)
    result = tune(p, tmp_path, jobs=2)
    trials = pd.read_csv(tmp_path / "tune.csv")
    assert len(trials) == 12 and set(trials.seed) == {0, 1}
    for label in ("sync", "async"):
        best = result.chosen[label]["settings"]["optimizer.lr"]
        mine = trials[trials.policy == label].groupby("optimizer.lr").objective.mean()
        assert best == mine.idxmin()
        for seed in (1000, 1001):
            s = json.loads((tmp_path / "runs" / f"{label}-s{seed}" / "summary.json").read_text())
            assert s["evaluated_on"] == "test" and s["config"]["optimizer"]["lr"] == best
            assert s["config"]["task"]["validation"] == 0
    h.report.build_report(tmp_path)
    summary = pd.read_csv(tmp_path / "summary.csv")
    assert "optimizer.lr" in summary and (tmp_path / "sensitivity_async.png").is_file()


def test_grid_runs_skip_the_target_search_and_choose_exactly_as_with_it(tmp_path, monkeypatch):
    """Scored on the final loss, a grid run does not search for the first update at the
    target (issue 38: the search was a fifth of an mlp-digits tune): the tables and the
    choices are those of grid runs that search, including a point that diverges."""
    from hybridsgd.app import tuning

    cfg = h.Config.from_dict(
        {
            "task": {"name": "mlp-digits"},
            "policy": {"workers": 4},
            "run": {"updates": 30, "eval_every": 10, "target_accuracy": 0.5},
        }
    )
    grid = {"optimizer.lr": [0.03, 0.3, 30.0]}
    specs = ["sync", "backup:backups=1", "async"]
    lean = plan(cfg, specs, grid)
    assert all(c.run.target_accuracy is None for _, _, c in lean.trials)
    monkeypatch.setattr(tuning, "LEAN_GRID", False)
    full = plan(cfg, specs, grid)
    assert all(c.run.target_accuracy == 0.5 for _, _, c in full.trials)
    a, b = tune(lean, tmp_path / "lean", jobs=1), tune(full, tmp_path / "full", jobs=1)
    pd.testing.assert_frame_equal(a.trials, b.trials)
    assert a.trials.diverged.any() and not a.trials.diverged.all()
    assert a.chosen == b.chosen and a.warnings == b.warnings
    # the winners' runs on the test set still find their time to target
    s = json.loads((tmp_path / "lean" / "runs" / "sync-s1000" / "summary.json").read_text())
    assert s["target_accuracy"] == 0.5 and s["time_to_target"] is not None


def test_a_diverged_point_is_ranked_last_not_a_crash(tmp_path):
    cfg = quadratic()
    grid = {"optimizer.lr": [BEST, 50.0]}  # 50: |1 - 50 h| > 1, the loss explodes
    result = tune(plan(cfg, ["sync"], grid, validation=0.0), tmp_path, jobs=1)
    table = pd.read_csv(tmp_path / "tune.csv")
    assert table.set_index("optimizer.lr").loc[50.0, "diverged"]
    assert math.isinf(table.set_index("optimizer.lr").loc[50.0, "objective"])
    assert result.chosen["sync"]["settings"]["optimizer.lr"] == pytest.approx(BEST)


def test_choose_warns_at_the_edge_of_the_grid_and_when_all_diverge():
    grid = {"optimizer.lr": [0.01, 0.1, 1.0]}
    rows = [
        {"policy": "a", "optimizer.lr": lr, "objective": obj, "diverged": d, "final_loss": obj}
        for lr, obj, d in [(0.01, 3.0, False), (0.1, 2.0, False), (1.0, 1.0, False)]
    ] + [
        {"policy": "b", "optimizer.lr": lr, "objective": math.inf, "diverged": True,
         "final_loss": math.nan}
        for lr in grid["optimizer.lr"]
    ]  # fmt: skip
    chosen, warnings = choose(pd.DataFrame(rows), grid)
    assert chosen["a"]["settings"] == {"optimizer.lr": 1.0}
    assert any("a: the best optimizer.lr = 1 is the largest" in w for w in warnings)
    assert any(w.startswith("b: every grid point diverged") for w in warnings)
    assert chosen["b"]["diverged"]


def test_a_grid_where_nothing_learns_is_flagged_not_chosen_silently(tmp_path):
    # the case: sync on mlp-digits at lr 3, 10 and 30 ends far above the initial
    # loss (chance accuracy) without crossing the divergence rule
    cfg = h.Config.from_dict(
        {"task": {"name": "mlp-digits"}, "policy": {"workers": 4}, "run": {"updates": 30}}
    )
    p = plan(cfg, ["sync"], {"optimizer.lr": [3.0, 10.0, 30.0]}, final_seeds=1)
    result = tune(p, tmp_path, jobs=1)
    trials = pd.read_csv(tmp_path / "tune.csv")
    assert not trials.diverged.any()  # what made the old choice silent
    assert (trials.final_loss > 0.9 * trials.initial_loss).all()
    assert result.chosen["sync"]["nothing_learned"]
    assert any(w.startswith("sync: nothing learned") for w in result.warnings)
    record = json.loads((tmp_path / "tune.json").read_text())
    assert any("nothing learned" in w for w in record["warnings"])


def test_a_point_that_learned_ranks_before_a_lower_objective_that_did_not():
    grid = {"optimizer.lr": [0.1, 1.0]}
    rows = [
        {"policy": "a", "optimizer.lr": 0.1, "objective": 1.5, "diverged": False,
         "final_loss": 1.5, "initial_loss": 2.3},
        {"policy": "a", "optimizer.lr": 1.0, "objective": 2.2, "diverged": False,
         "final_loss": 2.2, "initial_loss": 2.3},  # 0.96 of the start: nothing learned
        {"policy": "b", "optimizer.lr": 0.1, "objective": 1.0, "diverged": False,
         "final_loss": 1.0, "initial_loss": 0.2},  # lower objective, but above its start
        {"policy": "b", "optimizer.lr": 1.0, "objective": 1.2, "diverged": False,
         "final_loss": 1.2, "initial_loss": 2.3},
    ]  # fmt: skip
    chosen, warnings = choose(pd.DataFrame(rows), grid)
    assert chosen["a"]["settings"] == {"optimizer.lr": 0.1}
    assert chosen["b"]["settings"] == {"optimizer.lr": 1.0}
    assert not any("nothing learned" in w for w in warnings)


def test_default_grid_is_a_log_grid_of_lrs():
    p = plan(h.Config.from_dict({"task": {"name": "mlp-digits"}}), ["sync"])
    lrs = p.grid["optimizer.lr"]
    assert 6 <= len(lrs) <= 8 and np.all(np.diff(np.log(lrs)) > 0)
    adam = plan(h.Config.from_dict({"optimizer": {"name": "adam"}}), ["sync"])
    assert max(adam.grid["optimizer.lr"]) < max(lrs)


def test_parse_grid():
    assert parse_grid(["optimizer.lr=[0.1, 1]", 'optimizer.schedule=["constant", "cosine"]']) == {
        "optimizer.lr": [0.1, 1],
        "optimizer.schedule": ["constant", "cosine"],
    }


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--grid", "optimizer.lr=[]"], "--grid: optimizer.lr has an empty list"),
        (["--grid", "optimizer.lrr=[0.1]"], "optimizer.lrr: unknown key"),
        (["--grid", "optimizer.lr=[0.1,-1]"], "optimizer.lr: must be a positive number"),
        (["--grid", "optimizer.momentum=[0.5,1.5]"], "optimizer.momentum: must be in [0, 1)"),
        (["--objective", "time-to-target"], "needs run.target_accuracy"),
        (["--jobs", "0"], "--jobs: must be a whole number >= 1"),
        (["--policy", "sink"], "--policy: unknown policy"),
        (["--validation", "0.9"], "--validation"),
        (["--studies", "3"], "--studies: give --studies S and --trials T together"),
        (["--studies", "2", "--trials", "2", "--grid", "optimizer.lr=[0.1]"], "use --space"),
        (["--space", "optimizer.lr=log:0.001,1"], "--space: is for a tuning by studies"),
        (["--studies", "2", "--trials", "2", "--space", "optimizer.lr=log:0,1"], "LOW > 0"),
        (["--studies", "2", "--trials", "2", "--space", "optimizer.lr=1,2"], "--space: 'opt"),
        (["--studies", "2", "--trials", "2", "--space", "optimizer.lrr=lin:1,2"], "lrr: unknown"),
    ],
)
def test_bad_input_is_one_line_and_exit_2_before_any_run(tmp_path, args, says):
    config = tmp_path / "c.toml"
    config.write_text('[task]\nname = "mlp-digits"\n[run]\nupdates = 10\n')
    out = tmp_path / "out"
    cli = [sys.executable, "-m", "hybridsgd.cli", "tune", str(config), "--out", str(out)]
    cli += [*args] if "--policy" in args else ["--policy", "sync", *args]
    done = subprocess.run(cli, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert says in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not (out / "runs").exists() and not (out / "tune.csv").exists()


def test_time_to_target_needs_a_metric():
    cfg = quadratic().replace("run.target_accuracy=0.9")
    with pytest.raises(ConfigError, match="quadratic has none"):
        plan(cfg, ["sync"], objective="time-to-target", validation=0.0)


def test_a_new_comparison_never_mixes_with_an_old_one(tmp_path):
    """Runs left in --out would join the new report: refused, or removed with force."""
    cfg = quadratic()
    grid = {"optimizer.lr": [BEST]}
    tune(plan(cfg, ["sync", "async"], grid, validation=0.0), tmp_path, jobs=1)
    h.report.build_report(tmp_path)
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="--out.*already holds a comparison"):
        tune(plan(cfg, ["sync"], grid, validation=0.0), tmp_path, jobs=1)
    tune(plan(cfg, ["sync"], grid, validation=0.0), tmp_path, jobs=1, force=True)
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["sync-s1000"]
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert not (tmp_path / "sensitivity_async.png").exists()


def _stop_after(n: int):
    def progress(done: int, total: int, phase: str) -> None:
        if done >= n:
            raise KeyboardInterrupt

    return progress


@pytest.mark.slow
@pytest.mark.parametrize("stop", [3, 6, 8], ids=["30%", "60%", "80%"])
def test_an_interrupted_tuning_resumes_to_the_same_tables(tmp_path, stop, monkeypatch):
    """An interrupted tune used to leave tune.csv and runs/ without a report, and the rerun
    needed --force and recomputed everything. 6 grid runs (two grids of 3, each replayed
    in one pass when grouped) and 4 final runs: stopped after the first grid, after all
    the grid, after two final runs."""
    from hybridsgd.app.tuning import resumed_plan

    cfg = h.Config.from_dict(
        {"task": {"name": "mlp-digits"}, "policy": {"workers": 4}, "run": {"updates": 20}}
    )
    grid = {"optimizer.lr": [0.03, 0.1, 0.3]}
    p = plan(cfg, ["sync", "async"], grid, final_seeds=2, grouped=stop != 6)
    whole = tmp_path / "whole"
    tune(p, whole, jobs=1)
    h.report.build_report(whole)
    cut = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        tune(p, cut, jobs=1, progress=_stop_after(stop))
    assert not (cut / "tune.csv").exists() or stop > 6
    from hybridsgd.app import sweep

    ran: list[int] = []
    real = sweep.one_job
    monkeypatch.setattr(sweep, "one_job", lambda c, o, *a: ran.append(len(c)) or real(c, o, *a))
    assert resumed_plan(cut).grouped == p.grouped  # the same company as it started with
    tune(resumed_plan(cut), cut, jobs=1, resume=True)
    assert sum(ran) == 10 - stop  # what was done is not run again
    h.report.build_report(cut)
    for name in ("tune.csv", "summary.csv", "tune.json"):
        assert (cut / name).read_text() == (whole / name).read_text(), name


@pytest.mark.slow
def test_ctrl_c_twice_during_a_parallel_tune_prints_no_traceback(tmp_path):
    """A second Ctrl-C while a tune with worker processes stopped printed tracebacks from
    the workers (in one of three tries), and leaked semaphores. The Ctrl-Cs come once the
    first grid run is in the journal, with eleven to go (a fixed sleep let a fast CI
    machine finish the whole tune first)."""
    import signal

    from tests.helpers import as_in_a_terminal, signal_when

    out = tmp_path / "t"
    cli = [sys.executable, "-m", "hybridsgd", "tune", "examples/digits-stragglers.toml",
           "--policy", "sync", "--policy", "async",
           "--grid", "optimizer.lr=[0.003,0.01,0.03,0.1,0.3,1.0]",
           "--set", "run.time=300", "--jobs", "2", "--out", str(out)]  # fmt: skip
    proc = as_in_a_terminal(cli)

    def grid_runs_going() -> bool:
        journal = out / "tune-trials.jsonl"
        return journal.exists() and journal.stat().st_size > 0

    err = signal_when(proc, grid_runs_going, [signal.SIGINT, signal.SIGINT], poll=0.05)
    assert proc.returncode == 130
    assert "Traceback" not in err and "leaked" not in err, err
    assert err.strip().splitlines()[-1] == "hybridsgd: interrupted"


@pytest.mark.slow
def test_studies_of_quasi_random_trials_score_the_median_of_each_studys_best(tmp_path):
    """AlgoPerf's shape (issue 32): ``--studies 3 --trials 5``. Each study draws the same
    points for every policy, on its own seed; a policy scores the median over studies of
    its best trial; the best trial of the median study is rerun; the report draws the
    performance profile across the studies."""
    cfg = h.Config.from_dict(
        {"task": {"name": "mlp-digits"}, "policy": {"workers": 4}, "run": {"updates": 20}}
    )
    p = plan(cfg, ["sync", "async"], studies=3, trials=5, final_seeds=1)
    result = tune(p, tmp_path, jobs=1)
    table = pd.read_csv(tmp_path / "tune.csv")
    assert len(table) == 30 and sorted(set(table.study)) == [0, 1, 2]
    assert (table.seed == table.study).all()  # study s on seed run.seed + s
    keys = ["optimizer.lr", "optimizer.momentum"]
    for _, study in table.groupby("study"):  # the same draws for both policies
        by = {k: v[keys].to_numpy() for k, v in study.groupby("policy")}
        np.testing.assert_array_equal(by["sync"], by["async"])
    assert table["optimizer.lr"].between(0.001, 1.0).all()
    assert table["optimizer.momentum"].between(0.0, 0.95).all()
    for label, runs in table.groupby("policy"):
        learned = runs.final_loss <= 0.9 * runs.initial_loss
        best = [
            min(
                [o for o, ok in zip(r.objective, learned[r.index], strict=True) if ok] or [math.inf]
            )
            for _, r in runs.groupby("study")
        ]
        c = result.chosen[label]
        assert c["best_per_study"] == best and c["objective"] == float(np.median(best))
        median_study = runs[runs.study == c["study"]]
        assert c["objective"] == median_study.objective.min()
        assert c["settings"]["optimizer.lr"] in set(median_study["optimizer.lr"])
    from hybridsgd.app.tuning import resumed_plan

    again = resumed_plan(tmp_path)  # what tune --resume plans from the directory
    assert [c.to_dict() for *_, c in again.trials] == [c.to_dict() for *_, c in p.trials]
    h.report.build_report(tmp_path)
    assert (tmp_path / "profile.png").is_file()
    assert "median over studies of its best trial" in (tmp_path / "report.html").read_text()


def test_sobol_draws_are_stratified_in_each_dimension():
    """8 trials (a power of two): one lr in each eighth of the log range and one momentum
    in each eighth of its range, as a Sobol sequence's first 2^m points are."""
    from hybridsgd.app.tuning import default_space, sobol_points

    cfg = h.Config.from_dict({"task": {"name": "mlp-digits"}})
    dims = default_space(cfg, "hybrid:threshold=linear:start=0,end=10")
    assert [d.key for d in dims] == ["optimizer.lr", "optimizer.momentum", "optimizer.async_lr"]
    pts = sobol_points(dims, 8, seed=0)
    u_lr = [math.log(p["optimizer.lr"] / 0.001) / math.log(1000) for p in pts]
    u_m = [p["optimizer.momentum"] / 0.95 for p in pts]
    for u in (u_lr, u_m):
        assert sorted(int(x * 8 - 1e-3) for x in u) == list(range(8))
    assert pts != sobol_points(dims, 8, seed=1)  # another study, another scramble


def test_a_search_space_where_nothing_learns_is_flagged(tmp_path):
    cfg = h.Config.from_dict(
        {"task": {"name": "mlp-digits"}, "policy": {"workers": 4}, "run": {"updates": 30}}
    )
    p = plan(cfg, ["sync"], studies=2, trials=2, space=["optimizer.lr=log:3,30"], final_seeds=1)
    result = tune(p, tmp_path, jobs=1)
    assert result.chosen["sync"]["nothing_learned"]
    assert result.chosen["sync"]["objective"] == math.inf
    assert any(w.startswith("sync: nothing learned") for w in result.warnings)


def test_profile_across_tunings_prints_speed_ups_and_draws(tmp_path, capsys):
    from hybridsgd.cli import main

    for name, times in (("w1", {"sync": 10.0, "async": 5.0}), ("w2", {"sync": 8.0, "async": 8.0})):
        (tmp_path / name).mkdir()
        chosen = {p: {"objective": t, "settings": {}} for p, t in times.items()}
        (tmp_path / name / "tune.json").write_text(json.dumps({"chosen": chosen}))
    out = tmp_path / "profile.png"
    assert (
        main(["perf-profile", str(tmp_path / "w1"), str(tmp_path / "w2"), "--out", str(out)]) == 0
    )
    said = capsys.readouterr().out
    assert "1.41x" in said and out.is_file()  # async: sqrt(10/5 * 8/8)
    assert main(["perf-profile", str(tmp_path), "--out", str(out)]) == 2
    assert "holds no tuning" in capsys.readouterr().err
    assert main(["perf-profile", str(tmp_path / "w1"), "--baseline", "x", "--out", str(out)]) == 2


def test_a_sweep_error_is_one_line_with_nothing_before_it(tmp_path, capfd):
    """Issue 34: compare's errors began with a blank line (its progress bar had started),
    and a grid list without brackets said only "must be a number"."""
    from hybridsgd.cli import main

    cfg = "examples/digits-stragglers.toml"
    assert main(["compare", cfg, "--policy", "nosuch", "--out", str(tmp_path / "c")]) == 2
    err = capfd.readouterr().err
    assert err.startswith("hybridsgd: error: --policy") and err.count("\n") == 1, repr(err)
    args = ["tune", cfg, "--policy", "sync", "--grid", "optimizer.lr=0.1,0.3"]
    assert main([*args, "--out", str(tmp_path / "t")]) == 2
    err = capfd.readouterr().err
    assert err == (
        "hybridsgd: error: --grid: optimizer.lr: write several values as a list in brackets: "
        "--grid optimizer.lr=[0.1,0.3]\n"
    )
