"""The Recommender contract every model follows (docs/architecture.md, Contracts), and the helpers that rank for it.

A model learns from a Split (through the views it needs) and returns, for dense user indices, its top-k dense item
indices with their scores. Models that produce vectors implement `user_vectors`/`item_vectors` and let
retrieval.py rank them, so that tiling, tie-breaking and seen-masking live in one place.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

import torch

if TYPE_CHECKING:
    from yambda_dl.data.csr import CSR
    from yambda_dl.data.split import Split


@runtime_checkable
class Recommender(Protocol):
    """fit on a split, then rank the train items for any ranked users."""

    def fit(self, split: Split, trainer: object | None = None) -> Recommender: ...

    def recommend(
        self, user_idx: torch.Tensor, k: int, exclude: CSR | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(item_idx int64 (n, k), scores float32 (n, k)) for the dense users `user_idx`, best first.

        `exclude`, when given, holds the items to mask for each of these users (rows aligned with user_idx).
        """
        ...


@runtime_checkable
class VectorRecommender(Protocol):
    """A model whose scores are inner products of user and item vectors."""

    def user_vectors(self, user_idx: torch.Tensor) -> torch.Tensor: ...  # (n, d)

    def item_vectors(self) -> torch.Tensor: ...  # (num_items, d)


def check_k(k: int, num_items: int) -> None:
    """A model ranks the candidate (train) items: k must lie in 1..num_items."""
    if not 1 <= k <= num_items:
        raise ValueError(f"k={k} must be between 1 and the number of candidate (train) items, {num_items}")


class NotFittedError(RuntimeError):
    """recommend() was called before fit()."""


class OptionalDependencyError(ImportError):
    """A model's optional extra is missing; the message names the extra and the command that installs it.

    A refusal, like a MemoryError raised before fitting: with continue_on_refusal, train() records the message in
    metrics.json ("refused") and a sweep goes on. An ImportError, so that code catching that still catches it.
    """
