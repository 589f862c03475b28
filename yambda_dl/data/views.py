"""Views: what a model family eats, derived from a Split by streaming its train events once.

Memory of each view is stated in its docstring; none holds the train events themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from yambda_dl.utils.memory import check_fits

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
BYTES_PER_NONZERO = 8  # an int32 column index and a float32 value; the transpose costs as much again


@dataclass(frozen=True)
class SparseMatrix:
    """A CSR matrix in plain numpy: row r's columns are indices[indptr[r]:indptr[r + 1]], ascending."""

    indptr: np.ndarray  # int64 (rows + 1,)
    indices: np.ndarray  # int32 (nnz,)
    values: np.ndarray  # float32 (nnz,)
    shape: tuple[int, int]

    @property
    def nnz(self) -> int:
        return len(self.indices)

    @property
    def nbytes(self) -> int:
        return self.indptr.nbytes + self.indices.nbytes + self.values.nbytes

    def row_ids(self) -> np.ndarray:
        """The row of every stored entry (int32 (nnz,)), the COO companion of `indices`."""
        return np.repeat(np.arange(self.shape[0], dtype=np.int32), np.diff(self.indptr))

    def transpose(self) -> SparseMatrix:
        """The item x user CSR (the CSC of this one): a stable radix sort of the column ids, O(nnz).

        Memory: the result (8 bytes per nonzero) plus an int64 permutation and int32 row ids while it sorts.
        """
        check_fits(self.nnz * (BYTES_PER_NONZERO + 12) + 8 * self.shape[1], "the transposed matrix")
        order = np.argsort(self.indices, kind="stable")  # stable: rows stay ascending within each column
        counts = np.bincount(self.indices, minlength=self.shape[1])
        indptr = np.zeros(self.shape[1] + 1, dtype=np.int64)
        np.cumsum(counts, out=indptr[1:])
        return SparseMatrix(indptr, self.row_ids()[order], self.values[order], (self.shape[1], self.shape[0]))

    def to_torch(self, device: str | torch.device = "cpu") -> torch.Tensor:
        """A torch sparse CSR tensor on `device` (int64 index arrays, as torch's sparse kernels want)."""
        return torch.sparse_csr_tensor(
            torch.from_numpy(self.indptr),
            torch.from_numpy(self.indices.astype(np.int64)),
            torch.from_numpy(self.values),
            size=self.shape,
            device=device,
            check_invariants=False,  # valid by construction: sorted, in range
        )

    def to_scipy(self):
        """The same matrix as scipy.sparse.csr_matrix, sharing the arrays (for peers such as implicit)."""
        from scipy.sparse import csr_matrix

        return csr_matrix((self.values, self.indices, self.indptr), shape=self.shape)


def _user_item_pairs(batch: dict[str, np.ndarray], num_items: int) -> tuple[np.ndarray, np.ndarray]:
    """Distinct (user, item) keys of a batch, ascending, and how many events each has."""
    keys = batch["user_idx"] * num_items + batch["item_idx"]
    return np.unique(keys, return_counts=True)


def user_item_matrix(split: Split, values: str = "binary") -> SparseMatrix:
    """The ranked users x train items CSR of the train events: 1 per (user, item) seen, or its event count.

    Two streaming passes over the train events: the first counts the nonzeros so that the second fills arrays of
    exactly the right size. Memory: 8 bytes per nonzero (16 with its transpose), checked against what is available
    before allocating, plus one batch; no step holds the train events.
    """
    if values not in MATRIX_VALUES:
        raise ValueError(f"unknown matrix values {values!r}; valid choices: {', '.join(MATRIX_VALUES)}")
    num_users, num_items = split.num_users, split.num_items
    nnz = sum(len(_user_item_pairs(b, num_items)[0]) for b in split.iter_train(columns=("user_idx", "item_idx")))
    check_fits(nnz * BYTES_PER_NONZERO + 8 * num_users, "the user x item matrix")
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
    return SparseMatrix(indptr, indices, data, (num_users, num_items))
