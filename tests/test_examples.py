"""The examples that ship inside the package (hybridsgd examples): listed, copied, and each
one's own documented command runs without a note."""

from __future__ import annotations

import re
import shlex

import pytest

from hybridsgd import examples
from hybridsgd.cli import main


def documented(name: str) -> list[list[str]]:
    """The `hybridsgd run ...` commands a shipped config's header documents."""
    text = examples.resources.files(examples.__name__).joinpath(name).read_text()
    header = "\n".join(line.lstrip("# ") for line in text.splitlines() if line.startswith("#"))
    header = header.replace("\\\n", " ")
    return [shlex.split(m)[1:] for m in re.findall(r"hybridsgd run [^\n]*", header)]


def test_the_list_names_every_shipped_file(capsys):
    assert main(["examples"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in examples.FILES)


@pytest.mark.parametrize("name", [n for n in examples.FILES if n.endswith(".toml")])
def test_each_configs_documented_command_runs_without_a_note(name, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["examples", "--copy"]) == 0
    commands = documented(name)
    assert commands, f"{name} documents no command"
    for args in commands:
        args = [a for a in args if a != "--force"]
        if "--out" not in args:
            args += ["--out", str(tmp_path / "run")]
        assert main([*args, "--set", "run.updates=3", "--set", "run.time=none", "--force"]) == 0
        err = capsys.readouterr().err
        assert "note:" not in err, err


def test_copy_keeps_what_is_there_unless_forced(tmp_path, capsys):
    assert main(["examples", "--copy", str(tmp_path)]) == 0
    (tmp_path / "own-model.toml").write_text("# mine\n")
    assert main(["examples", "--copy", str(tmp_path)]) == 2
    assert "add --force" in capsys.readouterr().err
    assert (tmp_path / "own-model.toml").read_text() == "# mine\n"
    assert main(["examples", "--copy", str(tmp_path), "--force"]) == 0
    assert (tmp_path / "own-model.toml").read_text() != "# mine\n"


@pytest.mark.slow
def test_the_diloco_reproduction_runs_quick(tmp_path):
    """examples/diloco_equal_time.py --quick (docs/reproductions.md section 11): every form
    tuned and rerun, each final test loss finite, its table and plot written."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).parents[1] / "examples" / "diloco_equal_time.py"
    done = subprocess.run(
        [sys.executable, str(script), "--quick", "--jobs", "1", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((tmp_path / "results.json").read_text())
    forms = {(r["policy"], r["steps"]) for r in results["rows"]}
    assert forms == {("sync", 1), ("async", 1), ("sync", 4), ("async", 4)}
    assert all(len(r["test_loss"]) == 2 for r in results["rows"])
    assert all(0 < v < 10 for r in results["rows"] for v in r["test_loss"])
    assert (tmp_path / "equal_time.png").stat().st_size > 0
    assert "| sync | 4 |" in (tmp_path / "results.md").read_text()


@pytest.mark.slow
def test_the_optimal_time_check_runs_quick_and_its_bound_is_the_papers(tmp_path, monkeypatch):
    """examples/optimal_time_check.py --quick (docs/reproductions.md sections 6-7): the
    quadratic's constants and T_opt recomputed here in float64 from the paper's definition,
    every policy on both fresh seeds, and a crossing found by runs of doubling length equal to
    the one a single long run finds (the doubling assumes a short run is a long one's prefix)."""
    import importlib.util
    import json
    import sys
    from pathlib import Path

    import numpy as np

    path = Path(__file__).parents[1] / "examples" / "optimal_time_check.py"
    spec = importlib.util.spec_from_file_location("optimal_time_check", path)
    ot = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, ot)  # its dataclasses look themselves up
    spec.loader.exec_module(ot)
    ot.main(["--quick", "--out", str(tmp_path)])
    q = json.loads((tmp_path / "results.json").read_text())["quadratic"]

    task = ot.build_task(ot.base("quadratic", {}, 1, 1).task, 0)
    a, b = task.x_train.numpy().astype(np.float64), task.y_train.numpy().astype(np.float64)
    x0 = task.initial_params().numpy().astype(np.float64)
    hess = a.T @ a / len(a)
    x_star = np.linalg.solve(hess, a.T @ b / len(a))
    f = lambda x: 0.5 * np.mean((a @ x - b) ** 2)  # noqa: E731
    per = a * (a @ x0 - b)[:, None]  # per-sample gradients at x0
    sigma2 = ((per - per.mean(0)) ** 2).sum(1).mean() / 32  # of a batch-32 gradient
    g0 = float(np.sum(per.mean(0) ** 2))
    assert q["L"] == pytest.approx(np.linalg.eigvalsh(hess).max(), rel=1e-9)
    assert q["delta"] == pytest.approx(f(x0) - f(x_star), rel=1e-9)
    assert q["sigma2"] == pytest.approx(sigma2, rel=1e-9)
    assert q["g0"] == pytest.approx(g0, rel=1e-6)
    # T_opt = (L Delta / eps) min_m (m + sigma^2 / eps) / sum_{i<=m} 1 / tau_(i), with
    # tau the workers' mean times: exp(1) times the speed classes 1, 2, 8, 32, four each
    tau = np.repeat([1.0, 2.0, 8.0, 32.0], 4)
    eps = g0 / 100
    per_m = [(m + sigma2 / eps) / np.sum(1 / tau[:m]) for m in range(1, 17)]
    (t_opt, m_star), = q["bounds"]  # fmt: skip
    assert t_opt == pytest.approx(q["L"] * q["delta"] / eps * min(per_m), rel=1e-6)
    assert m_star == int(np.argmin(per_m)) + 1

    rows = {r["label"]: r for r in q["rows"]}
    assert set(rows) == {ot.SYNC, ot.ASYNC, ot.M_SYNC, ot.RENNALA, ot.RINGMASTER, ot.STOPS}
    assert all(len(r["ratio"][0]) == 2 for r in rows.values())
    reached = [v for r in rows.values() for v in r["ratio"][0] if np.isfinite(v)]
    assert reached and all(0 < v <= q["cap"] for v in reached)
    # the crossing of async's first fresh seed: doubling runs against one long run
    lr, seed = rows[ot.ASYNC]["lr"][0], q["seeds"][0]
    task.evaluate = lambda params: (ot.GradNorm(task, task.x_train, task.y_train, True)(params), 0)
    long = ot.crossings(ot.base("quadratic", {"name": "async"}, lr, 0.4 * t_opt, seed), task, [eps])
    assert long[0] / t_opt == pytest.approx(rows[ot.ASYNC]["ratio"][0][0], rel=1e-12)
    assert "| async | " in (tmp_path / "results.md").read_text()
