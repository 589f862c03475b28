"""Ranking metrics (standard and paper-compatible) and catalogue coverage, in pure torch (docs/protocol.md).

Every metric is a small named function in a registry, so a new metric is one function and one test:

- a ranking metric is `fn(hits: Hits) -> per-user values (users, len(ks))`, averaged over the evaluated users
  (or `-> (numerator, denominator)`, a ratio of the two means, with `ratio_of_means=True`);
- a catalogue metric is `fn(recs_all_ranked, num_items, ks) -> one value per k`, over every ranked user's list.

Vectorized over users in chunks: memory grows with user_chunk x K (plus the chunk's targets), never with
users x K or users x items. Sums accumulate in float64 so means over millions of users stay exact to ~1e-12.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property

import torch
from torch import Tensor

DEFAULT_USER_CHUNK = 16_384  # 16k users x 100 ranks x 8 bytes = 13 MB per int64 block: small next to RAM


# --- the registry -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hits:
    """What every ranking metric is a function of, for one chunk of evaluated users (rows) and the cutoffs ks.

    The derived quantities are computed once per chunk, on first use, and shared by all metrics.
    """

    relevant: Tensor  # (users, k_max) bool: the item at rank r is in the user's target SET
    n_targets: Tensor  # (users,) int64 |T_u|: duplicates and targets outside the candidates (-1) included
    ks: Tensor  # (len(ks),) int64 cutoffs, in the caller's order
    disc: Tensor  # (k_max,) float64 disc(r) = 1 / log2(r + 1)
    ideal: Tensor  # (k_max,) float64 ideal[j - 1] = IDCG with j relevant ranks

    def at_k(self, per_rank: Tensor) -> Tensor:
        """Columns k - 1 of a (users, k_max) per-rank tensor: its values at each cutoff, (users, len(ks))."""
        return per_rank[:, self.ks - 1]

    @cached_property
    def dcg(self) -> Tensor:
        """DCG@k per user, (users, len(ks)) float64."""
        return self.at_k((self.relevant * self.disc).cumsum(1))

    @cached_property
    def hits(self) -> Tensor:
        """Hits in the top k per user, (users, len(ks)) float64."""
        return self.at_k(self.relevant.cumsum(1)).to(torch.float64)

    @cached_property
    def n_relevant(self) -> Tensor:
        """min(k, |T_u|) per user, (users, len(ks)) int64: the most hits the top k can hold."""
        return torch.minimum(self.n_targets.unsqueeze(1), self.ks.unsqueeze(0))

    @cached_property
    def idcg(self) -> Tensor:
        """IDCG@k per user, (users, len(ks)) float64; > 0 since every evaluated user has a target."""
        return self.ideal[self.n_relevant - 1]


RankingFn = Callable[[Hits], "Tensor | tuple[Tensor, Tensor]"]
CatalogueFn = Callable[[Tensor, int, list[int]], list[float]]


@dataclass(frozen=True)
class RankingMetric:
    fn: RankingFn
    ratio_of_means: bool = False  # fn returns (numerator, denominator) per user; the metric is mean / mean


RANKING_METRICS: dict[str, RankingMetric] = {}
CATALOGUE_METRICS: dict[str, CatalogueFn] = {}
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def _check_new_name(name: str) -> None:
    if not _NAME.match(name):
        raise ValueError(f"metric name {name!r}: use lower-case letters, digits and '_' (it becomes `{name}@k`)")
    if name in RANKING_METRICS or name in CATALOGUE_METRICS:
        raise ValueError(f"metric {name!r} is already registered; registered: {', '.join(registered_metrics())}")


def ranking_metric(name: str, *, ratio_of_means: bool = False) -> Callable[[RankingFn], RankingFn]:
    """Register `fn(hits) -> (users, len(ks)) float64` as metric `name@k`, the mean over evaluated users.

    With ratio_of_means, fn returns (numerator, denominator) per user and the metric is their means' ratio.
    """
    _check_new_name(name)

    def register(fn: RankingFn) -> RankingFn:
        RANKING_METRICS[name] = RankingMetric(fn, ratio_of_means)
        return fn

    return register


def catalogue_metric(name: str) -> Callable[[CatalogueFn], CatalogueFn]:
    """Register `fn(recs_all_ranked, num_items, ks) -> [value per k]` as metric `name@k` (all ranked users)."""
    _check_new_name(name)

    def register(fn: CatalogueFn) -> CatalogueFn:
        CATALOGUE_METRICS[name] = fn
        return fn

    return register


def registered_metrics() -> list[str]:
    """Every metric's name, ranking metrics first, in registration order."""
    return [*RANKING_METRICS, *CATALOGUE_METRICS]


# --- the metrics --------------------------------------------------------------------------------------------


@ranking_metric("ndcg")
def ndcg(hits: Hits) -> Tensor:
    """Standard NDCG@k: DCG@k / IDCG@k per user, averaged."""
    return hits.dcg / hits.idcg


