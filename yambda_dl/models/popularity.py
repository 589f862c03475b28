"""The paper's non-personalised baselines (docs/protocol.md#baselines): Random, MostPop and DecayPop.

MostPop and DecayPop rank every user's candidates by one global score; Random draws uniform train items per user.
All three break ties by the lower item index and honour the optional seen-item mask. In the streaming evaluation
(eval/stream.py) MostPop and DecayPop count the test day's events up to each window's start, every user's alike;
Random has no state to move.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from yambda_dl.data import views
from yambda_dl.models.base import NotFittedError, UserEvents, check_k

if TYPE_CHECKING:
    from yambda_dl.data.csr import CSR
    from yambda_dl.data.split import Split


def _excluded_rows(exclude: CSR | None, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(indptr, items) of the mask (host or CPU torch form) as int64 numpy, or an empty mask for n users."""
    if exclude is None:
        return np.zeros(n + 1, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return np.asarray(exclude.indptr, dtype=np.int64), np.asarray(exclude.indices, dtype=np.int64)


def _first_k_allowed(
    candidates: np.ndarray, offsets: np.ndarray, excluded: np.ndarray, k: int, num_items: int
) -> np.ndarray:
    """For each row of `candidates` (n, c), the first k entries not excluded for that row; -1 pads.

    Vectorized by (row, item) keys: a candidate is excluded when its key is among the row's excluded keys.
    """
    n = len(candidates)
    rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(offsets))
    banned = np.sort(rows * num_items + excluded)
    keys = np.arange(n, dtype=np.int64)[:, None] * num_items + candidates
    pos = np.searchsorted(banned, keys)
    is_banned = candidates < 0  # -1 marks "no candidate"
    if len(banned):
        is_banned |= (pos < len(banned)) & (banned[np.minimum(pos, len(banned) - 1)] == keys)
    # stable sort puts allowed entries first, each row keeping the candidates' order
    order = np.argsort(is_banned, axis=1, kind="stable")[:, :k]
    picked = np.take_along_axis(candidates, order, axis=1)
    picked[np.take_along_axis(is_banned, order, axis=1)] = -1
    return picked


