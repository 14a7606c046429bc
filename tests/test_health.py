"""A run never ends quietly wrong: divergence and rejected gradients are said in one line
each and recorded in summary.json."""

from __future__ import annotations

import json

import hybridsgd as h
from hybridsgd.cli import main


def test_divergence_and_rejections_are_said_and_recorded(tmp_path, capsys):
    """lr = 1e30 on sync used to report "applied 16" with a NaN loss, no word, exit 0."""
    args = ["run", "examples/digits-backup.toml", "--out", str(tmp_path / "r"), "--quiet"]
    sets = ["run.updates=100", "policy.name=sync", "optimizer.lr=1e30", "optimizer.momentum=0"]
    assert main([*args, *[x for s in sets for x in ("--set", s)]]) == 0
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert any(line.startswith("warning: diverged: the test loss is nan") for line in err)
    assert any("gradients were rejected (non-finite:" in line for line in err)
    s = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert s["diverged"] and s["diverged_at"] == 20
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
    assert s["gradients"]["applied"] == 0 and not s["diverged"]
    assert any("20 of 20 gradients were rejected" in w for w in s["warnings"])


def test_a_healthy_run_has_no_warning():
    s = h.run(h.Config.from_dict({"run": {"updates": 20}})).summary
    assert not s["diverged"] and s["diverged_at"] is None and s["warnings"] == []


def test_an_unwritable_out_is_refused_before_training(tmp_path, capsys, monkeypatch):
    """--out /dev/null/x used to train fully, then fail while writing with a traceback."""
    import pytest

    trained = []
    monkeypatch.setattr(h.runner, "replay", lambda *a, **k: trained.append(1))
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
