"""The report leads with the answer: the winner, its paired margin over the runner-up with
a 95% interval, and "tie" when the interval covers zero."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from hybridsgd.cli import main
from hybridsgd.report.verdict import lead, verdict


def table(values: dict[str, list[float]], column: str = "final_loss") -> pd.DataFrame:
    rows = [
        {"policy": p, "seed": s, column: v, "target_accuracy": math.nan}
        for p, vs in values.items()
        for s, v in enumerate(vs)
    ]
    return pd.DataFrame(rows)


def test_the_margin_and_its_interval_are_the_paired_t_interval():
    a = [0.30, 0.26, 0.33, 0.29]
    b = [0.41, 0.35, 0.38, 0.44]
    v = verdict(table({"b": b, "a": a}), "final-loss")
    assert (v.winner, v.runner_up, v.seeds) == ("a", "b", 4)
    # the reference: scipy's paired t-test and its own confidence interval
    ref = stats.ttest_rel(b, a).confidence_interval(0.95)
    assert v.margin == pytest.approx(np.mean(np.subtract(b, a)), rel=1e-12)
    assert (v.low, v.high) == pytest.approx((ref.low, ref.high), rel=1e-9)
    assert v.decided and not v.tie
    assert v.sentence().split(". ")[1].startswith("Winner: a, ahead of the runner-up b")


def test_a_margin_inside_the_seed_spread_is_a_tie():
    # a is better on average, but one seed of three goes the other way by a lot
    v = verdict(table({"a": [0.30, 0.31, 0.50], "b": [0.35, 0.36, 0.33]}), "final-loss")
    assert v.winner == "b" or v.tie
    assert v.tie and not v.decided
    assert "Tie:" in v.sentence()


def test_one_seed_ranks_but_gives_no_verdict():
    v = verdict(table({"a": [0.3], "b": [0.4]}), "final-loss")
    assert v.winner == "a" and not v.decided
    assert "no verdict" in v.sentence()


def test_reaching_the_target_on_more_seeds_wins_time_to_target():
    t = table({"fast": [5.0, math.nan, math.nan], "slow": [9.0, 8.0, 10.0]}, "time_to_target")
    t["target_accuracy"] = 0.9
    v = verdict(t, "time-to-target")
    assert (v.winner, v.reached) == ("slow", (3, 1, 3))
    assert "on 3 of 3 seeds against 1 of 3" in v.sentence()
    t["time_to_target"] = math.nan
    assert lead(t).startswith("No policy reached the target accuracy on any seed.")


@pytest.mark.slow
def test_the_report_says_tie_for_two_identical_policies_under_different_names(tmp_path, capsys):
    # backup with b = 0 is sync (DESIGN.md section 3): the same runs under two names
    (tmp_path / "c.toml").write_text(
        '[task]\nname = "logistic"\nbatch_size = 16\n[policy]\nworkers = 4\n'
        "[run]\nupdates = 20\neval_every = 5\n"
    )
    code = main(
        ["compare", str(tmp_path / "c.toml"), "--policy", "sync", "--policy", "backup:b=0",
         "--seeds", "3", "--out", str(tmp_path / "out")]
    )  # fmt: skip
    assert code == 0
    said = capsys.readouterr().out
    first = said.strip().splitlines()[0]
    assert first.startswith("Objective: final loss on the test set")
    assert "Tie: " in said.split("\n\n")[0].replace("\n", " ")
    page = (tmp_path / "out" / "report.html").read_text()
    para = re.search(r'<p class="verdict"><b>(.*?)</b></p>', page, re.S)
    assert para is not None and "Tie: " in para[1]
    # and the report's body comes after it: the verdict is the first paragraph
    assert page.index('class="verdict"') < page.index("<h2>")
