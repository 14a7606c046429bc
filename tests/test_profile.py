"""hybridsgd profile (issue 31): measure real workers or read a real run, and fit a timing
model to the measured job times."""

from __future__ import annotations

import tomllib

import pandas as pd
import pytest

import hybridsgd as h
from hybridsgd.cli import main


def config() -> h.Config:
    return h.Config.from_dict(
        {
            "task": {"name": "mlp-digits", "batch_size": 16},
            "policy": {"name": "async", "workers": 2},
            "run": {"backend": "local", "updates": 80, "eval_every": 40},
        }
    )


def test_measured_workers_give_a_profile_and_a_fit_the_simulator_takes(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[task]\nname = "mlp-digits"\nbatch_size = 16\n[policy]\nworkers = 2\n')
    out = tmp_path / "p"
    args = ["profile", str(cfg), "--backend", "local", "--minibatches", "40", "--out", str(out)]
    assert main([*args, "--fit"]) == 0
    said = capsys.readouterr().out
    assert "job times per worker" in said and "family: " in said and "speeds (95% interval)" in said
    table = pd.read_csv(out / "profile.csv")
    assert list(table.columns) == ["worker", "start_time", "compute", "pull", "push"]
    assert len(table) >= 80 and (table.compute > 0).all() and set(table.worker) == {0, 1}
    # each job's messages, timed apart: parts of its time (the worker's own is the rest)
    assert (table.pull >= 0).all() and (table.push >= 0).all()
    assert (table.pull + table.push < table.compute).all()
    assert "pull" in said and "push" in said and "messages (inside the job times)" in said
    timing = tomllib.loads((out / "timing.toml").read_text())["timing"]
    assert "comm" not in timing  # (the messages are inside compute: not added twice)
    assert "# messages, inside compute" in (out / "timing.toml").read_text()
    h.Config.from_dict({"policy": {"workers": 2}, "timing": timing})  # it validates
    assert (out / "fit.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "run" / "summary.json").is_file()  # the measuring run is kept
    # one machine: its processors, the server's work per gradient, worker 0 timed alone
    from hybridsgd.backends.local import available_cores

    assert 0.1 <= timing["cores"] <= available_cores() and "effective of" in said
    assert timing["server"].startswith("constant:value=")
    alone = pd.read_csv(out / "alone" / "gradients.csv")
    assert set(alone.worker) == {0} and len(alone) >= 20
    # --cores 0: a cluster of machines, nothing shared and nobody timed alone
    assert main([*args, "--fit", "--cores", "0", "--out", str(tmp_path / "q")]) == 0
    timing = tomllib.loads((tmp_path / "q" / "timing.toml").read_text())["timing"]
    assert "cores" not in timing and "server" not in timing
    assert not (tmp_path / "q" / "alone").exists()
    capsys.readouterr()
    assert main([*args, "--fit", "--cores", "many"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("hybridsgd: error: --cores: write auto") and len(err.splitlines()) == 1


def test_the_machine_fit_takes_speeds_from_the_profile_and_the_family_from_worker_0_alone():
    """Speeds 1 and 2 (relative: 0.71 and 1.41) in a shared profile; worker 0 alone takes
    lognormal(log 0.01, 0.2): the family is that at worker 0's speed taken out, so that
    worker 0 in the simulator takes what it took alone."""
    import numpy as np

    from hybridsgd.profiling import Machine, fit_machine
    from hybridsgd.timing import Cluster, parse_model

    c = Cluster(parse_model("lognormal:mu=0,sigma=0.3"), 2, seed=1, speeds=[1.0, 2.0])
    rows = [(w, c.delay(w, 0.0)) for _ in range(500) for w in (0, 1)]
    table = pd.DataFrame(rows, columns=["worker", "compute"])
    alone = np.random.default_rng(2).lognormal(np.log(0.01), 0.2, 2000)
    fit = fit_machine(table, Machine(2.0, 0.002, alone, "2 processors (a test)", given=True))
    assert fit.speeds[1] / fit.speeds[0] == pytest.approx(2.0, rel=0.05)
    assert fit.compute.family == "lognormal" and fit.compute.params["sigma"] == pytest.approx(
        0.2, rel=0.1
    )
    # worker 0 simulated: speed x the family's median = the median alone
    median0 = fit.speeds[0] * np.exp(fit.compute.params["mu"])
    assert median0 == pytest.approx(0.01, rel=0.03)
    assert fit.cores == 2.0 and fit.server == 0.002
    assert 'server = "constant:value=0.002"' in fit.toml() and "cores = 2" in fit.toml()


def test_the_work_comes_from_the_typical_worker_alone_at_its_own_speed():
    """Four workers with the same work, one of which the operating system favoured (0.67
    of the others' times): the worker timed alone is a typical one, and the family is its
    jobs alone at its speed, so a typical worker simulated takes what it took alone (a
    fit that divided worker 0's alone times by worker 0's speed would make every worker's
    work half again too large)."""
    import numpy as np

    from hybridsgd.profiling import Machine, fit_machine, typical_worker

    rng = np.random.default_rng(3)
    favour = [0.67, 1.0, 1.02, 0.98]
    rows = [(w, f * rng.lognormal(np.log(0.02), 0.2)) for _ in range(300)
            for w, f in enumerate(favour)]  # fmt: skip
    table = pd.DataFrame(rows, columns=["worker", "compute"])
    k = typical_worker(table)
    assert k in (1, 3)  # a median worker, not the favoured one (nor the slowest)
    alone = rng.lognormal(np.log(0.01), 0.2, 2000)  # its jobs alone: median 10 ms
    fit = fit_machine(table, Machine(4.0, 0.0, alone, "a test", given=True, worker=k))
    i = fit.workers.index(k)
    assert fit.speeds[i] * np.exp(fit.compute.params["mu"]) == pytest.approx(0.01, rel=0.03)
    assert fit.speeds[0] / fit.speeds[i] == pytest.approx(0.67, rel=0.05)


def test_an_earlier_real_run_is_a_profile(tmp_path, capsys):
    h.run(config(), out=tmp_path / "r", progress=False)
    assert main(["profile", "--from", str(tmp_path / "r"), "--out", str(tmp_path / "p")]) == 0
    g = pd.read_csv(tmp_path / "r" / "gradients.csv")
    table = pd.read_csv(tmp_path / "p" / "profile.csv")
    done = g[g.fate != "cancelled"]
    assert len(table) == len(done)
    assert sorted(table.compute.round(9)) == sorted((done.end_time - done.start_time).round(9))
    assert sorted(table.pull.round(9)) == sorted(done.pull.round(9))  # the messages come too
    # a run from before messages were timed (no pull, push): the profile has none either
    g.drop(columns=["pull", "push"]).to_csv(tmp_path / "r" / "gradients.csv", index=False)
    capsys.readouterr()
    assert main(["profile", "--from", str(tmp_path / "r"), "--out", str(tmp_path / "q")]) == 0
    assert "pull" not in capsys.readouterr().out
    old = pd.read_csv(tmp_path / "q" / "profile.csv")
    assert list(old.columns) == ["worker", "start_time", "compute"] and len(old) == len(done)


def test_a_real_runs_messages_are_timed_inside_each_arrived_job():
    """pull: from the driver's send of a job to the worker's receipt; push: from the
    worker's send to the driver's receipt. Both lie inside the job (start to end), on
    the machine's one monotonic clock; a job that never arrived (cancelled) has none."""
    cfg = config().replace("policy.name=backup", "policy.backups=1", "policy.workers=3")
    g = h.run(cfg, progress=False).trace.gradients
    arrived = g[g.fate != "cancelled"]
    assert len(arrived) >= 80 and (g.fate == "cancelled").any()
    assert arrived.pull.notna().all() and arrived.push.notna().all()
    assert (arrived.pull >= 0).all() and (arrived.push >= 0).all()
    assert (arrived.pull + arrived.push <= arrived.end_time - arrived.start_time).all()
    assert g[g.fate == "cancelled"].pull.isna().all()
    sim = h.run(cfg.replace("run.backend=sim"), progress=False).trace.gradients
    assert "pull" not in sim and "push" not in sim  # virtual time: nothing measured


def test_what_cannot_be_a_profile_is_one_line(tmp_path, capsys):
    h.run(config().replace("run.backend=sim"), out=tmp_path / "sim", progress=False)
    for args, says in [
        (["--from", str(tmp_path / "sim")], "is a simulated run"),
        (["--from", str(tmp_path / "nothing")], "holds no run"),
        ([], "give a TOML config file to measure, or --from RUN_DIR"),
        ([str(tmp_path / "sim" / "config.toml"), "--backend", "sim"], "--backend"),
        ([str(tmp_path / "sim" / "config.toml"), "--backend", "local", "--minibatches", "5"],
         "at least 20"),
    ]:  # fmt: skip
        assert main(["profile", *args, "--out", str(tmp_path / "p")]) == 2, args
        err = capsys.readouterr().err.strip()
        assert says in err and len(err.splitlines()) == 1, err


def test_validate_sets_each_policy_simulated_against_real(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        '[task]\nname = "mlp-digits"\nbatch_size = 16\n[policy]\nworkers = 2\n'
        "[optimizer]\nlr = 0.05\n[run]\nupdates = 60\neval_every = 20\ntarget_accuracy = 0.5\n"
    )
    args = ["validate", str(cfg), "--backend", "local", "--seeds", "1", "--minibatches", "25",
            "--out", str(tmp_path / "v")]  # fmt: skip
    assert main([*args, "--policy", "sync", "--policy", "async"]) == 0
    out = capsys.readouterr().out
    assert "simulated (fitted timing) against real" in out and "places (simulated: " in out
    assert (tmp_path / "v" / "profile.csv").is_file()
    table = pd.read_csv(tmp_path / "v" / "validate.csv")
    runs = pd.read_csv(tmp_path / "v" / "validate-runs.csv")  # every run, seed by seed
    assert len(runs) == 4 and set(runs.kind) == {"real", "sim"}
    real = runs[runs.kind == "real"].set_index("policy").throughput
    assert table.set_index("policy").throughput_real.to_dict() == pytest.approx(real.to_dict())
    for extra, says in [
        ([], "--policy: give at least one"),
        (["--policy", "sync", "--set", "run.target_accuracy=nan"], "target_accuracy"),
        (["--policy", "sync", "--cores", "-1"], "--cores: write auto"),
    ]:
        assert main([*args, *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert says in err and len(err.splitlines()) == 1, err


def test_validate_simulates_with_the_timing_it_is_given(tmp_path):
    """The simulated side runs on the timing given: two workers back to back at a constant
    0.01 s make exactly 200 updates per second; the real side is measured."""
    import pytest

    from hybridsgd import profiling

    # (a real load is real work: the simulated side takes the timing it is given)
    cfg = config().replace("run.updates=60", "run.target_accuracy=0.5", "run.worker_load=[1,2]")
    table, fit = profiling.validate(
        cfg, ["async"], seeds=1, timing={"compute": "constant:value=0.01"}, out=tmp_path
    )
    assert fit is None  # nothing profiled
    assert table.throughput_sim[0] == pytest.approx(200.0)
    assert table.throughput_real[0] > 0 and table.attrs["places_agree"] == 1


@pytest.mark.slow
def test_tune_and_compare_validate_their_policies_on_a_real_backend(tmp_path, capsys):
    """Issue 31: --validate after a sweep runs each policy, a tuning's with its chosen lr,
    real and simulated, and prints the table; without a target it is refused first."""
    import pandas as pd

    cfg = tmp_path / "c.toml"
    cfg.write_text(
        '[task]\nname = "mlp-digits"\nbatch_size = 16\n[policy]\nworkers = 2\n'
        "[optimizer]\nlr = 0.05\n[run]\nupdates = 30\neval_every = 10\ntarget_accuracy = 0.3\n"
    )
    tune = ["tune", str(cfg), "--policy", "sync", "--policy", "async", "--grid",
            "optimizer.lr=[0.05,0.2]", "--final-seeds", "1", "--jobs", "1"]  # fmt: skip
    assert main([*tune, "--out", str(tmp_path / "t"), "--validate", "local"]) == 0
    out = capsys.readouterr().out
    assert "simulated (fitted timing) against real" in out
    table = pd.read_csv(tmp_path / "t" / "validate" / "validate.csv")
    assert list(table.policy) == ["sync", "async"] and (table.throughput_real > 0).all()
    assert (tmp_path / "t" / "validate" / "profile.csv").is_file()
    no_target = ["--set", "run.target_accuracy=none", "--out", str(tmp_path / "c")]
    assert main(["compare", str(cfg), "--policy", "sync", *no_target, "--validate", "local"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hybridsgd: error: --validate: compares times to a target")


def test_a_profile_measures_minibatches_even_for_a_config_with_local_steps(tmp_path, capsys):
    """timing.compute is a minibatch's time: profile drops [worker] from the run it
    measures, and refuses an earlier run whose jobs were several local steps each."""
    from hybridsgd.profiling import measure

    cfg = config().replace("worker.steps=4", "worker.optimizer=adamw", "worker.lr=0.001")
    measure(cfg, 20, tmp_path / "p", progress=False)
    assert "local_steps" not in pd.read_json(tmp_path / "p" / "run" / "summary.json", typ="series")
    assert "[worker]" not in (tmp_path / "p" / "run" / "config.toml").read_text()
    h.run(cfg.replace("run.updates=8"), out=tmp_path / "steps", progress=False)
    assert main(["profile", "--from", str(tmp_path / "steps"), "--out", str(tmp_path / "q")]) == 2
    err = capsys.readouterr().err.strip()
    assert "jobs were 4 local steps each" in err and len(err.splitlines()) == 1


def test_the_effective_processors_are_those_that_give_the_profile_its_throughput():
    """Three workers on 1.5 effective processors with a server of work 0.1 a gradient,
    profiled under async as `hybridsgd profile` does (here simulated): given the work alone
    and the server, the calibration finds 1.5 again, of the 3 the machine has."""
    import numpy as np

    from hybridsgd.backends.sim import simulate_schedule
    from hybridsgd.policies import build_policy
    from hybridsgd.profiling import Machine, fit_machine, profile_of
    from hybridsgd.record import Evals
    from hybridsgd.timing import Cluster, parse_model
    from hybridsgd.trace import Trace

    work = parse_model("lognormal:mu=0,sigma=0.3")
    c = Cluster(work, 3, seed=4, cores=1.5, server=parse_model("constant:value=0.1"))
    schedule = simulate_schedule(build_policy("async:workers=3"), c, 3000)
    table = profile_of(Trace.from_schedule(schedule, Evals(), {}).gradients, "sim")
    alone = np.random.default_rng(5).lognormal(0.0, 0.3, 1000)
    fit = fit_machine(table, Machine(3.0, 0.1, alone, "3 processors (a test)"))
    assert fit.cores == pytest.approx(1.5, rel=0.05)
    assert "effective of 3 processors" in fit.cores_note


def test_places_agree_where_the_simulator_cannot_tell_two_policies_apart():
    from hybridsgd.profiling import rankings

    table = pd.DataFrame({"policy": ["async", "ssp", "sync"],
                          "time_to_target_sim": [0.4424, 0.4424, 1.0],
                          "time_to_target_real": [0.45, 0.43, 1.1]})  # fmt: skip
    assert rankings(table).attrs["places_agree"] == 3  # async and ssp: one time simulated
    table["time_to_target_sim"] = [0.4424, 0.45, 1.0]
    assert rankings(table).attrs["places_agree"] == 1  # now the simulator orders them


def test_a_place_is_a_tie_when_the_real_runs_cannot_tell_its_policies_apart():
    """The paired 95% t-interval of the real difference over the seeds, computed here from
    its definition (t quantile 4.303 for 2 degrees of freedom)."""
    from hybridsgd.profiling import rankings, real_tie

    table = pd.DataFrame({"policy": ["async", "ssp", "sync"],
                          "time_to_target_sim": [0.40, 0.45, 1.0],
                          "time_to_target_real": [0.46, 0.44, 1.1]})  # fmt: skip
    noisy = {"async": [0.40, 0.52, 0.46], "ssp": [0.47, 0.41, 0.44], "sync": [1.0, 1.1, 1.2]}
    d = [0.07, -0.11, -0.02]  # ssp - async, seed by seed
    mean, sd = sum(d) / 3, (sum((x - sum(d) / 3) ** 2 for x in d) / 2) ** 0.5
    assert abs(mean) <= 4.303 * sd / 3**0.5  # the interval holds 0: a tie
    t = rankings(table, noisy)
    assert t.attrs["places_agree"] == 1 and t.attrs["places_agree_or_tied"] == 3
    assert t.attrs["real_ties"] == [("async", "ssp"), ("ssp", "async")]
    steady = {**noisy, "ssp": [0.38, 0.50, 0.44]}  # ssp 0.02 faster on every seed: told apart
    assert not real_tie(steady["async"], steady["ssp"])
    assert rankings(table, steady).attrs["places_agree_or_tied"] == 1
    assert not real_tie([0.4, 0.5], [0.4, float("inf")])  # a seed that missed: no tie
    assert not real_tie([0.4], [0.41])  # one seed: no interval
