"""A user's model that raises on the simulator: one line naming what raised, where in the
user's code, and the worker's minibatch (its sample indices); the trace up to the last
whole update is written. (It used to be a 34-line traceback with only .lock left.)"""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import hybridsgd as h

MARKED = 50  # the training sample whose input makes the model raise


class Picky(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if bool((x[:, 0] > 100).any()):
            raise ValueError("a marked sample")
        return self.fc(x)


def task() -> h.Task:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(120, 6, generator=g), torch.randint(0, 3, (120,), generator=g)
    x[MARKED, 0] = 1000.0
    return h.Task.from_module(Picky(), (x, y), F.cross_entropy, test=(x[:40], y[:40]))


def test_a_model_that_raises_is_one_line_with_the_minibatch_and_the_trace_is_kept(tmp_path):
    cfg = h.Config.from_dict(
        {"policy": {"name": "async", "workers": 3}, "task": {"batch_size": 8},
         "run": {"updates": 200, "eval_every": 5}}
    )  # fmt: skip
    with pytest.raises(h.WorkerLost) as e:
        h.run(cfg, task=task(), out=tmp_path / "r", progress=False)
    said = str(e.value)
    assert "\n" not in said
    assert said.startswith("the model or its loss raised on the simulator: ValueError: a marked")
    assert "(at test_sim_user_errors.py:" in said and ", in forward)" in said
    assert "computing the gradient of worker " in said and str(MARKED) in said
    assert said.endswith(f"; the trace up to there is in {tmp_path / 'r'}")
    s = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert s["error"] and 0 < s["updates"] < 200
    trace = h.Trace.read(tmp_path / "r")
    assert len(trace.updates) == s["updates"]
    assert (trace.gradients.end_time <= trace.updates.time.iloc[-1]).all()
