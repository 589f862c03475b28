"""Ranking metrics of SPEC.md section 5 (standard and paper-compatible) and catalogue coverage, in pure torch.

Vectorized over users in chunks: memory grows with user_chunk x K (plus the chunk's targets), never with
users x K or users x items. Sums accumulate in float64 so means over millions of users stay exact to ~1e-12.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

DEFAULT_USER_CHUNK = 16_384  # 16k users x 100 ranks x 8 bytes = 13 MB per int64 block: small next to RAM
# Rows of the per-k accumulator; the public names are built from the first three and the paper's two.
_SUMS = ("ndcg", "recall", "hitrate", "dcg", "idcg", "paper_recall")


def ranking_metrics(
    recs: Tensor,
    target_offsets: Tensor,
    target_items: Tensor,
    ks: Sequence[int],
    *,
    user_chunk: int = DEFAULT_USER_CHUNK,
) -> dict[str, float]:
    """Standard `ndcg@k`, `recall@k`, `hitrate@k`; paper-compatible `paper_ndcg@k`, `paper_recall@k` (SPEC 5).

    recs: (n_eval, K) dense item indices, -1 = no item; targets: CSR rows aligned with recs, duplicates kept,
    -1 = a target outside the candidates (counts in |T_u|, never hit). Relevance is set membership in T_u.
    """
    ks = validated_ks(ks, recs)
    _validate_targets(recs, target_offsets, target_items)
    device = recs.device
    offsets = target_offsets.to(device=device, dtype=torch.int64)
    items = target_items.to(device=device, dtype=torch.int64)
    k_max = max(ks)
    # disc(r) = 1 / log2(r + 1) for r = 1..k_max; ideal[j - 1] = IDCG with j relevant ranks
    disc = 1.0 / torch.log2(torch.arange(2, k_max + 2, dtype=torch.float64, device=device))
    ideal = disc.cumsum(0)
    key_base = int(max(int(recs.max()), int(items.max()), 0)) + 1
    sums = torch.zeros(len(_SUMS), len(ks), dtype=torch.float64, device=device)
    for start in range(0, recs.shape[0], user_chunk):
        stop = min(start + user_chunk, recs.shape[0])
        relevant = _relevance(recs[start:stop, :k_max], offsets[start : stop + 1], items, key_base)
        sums += _chunk_sums(relevant, offsets[start : stop + 1].diff(), disc, ideal, ks)
    return _means(sums.tolist(), recs.shape[0], ks)


def coverage(recs_all_ranked: Tensor, num_items: int, ks: Sequence[int]) -> dict[str, float]:
    """`coverage@k` = |union of the top-k of ALL ranked users| / num_items (the candidate items), SPEC 5.

    Memory: one bool per candidate item, plus a copy of the k columns being added (users x k int64).
    """
    ks = validated_ks(ks, recs_all_ranked)
    if num_items < 1:
        raise ValueError(f"num_items={num_items}: coverage needs at least one candidate item")
    _validate_item_range(recs_all_ranked, num_items)
    covered = torch.zeros(num_items, dtype=torch.bool, device=recs_all_ranked.device)
    shares: dict[int, float] = {}
    done = 0
    # ks ascending: the union for a larger k only adds the columns after the previous k
    for k in sorted(set(ks)):
        block = recs_all_ranked[:, done:k]
        covered[block[block >= 0]] = True
        shares[k] = int(covered.sum()) / num_items
        done = k
    return {f"coverage@{k}": shares[k] for k in ks}


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


def _chunk_sums(relevant: Tensor, n_targets: Tensor, disc: Tensor, ideal: Tensor, ks: list[int]) -> Tensor:
    """Per-k sums over the chunk's users of each quantity in _SUMS, (len(_SUMS), len(ks)) float64."""
    cols = torch.tensor(ks, device=relevant.device) - 1
    dcg = (relevant * disc).cumsum(1)[:, cols]  # (users, len(ks)) float64
    hits = relevant.cumsum(1)[:, cols].to(torch.float64)
    t_u = n_targets.to(torch.float64).unsqueeze(1)  # |T_u| with duplicates and -1 targets
    n_relevant = torch.minimum(n_targets.unsqueeze(1), cols.unsqueeze(0) + 1)  # min(k, |T_u|)
    idcg = ideal[n_relevant - 1]
    per_user = (dcg / idcg, hits / n_relevant, (hits > 0).to(torch.float64), dcg, idcg, hits / t_u)
    return torch.stack([value.sum(0) for value in per_user])


def _means(sums: list[list[float]], n_eval: int, ks: list[int]) -> dict[str, float]:
    """Turn the accumulated sums into the flat metric dict; paper NDCG is a ratio of means (SPEC 5)."""
    by_name = dict(zip(_SUMS, sums, strict=True))
    out: dict[str, float] = {}
    for name in ("ndcg", "recall", "hitrate"):
        out |= {f"{name}@{k}": by_name[name][j] / n_eval for j, k in enumerate(ks)}
    # mean DCG / mean IDCG: the n_eval factors cancel; IDCG > 0 since every user has a target
    out |= {f"paper_ndcg@{k}": by_name["dcg"][j] / by_name["idcg"][j] for j, k in enumerate(ks)}
    out |= {f"paper_recall@{k}": by_name["paper_recall"][j] / n_eval for j, k in enumerate(ks)}
    return out
