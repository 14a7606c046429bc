"""Every flag of every subcommand says what it does (issue 20)."""

from __future__ import annotations

import argparse

import pytest

from hybridsgd.cli import _parser


def test_every_flag_of_every_subcommand_has_help():
    parser = _parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    missing = [
        f"{name} {' '.join(a.option_strings) or a.dest}"
        for name, command in sub.choices.items()
        for a in command._actions
        if not isinstance(a, argparse._HelpAction) and not (a.help or "").strip()
    ]
    assert not missing, f"flags without help: {missing}"
    assert set(sub.choices) >= {"run", "compare", "tune", "report", "predict", "recommend"}


def test_a_directory_given_as_the_config_is_named_as_one(tmp_path, capsys):
    from hybridsgd.cli import main

    assert main(["run", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"hybridsgd: error: config: {tmp_path} is a directory; give a TOML config file"


@pytest.mark.slow
@pytest.mark.parametrize("json", [True, False])
def test_a_reader_that_goes_away_is_no_traceback(json):
    """`hybridsgd predict --json | head`: the pipe is closed before the command writes
    (print raises BrokenPipeError; rich's tables leave quietly with status 1)."""
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "hybridsgd", "predict", "--policy", "async", "--workers", "8",
           "--compute", "exp:mu=1"] + (["--json"] if json else [])  # fmt: skip
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.stdout is not None and p.stderr is not None
    p.stdout.close()
    err = p.stderr.read().decode()
    assert p.wait(timeout=120) == (141 if json else 1) and err == "", err


def test_the_python_api_shows_progress_when_asked(capfd):
    """progress=True draws a bar on stderr; "auto" (the default) draws none when stderr is
    not a terminal (here, pytest's capture); a bad value is one line."""
    import hybridsgd as h
    from hybridsgd.progress import interactive

    cfg = h.Config.from_dict({"policy": {"workers": 2}, "run": {"updates": 40}})
    h.run(cfg, progress=True)
    assert "training" in capfd.readouterr().err
    assert not interactive()
    h.run(cfg)
    assert capfd.readouterr().err == ""
    with pytest.raises(h.ConfigError, match="^progress: expected True, False, 'auto'"):
        h.run(cfg, progress="yes")


def test_help_does_not_import_torch():
    """`hybridsgd --help` lists the policies without loading torch (issue 35): the core's
    package imports its server on first use only."""
    import subprocess
    import sys

    p = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "hybridsgd", "--help"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert p.returncode == 0 and "sync" in p.stdout
    modules = [line.rsplit("|", 1)[-1].strip() for line in p.stderr.splitlines() if "|" in line]
    assert "hybridsgd.policies" in modules
    assert not [m for m in modules if m == "torch" or m.startswith("torch.")]
