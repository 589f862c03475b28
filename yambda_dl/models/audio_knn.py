"""AudioKNN, the content baseline: a user is the time-decayed mean of the audio vectors of their history, and items
are ranked by cosine to it.

    w(u, e) = base ** ((t_last(u) - t_e) / (3600 * hours))       ItemKNN's decay (models/itemknn.decayed_profiles)
    user(u) = sum_e w(u, e) a(i_e) / sum_e w(u, e)                over the events whose item has a vector
    score(u, i) = cos(user(u), a(i))                              items without a vector score 0

a(i) is the item's audio vector (data config `side_files.embeddings`, through the split's view
data/embeddings.item_embeddings), made unit-length so that the inner product is the cosine; ranking goes through
retrieval.py. It needs no collaborative signal, so it scores items without train events the same way: with
protocol.candidates=train_and_cold it ranks the cold candidates too (the view's cold rows). Users whose history holds
no item with a vector get a zero vector: every score 0, the lowest item indices first. Memory: the decayed profile
(8 bytes per distinct user-item pair), the candidates' vectors (512 bytes each, memory-mapped) and the users' vectors
(512 bytes each). In the streaming evaluation (eval/stream.py) a user's profile takes in their day's events on train
items (itemknn.moved_profiles) and their vector is recomputed from it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from yambda_dl.data.embeddings import EMBEDDING_COLUMNS, candidate_embeddings
from yambda_dl.models.base import NotFittedError, StateVectors, UserEvents
from yambda_dl.models.factors import recommend_by_vectors
from yambda_dl.models.itemknn import decayed_profiles, last_train_times, moved_profiles
from yambda_dl.utils.memory import DEFAULT_FRACTION, check_fits

if TYPE_CHECKING:
    from yambda_dl.data.csr import CSR
    from yambda_dl.data.split import Split

BYTES_PER_VECTOR = 128 * 4  # a float32 audio vector


class AudioKNN:
    """Cosine between a user's time-decayed mean audio vector and each item's; see the module docstring."""

    def __init__(
        self,
        hours: float = 1.0,
        base: float = 0.9,
        column: str = "normalized_embed",
        memory_fraction: float = DEFAULT_FRACTION,
    ) -> None:
        if hours < 0:
            raise ValueError(f"audio_knn hours must be >= 0 (0 = only the last timestamp's events), got {hours}")
        if not 0.0 < base <= 1.0:
            raise ValueError(f"audio_knn base must be in (0, 1], got {base}")
        if column not in EMBEDDING_COLUMNS:
            raise ValueError(f"unknown audio_knn column {column!r}; valid choices: {', '.join(EMBEDDING_COLUMNS)}")
        if not 0.0 < memory_fraction <= 1.0:
            raise ValueError(f"audio_knn memory_fraction must be in (0, 1], got {memory_fraction}")
        self.hours, self.base, self.column, self.memory_fraction = hours, base, column, memory_fraction
        self._users: torch.Tensor | None = None  # (num_users, 128) unit user vectors (zero rows: no audio)
        self._items: torch.Tensor | None = None  # (num_candidates, 128) unit item vectors (zero rows: no vector)
        self._present: np.ndarray | None = None  # (num_items,) float32: 1 where a train item has a vector
        self._num_items = 0  # train items: the profiles' columns

    def fit(self, split: Split, trainer: object | None = None) -> AudioKNN:
        check_fits(
            (split.num_users + split.num_candidates) * BYTES_PER_VECTOR,
            "the audio_knn user and item vectors",
            fraction=self.memory_fraction,
        )
        view = candidate_embeddings(split, column=self.column)
        candidates = _unit_rows(np.asarray(view.vectors[: split.num_candidates], dtype=np.float32))
        items = candidates[: split.num_items]  # the profiles hold train items only
        profiles = decayed_profiles(split, self.hours, self.base).to_scipy()  # users x items, decayed event sums
        self._present = view.present[: split.num_items].astype(np.float32)
        self._users = torch.from_numpy(_user_rows(profiles, items, self._present))
        self._items = torch.from_numpy(candidates)
        self._num_items = split.num_items
        return self

    def user_stream(self, split: Split) -> _AudioStream:
        """The streaming state (eval/stream.py): the decayed profile with the day's events, then the user's vector.
        Reads the train profiles once more (8 bytes per distinct user-item pair) and each user's last train time."""
        if self._items is None:
            raise NotFittedError("AudioKNN.fit(split) first")
        return _AudioStream(self, decayed_profiles(split, self.hours, self.base), last_train_times(split))

    def user_vectors(self, user_idx: torch.Tensor) -> torch.Tensor:
        if self._users is None:
            raise NotFittedError("AudioKNN.fit(split) first")
        return self._users[torch.as_tensor(user_idx)]

    def item_vectors(self) -> torch.Tensor:
        if self._items is None:
            raise NotFittedError("AudioKNN.fit(split) first")
        return self._items

    def recommend(
        self, user_idx: torch.Tensor, k: int, exclude: CSR | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return recommend_by_vectors(self, user_idx, k, exclude)


class _AudioStream:
    """AudioKNN's streaming state: the users' moved profiles (itemknn.moved_profiles) turned into vectors."""

    shared = False
    state = "decayed mean audio vector updated with the day's events (decay from the latest event)"

    def __init__(self, model: AudioKNN, profiles: CSR, last_train: np.ndarray) -> None:
        self.model, self.profiles, self.last_train = model, profiles, last_train

    def updated(self, events: UserEvents) -> StateVectors:
        model = self.model
        items = model._items[: model._num_items].numpy()  # the profiles hold train items only
        events = events.within(len(items))
        moved = moved_profiles(self.profiles, self.last_train, events, model.hours, model.base).to_scipy()
        return StateVectors(torch.from_numpy(_user_rows(moved, items, model._present)), model._items)


def _user_rows(profiles: object, items: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Unit user vectors from decayed profiles (a scipy users x items matrix): the decayed mean over the items with a
    vector; its direction is the sum's, the division keeps it a mean."""
    sums = np.asarray(profiles @ items, dtype=np.float32)
    weights = np.asarray(profiles @ present).reshape(-1, 1)
    means = np.divide(sums, weights, out=np.zeros_like(sums), where=weights > 0)
    return _unit_rows(means)


def _unit_rows(matrix: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length; zero rows stay zero (float32)."""
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return np.divide(matrix, norms, out=np.zeros_like(matrix), where=norms > 0).astype(np.float32)
