"""The Recommender contract every model follows (docs/architecture.md, Contracts), and the helpers that rank for it.

A model learns from a Split (through the views it needs) and returns, for dense user indices, its top-k dense item
indices with their scores. Models that produce vectors implement `user_vectors`/`item_vectors` and let
retrieval.py rank them, so that tiling, tie-breaking and seen-masking live in one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np
import torch

from yambda_dl.data.csr import CSR
from yambda_dl.retrieval import topk

if TYPE_CHECKING:
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


# --- streaming user state (yambda_dl/eval/stream.py) ------------------------------------------------------------


@dataclass(frozen=True)
class UserEvents:
    """Test-day events a user state takes in: user i's are item_idx[offsets[i]:offsets[i + 1]], in time order, all
    before `until` (the start of the window about to be scored).

    user_idx is the dense index of a ranked user, or -1 for a user without train events (a new user of the day);
    item_idx is the candidate index, -1 for an item outside the candidates. Plain arrays, as the split's Targets.
    """

    user_idx: np.ndarray  # int64 (n,)
    offsets: np.ndarray  # int64 (n + 1,)
    item_idx: np.ndarray  # int64 (n_events,)
    timestamp: np.ndarray  # int64 (n_events,) seconds, ascending within a user
    until: int

    @property
    def num_users(self) -> int:
        return len(self.user_idx)

    def rows(self) -> np.ndarray:
        """The user position 0..n-1 of every event (int64)."""
        return np.repeat(np.arange(self.num_users, dtype=np.int64), np.diff(self.offsets))

    def within(self, num_items: int) -> UserEvents:
        """The events whose item is one of the first `num_items` candidates (what an id-only model can read)."""
        keep = (self.item_idx >= 0) & (self.item_idx < num_items)
        offsets = np.zeros(self.num_users + 1, dtype=np.int64)
        np.cumsum(np.bincount(self.rows()[keep], minlength=self.num_users), out=offsets[1:])
        return UserEvents(self.user_idx, offsets, self.item_idx[keep], self.timestamp[keep], self.until)

    def last_time(self, default: np.ndarray) -> np.ndarray:
        """Each user's latest event time (int64, (n,)); `default` where a user has none."""
        lengths = np.diff(self.offsets)
        last = np.asarray(default, dtype=np.int64).copy()
        has = lengths > 0
        last[has] = self.timestamp[self.offsets[1:][has] - 1]
        return last

    def matrix(
        self,
        num_items: int,
        weights: np.ndarray | None = None,
        base: CSR | None = None,
        base_scale: np.ndarray | None = None,
    ) -> CSR:
        """Users x items host CSR (float64): row i is `base`'s row user_idx[i] (none for -1) times base_scale[i],
        plus each event's weight (1 by default) at its item; repeats summed, columns ascending.

        Events must lie inside 0..num_items-1 (see within()). Vectorized by (row, item) keys: memory 24 bytes per
        entry of the result and of the events.
        """
        n = self.num_users
        rows, cols = self.rows(), self.item_idx
        vals = np.ones(len(cols)) if weights is None else np.asarray(weights, dtype=np.float64)
        if base is not None:
            known = np.flatnonzero(self.user_idx >= 0)
            picked = base.select(self.user_idx[known])
            if picked.is_torch:  # a model's stored rows on its device: the selected ones come to the host
                arrays = (picked.indptr, picked.indices, picked.values)
                picked = CSR(*(None if a is None else a.cpu().numpy() for a in arrays), picked.shape)
            base_vals = np.ones(picked.nnz) if picked.values is None else np.asarray(picked.values, np.float64)
            if base_scale is not None:
                base_vals = base_vals * np.repeat(np.asarray(base_scale, np.float64)[known], picked.lengths())
            rows = np.concatenate([known[np.repeat(np.arange(len(known)), picked.lengths())], rows])
            cols = np.concatenate([np.asarray(picked.indices, dtype=np.int64), cols])
            vals = np.concatenate([base_vals, vals])
        keys, inverse = np.unique(rows * num_items + cols, return_inverse=True)
        sums = np.bincount(inverse, weights=vals, minlength=len(keys))
        indptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(np.bincount(keys // num_items, minlength=n), out=indptr[1:])
        return CSR(indptr, (keys % num_items).astype(np.int32), sums, (n, num_items))


class UserStream(Protocol):
    """A model's user state as it moves through the test day, its weights untouched (StreamingRecommender).

    `state` says how it moves (metrics.json's stream.state). `shared`: one state for every user (popularity counts),
    so that every event moves every user's ranking and a ranking depends on the user only through their seen-item
    mask; else each user's state moves with their own events only.
    """

    state: str
    shared: bool

    def updated(self, events: UserEvents) -> object:
        """A Recommender (or VectorRecommender) ranking with the state after `events`, each user's whole day so far.

        Per-user: its row i is events' user i (dense user_idx or a new user, -1). Shared: `events` are every user's,
        new users' included, and its rows are the ranked users' dense indices.
        """
        ...


@runtime_checkable
class StreamingRecommender(Protocol):
    """A model whose user state can take in the test day's events without retraining (eval/stream.py)."""

    def user_stream(self, split: Split) -> UserStream: ...


class StateVectors:
    """Rows of user vectors computed from a moved state, with the model's item vectors: a VectorRecommender whose
    row i is the i-th user the state was computed for."""

    def __init__(self, users: torch.Tensor, items: torch.Tensor) -> None:
        self._users, self._items = users, items

    def user_vectors(self, user_idx: torch.Tensor) -> torch.Tensor:
        return self._users[torch.as_tensor(user_idx).to(self._users.device)]

    def item_vectors(self) -> torch.Tensor:
        return self._items

    def recommend(
        self, user_idx: torch.Tensor, k: int, exclude: CSR | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        scores, items = topk(self.user_vectors(user_idx), self._items, k, exclude=exclude)
        return items.cpu(), scores.cpu()
