"""Views: what a model family eats, derived from a Split by streaming its train events once.

Memory of each view is stated in its docstring; none holds the train events themselves.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from yambda_dl.data.csr import CSR, HOST_BYTES_PER_NONZERO
from yambda_dl.data.embeddings import ItemEmbeddings, item_embeddings  # the audio view (cached beside the split)
from yambda_dl.utils.memory import check_fits

__all__ = [
    "CSR",
    "ItemEmbeddings",
    "decayed_item_counts",
    "item_counts",
    "item_embeddings",
    "last_train_timestamp",
    "user_item_matrix",
]

if TYPE_CHECKING:
    from yambda_dl.data.split import Split


def item_counts(split: Split) -> np.ndarray:
    """Train events per item (int64, (num_items,)): MostPop's score. Memory: 8 bytes per train item."""
    counts = np.zeros(split.num_items, dtype=np.int64)
    for batch in split.iter_train(columns=("item_idx",)):
        counts += np.bincount(batch["item_idx"], minlength=split.num_items)
    return counts


def last_train_timestamp(split: Split) -> int:
    """The latest train timestamp of the split (t_max of DecayPop)."""
    t_max = -1
    for batch in split.iter_train(columns=("timestamp",)):
        if len(batch["timestamp"]):
            t_max = max(t_max, int(batch["timestamp"].max()))
    return t_max


def decayed_item_counts(split: Split, hours: float, base: float = 0.9) -> np.ndarray:
    """sum over train events of base ** ((t_max - t_e) / (3600 * hours)) per item (float64, (num_items,)).

    DecayPop's score (docs/protocol.md), with t_max the last train timestamp. Two streaming passes (t_max, then
    the sums); memory: 8 bytes per train item.
    """
    if hours <= 0:
        raise ValueError(f"DecayPop needs hours > 0, got {hours}; the paper's grid is 0.5, 1, 2, 3, 6, 12, 24")
    t_max = last_train_timestamp(split)
    log_base_per_second = np.log(base) / (3600.0 * hours)
    scores = np.zeros(split.num_items, dtype=np.float64)
    for batch in split.iter_train(columns=("item_idx", "timestamp")):
        age = t_max - batch["timestamp"].astype(np.float64)
        scores += np.bincount(batch["item_idx"], weights=np.exp(age * log_base_per_second), minlength=split.num_items)
    return scores


# --- the user x item matrix ---------------------------------------------------------------------------------------

MATRIX_VALUES = ("binary", "count")


def _user_item_pairs(batch: dict[str, np.ndarray], num_items: int) -> tuple[np.ndarray, np.ndarray]:
    """Distinct (user, item) keys of a batch, ascending, and how many events each has."""
    keys = batch["user_idx"] * num_items + batch["item_idx"]
    return np.unique(keys, return_counts=True)


def user_item_matrix(split: Split, values: str = "binary") -> CSR:
    """The ranked users x train items CSR (host form) of the train events: 1 per (user, item) seen, or its event count.

    Two streaming passes over the train events: the first counts the nonzeros so that the second fills arrays of
    exactly the right size. Memory: 8 bytes per nonzero (16 with its transpose), checked against what is available
    before allocating, plus one batch; no step holds the train events.
    """
    if values not in MATRIX_VALUES:
        raise ValueError(f"unknown matrix values {values!r}; valid choices: {', '.join(MATRIX_VALUES)}")
    num_users, num_items = split.num_users, split.num_items
    nnz = sum(len(_user_item_pairs(b, num_items)[0]) for b in split.iter_train(columns=("user_idx", "item_idx")))
    check_fits(nnz * HOST_BYTES_PER_NONZERO + 8 * num_users, "the user x item matrix")
    indices = np.empty(nnz, dtype=np.int32)
    data = np.empty(nnz, dtype=np.float32)
    row_counts = np.zeros(num_users, dtype=np.int64)
    filled = 0
    for batch in split.iter_train(columns=("user_idx", "item_idx")):
        keys, counts = _user_item_pairs(batch, num_items)  # batches hold whole users in user order
        users = keys // num_items
        indices[filled : filled + len(keys)] = keys % num_items
        data[filled : filled + len(keys)] = counts if values == "count" else 1.0
        row_counts += np.bincount(users, minlength=num_users)
        filled += len(keys)
    indptr = np.zeros(num_users + 1, dtype=np.int64)
    np.cumsum(row_counts, out=indptr[1:])
    return CSR(indptr, indices, data, (num_users, num_items))