@ranking_metric("recall")
def recall(hits: Hits) -> Tensor:
    """Standard Recall@k: hits / min(k, |T_u|); a track repeated in T_u is hit once."""
    return hits.hits / hits.n_relevant


@ranking_metric("hitrate")
def hitrate(hits: Hits) -> Tensor:
    """HitRate@k: the share of evaluated users with at least one hit."""
    return (hits.hits > 0).to(torch.float64)


@ranking_metric("paper_ndcg", ratio_of_means=True)
def paper_ndcg(hits: Hits) -> tuple[Tensor, Tensor]:
    """The paper's NDCG@k: mean DCG@k / mean IDCG@k, a ratio of means (docs/protocol.md)."""
    return hits.dcg, hits.idcg


@ranking_metric("paper_recall")
def paper_recall(hits: Hits) -> Tensor:
    """The paper's Recall@k: hits / |T_u| with duplicates counted."""
    return hits.hits / hits.n_targets.to(torch.float64).unsqueeze(1)


@catalogue_metric("coverage")
def _coverage(recs_all_ranked: Tensor, num_items: int, ks: list[int]) -> list[float]:
    """|union of the top-k of all ranked users| / num_items; one bool per candidate item."""
    covered = torch.zeros(num_items, dtype=torch.bool, device=recs_all_ranked.device)
    shares: dict[int, float] = {}
    done = 0
    # ks ascending: the union for a larger k only adds the columns after the previous k
    for k in sorted(set(ks)):
        block = recs_all_ranked[:, done:k]
        covered[block[block >= 0]] = True
        shares[k] = int(covered.sum()) / num_items
        done = k
    return [shares[k] for k in ks]


# --- computing them -----------------------------------------------------------------------------------------


def ranking_metrics(
    recs: Tensor,
    target_offsets: Tensor,
    target_items: Tensor,
    ks: Sequence[int],
    *,
    user_chunk: int = DEFAULT_USER_CHUNK,
    names: Sequence[str] | None = None,
) -> dict[str, float]:
    """Every registered ranking metric at every k (or those in `names`): `ndcg@k`, `recall@k`, `hitrate@k`,
    `paper_ndcg@k`, `paper_recall@k`, ... (docs/protocol.md).

    recs: (n_eval, K) dense item indices, -1 = no item; targets: CSR rows aligned with recs, duplicates kept,
    -1 = a target outside the candidates (counts in |T_u|, never hit). Relevance is set membership in T_u.
    """
    ks = validated_ks(ks, recs)
    chosen = _chosen(RANKING_METRICS, names)
    _validate_targets(recs, target_offsets, target_items)
    device = recs.device
    offsets = target_offsets.to(device=device, dtype=torch.int64)
    items = target_items.to(device=device, dtype=torch.int64)
    k_max = max(ks)
    disc = 1.0 / torch.log2(torch.arange(2, k_max + 2, dtype=torch.float64, device=device))
    ideal = disc.cumsum(0)
    ks_tensor = torch.tensor(ks, device=device)
    key_base = int(max(int(recs.max()), int(items.max()), 0)) + 1
    # per metric: the running sum over users, (len(ks),) float64; two rows for a ratio of means
    sums = {
        name: torch.zeros(2 if metric.ratio_of_means else 1, len(ks), dtype=torch.float64, device=device)
        for name, metric in chosen.items()
    }
    for start in range(0, recs.shape[0], user_chunk):
        stop = min(start + user_chunk, recs.shape[0])
        chunk_offsets = offsets[start : stop + 1]
        relevant = _relevance(recs[start:stop, :k_max], chunk_offsets, items, key_base)
        hits = Hits(relevant, chunk_offsets.diff(), ks_tensor, disc, ideal)
        for name, metric in chosen.items():
            values = metric.fn(hits)
            parts = values if metric.ratio_of_means else (values,)
            sums[name] += torch.stack([part.sum(0) for part in parts])
    n_eval = recs.shape[0]
    out: dict[str, float] = {}
    for name, metric in chosen.items():
        rows = sums[name].tolist()
        # a ratio of means: the n_eval factors cancel; the denominator (IDCG) is > 0 for every user
        values = [a / b for a, b in zip(*rows, strict=True)] if metric.ratio_of_means else [a / n_eval for a in rows[0]]
        out |= {f"{name}@{k}": value for k, value in zip(ks, values, strict=True)}
    return out


