"""The examples that ship inside the package (hybridsgd examples): listed, copied, and each
one's own documented command runs without a note."""

from __future__ import annotations

import re
import shlex

import pytest

from hybridsgd import examples
from hybridsgd.cli import main


def documented(name: str) -> list[list[str]]:
    """The `hybridsgd run ...` commands a shipped config's header documents."""
    text = examples.resources.files(examples.__name__).joinpath(name).read_text()
    header = "\n".join(line.lstrip("# ") for line in text.splitlines() if line.startswith("#"))
    header = header.replace("\\\n", " ")
    return [shlex.split(m)[1:] for m in re.findall(r"hybridsgd run [^\n]*", header)]


def test_the_list_names_every_shipped_file(capsys):
    assert main(["examples"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in examples.FILES)


@pytest.mark.parametrize("name", [n for n in examples.FILES if n.endswith(".toml")])
def test_each_configs_documented_command_runs_without_a_note(name, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["examples", "--copy"]) == 0
    commands = documented(name)
    assert commands, f"{name} documents no command"
    for args in commands:
        args = [a for a in args if a != "--force"]
        if "--out" not in args:
            args += ["--out", str(tmp_path / "run")]
        assert main([*args, "--set", "run.updates=3", "--set", "run.time=none", "--force"]) == 0
        err = capsys.readouterr().err
        assert "note:" not in err, err


def test_copy_keeps_what_is_there_unless_forced(tmp_path, capsys):
    assert main(["examples", "--copy", str(tmp_path)]) == 0
    (tmp_path / "own-model.toml").write_text("# mine\n")
    assert main(["examples", "--copy", str(tmp_path)]) == 2
    assert "add --force" in capsys.readouterr().err
    assert (tmp_path / "own-model.toml").read_text() == "# mine\n"
    assert main(["examples", "--copy", str(tmp_path), "--force"]) == 0
    assert (tmp_path / "own-model.toml").read_text() != "# mine\n"


@pytest.mark.slow
def test_the_diloco_reproduction_runs_quick(tmp_path):
    """examples/diloco_equal_time.py --quick (docs/reproductions.md section 11): every form
    tuned and rerun, each final test loss finite, its table and plot written."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).parents[1] / "examples" / "diloco_equal_time.py"
    done = subprocess.run(
        [sys.executable, str(script), "--quick", "--jobs", "1", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((tmp_path / "results.json").read_text())
    forms = {(r["policy"], r["steps"]) for r in results["rows"]}
    assert forms == {("sync", 1), ("async", 1), ("sync", 4), ("async", 4)}
    assert all(len(r["test_loss"]) == 2 for r in results["rows"])
    assert all(0 < v < 10 for r in results["rows"] for v in r["test_loss"])
    assert (tmp_path / "equal_time.png").stat().st_size > 0
    assert "| sync | 4 |" in (tmp_path / "results.md").read_text()
