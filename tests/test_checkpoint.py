"""Checkpoints: atomic, and a resumed simulated run ends bit for bit like the uninterrupted one."""

from __future__ import annotations

import re

import pandas as pd
import pytest
import torch

from hybridsgd import Config
from hybridsgd.cli import main
from hybridsgd.runner import CHECKPOINT, resume, run
from tests.helpers import make_config

CASES = {
    # stale gradients pending across the checkpoint, momentum, a robust rule, a noise attack
    "k_async-median-gaussian": {
        "policy": {"name": "k_async", "workers": 6, "k": 3, "aggregator": "median"},
        "optimizer": {"momentum": 0.9, "lr": 0.05},
        "faults": {"byzantine_workers": [1], "attack": "gaussian:std=1"},
    },
    "async-adam-replay-nan": {
        "policy": {"name": "async", "workers": 4},
        "optimizer": {"name": "adam", "lr": 0.01},
        "faults": {"byzantine_workers": [0], "attack": "stale-replay", "nan_workers": [2]},
    },
    "backup-drop": {"policy": {"name": "backup", "workers": 5, "backups": 2, "late": "drop"}},
    # delay compensation: its mean square (server state) and the parameters each pending
    # gradient read
    "dc_asgd-adaptive": {
        "policy": {"name": "dc_asgd", "workers": 4, "lam": 0.2, "adaptive": True},
        "timing": {"compute": "lognormal:mu=0,sigma=0.5"},
    },
    # a gradient table (server state) across the checkpoint, mid-cycle, and held gradients
    "ringleader-dirichlet": {
        "policy": {"name": "ringleader", "workers": 3},  # 40 is mid-cycle
        "task": {"split": "dirichlet", "alpha": 0.3},
        "timing": {"compute": "lognormal:mu=0,sigma=0.5"},
    },
}


def config(case: str) -> Config:
    base = {
        "task": {"name": "mlp-digits", "batch_size": 16},
        "run": {"updates": 90, "eval_every": 10, "checkpoint_every": 20},
    }
    return make_config(base, **CASES[case])


def stop_at(version: int):
    def progress(phase: str, v: int, total: int) -> None:
        if phase == "train" and v == version:
            raise KeyboardInterrupt

    return progress


def tables(d) -> list[pd.DataFrame]:
    return [pd.read_csv(d / f"{n}.csv") for n in ("gradients", "updates", "evals")]


@pytest.mark.parametrize("case", CASES)
def test_a_resumed_run_ends_bit_for_bit_like_the_uninterrupted_one(tmp_path, case):
    whole = run(config(case), out=tmp_path / "whole")
    assert not (tmp_path / "whole" / CHECKPOINT).exists()  # removed when the run completes
    with pytest.raises(KeyboardInterrupt):
        run(config(case), out=tmp_path / "cut", progress=stop_at(55))
    assert (tmp_path / "cut" / CHECKPOINT).is_file()
    resumed = resume(tmp_path / "cut")
    assert resumed.summary["resumed_from"] == 40
    assert torch.equal(resumed.params, whole.params)
    for a, b in zip(tables(tmp_path / "whole"), tables(tmp_path / "cut"), strict=True):
        pd.testing.assert_frame_equal(a, b)


def test_a_crash_during_a_checkpoint_write_leaves_the_previous_one(tmp_path, monkeypatch):
    from hybridsgd import rundir

    whole = run(config("backup-drop"), out=tmp_path / "whole")
    real = rundir._write_bytes
    writes = []

    def dying_write(path, data):  # the second checkpoint dies half-written
        writes.append(path)
        if len(writes) == 2:
            with open(path, "wb") as fh:
                fh.write(b"half a checkpoint")
            raise KeyboardInterrupt
        real(path, data)

    monkeypatch.setattr(rundir, "_write_bytes", dying_write)
    with pytest.raises(KeyboardInterrupt):
        run(config("backup-drop"), out=tmp_path / "cut")
    monkeypatch.setattr(rundir, "_write_bytes", real)
    (tmp,) = (tmp_path / "cut").glob(".checkpoint.pt.*.tmp")  # named for this process
    assert tmp.read_bytes() == b"half a checkpoint"
    resumed = resume(tmp_path / "cut")  # from the first checkpoint, at update 20
    assert resumed.summary["resumed_from"] == 20
    assert torch.equal(resumed.params, whole.params)


def test_the_command_line_resumes_and_guards_an_interrupted_run(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        '[policy]\nname = "async"\nworkers = 3\n[run]\nupdates = 60\ncheckpoint_every = 20\n'
    )
    out = tmp_path / "r"
    with pytest.raises(KeyboardInterrupt):
        run(Config.load(cfg), out=out, progress=stop_at(30))
    assert main(["run", str(cfg), "--out", str(out), "--quiet"]) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(["run", "--resume", str(out), "--quiet"]) == 0
    assert not (out / CHECKPOINT).exists() and (out / "summary.json").exists()
    assert main(["run", "--resume", str(out), "--quiet"]) == 2  # nothing left to resume
    assert main(["run", str(cfg), "--set", "run.backend=local", "--out", str(tmp_path / "l")]) == 2


