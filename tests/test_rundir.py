"""Never lose a finished run: the final write keeps the small files first and falls back to
another directory, and --force replaces the old run only once the new one completes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest

import hybridsgd as h
from hybridsgd.cli import main
from hybridsgd.rundir import REPLACED
from tests.helpers import mounted_tmpfs
from tests.test_checkpoint import stop_at

RUN = ["run", "examples/digits-backup.toml", "--quiet"]


@pytest.fixture
def tiny_disk(tmp_path):
    """A 64 KiB tmpfs (root only): room for a run's config, summary and small tables, not
    for the gradients table of a run of 400 updates (about 380 KB)."""
    yield from mounted_tmpfs(tmp_path, "64k")


def rescued(err: str) -> Path:
    m = re.search(r"the whole run is in (\S+?)(;|$)", err)
    assert m, err
    return Path(m[1])


@pytest.mark.parametrize("backend", ["sim", "local"])
def test_a_full_disk_at_the_final_write_keeps_the_summary_and_a_whole_copy(
    tiny_disk, capsys, backend
):
    """It used to leave only gradients.csv (local) or only .lock (sim), with a message
    that pointed at a --resume that had nothing to resume."""
    out = tiny_disk / "r"
    sets = ["run.updates=400", f"run.backend={backend}", "policy.workers=4"]
    assert main([*RUN, "--out", str(out), *[x for s in sets for x in ("--set", s)]]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "while writing gradients.csv" in err, err
    assert "--resume" not in err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["updates"] == 400 and summary["incomplete"] == ["gradients.csv"]
    assert (out / "config.toml").is_file()
    copy = rescued(err)
    whole = h.Trace.read(copy)  # the fallback holds the whole run
    assert len(whole.updates) == 400 and whole.summary["backend"] == backend
    assert len(pd.read_csv(copy / "gradients.csv")) == len(whole.gradients) >= 1600
    # the directory says it is incomplete: a new run into it needs --force
    assert main([*RUN, "--out", str(out), "--set", "run.updates=5"]) == 2
    capsys.readouterr()


def test_force_keeps_the_old_run_until_the_new_one_completes(tmp_path, capsys):
    """--force used to delete the old run first: a rerun that hit a full disk lost both, and
    a SIGINT 2 s into one left only .lock."""
    out = tmp_path / "r"
    assert main([*RUN, "--out", str(out), "--set", "run.updates=30"]) == 0
    old = {n: (out / n).read_bytes() for n in ("summary.json", "gradients.csv")}
    # interrupted with nothing written: the old run goes back in place at the next claim
    cfg = h.Config.load("examples/digits-backup.toml", ["run.updates=60"])
    with pytest.raises(KeyboardInterrupt):
        h.run(cfg, out=out, force=True, progress=stop_at(20))
    assert (out / REPLACED / "summary.json").read_bytes() == old["summary.json"]
    assert not (out / "summary.json").exists()
    with pytest.raises(h.ConfigError, match="holds a run"):
        h.run(cfg, out=out)  # refused: the old run is back, and it is not replaced
    assert (out / "summary.json").read_bytes() == old["summary.json"]
    assert not (out / REPLACED).exists()
    # interrupted with a checkpoint: the new run is resumable, the old one kept aside
    ck = cfg.replace("run.checkpoint_every=10")
    with pytest.raises(KeyboardInterrupt):
        h.run(ck, out=out, force=True, progress=stop_at(25))
    assert (out / "checkpoint.pt").is_file()
    assert (out / REPLACED / "gradients.csv").read_bytes() == old["gradients.csv"]
    # another --force drops the unfinished replacement, never the run it replaces
    with pytest.raises(KeyboardInterrupt):
        h.run(ck, out=out, force=True, progress=stop_at(15))
    assert (out / REPLACED / "gradients.csv").read_bytes() == old["gradients.csv"]
    # the replacement completes: then, and only then, the old run goes
    done = h.resume(out, progress=False)
    assert done.summary["updates"] == 60 and not (out / REPLACED).exists()
    assert json.loads((out / "summary.json").read_text())["updates"] == 60


def test_force_with_a_full_disk_keeps_the_old_run_whole(tiny_disk, capsys):
    out = tiny_disk / "r"
    assert main([*RUN, "--out", str(out), "--set", "run.updates=20"]) == 0
    old = {n: (out / n).read_bytes() for n in ("summary.json", "gradients.csv", "evals.csv")}
    capsys.readouterr()
    assert main([*RUN, "--out", str(out), "--force", "--set", "run.updates=400"]) == 1
    err = capsys.readouterr().err.strip()
    assert f"the run it replaces is kept in {out / REPLACED}" in err
    for name, data in old.items():
        assert (out / REPLACED / name).read_bytes() == data
    assert len(h.Trace.read(rescued(err)).updates) == 400


def test_an_unwritable_directory_at_the_final_write_is_one_line(tmp_path, capsys, monkeypatch):
    """chmod 500 on the run directory mid-run used to give a 49-line PermissionError
    traceback and lose the run. (Root ignores the mode, so the write is refused here.)"""
    out = tmp_path / "r"
    real = pd.DataFrame.to_csv

    def refused(self, path, *a, **k):
        if str(path).startswith(str(out)):
            raise PermissionError(13, "Permission denied", str(path))
        return real(self, path, *a, **k)

    monkeypatch.setattr(pd.DataFrame, "to_csv", refused)
    assert main([*RUN, "--out", str(out), "--set", "run.updates=10"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"hybridsgd: error: cannot write {out}/") and "Permission denied" in err
    assert "\n" not in err and (out / "summary.json").is_file()
    assert len(h.Trace.read(rescued(err)).updates) == 10


def test_a_run_killed_before_its_first_checkpoint_does_not_hold_the_directory(tmp_path):
    """Its config.toml (written when checkpoints start) used to make the directory "hold a
    run" that had nothing to keep or resume."""
    out = tmp_path / "r"
    out.mkdir()
    (out / "config.toml").write_text("[run]\nupdates = 5\ncheckpoint_every = 100\n")
    r = h.run(h.Config.from_dict({"run": {"updates": 5}}), out=out, progress=False)
    assert r.summary["updates"] == 5 and h.Trace.read(out).summary["updates"] == 5


def test_a_replacement_killed_before_its_first_checkpoint_gives_the_old_run_back(tmp_path):
    out = tmp_path / "r"
    h.run(h.Config.from_dict({"run": {"updates": 5}}), out=out, progress=False)
    old = (out / "summary.json").read_bytes()
    (out / REPLACED).mkdir()  # what --force with checkpoints leaves when killed early
    for name in ("summary.json", "config.toml", "gradients.csv", "updates.csv", "evals.csv"):
        (out / name).rename(out / REPLACED / name)
    (out / "config.toml").write_text("[run]\nupdates = 9\ncheckpoint_every = 100\n")
    with pytest.raises(h.ConfigError, match="holds a run"):
        h.run(h.Config.from_dict({"run": {"updates": 5}}), out=out, progress=False)
    assert (out / "summary.json").read_bytes() == old and not (out / REPLACED).exists()
