"""Performance profiles and geometric-mean speed-ups, against values worked out by hand from
their definitions (Dolan and Moré 2002; AlgoPerf's scoring)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from hybridsgd.report import profiles

INF = math.inf


def scores() -> pd.DataFrame:
    # three workloads; C fails the first; every policy fails the third
    return pd.DataFrame(
        {"A": [1.0, 3.0, INF], "B": [2.0, 3.0, INF], "C": [INF, 6.0, INF]},
        index=["w1", "w2", "w3"],
    )


def test_ratios_are_scores_over_the_best_of_each_workload():
    r = profiles.ratios(scores())
    assert r.loc["w1"].tolist() == [1.0, 2.0, INF]
    assert r.loc["w2"].tolist() == [1.0, 1.0, 2.0]
    assert r.loc["w3"].tolist() == [INF, INF, INF]  # nobody finished: nobody is within tau


def test_the_profile_counts_workloads_within_tau_of_the_best():
    rho = profiles.profile(scores(), [1.0, 1.5, 2.0, 100.0])
    # A wins w1 and w2; B ties w2, is 2x on w1; C is 2x on w2; w3 counts against all
    np.testing.assert_allclose(rho["A"], [2 / 3, 2 / 3, 2 / 3, 2 / 3])
    np.testing.assert_allclose(rho["B"], [1 / 3, 1 / 3, 2 / 3, 2 / 3])
    np.testing.assert_allclose(rho["C"], [0, 0, 1 / 3, 1 / 3])


def test_geometric_mean_speed_up_over_the_baseline_uses_workloads_both_finished():
    s = profiles.geomean_speedup(scores(), "A")
    assert s["A"] == (1.0, 2)
    assert s["B"][1] == 2 and s["B"][0] == pytest.approx(math.sqrt(1 / 2 * 3 / 3))
    assert s["C"] == (pytest.approx(0.5), 1)
    with pytest.raises(KeyError):
        profiles.geomean_speedup(scores(), "D")


def test_the_plot_is_written(tmp_path):
    path = profiles.plot(scores(), tmp_path / "p.png", title="t", problems="workloads")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
