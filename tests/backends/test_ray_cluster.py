"""Joining a Ray cluster started with ``ray start --head`` (marked ``ray``): the run uses
it through ``run.ray_address`` and detaches, leaving the cluster up."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

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
