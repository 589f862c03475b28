"""Small vectorized sampling helpers shared by the generator's stages."""

from __future__ import annotations

import numpy as np


def rng(seed: int, stream: int, index: int = 0) -> np.random.Generator:
    """An independent generator per (seed, stream, index): batches and chunks never share random numbers.

    Streams: 0 catalogue, 1 uids, 2 user batches, 3 mappings, 4 embeddings, 5 embedding chunks, 6 the guarantee
    of events of every type in both target days (guarantee.py)."""
    return np.random.default_rng([int(seed), stream, index])


def cumsum0(weights: np.ndarray) -> np.ndarray:
    return np.concatenate([[0.0], np.cumsum(weights, dtype=np.float64)])


def pick_in_ranges(cum: np.ndarray, lo: np.ndarray, hi: np.ndarray, u: np.ndarray) -> np.ndarray:
    """A weighted draw of a position in [lo, hi) per u in [0, 1), from cumulative weights `cum` (n + 1)."""
    x = cum[lo] + u * (cum[hi] - cum[lo])
    return np.clip(np.searchsorted(cum, x, side="right") - 1, lo, np.maximum(hi - 1, lo))


def cut_points(gen: np.random.Generator, total: int, n_parts: float, sigma: float) -> np.ndarray:
    """Split range(total) into ~n_parts contiguous parts of log-normal sizes: the part starts, then total."""
    sizes = gen.lognormal(0.0, sigma, max(1, round(n_parts)))
    cuts = np.round(cumsum0(sizes) / sizes.sum() * total).astype(np.int64)
    return np.unique(cuts)


def sparse_ids(gen: np.random.Generator, n: int, upper: int, low: int = 0) -> np.ndarray:
    """n distinct sorted ids in [low, upper]: like Yambda's, they must be remapped before indexing tables."""
    return np.sort(gen.choice(upper - low + 1, size=n, replace=False)).astype(np.uint32) + np.uint32(low)


def group_starts(keys: np.ndarray) -> np.ndarray:
    """Start index of each run of equal values in a sorted array, plus len(keys)."""
    change = np.flatnonzero(keys[1:] != keys[:-1]) + 1
    return np.concatenate([[0], change, [len(keys)]]).astype(np.int64)
