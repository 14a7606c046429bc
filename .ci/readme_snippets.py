"""Run every snippet of the README's usage sections the way a user of the installed wheel
would: in a fresh temporary directory, outside the checkout, after `hybridsgd examples
--copy` (make package-check runs this with the wheel's own venv).

    python .ci/readme_snippets.py README.md --bin /path/to/venv/bin

* Python blocks run in order in one interpreter (a later block may use an earlier one's
  names), from the temporary directory.
* Shell blocks run line by line (a line ending in a backslash goes on). `hybridsgd run`,
  `compare`, `tune` and `noise-scale` get `--set run.updates=20 --set run.time=none`
  appended, so that the check takes minutes, not the documented runs' full length: what is
  checked is that each command works from the wheel, not how long it trains.
* A line shown as `$ command` followed by the error it prints must exit with status 2 and
  print that error.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SECTIONS = ("Python", "Command line", "Real processes: the local backend")
SHORTEN = ("run", "compare", "tune", "noise-scale")
SHORT = ["--set", "run.updates=20", "--set", "run.time=none"]


def blocks(readme: str) -> list[tuple[str, str, str]]:
    """``(section, language, code)`` of each fenced block in the usage sections."""
    out, section = [], ""
    for part in re.split(r"^(## .*)$", readme, flags=re.M):
        if part.startswith("## "):
            section = part[3:].strip()
            continue
        if section not in SECTIONS:
            continue
        for lang, code in re.findall(r"^```(\w*)\n(.*?)^```", part, flags=re.M | re.S):
            out.append((section, lang or "shell", code))
    return out


def commands(code: str) -> list[tuple[list[str], str | None]]:
    """Each command of a shell block, with the error it must print (``$`` lines)."""
    lines = code.replace("\\\n", " ").splitlines()
    out: list[tuple[list[str], str | None]] = []
    for i, line in enumerate(lines):
        line = line.strip()
        if line.startswith("$ "):
            expected = lines[i + 1].strip() if i + 1 < len(lines) else ""
            out.append((shlex.split(line[2:], comments=True), expected))
        elif line.startswith("hybridsgd "):
            out.append((shlex.split(line, comments=True), None))
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("readme")
    ap.add_argument("--bin", required=True, help="the venv's bin directory (the wheel's)")
    args = ap.parse_args()
    readme = Path(args.readme).read_text()
    bin_dir = Path(args.bin).resolve()
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    env.pop("PYTHONPATH", None)
    failures = 0
    with tempfile.TemporaryDirectory(prefix="hybridsgd-readme-") as tmp:

        def call(cmd: list[str], expect_error: str | None = None) -> None:
            nonlocal failures
            t0 = time.perf_counter()
            p = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True)
            took = time.perf_counter() - t0
            shown = " ".join(cmd) if len(" ".join(cmd)) < 120 else " ".join(cmd)[:117] + "..."
            if expect_error is not None:
                ok = p.returncode == 2 and expect_error in p.stderr
            else:
                ok = p.returncode == 0
            print(f"{'ok  ' if ok else 'FAIL'} {took:6.1f} s  {shown}", flush=True)
            if not ok:
                failures += 1
                print(f"  exit {p.returncode}\n  stdout: {p.stdout[-2000:]}\n"
                      f"  stderr: {p.stderr[-2000:]}")  # fmt: skip

        call([str(bin_dir / "hybridsgd"), "examples", "--copy"])
        python = [b for s, lang, b in blocks(readme) if lang == "python"]
        script = Path(tmp) / "readme_python.py"
        script.write_text(
            "if __name__ == '__main__':\n"
            + "\n".join("    " + line for b in python for line in b.splitlines())
            + "\n"
        )
        call([str(bin_dir / "python"), str(script)])
        for _, lang, code in blocks(readme):
            if lang == "python":
                continue
            for cmd, error in commands(code):
                cmd = [str(bin_dir / cmd[0]), *cmd[1:]]
                if error is None and len(cmd) > 1 and cmd[1] in SHORTEN:
                    cmd += SHORT
                call(cmd, error)
    print(f"readme snippets: {failures} failed" if failures else "readme snippets: all passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
