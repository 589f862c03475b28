"""Recommendations + targets -> every registered metric (docs/protocol.md): the one place metrics are computed.

Model-agnostic: it sees dense item indices and the targets' ragged arrays, never a model. Cheap to call repeatedly (a
validation callback): no state, no copies beyond the evaluated users' rows and the metrics' own chunks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from yambda_dl.eval.metrics import catalogue_metrics, ranking_metrics, validated_ks

DEFAULT_KS = (10, 50, 100)
TABLE_ROWS = ("ndcg", "recall", "hitrate", "paper_ndcg", "paper_recall", "coverage")
SLICE_ROWS = ("ndcg", "recall")  # the printed slice table's metrics (metrics.json holds every one)


def evaluate(
    recs: Tensor, targets: Any, num_items: int, ks: Sequence[int] = DEFAULT_KS, *, catalogue: bool = True
) -> dict[str, float]:
    """Every registered metric for the top-K recs (n_users, K) of ALL ranked users (row = user_idx), and the targets.

    targets: any object with user_idx (n_eval,), offsets (n_eval + 1,) and item_idx (n_targets,) int64 arrays.
    Ranking metrics use the evaluated users' rows; catalogue metrics (coverage) use every ranked user's row and do
    not depend on the targets: `catalogue=False` leaves them out (a target slice reuses the full set's).
    """
    recs = torch.as_tensor(recs)
    ks = validated_ks(ks, recs)
    user_idx = _validated_user_idx(targets.user_idx, recs.shape[0]).to(recs.device)
    offsets, items = torch.as_tensor(targets.offsets), torch.as_tensor(targets.item_idx)
    metrics: dict[str, float] = dict(ranking_metrics(recs.index_select(0, user_idx), offsets, items, ks))
    if catalogue:
        metrics |= catalogue_metrics(recs, num_items, ks)
    metrics["num_evaluated_users"] = int(user_idx.numel())
    metrics["num_ranked_users"] = int(recs.shape[0])
    return metrics


def format_metrics_table(metrics: dict[str, float], ks: Sequence[int] = DEFAULT_KS) -> str:
    """A small Markdown table: one row per metric, one column per cutoff k; absent entries show as '-'."""
    header = "| metric | " + " | ".join(f"@{k}" for k in ks) + " |"
    rule = "|---|" + "---|" * len(ks)
    lines = [header, rule]
    for name in TABLE_ROWS:
        cells = (f"{metrics[f'{name}@{k}']:.4f}" if f"{name}@{k}" in metrics else "-" for k in ks)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_slices_table(
    slices: Mapping[str, Mapping[str, float] | None], ks: Sequence[int] = DEFAULT_KS, rows: Sequence[str] = SLICE_ROWS
) -> str:
    """A small Markdown table of target slices: one row per slice (its evaluated users, its targets, then each metric
    in `rows` at each k); a slice without targets shows 0 users and '-'."""
    columns = [f"{name}@{k}" for name in rows for k in ks]
    lines = ["| slice | users | targets | " + " | ".join(columns) + " |", "|---|---|---|" + "---|" * len(columns)]
    for name, metrics in slices.items():
        metrics = metrics or {}
        counts = (str(int(metrics.get(key, 0))) for key in ("num_evaluated_users", "num_targets"))
        cells = (f"{metrics[column]:.4f}" if column in metrics else "-" for column in columns)
        lines.append(f"| {name} | " + " | ".join([*counts, *cells]) + " |")
    return "\n".join(lines)


def _validated_user_idx(user_idx: Any, n_ranked: int) -> Tensor:
    """The evaluated users' rows: int64, strictly ascending, inside 0..n_ranked-1 (the split's contract)."""
    user_idx = torch.as_tensor(user_idx, dtype=torch.int64)
    if user_idx.ndim != 1:
        raise ValueError(f"targets.user_idx must be 1-D; got shape {tuple(user_idx.shape)}")
    if user_idx.numel() and (int(user_idx.min()) < 0 or int(user_idx.max()) >= n_ranked):
        raise ValueError(
            f"targets.user_idx holds {int(user_idx.min())}..{int(user_idx.max())}; valid rows of recs are "
            f"0..{n_ranked - 1} (one row per ranked user)"
        )
    if bool((user_idx.diff() <= 0).any()):
        raise ValueError("targets.user_idx must be strictly ascending (each evaluated user once)")
    return user_idx
