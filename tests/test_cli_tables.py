"""At 80 columns, `run`, `compare` and `recommend` cut nothing a user must copy: no cell is
shortened with an ellipsis, a long policy label wraps, the recommended spec is printed in
full on a line of its own, and the columns are explained."""

from __future__ import annotations

import pytest

from hybridsgd.cli import main

LONG = "hybrid:threshold=linear:start=0,end=30,progress=time"


@pytest.fixture(autouse=True)
def eighty_columns(monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")


def first_column(out: str) -> list[str]:
    """The first column's cells, a wrapped cell joined back into one."""
    cells: list[str] = []
    for line in out.splitlines():
        if not line.startswith("│"):
            continue
        parts = [p.strip() for p in line.split("│")[1:-1]]
        if cells and not any(parts[1:]):  # a continuation of the row above
            cells[-1] += parts[0]
        else:
            cells.append(parts[0])
    return cells


def check_width(out: str) -> None:
    """Nothing shortened; every line within 80 columns but the closing "wrote PATH" (a
    path is printed whole, however long)."""
    assert "…" not in out
    assert max(len(line) for line in out.splitlines() if not line.startswith("wrote")) <= 80


def test_compare_wraps_long_labels_and_explains_its_columns(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        '[task]\nname = "logistic"\n[policy]\nworkers = 4\n'
        "[run]\ntime = 20.0\ntarget_accuracy = 0.6\neval_every = 5\n"
    )
    args = ["compare", str(cfg), "--out", str(tmp_path / "o"), "--jobs", "1"]
    assert main([*args, "--policy", "ssp:s=1", "--policy", LONG]) == 0
    out = capsys.readouterr().out
    check_width(out)
    assert first_column(out)[-2:] == ["ssp_s-1", "hybrid_linear_start-0_end-30_progress-time"]
    text = " ".join(out.split())
    for words in ("acc: final test accuracy", "reached: seeds that reached 60% test accuracy",
                  "ssp's and psp's bound s counts clock ticks"):  # fmt: skip
        assert words in text


def test_a_task_without_accuracy_or_target_shows_neither(tmp_path, capsys):
    cfg = tmp_path / "q.toml"
    cfg.write_text('[task]\nname = "quadratic"\n[policy]\nworkers = 4\n[run]\nupdates = 20\n')
    assert main(["compare", str(cfg), "--out", str(tmp_path / "o"), "--policy", "async"]) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if "policy" in line)
    assert header.split() == ["┃", "policy", "┃", "loss", "┃", "stale", "┃", "idle", "┃"]
    assert "nan" not in out
    assert main(["run", str(cfg), "--out", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    check_width(out)
    table = "\n".join(line for line in out.splitlines() if line.startswith("│"))
    assert "final loss " in table and "accuracy" not in table and "nan" not in table


def test_recommend_prints_its_answer_in_full(capsys):
    argv = ["recommend", "--workers", "8", "--compute", "lognormal:mu=0,sigma=1",
            "--lr", "0.1", "--curvature", "1"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    check_width(out)
    answer = [line for line in out.splitlines() if line.startswith("recommended: --policy ")]
    assert len(answer) == 1
    spec = answer[0].removeprefix("recommended: --policy ")
    from hybridsgd.policies import parse_spec

    parse_spec(spec)  # the printed answer is a spec the CLI takes
    assert spec == _policy_of_rank_one(out)


def _policy_of_rank_one(out: str) -> str:
    """Rank 1's policy cell, its wrapped lines joined."""
    rows: list[list[str]] = []
    for line in out.splitlines():
        if line.startswith("│"):
            parts = [p.strip() for p in line.split("│")[1:-1]]
            if rows and not parts[0]:
                rows[-1][1] += parts[1]
            else:
                rows.append(parts)
    return rows[0][1]
