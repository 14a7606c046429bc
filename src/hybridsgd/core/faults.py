"""Faulty workers for experiments (the ``[faults]`` section), and gradient checks.

Byzantine workers send corrupted gradients: ``sign-flip`` (-g), ``scale:factor=F`` (F g),
``gaussian:std=S`` (pure noise), ``zero``, ``stale-replay`` (their first gradient, again and
again) or ``label-flip`` (an honest gradient on labels c -> C - 1 - c).

Omniscient attacks see the honest gradients of the update they join and all send the same
vector, computed at update time from the update's accepted honest gradients (mean mu,
coordinate-wise standard deviation sigma): ``alie:z=Z`` sends mu - Z sigma ("a little is
enough", Baruch et al. 2019; Z = 0 takes the paper's z_max for n workers and f attackers),
``ipm:eps=E`` sends -E mu (inner-product manipulation, Xie et al. 2020), and ``custom`` sends
what a user's callable returns for the honest rows (``h.run(cfg, attack=fn)``). NaN workers send
gradients full of NaN. Crashes (a worker dying at a time, or at a random time with a rate)
are carried out by the backends, through :meth:`~hybridsgd.policies.QuorumPolicy.lose`.

A :class:`GradientCheck` is the server's gate: a gradient with a NaN or an infinity is
rejected, one whose norm exceeds ``max_norm`` is clipped to it or rejected. A rejected
gradient has arrived (the policy counted it toward its barrier) but is left out of its
update; an update left with nothing moves the version without changing the parameters.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from hybridsgd.errors import ConfigError
from hybridsgd.specs import parse_named

#: attack name -> its parameters and their defaults (None: required)
ATTACKS: dict[str, dict[str, float | None]] = {
    "sign-flip": {"factor": 1.0},
    "scale": {"factor": None},
    "gaussian": {"std": None},
    "zero": {},
    "stale-replay": {},
    "label-flip": {},
    "alie": {"z": 0.0},
    "ipm": {"eps": 0.5},
    "custom": {},
}
#: attacks that see the honest gradients of the update they join (applied at update time)
OMNISCIENT = ("alie", "ipm", "custom")


def parse_attack(spec: str) -> tuple[str, dict[str, float]]:
    """``faults.attack``: a name, and ``name:key=value`` for its parameters.

    >>> parse_attack("sign-flip"), parse_attack("scale:factor=-4")
    (('sign-flip', {'factor': 1.0}), ('scale', {'factor': -4.0}))
    """
    return parse_named(spec, ATTACKS, "faults.attack", "attack")


@dataclass
class Faults:
    """Which workers misbehave and how; :meth:`corrupt` applies it to gradient rows."""

    byzantine: frozenset[int] = frozenset()
    attack: str = "sign-flip"
    params: dict[str, float] = field(default_factory=dict)
    nan: frozenset[int] = frozenset()
    crashes: list[tuple[float, int]] = field(default_factory=list)  # (time, worker), sorted
    seed: int = 0

    workers: int = 0
    custom: Callable[[torch.Tensor], torch.Tensor] | None = None  # attack = "custom"

    def __post_init__(self) -> None:
        self._first: dict[int, torch.Tensor] = {}  # stale-replay: each worker's first gradient
        self._gen = torch.Generator().manual_seed(self.seed)

    def state(self) -> dict:
        """What a checkpoint keeps: the noise generator and the replayed gradients."""
        return {"gen": self._gen.get_state(), "first": dict(self._first)}

    def load_state(self, state: dict) -> None:
        self._gen.set_state(state["gen"])
        self._first = dict(state["first"])

    @classmethod
    def from_config(cls, f, workers: int, seed: int) -> Faults:
        """From a ``[faults]`` section (validated) for ``workers`` workers."""
        rng = np.random.default_rng([seed, 11])
        chosen = set(f.byzantine_workers)
        if f.byzantine > 0 and not chosen:
            chosen = set(rng.permutation(workers)[: round(f.byzantine * workers)].tolist())
        name, params = parse_attack(f.attack)
        crashes = [(float(c["time"]), int(c["worker"])) for c in f.crashes]
        if f.crash_rate > 0:
            times = rng.exponential(1.0 / f.crash_rate, workers)
            crashes += [(float(t), w) for w, t in enumerate(times)]
        return cls(
            frozenset(chosen),
            name,
            params,
            frozenset(f.nan_workers),
            sorted(crashes),
            seed,
            workers,
        )

    @property
    def omniscient(self) -> bool:
        """Whether Byzantine gradients are made at update time from the honest ones."""
        return bool(self.byzantine) and self.attack in OMNISCIENT

    def alie_z(self) -> float:
        """ALIE's z: as given, or the paper's z_max = Phi^-1((n - s) / n) with
        s = floor(n / 2 + 1) - f, the most an attacker can shift while staying inside the
        honest spread of enough coordinates (Baruch et al. 2019, section 3)."""
        if self.params.get("z", 0.0):
            return self.params["z"]
        from statistics import NormalDist

        n, f = self.workers, len(self.byzantine)
        s = math.floor(n / 2 + 1) - f
        return NormalDist().inv_cdf(min(max((n - s) / n, 1e-9), 1 - 1e-9))

    def attack_update(self, rows: torch.Tensor, workers: list[int]) -> None:
        """Replace, in place, the rows of Byzantine workers among an update's gradients by
        the omniscient attack's vector, made from the other (honest) rows; with no honest
        row, from the Byzantine workers' own honest gradients (they are computed honestly)."""
        bad = [i for i, w in enumerate(workers) if w in self.byzantine]
        if not bad:
            return
        good = [i for i, w in enumerate(workers) if w not in self.byzantine]
        honest = rows[good] if good else rows[bad].clone()
        mu = honest.mean(dim=0)
        if self.attack == "alie":
            sigma = honest.std(dim=0) if len(honest) > 1 else torch.zeros_like(mu)
            v = mu - self.alie_z() * sigma
        elif self.attack == "ipm":
            v = -self.params["eps"] * mu
        else:
            if self.custom is None:
                raise ConfigError("faults.attack", "custom needs a callable: h.run(cfg, attack=fn)")
            v = torch.as_tensor(self.custom(honest.clone()), dtype=rows.dtype, device=rows.device)
            v = v.reshape(-1)
            if v.shape != mu.shape:
                raise ConfigError(
                    "faults.attack",
                    f"the custom attack returned shape {tuple(v.shape)}, "
                    f"expected {tuple(mu.shape)}",
                )
        rows[bad] = v

    @property
    def active(self) -> bool:
        return bool(self.byzantine or self.nan)

    def touches(self, workers) -> bool:
        return self.active and any(w in self.byzantine or w in self.nan for w in workers)

    def flips_labels(self, worker: int) -> bool:
        return self.attack == "label-flip" and worker in self.byzantine

    def corrupt_one(self, worker: int, g: torch.Tensor) -> None:
        """Corrupt one gradient in place, if its worker is faulty."""
        if worker in self.nan:
            g.fill_(math.nan)
            return
        if worker not in self.byzantine:
            return
        a = self.attack
        if a == "sign-flip":
            g.mul_(-self.params["factor"])
        elif a == "scale":
            g.mul_(self.params["factor"])
        elif a == "gaussian":
            g.copy_(torch.randn(g.shape, generator=self._gen) * self.params["std"])
        elif a == "zero":
            g.zero_()
        elif a == "stale-replay":
            first = self._first.setdefault(worker, g.clone())
            g.copy_(first)
        # label-flip: the gradient itself is honest, computed on flipped labels

    def corrupt(self, rows: torch.Tensor, workers: list[int]) -> torch.Tensor:
        """Rows ``[n, d]`` of the given workers, corrupted in place where faulty."""
        for i, w in enumerate(workers):
            self.corrupt_one(w, rows[i])
        return rows


