"""Negative samplers of the sequential losses, each with the per-draw probability q(i) of drawing item i, which the
logQ corrections of sampled softmax subtract (losses.py).

- uniform: every train item with probability 1 / num_items.
- popularity: item i with probability counts[i] ** alpha / sum (alpha 1: the share of train events; 0: uniform).
- in_batch: the targets of randomly chosen positions of the current batch, shared by every position (Yi et al.,
  RecSys 2019). A batch position is a train event, so one draw is item i with probability about its share of train
  events: q(i) = counts[i] / sum(counts), whatever `popularity_alpha` says.
- mixed: in-batch draws plus uniform draws (Yang et al., "Mixed Negative Sampling for Learning Two-tower Neural
  Networks in Recommendations", WWW 2020): n_b batch draws and n_u uniform ones; every draw is corrected with the
  mixture's probability q(i) = (n_b * counts[i] / sum + n_u / num_items) / (n_b + n_u) (the balance heuristic of
  multiple importance sampling: unbiased for a fixed split of draws between the two samplers).

Draws use torch's current RNG on the caller's device (the module forks and seeds it per step, so a resumed run draws
what the run that ran through drew). Samplers hold their tables as plain tensors moved lazily to the device in use,
not as module buffers: DDP would broadcast buffers from rank 0 on every step, and a popularity table is 12 bytes per
item (9.39M items on Yambda: 113 MB).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

SAMPLERS = ("uniform", "popularity", "in_batch", "mixed")
PER_POSITION_SAMPLERS = ("uniform", "popularity")  # the ones that need no batch: BCE's per-position negatives


@dataclass(frozen=True)
class Draws:
    """Shared negatives of one step and what the logQ corrections need about them."""

    items: Tensor  # (n,) int64 negative items
    log_q: Tensor  # (n,) float32 log-probability of one draw being that item
    log_q_positive: Tensor  # (P,) float32 the same for each position's positive item
    rows: Tensor | None  # (n,) int64 batch row the draw came from (-1 for draws not taken from the batch), or None


def _log_shares(counts: np.ndarray, alpha: float = 1.0) -> np.ndarray:
    """log(counts ** alpha / sum) in float64 (every count must be positive)."""
    counts = np.asarray(counts, dtype=np.float64)
    if not len(counts) or counts.min() <= 0:
        raise ValueError("popularity and in-batch negatives need a positive train count for every item")
    log_weights = alpha * np.log(counts)
    return log_weights - np.logaddexp.reduce(log_weights)


class Sampler:
    """Base class: `draw` shared negatives for a batch, `draw_per_position` independent ones, `log_q` of items."""

    needs_counts = False  # whether setup's item counts change anything (the module skips counting otherwise)

    def __init__(self, counts: np.ndarray) -> None:
        self.num_items = len(counts)
        if self.num_items < 1:
            raise ValueError("negative sampling needs at least one train item")

    def draw(self, num: int, positives: Tensor, rows: Tensor) -> Draws:
        raise NotImplementedError

    def draw_per_position(self, shape: tuple[int, ...], device: torch.device) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__} draws shared negatives only")

    def log_q(self, items: Tensor) -> Tensor:
        raise NotImplementedError


class UniformSampler(Sampler):
    """Every train item with probability 1 / num_items."""

    def draw(self, num: int, positives: Tensor, rows: Tensor) -> Draws:
        items = self.draw_per_position((num,), positives.device)
        return Draws(items, self.log_q(items), self.log_q(positives), None)

    def draw_per_position(self, shape: tuple[int, ...], device: torch.device) -> Tensor:
        return torch.randint(self.num_items, shape, device=device)

    def log_q(self, items: Tensor) -> Tensor:
        return torch.full(items.shape, -math.log(self.num_items), device=items.device)


class PopularitySampler(Sampler):
    """Item i with probability counts[i] ** alpha / sum, by inverting the cumulative distribution (searchsorted:
    O(log items) per draw, no alias table to build). Memory: 12 bytes per item (float64 CDF, float32 log q)."""

    needs_counts = True

    def __init__(self, counts: np.ndarray, alpha: float = 1.0) -> None:
        super().__init__(counts)
        log_probs = _log_shares(counts, alpha)
        self._cdf = torch.from_numpy(np.cumsum(np.exp(log_probs)))
        self._cdf[-1] = 1.0  # rounding must not leave a draw past the last item
        self._log_probs = torch.from_numpy(log_probs.astype(np.float32))

    def _on(self, device: torch.device) -> None:
        if self._cdf.device != device:
            self._cdf, self._log_probs = self._cdf.to(device), self._log_probs.to(device)

    def draw(self, num: int, positives: Tensor, rows: Tensor) -> Draws:
        items = self.draw_per_position((num,), positives.device)
        return Draws(items, self.log_q(items), self.log_q(positives), None)

    def draw_per_position(self, shape: tuple[int, ...], device: torch.device) -> Tensor:
        self._on(device)
        uniform = torch.rand(shape, dtype=torch.float64, device=device)
        return torch.searchsorted(self._cdf, uniform, right=True).clamp_(max=self.num_items - 1)

    def log_q(self, items: Tensor) -> Tensor:
        self._on(items.device)
        return self._log_probs[items]


class InBatchSampler(Sampler):
    """The positives of `num` positions of the batch chosen without replacement (all of them when the batch has
    fewer), shared by every position; q(i) = the item's share of train events.

    Duplicates are kept: two positions with the same target are two draws, which is what the importance-sampling
    estimate sum_j exp(s_j) / q(j) of the softmax denominator needs (merging them would undercount popular items
    and undo exactly what logQ corrects). Each draw remembers its batch row, so the loss can mask the user's own
    items (see SampledSoftmax's `mask_same_user`).
    """

    needs_counts = True

    def __init__(self, counts: np.ndarray) -> None:
        super().__init__(counts)
        self._log_probs = torch.from_numpy(_log_shares(counts).astype(np.float32))

    def log_q(self, items: Tensor) -> Tensor:
        if self._log_probs.device != items.device:
            self._log_probs = self._log_probs.to(items.device)
        return self._log_probs[items]

    def positions(self, num: int, positives: Tensor) -> Tensor:
        """Indices of `num` distinct positions (fewer when the batch has fewer)."""
        total = len(positives)
        if total <= num:
            return torch.arange(total, device=positives.device)
        return torch.randperm(total, device=positives.device)[:num]

    def draw(self, num: int, positives: Tensor, rows: Tensor) -> Draws:
        chosen = self.positions(num, positives)
        items = positives[chosen]
        return Draws(items, self.log_q(items), self.log_q(positives), rows[chosen])


class MixedSampler(Sampler):
    """In-batch draws plus uniform draws (mixed negative sampling); `uniform_share` of the `num` draws are uniform.
    Each draw is corrected with the mixture's probability (see the module docstring)."""

    needs_counts = True

    def __init__(self, counts: np.ndarray, uniform_share: float = 0.5) -> None:
        super().__init__(counts)
        self.uniform_share = uniform_share
        self._in_batch = InBatchSampler(counts)
        self._uniform = UniformSampler(counts)

    def split(self, num: int, batch_positions: int) -> tuple[int, int]:
        """(in-batch draws, uniform draws) for `num` draws over a batch of `batch_positions` positions."""
        uniform = min(num, max(round(num * self.uniform_share), 1))  # both samplers draw whenever num >= 2
        return min(num - uniform, batch_positions), uniform

    def mixture_log_q(self, items: Tensor, in_batch: int, uniform: int) -> Tensor:
        """log((in_batch * share(i) + uniform / num_items) / (in_batch + uniform))."""
        total = in_batch + uniform
        parts = [self._uniform.log_q(items) + math.log(uniform / total)]
        if in_batch:
            parts.append(self._in_batch.log_q(items) + math.log(in_batch / total))
        return torch.logsumexp(torch.stack(parts), dim=0)

    def draw(self, num: int, positives: Tensor, rows: Tensor) -> Draws:
        in_batch, uniform = self.split(num, len(positives))
        chosen = self._in_batch.positions(in_batch, positives)
        items = torch.cat([positives[chosen], self._uniform.draw_per_position((uniform,), positives.device)])
        source = torch.cat([rows[chosen], torch.full((uniform,), -1, dtype=rows.dtype, device=rows.device)])
        return Draws(
            items,
            self.mixture_log_q(items, in_batch, uniform),
            self.mixture_log_q(positives, in_batch, uniform),
            source,
        )

    def log_q(self, items: Tensor) -> Tensor:
        raise NotImplementedError("the mixture's q depends on the batch: use draw(...).log_q")


def make_sampler(name: str, counts: np.ndarray, alpha: float = 1.0, uniform_share: float = 0.5) -> Sampler:
    """The sampler called `name` over len(counts) items."""
    if name == "uniform":
        return UniformSampler(counts)
    if name == "popularity":
        return PopularitySampler(counts, alpha)
    if name == "in_batch":
        return InBatchSampler(counts)
    if name == "mixed":
        return MixedSampler(counts, uniform_share)
    raise ValueError(f"unknown negative sampler {name!r}; valid choices: {', '.join(SAMPLERS)}")


def sampler_needs_counts(name: str) -> bool:
    """Whether the sampler `name` draws by (or corrects with) the item counts."""
    return name != "uniform"
