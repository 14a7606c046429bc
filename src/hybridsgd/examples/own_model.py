"""Your own model in every command: a CNN with BatchNorm and dropout on the digits.

A config names it as task.name = "own_model.py:build" (own-model.toml); then run, compare,
tune, noise-scale and predict --curvature take it like a built-in task, on every backend:

    hybridsgd tune examples/own-model.toml --policy sync --policy async \\
        --grid optimizer.lr=[0.03,0.1,0.3] --final-seeds 3 --out runs/own

`python examples/own_model.py` does the same from Python with h.tune.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn

import hybridsgd as h


class SmallCNN(nn.Module):
    def __init__(self, width: int = 8, dropout: float = 0.1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, width, 3, padding=1)
        self.bn = nn.BatchNorm2d(width)
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(width * 16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.bn(self.conv(x))), 2)  # 8x8 -> 4x4
        return self.fc(self.drop(x.flatten(1)))


def build(cfg, seed: int) -> h.Task:
    """The task: ``cfg`` is the config's [task] section, and its keys that hybridsgd does
    not know itself (width, dropout) are in ``cfg.options``. The model is initialised under
    torch.manual_seed(seed) by hybridsgd; ``seed`` is here for data that needs it too."""
    digits = load_digits()  # 1797 8x8 images, shipped inside scikit-learn
    x = torch.tensor(digits.data, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16
    y = torch.tensor(digits.target)
    model = SmallCNN(cfg.options.get("width", 8), cfg.options.get("dropout", 0.1))
    return h.Task.from_module(
        model, (x[:1400], y[:1400]), F.cross_entropy, test=(x[1400:], y[1400:])
    )


if __name__ == "__main__":  # the local backend and the sweep's processes re-import this file
    from pathlib import Path

    here = Path(__file__).resolve().parent
    result = h.tune(
        here / "own-model.toml",
        ["sync", "backup:backups=2", "async"],
        {"optimizer.lr": [0.03, 0.1, 0.3]},
        final_seeds=3,
        out="runs/own",
        force=True,
    )
    print(result.verdict)
    for policy, choice in result.chosen.items():
        print(f"{policy}: {choice['settings']}")
    print(result.summary[["policy", "seed", "final_loss", "final_accuracy"]])
    print(f"report: {result.report}")
