"""Joining a Ray cluster started with ``ray start --head`` (marked ``ray``): the run uses
it through ``run.ray_address`` and detaches, leaving the cluster up."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import as_in_a_terminal, ctrl_c

pytest.importorskip("ray")
pytestmark = pytest.mark.ray

RAY = shutil.which("ray", path=str(Path(sys.executable).parent)) or "ray"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster():
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    port = free_port()
    start = [RAY, "start", "--head", f"--port={port}", "--num-cpus=2", "--include-dashboard=false"]
    subprocess.run(start, env=env, check=True, capture_output=True, timeout=120)
    try:
        yield f"127.0.0.1:{port}", env
    finally:
        subprocess.run([RAY, "stop", "--force"], env=env, capture_output=True, timeout=120)


def test_a_run_joins_the_cluster_and_detaches(cluster, tmp_path):
    address, env = cluster
    config = tmp_path / "c.toml"
    config.write_text(
        '[task]\nname = "mlp-digits"\nbatch_size = 16\n[policy]\nname = "backup"\n'
        f'workers = 3\nbackups = 1\n[run]\nbackend = "ray"\nray_address = "{address}"\n'
        "updates = 30\neval_every = 10\n"
    )
    out = tmp_path / "r"
    cli = [sys.executable, "-m", "hybridsgd.cli", "run", str(config), "--out", str(out), "--quiet"]
    done = subprocess.run(cli, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    s = json.loads((out / "summary.json").read_text())
    assert s["backend"] == "ray" and s["updates"] == 30
    # the cluster is still up after the run detached
    status = subprocess.run(
        [RAY, "status", f"--address={address}"], env=env, capture_output=True, timeout=120
    )
    assert status.returncode == 0, status.stderr


def called_in(tmp: Path) -> int:
    """Connections accepted on the run's socket under ``tmp`` (Linux: /proc/net/unix lists
    the listening socket and each accepted one with the socket's path)."""
    lines = Path("/proc/net/unix").read_text().splitlines()
    return max(0, sum(line.endswith("/jobs") and str(tmp) in line for line in lines) - 1)


def test_ctrl_c_stops_a_run_on_the_cluster_cleanly(cluster, tmp_path):
    """Ctrl-C in the terminal: the run stops with a partial trace and exit 130, its socket
    directory and shared memory are gone, and the cluster it joined is still up."""
    address, env = cluster
    config = tmp_path / "long.toml"
    config.write_text(
        '[task]\nname = "mlp-digits"\nbatch_size = 16\n[policy]\nname = "async"\nworkers = 3\n'
        f'[run]\nbackend = "ray"\nray_address = "{address}"\nupdates = 10000000\n'
        "eval_every = 50\ntime_unit = 0.01\n"
    )
    tmp = tmp_path / "t"  # where the run makes its socket directory
    tmp.mkdir()
    out = tmp_path / "r"
    cli = [sys.executable, "-m", "hybridsgd.cli", "run", str(config), "--out", str(out)]
    proc = as_in_a_terminal(cli, env={**env, "TMPDIR": str(tmp)})
    try:
        deadline = time.monotonic() + 120
        while called_in(tmp) < 3 and time.monotonic() < deadline:
            time.sleep(0.2)
        docks = list(tmp.glob("hybridsgd-*"))
        assert called_in(tmp) == 3, "the workers never called in"
        time.sleep(2.0)  # they train from here on
        err = ctrl_c(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert not any(d.exists() for d in docks)
    s = json.loads((out / "summary.json").read_text())
    assert s["interrupted"] and s["updates"] > 0 and s["shared_memory_workers"] == [0, 1, 2]
    assert not list(Path("/dev/shm").glob("hybridsgd-*"))
    status = subprocess.run(
        [RAY, "status", f"--address={address}"], env=env, capture_output=True, timeout=120
    )
    assert status.returncode == 0, status.stderr


def test_a_sweep_on_the_cluster_gives_the_sequential_traces(cluster, tmp_path):
    """compare --ray-address runs each run as a Ray task; the traces are byte for byte those
    of the same runs one after another here."""
    address, env = cluster
    config = tmp_path / "c.toml"
    config.write_text(
        '[task]\nname = "mlp-digits"\n[policy]\nname = "sync"\nworkers = 4\n'
        "[run]\nupdates = 20\neval_every = 5\n"
    )
    base = [sys.executable, "-m", "hybridsgd.cli", "compare", str(config)]
    base += ["--policy", "sync", "--policy", "async", "--seeds", "2"]
    on_ray = [*base, "--out", str(tmp_path / "ray"), "--ray-address", address]
    here = [*base, "--out", str(tmp_path / "seq"), "--jobs", "1"]
    for cli in (on_ray, here):
        done = subprocess.run(cli, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
    runs = sorted(p.name for p in (tmp_path / "seq" / "runs").iterdir())
    assert len(runs) == 4
    for run in runs:
        for table in ("gradients.csv", "updates.csv", "evals.csv"):
            a = (tmp_path / "ray" / "runs" / run / table).read_bytes()
            assert a == (tmp_path / "seq" / "runs" / run / table).read_bytes(), (run, table)
