"""TensorBoard and MLflow logging (docs/logging.md), with the real writers into a temp dir,
read back with tensorboard's event reader and MLflow's client on its file store."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import hybridsgd as h
from hybridsgd.cli import main
from hybridsgd.errors import ConfigError
from hybridsgd.logs import update_metrics
from tests.helpers import make_config

pytest.importorskip("tensorboard")


def events(directory) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(directory), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


BASE = {
    "task": {"name": "mlp-digits", "batch_size": 16},
    "policy": {"name": "backup", "workers": 4, "backups": 1},
    "timing": {"compute": "exp:mu=1"},
    "run": {"updates": 40, "eval_every": 10},
}


def config(**run) -> h.Config:
    return make_config(BASE, run=run)


def test_idle_fraction_and_throughput_against_a_hand_count():
    """Two workers: w0 busy [0, 2], w1 busy [0, 1] then [3, 4]; updates at t = 2 and 4."""
    gradients = pd.DataFrame({"start_time": [0.0, 0.0, 3.0], "end_time": [2.0, 1.0, 4.0]})
    updates = pd.DataFrame(
        {
            "version": [1, 2],
            "time": [2.0, 4.0],
            "n_gradients": [2, 1],
            "mean_staleness": [0.0, 1.0],
            "max_staleness": [0, 1],
        }
    )
    m = update_metrics(updates, gradients, workers=2, batch_size=10, lr=0.5)
    # by t = 2: busy 2 + 1 of 4 worker-units; by t = 4: 2 + 1 + 1 of 8
    assert m["idle_fraction"].tolist() == pytest.approx([1 - 3 / 4, 1 - 4 / 8])
    assert m["throughput"].tolist() == pytest.approx([2 * 10 / 2, 3 * 10 / 4])
    assert m["lr"].tolist() == [0.5, 0.5]


def test_a_simulated_run_streams_to_tensorboard(tmp_path):
    result = h.run(config(log=[f"tensorboard:{tmp_path / 'tb'}"]), out=tmp_path / "run")
    got = events(tmp_path / "tb" / "run")
    trace = result.trace
    assert [s for s, _ in got["eval/loss"]] == trace.evals.version.tolist()
    assert [v for _, v in got["eval/loss"]] == pytest.approx(trace.evals.loss.tolist())
    assert [v for _, v in got["eval/accuracy"]] == pytest.approx(trace.evals.accuracy.tolist())
    assert [s for s, _ in got["staleness/mean"]] == list(range(1, 41))
    assert [v for _, v in got["staleness/mean"]] == pytest.approx(
        trace.updates.mean_staleness.tolist()
    )
    assert [v for _, v in got["time"]] == pytest.approx(trace.updates.time.tolist())
    assert [v for _, v in got["lr"]] == pytest.approx([0.1] * 40)
    idle = np.array([v for _, v in got["idle_fraction"]])
    assert ((idle >= 0) & (idle <= 1)).all() and idle[-1] > 0  # backup workers idle a while
    assert got["final/final_loss"] == [(40, pytest.approx(result.summary["final_loss"]))]


def test_report_exports_an_existing_trace_like_the_live_stream(tmp_path):
    h.run(config(log=[f"tensorboard:{tmp_path / 'live'}"]), out=tmp_path / "run")
    assert main(["report", str(tmp_path / "run"), "--tensorboard", str(tmp_path / "later")]) == 0
    live, later = events(tmp_path / "live" / "run"), events(tmp_path / "later" / "run")
    assert live.keys() == later.keys()
    for tag in live:
        assert [s for s, _ in later[tag]] == [s for s, _ in live[tag]], tag
        assert [v for _, v in later[tag]] == pytest.approx([v for _, v in live[tag]], rel=1e-6)


def test_a_local_run_writes_to_mlflow_file_store(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    uri = (tmp_path / "mlruns").as_uri()
    cfg = config(backend="local", time_unit=0.001, log=[f"mlflow:{uri}"])
    result = h.run(cfg, out=tmp_path / "local-run")
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("hybridsgd").experiment_id])
    assert run.info.run_name == "local-run" and run.info.status == "FINISHED"
    assert run.data.params["policy.name"] == "backup"
    assert run.data.params["policy.backups"] == "1"
    assert run.data.tags["policy"] == result.summary["policy"]
    loss = client.get_metric_history(run.info.run_id, "eval_loss")
    assert [m.step for m in loss] == result.trace.evals.version.tolist()
    assert [m.value for m in loss] == pytest.approx(result.trace.evals.loss.tolist())
    staleness = client.get_metric_history(run.info.run_id, "staleness_mean")
    assert len(staleness) == 40


@pytest.mark.parametrize(
    ("entry", "says"),
    [
        ("wandb", "run.log[0]: unknown logger 'wandb'; use tensorboard[:DIR] or mlflow"),
        ("tensorboard", "run.log: tensorboard needs a directory: tensorboard:DIR, or a run --out"),
    ],
)
def test_bad_log_entries(entry, says):
    with pytest.raises(ConfigError) as err:
        h.run(config(log=[entry]))
    assert str(err.value).startswith(says)


def test_a_logger_that_is_not_installed_is_one_line_and_exit_2(tmp_path, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a)
    )
    args = ["run", "examples/digits-backup.toml", "--out", str(tmp_path / "r"), "--quiet"]
    assert main([*args, "--log", "mlflow"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "hybridsgd: error: run.log[0]: mlflow is not installed: pip install 'hybridsgd[mlflow]'"
    )
    assert not (tmp_path / "r").exists()


def test_a_sections_table_logs_as_parameters_of_their_own():
    """[run.ray] is run.ray.address, ... (issue 35 moved the backends' keys into tables);
    an options table stays one parameter, and empty values are left out."""
    from hybridsgd.logs import flat_params

    cfg = h.Config.from_dict(
        {
            "run": {"ray": {"address": "auto", "shards": 2}},
            "optimizer": {"momentum": 0.9, "options": {"nesterov": True}},
        }
    )
    params = flat_params(cfg.to_dict())
    assert params["run.ray.address"] == "auto" and params["run.ray.shards"] == "2"
    assert params["optimizer.options"] == "{'nesterov': True}"
    assert "run.ray" not in params and "run.log" not in params
