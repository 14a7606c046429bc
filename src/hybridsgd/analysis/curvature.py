"""The curvature a stability prediction needs: the largest Hessian eigenvalue of a task's
training loss, by power iteration with Hessian-vector products (no Hessian is formed)."""

from __future__ import annotations

import torch

from hybridsgd.tasks.base import Task


def largest_eigenvalue(
    task: Task,
    params: torch.Tensor | None = None,
    iters: int = 100,
    tol: float = 1e-4,
    seed: int = 0,
) -> float:
    """Largest-magnitude eigenvalue of the Hessian of the full training loss at ``params``
    (default: the task's initial parameters). At a minimum this is the h that bounds the
    stable learning rate; early in training it is an estimate."""
    theta = (task.initial_params() if params is None else params).detach().clone()
    x, y = task.x_train, task.y_train
    gen = torch.Generator().manual_seed(seed)
    v = torch.randn(theta.numel(), generator=gen)
    v /= v.norm()
    eig = 0.0
    for _ in range(iters):
        t = theta.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(task._loss(t, x, y), t, create_graph=True)
        (hv,) = torch.autograd.grad(g @ v, t)
        new = float(v @ hv)
        norm = hv.norm()
        if norm == 0:
            return 0.0
        v = hv / norm
        if abs(new - eig) <= tol * max(abs(new), 1e-12):
            return new
        eig = new
    return eig
