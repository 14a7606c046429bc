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