def test_a_damaged_checkpoint_or_a_changed_config_is_refused_in_one_line(tmp_path, capsys):
    """One flipped bit in the parameter data used to resume with exit 0 and another result;
    an edited lr was silently ignored and an edited aggregator gave a 29-line traceback."""

    out = tmp_path / "r"
    with pytest.raises(KeyboardInterrupt):
        run(config("backup-drop"), out=out, progress=stop_at(50))
    good = (out / CHECKPOINT).read_bytes()
    # one bit anywhere: in the header, its checksum, the pickle's opening, the tensors, the
    # end (format 2 read some of these as "'utf-8' codec can't decode" or "invalid load key")
    for at in (3, 40, 80, 200, len(good) // 2, len(good) - 1):
        bad = bytearray(good)
        bad[at] ^= 0x10
        (out / CHECKPOINT).write_bytes(bytes(bad))
        assert main(["run", "--resume", str(out), "--quiet"]) == 2
        err = capsys.readouterr().err.strip()
        assert "is damaged" in err and "\n" not in err, (at, err)
    (out / CHECKPOINT).write_bytes(good)
    toml = (out / "config.toml").read_text()
    for edit, key in (
        (toml.replace("lr = 0.1\n", "lr = 0.5\n"), "optimizer.lr"),
        (toml.replace('aggregator = "mean"', 'aggregator = "median"'), "policy.aggregator"),
    ):
        assert edit != toml
        (out / "config.toml").write_text(edit)
        assert main(["run", "--resume", str(out), "--quiet"]) == 2
        err = capsys.readouterr().err.strip()
        assert f"changed since the checkpoint ({key})" in err and "\n" not in err
    (out / "config.toml").write_text(toml)
    assert main(["run", "--resume", str(out), "--quiet"]) == 0


@pytest.fixture
def small_disk(tmp_path):
    """A 96 KiB tmpfs (root only): room for one checkpoint of mlp-digits (48.5 KB), not two."""
    from tests.helpers import mounted_tmpfs

    yield from mounted_tmpfs(tmp_path, "96k")


def test_a_full_disk_during_a_checkpoint_says_so_and_keeps_the_last_one(small_disk, capsys):
    """It used to print torch's "[enforce fail at inline_container.cc:672] unexpected pos"
    in a 45-line traceback and leave .checkpoint.pt.tmp behind."""
    import subprocess

    out = small_disk / "r"
    args = ["run", "examples/digits-backup.toml", "--out", str(out), "--quiet"]
    sets = ["--set", "run.updates=90", "--set", "run.checkpoint_every=20"]
    assert main([*args, *sets]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("hybridsgd: error: no space left on the device of") and "\n" not in err
    assert "checkpoint.pt" in err and not list(out.glob(".*.tmp"))
    subprocess.run(["mount", "-o", "remount,size=16m", str(small_disk)], check=True)
    resumed = resume(out)  # from the last good checkpoint
    assert resumed.summary["updates"] == 90 and resumed.summary["resumed_from"] >= 20
    whole = Config.load("examples/digits-backup.toml", ["run.updates=90"])
    assert torch.equal(resumed.params, run(whole).params)


def test_a_format_2_checkpoint_still_resumes_bit_for_bit(tmp_path):
    import hashlib

    from hybridsgd.rundir import MAGIC

    whole = run(config("backup-drop"), out=tmp_path / "whole")
    out = tmp_path / "r"
    with pytest.raises(KeyboardInterrupt):
        run(config("backup-drop"), out=out, progress=stop_at(50))
    data = (out / CHECKPOINT).read_bytes()
    assert data.startswith(MAGIC)
    payload = data.partition(b"\n")[2]  # format 2 held the same state, inside a dict
    sha = hashlib.sha256(payload).hexdigest()
    torch.save({"format": 2, "sha256": sha, "payload": payload}, out / CHECKPOINT)
    assert torch.equal(resume(out).params, whole.params)


def test_resume_may_change_only_keys_that_do_not_change_training(tmp_path, capsys):
    out = tmp_path / "r"
    with pytest.raises(KeyboardInterrupt):
        run(config("backup-drop"), out=out, progress=stop_at(50))
    whole = run(config("backup-drop").replace("run.checkpoint_every=0"))
    toml = (out / "config.toml").read_text()
    n = int(re.search(r"threads = (\d+)\n", toml).group(1))  # the count the run chose
    other = 2 if n == 1 else 1
    assert f"threads = {n}\n" in toml
    (out / "config.toml").write_text(toml.replace(f"threads = {n}\n", f"threads = {other}\n"))
    assert main(["run", "--resume", str(out), "--quiet"]) == 2
    assert "(run.threads)" in capsys.readouterr().err
    bad = ["run", "--resume", str(out), "--allow-change", "optimizer.lr", "--quiet"]
    assert main(bad) == 2
    assert "--allow-change: optimizer.lr would change what is trained" in capsys.readouterr().err
    resumed = resume(out, allow_change=["run.threads"])
    assert resumed.summary["torch_threads"] == other
    # the same training; the thread count may change torch's summation order (last bits)
    assert torch.allclose(resumed.params, whole.params, atol=1e-5)
