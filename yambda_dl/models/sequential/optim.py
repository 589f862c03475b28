"""Optimizers and learning-rate schedules of the sequential recommender, chosen in config (`_partial_` nodes).

Weight decay applies to the backbone's weight matrices only: decaying embeddings, norms and biases hurts sparse
item tables (rarely seen items shrink towards zero between their updates) and is not what AdamW recipes do.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn


def parameter_groups(modules: Iterable[nn.Module], weight_decay: float | None) -> list[dict]:
    """Two groups: matrices of Linear layers (decayed by `weight_decay` when given) and everything else (not)."""
    decay, keep = [], []
    for module in modules:
        for sub in module.modules():
            for name, parameter in sub.named_parameters(recurse=False):
                if not parameter.requires_grad:
                    continue
                matrix = isinstance(sub, (nn.Linear, nn.GRU)) and name.startswith("weight")
                (decay if matrix else keep).append(parameter)
    if weight_decay is None:
        return [{"params": decay + keep}]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": keep, "weight_decay": 0.0}]
    return [group for group in groups if group["params"]]


def warmup_cosine(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int = 0, min_ratio: float = 0.0
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over `warmup_steps` optimizer steps, then cosine decay to `min_ratio` x lr at `total_steps`."""
    if warmup_steps < 0 or not 0.0 <= min_ratio <= 1.0:
        raise ValueError(f"scheduler needs warmup_steps >= 0 and min_ratio in [0, 1]; got {warmup_steps}, {min_ratio}")
    total = max(total_steps, warmup_steps + 1)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min((step - warmup_steps) / max(total - warmup_steps, 1), 1.0)
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
