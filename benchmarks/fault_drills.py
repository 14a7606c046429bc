"""Fault drills: kill, stop, interrupt, damage and crowd real runs, and check that nothing a
run computed is lost and nothing goes unsaid (docs/robustness.md quotes the table).

    python benchmarks/fault_drills.py [--ray]

Each drill prints one row: what was done, what must happen, what happened, pass or FAIL.
Exit status 1 if any drill fails. `--ray` adds worker-actor kills on a local Ray instance
(needs the ray extra). The full-disk drill mounts a small tmpfs and needs root.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import torch
from rich.console import Console
from rich.table import Table

import hybridsgd as h

CONFIG = "examples/digits-backup.toml"
LONG = [
    "--set", "run.backend=local", "--set", "policy.name=async", "--set", "policy.workers=3",
    "--set", "run.updates=10000000", "--set", "run.eval_every=50", "--set", "run.time_unit=0.01",
]  # fmt: skip
Row = tuple[str, str, str, bool]


# -- processes ------------------------------------------------------------------------------
def _ppid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def workers_of(root: int) -> list[int]:
    """Worker processes below ``root``: the children of its forkserver."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                parents[int(entry.name)] = _ppid(int(entry.name))
    below, frontier = [], [root]
    while frontier:
        frontier = [p for p, pp in parents.items() if pp in frontier]
        below += frontier
    found = []
    for pid in below:
        with contextlib.suppress(OSError):
            if b"forkserver" in Path(f"/proc/{parents[pid]}/cmdline").read_bytes():
                found.append(pid)
    return found


def start_cli(*args: str) -> subprocess.Popen:
    """The hybridsgd command in its own process group, as a terminal starts it."""
    return subprocess.Popen(
        [sys.executable, "-m", "hybridsgd", *args],
        start_new_session=True,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def wait_for_workers(proc: subprocess.Popen, n: int, settle: float = 3.0) -> None:
    deadline = time.monotonic() + 120
    while len(workers_of(proc.pid)) < n and time.monotonic() < deadline:
        time.sleep(0.3)
    time.sleep(settle)  # training


def trace_rows(out: Path) -> str:
    s = json.loads((out / "summary.json").read_text())
    n = len(pd.read_csv(out / "updates.csv"))
    return f"{n} updates in the trace (summary {s['updates']})", n == s["updates"] > 0


# -- drills -----------------------------------------------------------------------------------
def worker_signal(sig: signal.Signals, policy: str, extra: list[str]) -> Row:
    """A local worker gets ``sig`` at update 15; the policy must absorb the loss."""
    done: list[int] = []

    def progress(phase: str, v: int, total: int) -> None:
        if phase == "train" and v >= 15 and not done:
            done.append(workers_of(os.getpid())[-1])
            os.kill(done[0], sig)

    cfg = h.Config.load(
        CONFIG,
        [f"policy.name={policy}", "policy.workers=3", "run.backend=local", "run.updates=200",
         "run.time_unit=0.002", *extra],
    )  # fmt: skip
    s = h.run(cfg, progress=progress).summary
    lost = s["lost_workers"]
    why = lost[0]["why"] if lost else "none lost"
    ok = bool(done) and s["updates"] == 200 and len(lost) == 1
    return (
        f"local {policy}: {sig.name} to a worker",
        "run finishes, worker lost and named",
        f"{s['updates']} updates; lost: {why}",
        ok,
    )


def driver_signals(sigs: list[signal.Signals], code: int) -> Row:
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "r"
        proc = start_cli("run", CONFIG, "--out", str(out), *LONG)
        wait_for_workers(proc, 3)
        for sig in sigs:
            os.killpg(proc.pid, sig) if sig == signal.SIGINT else os.kill(proc.pid, sig)
            time.sleep(0.3)
        err = proc.communicate(timeout=120)[1]
        left = workers_of(proc.pid)
        seen, whole = trace_rows(out) if (out / "summary.json").exists() else ("no trace", False)
        ok = proc.returncode == code and whole and "Traceback" not in err and not left
        names = " + ".join(s.name for s in sigs)
        return (
            f"local driver: {names}",
            f"exit {code}, partial trace, no process left",
            f"exit {proc.returncode}; {seen}; {len(left)} workers left",
            ok,
        )


def driver_sigstop() -> Row:
    """The driver is stopped for 3 s (SIGSTOP), then continued: the run goes on to its end."""
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "r"
        args = [*LONG, "--set", "run.updates=400"]  # the later --set wins
        proc = start_cli("run", CONFIG, "--out", str(out), *args)
        wait_for_workers(proc, 3, settle=1.0)
        os.kill(proc.pid, signal.SIGSTOP)
        time.sleep(3.0)
        os.kill(proc.pid, signal.SIGCONT)
        err = proc.communicate(timeout=300)[1]
        seen, whole = trace_rows(out) if (out / "summary.json").exists() else ("no trace", False)
        s = json.loads((out / "summary.json").read_text()) if whole else {}
        ok = proc.returncode == 0 and whole and s.get("updates") == 400 and "Traceback" not in err
        return ("local driver: SIGSTOP 3 s, then SIGCONT", "the run finishes whole",
                f"exit {proc.returncode}; {seen}", ok)  # fmt: skip


def driver_sigkill_resumes(kills: int) -> Row:
    """SIGKILL the simulated driver at spread moments of a checkpointed run, then resume:
    the result must equal the uninterrupted run's."""
    sets = ["run.updates=1500", "run.checkpoint_every=20", "run.eval_every=20"]
    whole = h.run(h.Config.load(CONFIG, [s for s in sets if "checkpoint" not in s]))
    tried = equal = 0
    with tempfile.TemporaryDirectory() as d:
        for i in range(kills):
            out = Path(d) / f"r{i}"
            args = [x for s in sets for x in ("--set", s)]
            proc = start_cli("run", CONFIG, "--out", str(out), *args)
            deadline = time.monotonic() + 60  # from the first checkpoint on, at spread moments
            while not (out / h.runner.CHECKPOINT).exists() and time.monotonic() < deadline:
                time.sleep(0.02)
            time.sleep(0.13 * i)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=60)
            if not (out / h.runner.CHECKPOINT).exists():
                continue  # the run had ended (its checkpoint removed)
            tried += 1
            equal += torch.equal(h.resume(out).params, whole.params)
    return (
        f"sim driver: SIGKILL x{kills}, then --resume",
        "every resume ends bit for bit where the uninterrupted run ends",
        f"{equal} of {tried} resumed runs equal the uninterrupted one",
        tried > 0 and equal == tried,
    )