def flip_labels(y: torch.Tensor, classes: int) -> torch.Tensor:
    """The ``label-flip`` attack's labels: class c becomes C - 1 - c. The one definition
    every backend uses (a Byzantine worker computes an honest gradient on these)."""
    return classes - 1 - y


class GradientCheck:
    """Reject gradients of the wrong shape or dtype and non-finite ones; clip (or reject)
    those with a norm above ``max_norm``."""

    def __init__(
        self, max_norm: float | None = None, large: str = "clip", numel: int | None = None
    ) -> None:
        if large not in ("clip", "reject"):
            raise ConfigError("optimizer.large_gradients", f"use clip or reject (got {large!r})")
        self.max_norm, self.large, self.numel = max_norm, large, numel
        #: the dtype a gradient must have: the server's parameters' (float32 but in tests)
        self.dtype = torch.float32

    @property
    def per_gradient(self) -> bool:
        """Whether gradients must be checked one by one (a norm bound is set)."""
        return self.max_norm is not None

    def row(self, g: torch.Tensor) -> str:
        """Check (and maybe clip in place) one gradient: ``""`` if accepted, else why not."""
        if self.numel is not None and (g.dim() != 1 or g.numel() != self.numel):
            return f"shape {tuple(g.shape)}, expected ({self.numel},)"
        if g.dtype != self.dtype:
            want = str(self.dtype).removeprefix("torch.")
            return f"dtype {str(g.dtype).removeprefix('torch.')}, expected {want}"
        if not bool(torch.isfinite(g.sum())):  # one reduction on the common path
            if not bool(torch.isfinite(g).all()):
                return "non-finite"
            return "overflow"  # finite values whose sum overflows float32 (3e38 each, say)
        if self.max_norm is not None:
            norm = float(torch.linalg.vector_norm(g))
            if not math.isfinite(norm) or norm > self.max_norm:
                if self.large == "reject":
                    return f"norm {norm:.3g} > {self.max_norm:g}"
                g.mul_(self.max_norm / norm)
        return ""

    def finite(self, g) -> bool:
        """A cheap test for a group mean or per-tensor parts: one reduction each."""
        parts = g if isinstance(g, list) else [g]
        return all(p is None or bool(torch.isfinite(p.sum())) for p in parts)
