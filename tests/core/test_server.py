"""The parameter server and the mean aggregator."""

from __future__ import annotations

import pytest
import torch

from hybridsgd import ConfigError, Mean, ParameterServer


def test_any_torch_optimizer_by_name_steps_like_torch():
    for name, opts in [("sgd", {"momentum": 0.9}), ("Adam", {}), ("rmsprop", {"alpha": 0.9})]:
        ps = ParameterServer(torch.ones(4), name, lr=0.1, **opts)
        ref = torch.ones(4, requires_grad=True)
        opt = getattr(torch.optim, type(ps.optimizer).__name__)([ref], lr=0.1, **opts)
        for g in (torch.arange(4.0), -torch.ones(4)):
            ps.apply(g)
            ref.grad = g
            opt.step()
        assert ps.version == 2
        torch.testing.assert_close(ps.params, ref.detach())


def test_bad_optimizer_and_shape():
    with pytest.raises(ConfigError, match="optimizer.name"):
        ParameterServer(torch.zeros(2), "nesterov")
    ps = ParameterServer(torch.zeros(2))
    with pytest.raises(ValueError, match="shape"):
        ps.apply(torch.zeros(3))
    assert ps.version == 0


def test_mean_of_group_means_weights_by_count_and_scale():
    rows = torch.tensor([[1.0, 0.0], [0.0, 4.0]])
    # a group of 3 gradients with mean row 0, and one gradient at half weight (staleness rule)
    out = Mean()(rows, torch.tensor([3.0, 1.0]), torch.tensor([1.0, 0.5]))
    torch.testing.assert_close(out, torch.tensor([0.75, 0.5]))
