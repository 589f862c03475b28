"""Top-k recommendations of every ranked user, from any Recommender, in bounded user batches.

Vector models are ranked by retrieval.py (exact, tiled); others by their own recommend(). Memory: the output
(users x k indices and scores) plus one batch's work.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from yambda_dl.data import views
from yambda_dl.data.csr import CSR
from yambda_dl.models.base import VectorRecommender
from yambda_dl.retrieval import topk
from yambda_dl.utils.progress import Progress

if TYPE_CHECKING:
    from yambda_dl.data.split import Split


def recommend_all(
    model: object,
    num_users: int,
    k: int,
    *,
    exclude: CSR | None = None,
    batch_users: int = 8192,
    backend: str = "torch",
    user_tile: int = 4096,
    item_tile: int = 262_144,
    device: str | torch.device | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(item_idx int64 (num_users, k), scores float32 (num_users, k)) for users 0..num_users-1, best first."""
    item_vectors = model.item_vectors() if isinstance(model, VectorRecommender) else None
    items, scores = [], []
    progress = Progress("scoring", total=num_users, unit="users")  # a line every few seconds, or a bar on a TTY
    for start in range(0, num_users, batch_users):
        users = torch.arange(start, min(start + batch_users, num_users))
        # the batch's rows as int64 CPU tensors, what every model's recommend() and topk() take
        mask = None if exclude is None else exclude.rows(start, start + len(users)).to("cpu")
        if item_vectors is not None:
            batch_scores, batch_items = topk(
                model.user_vectors(users),
                item_vectors,
                k,
                exclude=mask,
                backend=backend,
                user_tile=user_tile,
                item_tile=item_tile,
                device=device,
            )
        else:
            batch_items, batch_scores = model.recommend(users, k, exclude=mask)
        items.append(torch.as_tensor(batch_items, dtype=torch.int64).cpu())
        scores.append(torch.as_tensor(batch_scores, dtype=torch.float32).cpu())
        progress.update(len(users))
    progress.summary(f"top-{k} of {num_users:,} users")
    if not items:
        return torch.zeros((0, k), dtype=torch.int64), torch.zeros((0, k), dtype=torch.float32)
    return torch.cat(items), torch.cat(scores)


def seen_items(split: Split) -> CSR:
    """Each ranked user's distinct train items (for the optional seen-item mask): the binary user x item matrix's
    pattern in the host form, 4 bytes per distinct (user, item) pair plus 8 per user; recommend_all widens one
    batch of users at a time to int64."""
    return views.user_item_matrix(split, "binary").with_values(None)
