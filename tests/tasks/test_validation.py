"""The validation split tuning evaluates on: carved out of the training data, never the
test set; a run that does not tune keeps exactly its data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import hybridsgd as h
from hybridsgd.errors import ConfigError
from hybridsgd.runner import samplers_for
from hybridsgd.tasks import build_task


def test_validation_is_carved_from_training_data_and_never_the_test_set():
    cfg = h.Config.from_dict({"task": {"name": "mlp-digits", "validation": 0.2}})
    full = build_task(cfg.task, 0)
    tuned = full.holdout(cfg.task.validation, cfg.task.data_seed)
    held = tuned.held_out
    kept = np.setdiff1d(np.arange(full.n_train), held)
    assert len(held) == round(0.2 * full.n_train) and len(kept) + len(held) == full.n_train
    # the validation samples are training samples; the training set is the rest, in order
    assert torch.equal(tuned.x_test, full.x_train[held])
    assert torch.equal(tuned.x_train, full.x_train[kept])
    # no test sample is trained on or validated on: test rows appear in neither
    test_rows = {tuple(r) for r in full.x_test.numpy().round(6).tolist()}
    train_rows = {tuple(r) for r in full.x_train.numpy().round(6).tolist()}
    overlap_before = test_rows & train_rows  # duplicate images in the data set itself
    seen = {tuple(r) for r in torch.cat([tuned.x_train, tuned.x_test]).numpy().round(6).tolist()}
    assert (seen & test_rows) <= overlap_before
    # what a run evaluates is the validation loss, computed here in float64
    params = full.initial_params()
    loss, _ = tuned.evaluate(params)
    weights = {k: v.double() for k, v in full.unflatten(params).items()}
    with torch.no_grad():
        out = torch.func.functional_call(full.model, weights, (full.x_train[held].double(),))
        ref = torch.nn.functional.cross_entropy(out, full.y_train[held])
    assert loss == pytest.approx(float(ref), rel=1e-5)


def test_a_run_that_does_not_tune_keeps_its_data():
    cfg = h.Config.from_dict({"task": {"name": "mlp-digits"}, "run": {"updates": 20}})
    task = build_task(cfg.task, 0)
    assert task.holdout(0.0) is task
    plain = h.run(cfg)
    zero = h.run(cfg.replace("task.validation=0"))
    assert torch.equal(plain.params, zero.params) and plain.summary["evaluated_on"] == "test"
    before = [s.batch(k) for s in samplers_for(cfg, task) for k in range(3)]
    after = [
        s.batch(k) for s in samplers_for(cfg.replace("task.validation=0"), task) for k in range(3)
    ]
    assert all(np.array_equal(a, b) for a, b in zip(before, after, strict=True))


def test_a_tuning_run_trains_on_the_rest_and_says_what_it_evaluated():
    cfg = h.Config.from_dict(
        {"task": {"name": "mlp-digits", "validation": 0.25}, "run": {"updates": 10}}
    )
    r = h.run(cfg)
    assert r.summary["evaluated_on"] == "validation"
    n_full = build_task(cfg.task, 0).n_train
    used = np.concatenate(
        [
            s.batch(k)
            for s in samplers_for(cfg, build_task(cfg.task, 0).holdout(0.25))
            for k in range(50)
        ]
    )
    assert used.max() < n_full - round(0.25 * n_full)


@pytest.mark.parametrize("value", [-0.1, 0.6])
def test_bad_fraction(value):
    with pytest.raises(ConfigError, match="task.validation"):
        h.Config.from_dict({"task": {"validation": value}})
