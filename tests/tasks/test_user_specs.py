"""A user's own model named in a config (``task.name = "FILE.py:build"``): every command,
the simulator and the local backend, h.tune / h.compare, its errors, and a model with
dropout that a config and a seed determine (docs/tasks.md, "Your own model")."""

from __future__ import annotations

import json
import textwrap

import pandas as pd
import pytest
import torch

import hybridsgd as h
from hybridsgd.cli import main
from hybridsgd.rundir import CHECKPOINT

MODEL = '''
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn

import hybridsgd as h


class SmallCNN(nn.Module):
    """BatchNorm and dropout: the cases that need a model's own training-mode semantics."""

    def __init__(self, width):
        super().__init__()
        self.conv = nn.Conv2d(1, width, 3, padding=1)
        self.bn = nn.BatchNorm2d(width)
        self.drop = nn.Dropout(0.2)
        self.fc = nn.Linear(width * 16, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn(self.conv(x.reshape(-1, 1, 8, 8)))), 2)
        return self.fc(self.drop(x.flatten(1)))


def build(cfg, seed):
    d = load_digits()
    x = torch.tensor(d.data, dtype=torch.float32) / 16
    y = torch.tensor(d.target)
    model = SmallCNN(cfg.options.get("width", 4))
    return h.Task.from_module(model, (x[:600], y[:600]), F.cross_entropy, test=(x[1500:], y[1500:]))


def as_tuple(cfg):  # (model, train, loss, test) is a task too
    t = build(cfg, 0)
    return t.model, (t.x_train, t.y_train), F.cross_entropy, (t.x_test, t.y_test)


def wrong(cfg):
    return 3


def raises(cfg):
    raise RuntimeError("no data\\non this machine")
'''


@pytest.fixture
def own(tmp_path):
    """The model file and a config naming it (relative to the config's folder)."""
    (tmp_path / "mymodel.py").write_text(MODEL)
    cfg = tmp_path / "own.toml"
    cfg.write_text(
        textwrap.dedent(
            """
            [task]
            name = "mymodel.py:build"
            width = 3
            batch_size = 16
            [policy]
            name = "async"
            workers = 3
            [optimizer]
            lr = 0.1
            [run]
            updates = 24
            eval_every = 12
            """
        )
    )
    return cfg


def test_a_config_names_its_own_model_file_and_passes_it_options(own, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path.parent)  # the file is found relative to the config
    cfg = h.Config.load(own)
    assert cfg.task.name == f"{tmp_path / 'mymodel.py'}:build"
    assert cfg.task.options == {"width": 3}
    task = h.build_task(cfg.task, seed=0)
    assert task.model.conv.out_channels == 3 and task.name == "mymodel.py:build"
    again = h.Config.from_dict(cfg.to_dict())  # what a run directory's config.toml says
    assert again.task.options == {"width": 3} and again.task.name == cfg.task.name
    wider = h.Config.load(own, ["task.width=5"])  # --set reaches the user's keys too
    assert h.build_task(wider.task, 0).model.conv.out_channels == 5
    # the model is initialised from the seed, and the caller's random state is left alone
    state = torch.get_rng_state()
    a, b = h.build_task(cfg.task, 1), h.build_task(cfg.task, 1)
    assert torch.equal(a.initial_params(), b.initial_params())
    assert not torch.equal(a.initial_params(), h.build_task(cfg.task, 2).initial_params())
    assert torch.equal(torch.get_rng_state(), state)
    other = cfg.replace(f"task.name={tmp_path / 'mymodel.py'}:as_tuple")
    assert h.build_task(other.task, 0).numel == task.numel


def test_a_model_with_dropout_gives_the_same_run_for_the_same_config(own, tmp_path):
    cfg = h.Config.load(own)
    first = h.run(cfg, out=tmp_path / "a")
    second = h.run(h.Config.load(tmp_path / "a" / "config.toml"), out=tmp_path / "b")
    assert torch.equal(first.params, second.params)
    other = h.run(cfg.replace("run.seed=1"))
    assert not torch.equal(first.params, other.params)


def test_a_checkpointed_run_with_dropout_resumes_bit_for_bit(own, tmp_path):
    cfg = h.Config.load(own, ["run.updates=40", "run.checkpoint_every=10", "run.eval_every=10"])
    whole = h.run(cfg, out=tmp_path / "whole")

    def stop(phase, done, total):
        if phase == "train" and done >= 25:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        h.run(cfg, out=tmp_path / "cut", progress=stop)
    assert (tmp_path / "cut" / CHECKPOINT).is_file()
    resumed = h.resume(tmp_path / "cut")
    assert resumed.summary["resumed_from"] == 20
    assert torch.equal(resumed.params, whole.params)