def damaged_checkpoint() -> Row:
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "r"
        sets = ["--set", "run.updates=400", "--set", "run.checkpoint_every=20"]
        proc = start_cli("run", CONFIG, "--out", str(out), *sets)
        deadline = time.monotonic() + 60
        while not (out / h.runner.CHECKPOINT).exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
        data = bytearray((out / h.runner.CHECKPOINT).read_bytes())
        data[len(data) // 2] ^= 1  # one bit, in the tensors
        (out / h.runner.CHECKPOINT).write_bytes(bytes(data))
        r = subprocess.run(
            [sys.executable, "-m", "hybridsgd", "run", "--resume", str(out)],
            capture_output=True,
            text=True,
        )
        lines = r.stderr.strip().splitlines()
        ok = r.returncode == 2 and len(lines) == 1 and "damaged" in lines[0]
        said = "'... is damaged ...'" if "damaged" in r.stderr else r.stderr[-60:]
        return ("one bit flipped in checkpoint.pt", "resume refused, one line, exit 2",
                f"exit {r.returncode}, {len(lines)} line: {said}", ok)  # fmt: skip


def full_disk() -> Row:
    with tempfile.TemporaryDirectory() as d:
        mnt = Path(d)
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96k", "tmpfs", d]).returncode:
            return ("full disk (96 KiB tmpfs)", "-", "skipped: cannot mount (needs root)", True)
        try:
            out = mnt / "r"
            sets = ["--set", "run.updates=90", "--set", "run.checkpoint_every=20", "--quiet"]
            r = subprocess.run(
                [sys.executable, "-m", "hybridsgd", "run", CONFIG, "--out", str(out), *sets],
                capture_output=True,
                text=True,
            )
            lines = r.stderr.strip().splitlines()
            tmp = list(out.glob(".*.tmp"))
            subprocess.run(["mount", "-o", "remount,size=16m", d], check=True)
            resumed = h.resume(out)
            ok = r.returncode == 1 and len(lines) == 1 and not tmp
            ok = ok and resumed.summary["updates"] == 90
            seen = f"exit {r.returncode}, {len(lines)} line, {len(tmp)} temp files; resumed"
            return ("full disk during a checkpoint", "one line, exit 1, last checkpoint resumes",
                    seen, ok)  # fmt: skip
        finally:
            subprocess.run(["umount", "-l", d])


@contextlib.contextmanager
def tmpfs(size: str):
    """A small tmpfs (root only), or None where it cannot be mounted."""
    with tempfile.TemporaryDirectory() as d:
        if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", d]).returncode:
            yield None
            return
        try:
            yield Path(d)
        finally:
            subprocess.run(["umount", "-l", d])


def rescued_copy(err: str) -> Path | None:
    marker = "the whole run is in "
    if marker not in err:
        return None
    return Path(err.split(marker, 1)[1].split(";")[0].strip())


def full_disk_final_write(backend: str) -> Row:
    """The disk fills at the run's final write (a 64 KiB tmpfs, a run of 400 updates)."""
    name = f"{backend}: full disk at the final write"
    with tmpfs("64k") as mnt:
        if mnt is None:
            return (name, "-", "skipped: cannot mount (needs root)", True)
        out = mnt / "r"
        sets = ["run.updates=400", f"run.backend={backend}", "policy.workers=4"]
        r = subprocess.run(
            [sys.executable, "-m", "hybridsgd", "run", CONFIG, "--out", str(out), "--quiet",
             *[x for s in sets for x in ("--set", s)]],
            capture_output=True, text=True,
        )  # fmt: skip
        copy = rescued_copy(r.stderr)
        whole = copy is not None and len(h.Trace.read(copy).updates) == 400
        kept = (out / "summary.json").exists()
        ok = r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1 and kept and whole
        return (name, "exit 1, one line; summary.json kept, whole copy named",
                f"exit {r.returncode}; summary kept: {kept}; whole copy: {whole}", ok)  # fmt: skip


def force_rerun(how: str) -> Row:
    """A --force rerun that meets a full disk, or a SIGINT 2 s in: the old run survives."""
    name = f"--force rerun: {how}"
    with tmpfs("64k" if how == "full disk" else "16m") as mnt:
        if mnt is None:
            return (name, "-", "skipped: cannot mount (needs root)", True)
        out = mnt / "r"
        first = subprocess.run(
            [sys.executable, "-m", "hybridsgd", "run", CONFIG, "--out", str(out), "--quiet",
             "--set", "run.updates=20"], capture_output=True,
        )  # fmt: skip
        old = {n: (out / n).read_bytes() for n in ("summary.json", "gradients.csv")}
        sets = ["--force", "--set", "run.updates=400" if how == "full disk" else "run.updates=3000"]
        proc = start_cli("run", CONFIG, "--out", str(out), *sets)
        if how == "SIGINT":
            time.sleep(2.0)
            os.killpg(proc.pid, signal.SIGINT)
        err = proc.communicate(timeout=300)[1]
        aside = out / ".replaced"
        intact = all((aside / n).exists() and (aside / n).read_bytes() == b for n, b in old.items())
        ok = first.returncode == 0 and proc.returncode != 0 and intact and "Traceback" not in err
        return (name, "the old run kept whole in .replaced",
                f"exit {proc.returncode}; old run intact: {intact}", ok)  # fmt: skip


def sim_signal(sig: signal.Signals, code: int) -> Row:
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "r"
        proc = start_cli("run", CONFIG, "--out", str(out), "--set", "run.updates=30000",
                         "--set", "run.checkpoint_every=500")  # fmt: skip
        deadline = time.monotonic() + 120
        while not (out / h.runner.CHECKPOINT).exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        os.killpg(proc.pid, sig) if sig == signal.SIGINT else os.kill(proc.pid, sig)
        err = proc.communicate(timeout=120)[1]
        seen, whole = trace_rows(out) if (out / "summary.json").exists() else ("no trace", False)
        ok = proc.returncode == code and whole and "Traceback" not in err
        return (f"sim driver: {sig.name}", f"exit {code}, partial trace, resumable",
                f"exit {proc.returncode}; {seen}", ok)  # fmt: skip


def tune_resume() -> Row:
    """SIGINT a tune at 25%, 50% and 75% of its runs; resume; compare with a whole one."""
    args = ["tune", CONFIG, "--policy", "sync", "--policy", "async", "--grid",
            "optimizer.lr=[0.03,0.1,0.3]", "--final-seeds", "2", "--set", "run.updates=40",
            "--jobs", "1"]  # fmt: skip
    same = 0
    with tempfile.TemporaryDirectory() as d:
        subprocess.run([sys.executable, "-m", "hybridsgd", *args, "--out", f"{d}/whole"],
                       capture_output=True, check=True)  # fmt: skip
        for frac in (0.25, 0.5, 0.75):
            out = Path(d) / f"cut{frac}"
            proc = start_cli(*args, "--out", str(out))
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:  # until that share of the 10 runs is done
                rows = (out / "tune-trials.jsonl").read_text().count("\n") if (
                    out / "tune-trials.jsonl").exists() else 0  # fmt: skip
                finals = len(list((out / "runs").glob("*/summary.json")))
                if rows + finals >= frac * 10:
                    break
                time.sleep(0.05)
            os.killpg(proc.pid, signal.SIGINT)
            proc.communicate(timeout=120)
            r = subprocess.run([sys.executable, "-m", "hybridsgd", "tune", "--resume", str(out)],
                               capture_output=True)  # fmt: skip
            same += r.returncode == 0 and all(
                (out / n).read_text() == (Path(d) / "whole" / n).read_text()
                for n in ("tune.csv", "summary.csv")
            )
    expected = "tune.csv and summary.csv as uninterrupted"
    return ("tune: SIGINT at 25%, 50%, 75%, then --resume", expected, f"{same} of 3 equal",
            same == 3)  # fmt: skip


def bad_user_task() -> Row:
    code = (
        "import torch, hybridsgd as h\n"
        "class M(torch.nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__(); self.fc = torch.nn.Linear(4, 3)\n"
        "    def forward(self, x):\n"
        "        if (x[:, 0] > 100).any(): raise ValueError('bad batch')\n"
        "        return self.fc(x)\n"
        "x, y = torch.randn(90, 4), torch.randint(0, 3, (90,)); x[7, 0] = 1e3\n"
        "t = h.Task.from_module(M(), (x, y), torch.nn.functional.cross_entropy,\n"
        "                       test=(x[20:], y[20:]))\n"
        "cfg = h.Config.from_dict({'policy': {'name': 'async', 'workers': 3},\n"
        "                          'run': {'updates': 300}})\n"
        "import sys\n"
        "try: h.run(cfg, task=t, out=sys.argv[1], progress=False)\n"
        "except h.WorkerLost as e: print(e, file=sys.stderr); sys.exit(1)\n"
    )
    with tempfile.TemporaryDirectory() as d:
        script = Path(d) / "h_drill.py"
        script.write_text(code)
        r = subprocess.run([sys.executable, str(script), f"{d}/r"], capture_output=True, text=True)
        lines = r.stderr.strip().splitlines()
        named = bool(lines) and "h_drill.py:6" in lines[-1] and "samples" in lines[-1]
        written = (Path(d) / "r" / "summary.json").exists()
        ok = r.returncode == 1 and len(lines) == 1 and named and written
        seen = f"exit {r.returncode}, {len(lines)} line, named: {named}, trace: {written}"
        return ("sim: the user's forward raises", "one line: file:line, samples; trace",
                seen, ok)  # fmt: skip


def diverged_exit() -> Row:
    with tempfile.TemporaryDirectory() as d:
        r = subprocess.run(
            [sys.executable, "-m", "hybridsgd", "run", CONFIG, "--out", f"{d}/r", "--quiet",
             "--set", "optimizer.lr=1e30", "--set", "run.updates=60"],
            capture_output=True, text=True,
        )  # fmt: skip
        ok = r.returncode == 3 and "diverged" in r.stderr
        return ("a run that diverges", "exit 3, said before the table",
                f"exit {r.returncode}", ok)  # fmt: skip


def concurrent_runs() -> Row:
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "r"
        sets = ["--set", "run.updates=300", "--force"]
        a = start_cli("run", CONFIG, "--out", str(out), *sets, "--set", "run.seed=0")
        time.sleep(1.5)
        b = start_cli("run", CONFIG, "--out", str(out), *sets, "--set", "run.seed=1")
        errs = [a.communicate(timeout=300)[1], b.communicate(timeout=300)[1]]
        codes = sorted([a.returncode, b.returncode])
        s = json.loads((out / "summary.json").read_text())
        _, whole = trace_rows(out)
        ok = codes == [0, 2] and whole and s["seed"] == 0 and "in use by another run" in errs[1]
        return ("two runs into one --out", "the second refused (exit 2); one whole run kept",
                f"exits {codes}; the directory holds seed {s['seed']}", ok)  # fmt: skip


def ray_worker_kill(policy: str, extra: list[str], restarts: int) -> Row:
    import ray

    done: list[str] = []

    def progress(phase: str, v: int, total: int) -> None:
        if phase == "train" and v >= 10 and not done:
            names = sorted(n for n in ray.util.list_named_actors() if "-worker-1-0" in n)
            ray.kill(ray.get_actor(names[-1]))
            done.append(names[-1])

    cfg = h.Config.load(
        CONFIG,
        [f"policy.name={policy}", "policy.workers=4", "run.backend=ray", "run.updates=60",
         "run.time_unit=0.002", f"run.ray.max_worker_restarts={restarts}", *extra],
    )  # fmt: skip
    try:
        s = h.run(cfg, progress=progress).summary
    except Exception as exc:  # the drill reports it
        return (f"ray {policy}: kill an actor, {restarts} restarts", "run finishes",
                f"{type(exc).__name__}: {exc}"[:70], False)  # fmt: skip
    ok = s["updates"] == 60 and sum(s["worker_restarts"]) == restarts
    ok = ok and len(s["lost_workers"]) == 1 - restarts
    return (
        f"ray {policy}: kill an actor, {restarts} restarts",
        "run finishes; restarted or lost as configured",
        f"{s['updates']} updates, restarts {sum(s['worker_restarts'])}, "
        f"lost {len(s['lost_workers'])}",
        ok,
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ray", action="store_true", help="also kill Ray worker actors")
    ap.add_argument("--skip-local", action="store_true", help="leave out the local drills")
    args = ap.parse_args()
    timeout = ["run.worker_timeout=1.5", "run.time_unit=0.01"]
    drills: list[Callable[[], Row]] = [
        *(
            []
            if args.skip_local
            else [
                lambda: worker_signal(signal.SIGKILL, "async", []),
                lambda: worker_signal(signal.SIGKILL, "sync", []),
                lambda: worker_signal(signal.SIGTERM, "backup", ["policy.backups=1"]),
                lambda: worker_signal(signal.SIGSTOP, "async", timeout),
                lambda: driver_signals([signal.SIGTERM], 143),
                lambda: driver_signals([signal.SIGINT, signal.SIGINT], 130),
                driver_sigstop,
            ]
        ),
        lambda: driver_sigkill_resumes(6),
        damaged_checkpoint,
        full_disk,
        concurrent_runs,
        lambda: full_disk_final_write("sim"),
        *([] if args.skip_local else [lambda: full_disk_final_write("local")]),
        lambda: force_rerun("full disk"),
        lambda: force_rerun("SIGINT"),
        lambda: sim_signal(signal.SIGINT, 130),
        lambda: sim_signal(signal.SIGTERM, 143),
        tune_resume,
        bad_user_task,
        diverged_exit,
    ]
    if args.ray:
        import ray

        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        for restarts in (0, 1):
            for policy, extra in (("sync", []), ("backup", ["policy.backups=1"]), ("async", [])):
                drills.append(lambda p=policy, e=extra, r=restarts: ray_worker_kill(p, e, r))
    table = Table(title="fault drills")
    for col in ("drill", "expected", "observed", "lost"):
        table.add_column(col)
    failed = 0
    for drill in drills:
        name, expected, observed, ok = drill()
        failed += not ok
        table.add_row(name, expected, observed, "nothing lost" if ok else "[red]FAIL[/]")
        print(f"{'pass' if ok else 'FAIL'}: {name}: {observed}", file=sys.stderr, flush=True)
    Console(width=160).print(table)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
