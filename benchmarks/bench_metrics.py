"""Benchmark: vectorized ranking_metrics vs a straightforward per-user numpy loop, on Yambda-like targets.

.venv/bin/python benchmarks/bench_metrics.py [--users 50000] [--k 100] [--targets-per-user 34]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from _common import command_line, machine, peak_rss_mb

from yambda_dl.eval.metrics import ranking_metrics

KS = (10, 50, 100)


def _data(users: int, k: int, per_user: int, items: int, seed: int = 0):
    """Uniform random recs (users, k) and about per_user targets per user (at least 1), duplicates kept."""
    rng = np.random.default_rng(seed)
    # a small item range so that hits happen; both implementations score a repeated rec at each of its ranks
    recs = rng.integers(0, items, (users, k))
    counts = rng.poisson(per_user - 1, users) + 1
    offsets = np.concatenate([[0], np.cumsum(counts)])
    targets = rng.integers(-1, items, int(offsets[-1]))  # -1 = a target outside the candidates
    return recs, offsets, targets


def _per_user_reference(recs: np.ndarray, offsets: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """One numpy isin per user, the way a first implementation would write it (standard NDCG@k only)."""
    disc = 1 / np.log2(np.arange(2, recs.shape[1] + 2))
    out = {}
    for k in KS:
        total = 0.0
        for user in range(recs.shape[0]):
            user_targets = targets[offsets[user] : offsets[user + 1]]
            relevant = np.isin(recs[user, :k], user_targets[user_targets >= 0])
            ideal = disc[: min(k, len(user_targets))].sum()
            total += (relevant * disc[:k]).sum() / ideal
        out[f"ndcg@{k}"] = total / recs.shape[0]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--targets-per-user", type=int, default=34)
    parser.add_argument("--items", type=int, default=2_000)
    args = parser.parse_args()
    print(f"machine: {machine('torch', 'numpy')}")
    print(f"command: {command_line()}")
    recs, offsets, targets = _data(args.users, args.k, args.targets_per_user, args.items)
    print(f"users={args.users:,} recs/user={args.k} targets={len(targets):,} items={args.items:,} ks={KS}")

    start = time.perf_counter()
    ours = ranking_metrics(torch.from_numpy(recs), torch.from_numpy(offsets), torch.from_numpy(targets), KS)
    vectorized = time.perf_counter() - start
    start = time.perf_counter()
    reference = _per_user_reference(recs, offsets, targets)
    looped = time.perf_counter() - start

    for name, value in reference.items():
        assert abs(ours[name] - value) < 1e-9, (
            name,
            ours[name],
            value,
        )  # same numbers, or the timing is moot
    print(f"ranking_metrics (all 15 metrics): {vectorized:.3f} s")
    print(f"per-user numpy loop (ndcg only):  {looped:.3f} s")
    print(f"speed-up: {looped / vectorized:.1f}x; ndcg@10={ours['ndcg@10']:.4f} ndcg@100={ours['ndcg@100']:.4f}")
    print(f"peak RSS: {peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