@pytest.mark.slow
def test_every_command_takes_the_model_file(own, tmp_path, capsys):
    assert main(["run", str(own), "--out", str(tmp_path / "r"), "--quiet"]) == 0
    assert main(["compare", str(own), "--policy", "sync", "--policy", "async", "--seeds", "2",
                 "--jobs", "2", "--out", str(tmp_path / "cmp")]) == 0  # fmt: skip
    summary = pd.read_csv(tmp_path / "cmp" / "summary.csv")
    assert len(summary) == 4 and summary["final_loss"].notna().all()
    assert main(["noise-scale", str(own), "--updates", "10", "--points", "2",
                 "--minibatches", "8", "--json"]) == 0  # fmt: skip
    out = capsys.readouterr().out.strip().splitlines()[-1]
    assert len(json.loads(out)["points"]) == 2
    spec = f"{tmp_path / 'mymodel.py'}:build"
    for flag in (spec, str(own)):  # a file spec or the config itself as the curvature's task
        assert main(["predict", "--policy", "async", "--workers", "3", "--compute", "exp:mu=1",
                     "--lr", "0.1", "--curvature", flag, "--json"]) == 0  # fmt: skip
        assert json.loads(capsys.readouterr().out)["curvature"] > 0


@pytest.mark.slow
def test_the_python_tune_chooses_what_the_command_chooses(own, tmp_path):
    args = ["--policy", "sync", "--policy", "async", "--grid", "optimizer.lr=[0.03,0.3]",
            "--final-seeds", "1", "--jobs", "1"]  # fmt: skip
    assert main(["tune", str(own), *args, "--out", str(tmp_path / "cli")]) == 0
    cli = json.loads((tmp_path / "cli" / "tune.json").read_text())
    r = h.tune(own, ["sync", "async"], {"optimizer.lr": [0.03, 0.3]}, final_seeds=1, jobs=1,
               out=tmp_path / "api")  # fmt: skip
    assert r.chosen == cli["chosen"]
    assert set(r.summary["policy"]) == {"sync", "async"} and r.report.is_file()
    assert r.trials is not None and len(r.trials) == 4
    assert r.verdict.startswith("Objective:")


@pytest.mark.slow
def test_the_python_compare_takes_a_task_object(own, tmp_path):
    from hybridsgd.tasks.user import build

    cfg = h.Config.load(own)
    task = build(cfg.task, 0)
    r = h.compare(cfg, ["sync", "async"], seeds=2, task=task, out=tmp_path / "obj", jobs=2)
    assert len(r.summary) == 4
    # a Task object trains as h.run(cfg, task=...) does, in the pool's processes too
    alone = h.run(cfg.replace("policy.name=async", "run.seed=1", "run.threads=1"), task=task)
    row = r.summary.set_index(["policy", "seed"]).loc[("async", 1)]
    assert row["final_loss"] == pytest.approx(alone.summary["final_loss"], abs=0)


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("missing.py:build", "task.name: no such file: "),
        ("mymodel.py:nope", "task.name: mymodel.py has no function 'nope' (it defines: "),
        ("mymodel.py:wrong", "task.name: mymodel.py:wrong returned int; return an h.Task"),
        ("mymodel.py:raises", "task.name: mymodel.py:raises raised RuntimeError: no data on"),
        ("broken.py:build", "task.name: importing broken.py failed: ModuleNotFoundError: No "),
        ("no_such_module:build", "task.name: no module named 'no_such_module': install it"),
        ("mymodel.py:1x", "task.name: 'mymodel.py:1x': write FILE.py:FUNCTION"),
    ],
)
def test_a_bad_model_file_is_one_line(own, tmp_path, capsys, monkeypatch, spec, expected):
    (tmp_path / "broken.py").write_text("import not_installed_anywhere\n")
    monkeypatch.chdir(tmp_path)  # --set names files relative to the current directory
    assert main(["run", str(own), "--set", f"task.name={spec}", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expected in err, err


def test_a_python_file_given_as_the_config_says_how_to_name_it(tmp_path, capsys):
    (tmp_path / "mymodel.py").write_text(MODEL)
    assert main(["run", str(tmp_path / "mymodel.py"), "--quiet"]) == 2
    assert 'task.name = "mymodel.py:build"' in capsys.readouterr().err


def test_options_belong_to_a_users_task_only():
    with pytest.raises(h.ConfigError, match="task.width: unknown key"):
        h.Config.from_dict({"task": {"name": "mlp-digits", "width": 3}})
    with pytest.raises(h.ConfigError, match="task.options: are passed to a task of your own"):
        h.Config.from_dict({"task": {"name": "mlp-digits", "options": {"width": 3}}})


@pytest.mark.slow
def test_the_local_backend_imports_the_model_file_in_its_workers(own, tmp_path):
    cfg = h.Config.load(own, ["run.backend=local", "run.updates=8", "run.eval_every=4"])
    r = h.run(cfg, out=tmp_path / "local")
    assert r.summary["updates"] == 8 and not r.summary["lost_workers"]
    assert r.summary["error"] is None
    assert torch.isfinite(r.params).all()
    short = ["--set", "run.backend=local", "--set", "run.updates=6", "--set", "run.eval_every=3"]
    assert main(["compare", str(own), "--policy", "sync", "--policy", "async", *short,
                 "--out", str(tmp_path / "cmp")]) == 0  # fmt: skip
    summary = pd.read_csv(tmp_path / "cmp" / "summary.csv")
    assert len(summary) == 2 and summary["final_loss"].notna().all()
    assert main(["tune", str(own), "--policy", "async", "--grid", "optimizer.lr=[0.05,0.1]",
                 "--final-seeds", "1", *short, "--out", str(tmp_path / "tune")]) == 0  # fmt: skip
    tuned = json.loads((tmp_path / "tune" / "tune.json").read_text())
    assert tuned["chosen"]["async"]["settings"]["optimizer.lr"] in (0.05, 0.1)