def catalogue_metrics(
    recs_all_ranked: Tensor, num_items: int, ks: Sequence[int], *, names: Sequence[str] | None = None
) -> dict[str, float]:
    """Every registered catalogue metric at every k (or those in `names`), over ALL ranked users' top-K."""
    ks = validated_ks(ks, recs_all_ranked)
    chosen = _chosen(CATALOGUE_METRICS, names)
    if num_items < 1:
        raise ValueError(f"num_items={num_items}: catalogue metrics need at least one candidate item")
    _validate_item_range(recs_all_ranked, num_items)
    out: dict[str, float] = {}
    for name, fn in chosen.items():
        out |= {f"{name}@{k}": value for k, value in zip(ks, fn(recs_all_ranked, num_items, ks), strict=True)}
    return out


def coverage(recs_all_ranked: Tensor, num_items: int, ks: Sequence[int]) -> dict[str, float]:
    """`coverage@k` = |union of the top-k of ALL ranked users| / num_items (the candidate items).

    Memory: one bool per candidate item, plus a copy of the k columns being added (users x k int64).
    """
    return catalogue_metrics(recs_all_ranked, num_items, ks, names=("coverage",))


def _chosen(registry: dict, names: Sequence[str] | None) -> dict:
    if names is None:
        return dict(registry)
    unknown = [name for name in names if name not in registry]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; valid choices: {', '.join(registry)}")
    return {name: registry[name] for name in names}


# --- checks and the relevance lookup ------------------------------------------------------------------------


def validated_ks(ks: Sequence[int], recs: Tensor) -> list[int]:
    """The cutoffs as a list, checked against the (rows, K) recommendation matrix they will cut."""
    if recs.ndim != 2 or recs.dtype not in (torch.int64, torch.int32):
        raise ValueError(
            f"recs must be a 2-D integer tensor (users, K) of dense item indices; got shape "
            f"{tuple(recs.shape)} dtype {recs.dtype}"
        )
    ks = [int(k) for k in ks]
    if not ks:
        raise ValueError("ks is empty: give at least one cutoff, e.g. ks=(10, 50, 100)")
    for k in ks:
        if not 1 <= k <= recs.shape[1]:
            raise ValueError(f"cutoff k={k} is out of range: valid cutoffs are 1..K={recs.shape[1]} (recs per user)")
    return ks


def _validate_targets(recs: Tensor, target_offsets: Tensor, target_items: Tensor) -> None:
    """Check the CSR targets against the rows of recs; an evaluated user must have at least one target."""
    n_eval = recs.shape[0]
    if n_eval == 0:
        raise ValueError("no evaluated users: recs has 0 rows, the targets are empty; metrics would be NaN")
    if target_offsets.ndim != 1 or target_offsets.numel() != n_eval + 1:
        raise ValueError(
            f"target_offsets must be 1-D of length n_eval + 1 = {n_eval + 1} (one row per recs row); "
            f"got shape {tuple(target_offsets.shape)}"
        )
    counts = target_offsets.diff()
    if int(target_offsets[0]) != 0 or int(target_offsets[-1]) != target_items.numel():
        raise ValueError(
            f"target_offsets must run from 0 to len(target_items)={target_items.numel()}; "
            f"got {int(target_offsets[0])}..{int(target_offsets[-1])}"
        )
    if bool((counts < 1).any()):
        row = int((counts < 1).nonzero()[0])
        raise ValueError(f"evaluated user row {row} has {int(counts[row])} targets; each evaluated user needs >= 1")
    if target_items.numel() and int(target_items.min()) < -1:
        raise ValueError(f"target_items holds {int(target_items.min())}; valid are dense indices >= 0, or -1")


def _validate_item_range(recs: Tensor, num_items: int) -> None:
    """Recommended indices must be candidates (0..num_items-1) or the -1 padding."""
    if recs.numel() == 0:
        return
    low, high = int(recs.min()), int(recs.max())
    if low < -1 or high >= num_items:
        raise ValueError(f"recs hold item indices {low}..{high}; valid are -1 or 0..{num_items - 1}")


def _relevance(recs: Tensor, offsets: Tensor, items: Tensor, key_base: int) -> Tensor:
    """rel (users, k_max) bool: the item at each rank is in the user's target SET (a sorted-key lookup)."""
    n_users = recs.shape[0]
    chunk_items = items[int(offsets[0]) : int(offsets[-1])]
    chunk_users = torch.repeat_interleave(torch.arange(n_users, device=recs.device), offsets.diff())
    known = chunk_items >= 0  # -1 targets count in |T_u| but can never be hit
    # one int64 key per (user, item) pair: user * key_base + item; unique() also sorts them for searchsorted
    target_keys = torch.unique(chunk_users[known] * key_base + chunk_items[known])
    if target_keys.numel() == 0:
        return torch.zeros_like(recs, dtype=torch.bool)
    rec_keys = torch.arange(n_users, device=recs.device).unsqueeze(1) * key_base + recs
    where = torch.searchsorted(target_keys, rec_keys).clamp_max(target_keys.numel() - 1)
    # a -1 rec would alias the previous user's largest item, hence the explicit check
    return (target_keys[where] == rec_keys) & (recs >= 0)
