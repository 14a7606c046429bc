"""compare and report: every file written, the HTML complete, numbers recomputable."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest

from hybridsgd.cli import main
from hybridsgd.report import PLOTS

CONFIG = """
[task]
name = "mlp-digits"
batch_size = 16
[policy]
workers = 5
[timing]
compute = "pareto:alpha=2,scale=1"
[run]
updates = 25
eval_every = 5
target_accuracy = 0.5
"""


class _Images(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.alts: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            a = dict(attrs)
            assert a["src"].startswith("data:image/png;base64,")  # self-contained
            self.alts.append(a["alt"])


@pytest.fixture(scope="module")
def comparison(tmp_path_factory):
    d = tmp_path_factory.mktemp("cmp")
    (d / "c.toml").write_text(CONFIG)
    code = main(
        [
            "compare",
            str(d / "c.toml"),
            "--policy",
            "sync",
            "--policy",
            "backup:b=1",
            "--policy",
            "async",
            "--policy",
            "hybrid:threshold=linear:start=5,end=15",
            "--seeds",
            "2",
            "--out",
            str(d / "out"),
        ]
    )
    assert code == 0
    return d / "out"


def test_compare_writes_every_file_and_a_self_contained_report(comparison):
    for name in (*PLOTS, "summary.csv", "report.html"):
        assert (comparison / name).is_file(), name
    parser = _Images()
    parser.feed((comparison / "report.html").read_text())
    assert sorted(parser.alts) == sorted(PLOTS)
    runs = sorted(p.name for p in (comparison / "runs").iterdir())
    assert len(runs) == 8 and "hybrid_linear_start-5_end-15-s1" in runs


def test_report_tables_scroll_within_the_page_under_one_header_row(comparison):
    """Issue 34: the tables ran off a 1400-px window, and the summary had an empty header
    row above its columns (the policy index)."""
    import re

    page = (comparison / "report.html").read_text()
    tables = re.findall(r"<table.*?</table>", page, flags=re.S)
    assert len(tables) == 2
    assert page.count('<div class="scroll"><table') == 2 and ".scroll{overflow-x:auto" in page
    for table in tables:
        head = re.search(r"<thead>(.*?)</thead>", table, flags=re.S).group(1)
        assert head.count("<tr") == 1, head
        assert re.search(r"<th>\s*policy\s*</th>", head) or "policy</th>" in head


def test_report_rebuilds_the_same_summary_from_traces_alone(comparison):
    before = (comparison / "summary.csv").read_text()
    for name in (*PLOTS, "summary.csv", "report.html"):
        (comparison / name).unlink()
    assert main(["report", str(comparison)]) == 0
    assert (comparison / "summary.csv").read_text() == before
    assert all((comparison / name).is_file() for name in PLOTS)


def test_summary_equals_the_trace_tables(comparison):
    summary = pd.read_csv(comparison / "summary.csv")
    assert list(summary.policy.unique()) == [
        "sync",
        "backup_b-1",
        "async",
        "hybrid_linear_start-5_end-15",
    ]
    for _, row in summary.iterrows():
        run = comparison / "runs" / f"{row.policy}-s{row.seed}"
        g = pd.read_csv(run / "gradients.csv")
        ev = pd.read_csv(run / "evals.csv")
        s = json.loads((run / "summary.json").read_text())
        assert row.updates == len(pd.read_csv(run / "updates.csv")) == s["updates"]
        assert row.applied == (g.fate == "applied").sum() == s["gradients"]["applied"]
        assert row.cancelled == (g.fate == "cancelled").sum() == s["gradients"]["cancelled"]
        assert row.final_accuracy == pytest.approx(ev.accuracy.iloc[-1])
        if s["time_to_target"] is None:
            assert pd.isna(row.time_to_target)
        else:
            assert row.time_to_target == pytest.approx(s["time_to_target"])
        assert 0 <= row.idle_fraction <= 1
    sync_idle = summary[summary.policy == "sync"].idle_fraction.mean()
    async_idle = summary[summary.policy == "async"].idle_fraction.mean()
    assert sync_idle > async_idle  # stragglers make sync workers wait


def test_a_bad_policy_spec_is_one_line_and_exit_2(tmp_path, capsys):
    (tmp_path / "c.toml").write_text(CONFIG)
    for spec, field in [
        ("hogwild", "--policy"),
        ("backup:b=9", "policy.backups"),
        ("k_sync:colour=red", "--policy"),
    ]:
        assert (
            main(
                [
                    "compare",
                    str(tmp_path / "c.toml"),
                    "--policy",
                    spec,
                    "--out",
                    str(tmp_path / "o"),
                ]
            )
            == 2
        )
        line = capsys.readouterr().err.strip()
        assert line.startswith(f"hybridsgd: error: {field}") and "\n" not in line
    assert not Path(tmp_path / "o" / "runs").exists()  # nothing ran
    assert main(["report", str(tmp_path / "missing")]) == 2


@pytest.mark.parametrize(
    "damage, name",
    [
        (lambda p: p.unlink(), "evals.csv"),
        (lambda p: p.write_bytes(b"\x00garbage\n,,,\n\xff"), "gradients.csv"),
        (lambda p: p.write_text("{not json"), "summary.json"),
    ],
)
def test_report_on_a_damaged_trace_names_the_file_in_one_line(
    comparison, tmp_path, capsys, damage, name
):
    """A missing evals.csv used to raise FileNotFoundError, a garbage gradients.csv
    AttributeError 'end_time'."""
    import shutil

    copy = tmp_path / "damaged"
    shutil.copytree(comparison, copy)
    run_dir = sorted((copy / "runs").iterdir())[0]
    damage(run_dir / name)
    assert main(["report", str(copy)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"hybridsgd: error: {run_dir / name}:") and "\n" not in err


@pytest.mark.slow
def test_an_interrupted_comparison_resumes_from_the_command_line(tmp_path, capsys):
    from hybridsgd import Config
    from hybridsgd.app.compare import compare

    (tmp_path / "c.toml").write_text(CONFIG)
    base = Config.load(tmp_path / "c.toml")
    specs = ["sync", "async"]
    compare(base, specs, 2, tmp_path / "whole", jobs=1)
    assert main(["report", str(tmp_path / "whole")]) == 0

    def stop(done: int, total: int, phase: str) -> None:
        if done >= 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        compare(base, specs, 2, tmp_path / "cut", stop, jobs=1)
    assert main(["compare", "--resume", str(tmp_path / "cut"), "--policy", "sync"]) == 2
    assert "--resume: takes the directory alone" in capsys.readouterr().err
    assert main(["compare", "--resume", str(tmp_path / "cut"), "--jobs", "1"]) == 0
    said = (tmp_path / "cut" / "summary.csv").read_text()
    assert said == (tmp_path / "whole" / "summary.csv").read_text()
    assert main(["tune", "--resume", str(tmp_path / "cut")]) == 2  # a comparison, not a tuning
    assert "holds no tuning to resume" in capsys.readouterr().err
