"""SIGINT and SIGTERM on a simulated run: the replay stops after the update in hand and the
trace up to there is written (it used to write nothing on SIGINT, and SIGTERM killed the
run with no message, exit -15)."""

from __future__ import annotations

import json
import os
import signal
import sys

import numpy as np
import pandas as pd
import pytest

import hybridsgd as h
from tests.helpers import as_in_a_terminal, make_config, signal_when

BASE = {
    "task": {"name": "mlp-digits", "batch_size": 16},
    "policy": {"name": "k_async", "workers": 6, "k": 3},
    "timing": {"compute": "exp:mu=1"},
    "run": {"updates": 80, "eval_every": 10, "target_accuracy": 0.99},
}


def config(**run) -> h.Config:
    return make_config(BASE, run=run)


def test_a_signal_stops_the_replay_after_a_whole_update_and_keeps_its_trace(tmp_path):
    def progress(phase: str, v: int, total: int) -> None:
        if phase == "train" and v == 33:
            os.kill(os.getpid(), signal.SIGINT)

    part = h.run(config(), out=tmp_path / "r", progress=progress)
    whole = h.run(config(), progress=False)
    s = part.summary
    assert s["interrupted"] and s["signal"] == "SIGINT" and s["updates"] == 33
    t, w = part.trace, whole.trace
    # the first 33 updates are the uninterrupted run's, and so are its evaluations
    pd.testing.assert_frame_equal(t.updates, w.updates.iloc[:33])
    assert t.evals.version.tolist() == [0, 10, 20, 30, 33]
    np.testing.assert_array_equal(t.evals.loss[:4], w.evals.loss[:4])
    g = t.gradients
    end = float(t.updates.time.iloc[-1])
    assert (g.end_time <= end).all() and (g[g.fate == "applied"]["update"] <= 33).all()
    # the gradients are the uninterrupted run's that had arrived by then; one that waited
    # for a later update is pending again
    expect = w.gradients[w.gradients.end_time <= end].copy()
    later = expect["update"] > 33
    expect.loc[later, "update"] = -1
    expect["fate"] = expect.fate.astype(str).where(~later, "pending")
    got = g.assign(fate=g.fate.astype(str))
    pd.testing.assert_frame_equal(got.reset_index(drop=True), expect.reset_index(drop=True))
    assert h.Trace.read(tmp_path / "r").summary["interrupted"]


@pytest.mark.slow
@pytest.mark.parametrize(
    "signals, code",
    [([signal.SIGINT, signal.SIGINT], 130), ([signal.SIGTERM], 143)],
    ids=["double-ctrl-c", "sigterm"],
)
def test_the_command_writes_the_partial_trace_and_says_how_to_resume(tmp_path, signals, code):
    cfg = tmp_path / "long.toml"
    cfg.write_text(
        '[task]\nname = "mlp-digits"\n[policy]\nname = "async"\nworkers = 4\n'
        "[run]\nupdates = 50000\neval_every = 100\ncheckpoint_every = 200\n"
    )
    out = tmp_path / "r"
    proc = as_in_a_terminal([sys.executable, "-m", "hybridsgd.cli", "run", str(cfg), "--out",
                             str(out), "--quiet"])  # fmt: skip
    # the replay is under way once it has checkpointed
    err = signal_when(proc, (out / "checkpoint.pt").exists, signals)
    assert proc.returncode == code, err
    assert "Traceback" not in err
    name = signal.Signals(signals[0]).name
    assert err.strip().splitlines()[-1] == (
        f"hybridsgd: interrupted ({name}); the trace up to here is in {out}; "
        f"continue with: hybridsgd run --resume {out}"
    )
    s = json.loads((out / "summary.json").read_text())
    assert s["interrupted"] and s["signal"] == name
    assert len(pd.read_csv(out / "updates.csv")) == s["updates"] >= 200
