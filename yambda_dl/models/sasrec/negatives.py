"""Negative samplers over the train items: uniform, or by popularity (counts ** alpha), with their log-probabilities
for the logQ correction of sampled softmax. Draws use torch's current RNG on the caller's device.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

SAMPLERS = ("uniform", "popularity")


class UniformSampler:
    """Every train item with probability 1 / num_items."""

    def __init__(self, num_items: int) -> None:
        self.num_items = num_items

    def sample(self, shape: tuple[int, ...], device: torch.device) -> Tensor:
        return torch.randint(self.num_items, shape, device=device)

    def log_q(self, items: Tensor) -> Tensor:
        return torch.full(items.shape, -math.log(self.num_items), device=items.device)


class PopularitySampler:
    """Item i with probability counts[i] ** alpha / sum: the in-batch-like distribution that logQ corrects.

    Sampling inverts the cumulative distribution with searchsorted (O(log items) per draw, no per-call table).
    Memory: 12 bytes per item (float64 CDF, float32 log-probabilities) on the device in use.
    """

    def __init__(self, counts: np.ndarray, alpha: float = 1.0) -> None:
        weights = np.asarray(counts, dtype=np.float64) ** alpha
        if not len(weights) or weights.min() <= 0:
            raise ValueError("popularity sampling needs a positive count for every item (train items have one)")
        probs = weights / weights.sum()
        self._cdf = torch.from_numpy(np.cumsum(probs))
        self._cdf[-1] = 1.0  # rounding must not leave a draw past the last item
        self._log_probs = torch.from_numpy(np.log(probs).astype(np.float32))

    def _on(self, device: torch.device) -> None:
        if self._cdf.device != device:
            self._cdf, self._log_probs = self._cdf.to(device), self._log_probs.to(device)

    def sample(self, shape: tuple[int, ...], device: torch.device) -> Tensor:
        self._on(device)
        uniform = torch.rand(shape, dtype=torch.float64, device=device)
        return torch.searchsorted(self._cdf, uniform, right=True).clamp_(max=len(self._cdf) - 1)

    def log_q(self, items: Tensor) -> Tensor:
        self._on(items.device)
        return self._log_probs[items]


def make_sampler(name: str, counts: np.ndarray, alpha: float = 1.0) -> UniformSampler | PopularitySampler:
    """The sampler called `name` over len(counts) items."""
    if name == "uniform":
        return UniformSampler(len(counts))
    if name == "popularity":
        return PopularitySampler(counts, alpha)
    raise ValueError(f"unknown negative sampler {name!r}; valid choices: {', '.join(SAMPLERS)}")
