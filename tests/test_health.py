"""A run never ends quietly wrong: divergence and rejected gradients are said in one line
each and recorded in summary.json."""

from __future__ import annotations

import json

import hybridsgd as h
from hybridsgd.cli import main


def test_divergence_and_rejections_are_said_and_recorded(tmp_path, capsys):
    """lr = 1e30 on sync used to report "applied 16" with a NaN loss, no word, exit 0; then
    it said so after the summary table, still with exit 0."""
    args = ["run", "examples/digits-backup.toml", "--out", str(tmp_path / "r")]
    sets = ["run.updates=100", "policy.name=sync", "optimizer.lr=1e30", "optimizer.momentum=0"]
    assert main([*args, *[x for s in sets for x in ("--set", s)]]) == 3
    said = capsys.readouterr()
    err = [line for line in said.err.splitlines() if line.strip()]
    assert any(line.startswith("warning: diverged: the test loss is nan") for line in err)
    assert any("gradients were rejected (non-finite:" in line for line in err)
    assert err[-1].startswith("hybridsgd: the run completed but is not usable (diverged: ")
    assert err[-1].endswith("exit status 3")
    s = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert s["diverged"] and s["diverged_at"] == 20 and not s["healthy"]
    assert s["gradients"]["rejected"] == s["rejected_reasons"]["non-finite"] > 800


def test_a_run_whose_every_gradient_is_rejected_says_so():
    cfg = h.Config.from_dict(
        {
            "policy": {"name": "sync", "workers": 4},
            "faults": {"nan_workers": [0, 1, 2, 3]},
            "run": {"updates": 5},
        }
    )
    s = h.run(cfg).summary
    assert s["gradients"]["applied"] == 0 and not s["diverged"] and not s["healthy"]
    assert any("20 of 20 gradients were rejected" in w for w in s["warnings"])


def test_a_healthy_run_has_no_warning():
    s = h.run(h.Config.from_dict({"run": {"updates": 20}})).summary
    assert not s["diverged"] and s["diverged_at"] is None and s["warnings"] == []
    assert s["healthy"]


def test_an_unwritable_out_is_refused_before_training(tmp_path, capsys, monkeypatch):
    """--out /dev/null/x used to train fully, then fail while writing with a traceback."""
    import pytest

    from hybridsgd.backends.sim import backend as sim_backend

    trained = []
    monkeypatch.setattr(sim_backend, "replay", lambda *a, **k: trained.append(1))
    afile = tmp_path / "file"
    afile.write_text("")
    for out in ("/dev/null/x", str(afile)):
        assert main(["run", "examples/digits-backup.toml", "--out", out]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("hybridsgd: error: --out: ") and "\n" not in err
        assert (
            main(["compare", "examples/digits-backup.toml", "--policy", "sync", "--out", out]) == 2
        )
        capsys.readouterr()
        with pytest.raises(h.ConfigError):
            h.run(h.Config.from_dict({"run": {"updates": 2}}), out=out)
    assert not trained


def test_two_runs_into_one_directory_cannot_corrupt_each_other(tmp_path, capsys):
    """Both used to pass the "already holds a run" check and write through the same temp
    names. The directory is now locked for a run's whole life: the second gets one line."""
    import fcntl
    import subprocess
    import sys

    out = tmp_path / "r"
    out.mkdir()
    with open(out / ".lock", "a") as lock:  # another process holds the run directory
        fcntl.flock(lock, fcntl.LOCK_EX)
        code = (
            "import sys; from hybridsgd.cli import main; "
            f"sys.exit(main(['run', 'examples/digits-backup.toml', '--out', r'{out}', '--quiet']))"
        )
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 2
    assert (
        proc.stderr.strip() == f"hybridsgd: error: --out: {out} is in use by another run; "
        "wait for it or choose another"
    )
    assert not (out / "summary.json").exists()
    # once free, it runs; temp names carry the writer's pid, and none is left behind
    assert (
        main(
            [
                "run",
                "examples/digits-backup.toml",
                "--out",
                str(out),
                "--quiet",
                "--set",
                "run.updates=5",
            ]
        )
        == 0
    )
    assert not list(out.glob(".*.tmp"))


def test_the_python_api_and_the_cli_agree_on_an_existing_run(tmp_path):
    """h.run used to overwrite a run directory silently; --force over a checkpointed run
    left the old run's files beside the new config."""
    import pytest

    out = tmp_path / "r"
    cfg = h.Config.from_dict({"run": {"updates": 4}})
    h.run(cfg, out=out)
    before = (out / "summary.json").read_text()
    with pytest.raises(h.ConfigError, match="holds a run"):
        h.run(cfg.replace("run.seed=3"), out=out)
    assert (out / "summary.json").read_text() == before
    (out / "checkpoint.pt").write_bytes(b"an old run's checkpoint")
    with pytest.raises(h.ConfigError, match="interrupted run"):
        h.run(cfg.replace("run.seed=3"), out=out)
    h.run(cfg.replace("run.seed=3", "run.updates=3"), out=out, force=True)
    s = json.loads((out / "summary.json").read_text())
    assert s["seed"] == 3 and not (out / "checkpoint.pt").exists()
    assert h.Config.load(out / "config.toml").run.seed == 3


def test_ctrl_c_while_the_command_starts_is_one_line(tmp_path):
    """Ctrl-C in the first second used to print a traceback from inside torch's import."""
    import os
    import signal
    import sys
    import time

    from tests.helpers import as_in_a_terminal

    for delay in (0.3, 0.8):
        cli = [sys.executable, "-m", "hybridsgd", "run", "examples/digits-backup.toml"]
        proc = as_in_a_terminal([*cli, "--out", str(tmp_path / f"r{delay}")])
        time.sleep(delay)
        os.killpg(proc.pid, signal.SIGINT)
        err = proc.communicate(timeout=60)[1]
        assert proc.returncode == 130 and "Traceback" not in err, err
        assert err.strip().splitlines()[-1] == "hybridsgd: interrupted"


def test_socket_directories_of_dead_ray_drivers_are_removed(tmp_path):
    """After a SIGKILL of the Ray driver its /tmp/hybridsgd-* directory stayed; the next run
    removes those whose driver is gone, and only those."""
    import os

    from hybridsgd.backends.ray import remove_stale_docks

    dead = tmp_path / "hybridsgd-999999999-abc"
    alive = tmp_path / f"hybridsgd-{os.getpid()}-def"
    for d in (dead, alive):
        d.mkdir()
        (d / "jobs").write_text("")
    assert remove_stale_docks(str(tmp_path)) == [str(dead)]
    assert not dead.exists() and alive.exists()