class GlobalScoreRecommender:
    """Ranks every user's candidates by one score per item; subclasses say how the score is learnt."""

    cheap_refit = True  # eval.stream.retrain_every may refit it during the day (one pass over the events)

    def __init__(self) -> None:
        self.scores: np.ndarray | None = None
        self._order: np.ndarray | None = None  # items by descending score, ties by lower index

    def item_scores(self, split: Split) -> np.ndarray:
        raise NotImplementedError

    def fit(self, split: Split, trainer: object | None = None) -> GlobalScoreRecommender:
        self.scores = np.asarray(self.item_scores(split), dtype=np.float64)
        self._order = np.argsort(-self.scores, kind="stable")
        return self

    def recommend(
        self, user_idx: torch.Tensor, k: int, exclude: CSR | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self._order is None or self.scores is None:
            raise NotFittedError(f"{type(self).__name__}.recommend() called before fit()")
        n, num_items = len(user_idx), len(self._order)
        check_k(k, num_items)
        offsets, excluded = _excluded_rows(exclude, n)
        most_masked = int(np.diff(offsets).max(initial=0))
        head = self._order[: min(num_items, k + most_masked)]  # enough to fill k after any user's mask
        if most_masked == 0:
            items = np.broadcast_to(head[:k], (n, k)).copy()
        else:
            items = _first_k_allowed(np.broadcast_to(head, (n, len(head))), offsets, excluded, k, num_items)
        scores = np.where(items >= 0, self.scores[np.maximum(items, 0)], -np.inf).astype(np.float32)
        return torch.from_numpy(items), torch.from_numpy(scores)

    def event_scores(self, events: UserEvents) -> np.ndarray:
        """What the test-day events add to each item's score (num_items,); the subclass's rule."""
        raise NotImplementedError

    def stream_state(self) -> str:
        return "counts up to the window start"

    def user_stream(self, split: Split) -> _SharedCounts:
        """The streaming state (eval/stream.py): the score counts every event before the window start, all users'."""
        if self.scores is None:
            raise NotFittedError(f"{type(self).__name__}.user_stream() called before fit()")
        return _SharedCounts(self)


class _SharedCounts:
    """A global-score model's scores with the test day's events added: one state for every user."""

    shared = True

    def __init__(self, model: GlobalScoreRecommender) -> None:
        self.model, self.state = model, model.stream_state()

    def updated(self, events: UserEvents) -> GlobalScoreRecommender:
        """A copy of the model whose scores count the fit's events plus `events` (all of them: they are cumulative).
        Memory: two arrays of num_items, plus the events."""
        moved = GlobalScoreRecommender()
        moved.scores = self.model.scores + self.model.event_scores(events.within(len(self.model.scores)))
        moved._order = np.argsort(-moved.scores, kind="stable")
        return moved


class MostPop(GlobalScoreRecommender):
    """Train event counts (duplicates count: a replay is popularity)."""

    def item_scores(self, split: Split) -> np.ndarray:
        return views.item_counts(split)

    def event_scores(self, events: UserEvents) -> np.ndarray:
        return np.bincount(events.item_idx, minlength=len(self.scores)).astype(np.float64)


class DecayPop(GlobalScoreRecommender):
    """Time-decayed counts: each event weighs 0.9 ** (hours since the last train event / `hours`)."""

    def __init__(self, hours: float = 24.0, base: float = 0.9) -> None:
        super().__init__()
        if hours <= 0:
            raise ValueError(f"DecayPop hours must be > 0, got {hours}; the paper's grid: 0.5 1 2 3 6 12 24")
        self.hours, self.base = hours, base
        self.t_max: int | None = None  # the last train timestamp, read when streaming

    def item_scores(self, split: Split) -> np.ndarray:
        return views.decayed_item_counts(split, self.hours, self.base)

    def event_scores(self, events: UserEvents) -> np.ndarray:
        """Each event weighs base ** ((t_max - t_e) / hours), above 1 after t_max: the same reference as the fit's,
        so that the sum ranks as the decayed counts at any later time would (a common factor), and a window
        without events ranks exactly as the fit did."""
        age = (self.t_max - events.timestamp).astype(np.float64)
        weights = np.exp(age * np.log(self.base) / (3600.0 * self.hours))
        return np.bincount(events.item_idx, weights=weights, minlength=len(self.scores))

    def stream_state(self) -> str:
        return "decayed counts up to the window start"

    def user_stream(self, split: Split) -> _SharedCounts:
        self.t_max = views.last_train_timestamp(split)  # the fit's decay reference (one pass over train timestamps)
        return super().user_stream(split)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """A counter-based hash to uniform 64-bit integers: per-(seed, user, draw) randomness, independent of batching."""
    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


class Random:
    """k uniform train items per user, without repeats, the same for a user whatever the batching (seeded)."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self.num_items: int | None = None

    def fit(self, split: Split, trainer: object | None = None) -> Random:
        self.num_items = split.num_items
        return self

    def recommend(
        self, user_idx: torch.Tensor, k: int, exclude: CSR | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.num_items is None:
            raise NotFittedError("Random.recommend() called before fit()")
        num_items, n = self.num_items, len(user_idx)
        check_k(k, num_items)
        offsets, excluded = _excluded_rows(exclude, n)
        # Draw more than k so that after dropping repeats and masked items k remain; when the draw would cover a
        # large part of the catalogue, rank all items by their random key instead (exact, small catalogues only).
        draws = 2 * (k + int(np.diff(offsets).max(initial=0))) + 16
        users = np.asarray(user_idx, dtype=np.uint64)[:, None]
        if draws * 4 >= num_items:
            item_grid = np.arange(num_items, dtype=np.uint64)[None, :]
            keys = _splitmix64(_splitmix64(users ^ np.uint64(self.seed)) ^ item_grid)
            candidates = np.argsort(keys, axis=1, kind="stable")
        else:
            counter = np.arange(draws, dtype=np.uint64)[None, :]
            raw = _splitmix64(_splitmix64(users ^ np.uint64(self.seed)) + counter)
            candidates = (raw % np.uint64(num_items)).astype(np.int64)
            candidates = _drop_repeats(candidates)
        items = _first_k_allowed(candidates, offsets, excluded, k, num_items)
        if (items < 0).any() and (np.diff(offsets) < num_items - k).all():
            raise RuntimeError("Random drew too few distinct items; this should not happen, please report it")
        # scores: the rank order itself, so that the contract's "best first" holds
        scores = np.where(items >= 0, -np.arange(k, dtype=np.float32)[None, :], -np.inf).astype(np.float32)
        return torch.from_numpy(items.astype(np.int64)), torch.from_numpy(scores)


def _drop_repeats(candidates: np.ndarray) -> np.ndarray:
    """Keep the first occurrence of each item in its row, in order; repeats become -1 at the row's end."""
    c = candidates.shape[1]
    order = np.argsort(candidates, axis=1, kind="stable")
    sorted_c = np.take_along_axis(candidates, order, axis=1)
    repeat_sorted = np.zeros_like(sorted_c, dtype=bool)
    repeat_sorted[:, 1:] = sorted_c[:, 1:] == sorted_c[:, :-1]
    is_repeat = np.zeros_like(repeat_sorted)
    np.put_along_axis(is_repeat, order, repeat_sorted, axis=1)
    keep_first = np.argsort(is_repeat, axis=1, kind="stable")
    out = np.take_along_axis(candidates, keep_first, axis=1)
    n_unique = (~is_repeat).sum(axis=1)
    out[np.arange(c)[None, :] >= n_unique[:, None]] = -1  # -1: no candidate
    return out
