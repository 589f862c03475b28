"""Counts (or presence) per raw id whose memory follows the ids that occur, not the largest one.

Raw Yambda ids are uint32 and dense enough below about 10M that a bincount-style array is the fastest counter. But one
corrupted id of 4e9 would make such an array 4e9 entries long (issue: 3.7 GiB in the split, 29.8 GiB in the stats).
IdCounts keeps a dense array only for ids below `dense_limit` and counts the ids above it sparsely (sorted unique ids
and their counts), so memory is at most dense_limit entries plus 16 bytes per distinct large id, whatever the values.
"""

from __future__ import annotations

import numpy as np

# Yambda's largest item id is about 9.4M (items) and its track lengths are below 1e5 s: 2**25 (33.5M, a 3.5x margin
# over the item ids) keeps real data on the dense fast path and bounds the dense part at 2**25 entries (268 MB of
# int64 counts, 33.5 MB of flags), reached only by data whose ids really go that high.
DENSE_LIMIT = 1 << 25
_COMPACT_EVERY = 1 << 20  # pending sparse entries merged once they exceed this many (bounds the pending lists)


class IdCounts:
    """Counts per non-negative integer id (int64), or presence flags (`presence=True`, one byte per dense id)."""

    def __init__(self, presence: bool = False, dense_limit: int = DENSE_LIMIT):
        self.presence = presence
        self.dense_limit = dense_limit
        self.dense = np.zeros(0, dtype=bool if presence else np.int64)  # grows by doubling up to dense_limit
        self._ids = np.zeros(0, dtype=np.int64)  # sorted distinct ids >= dense_limit
        self._counts = np.zeros(0, dtype=np.int64)
        self._pending: list[tuple[np.ndarray, np.ndarray]] = []
        self._pending_size = 0

    def add(self, ids: np.ndarray) -> None:
        """Count each id once per occurrence (or mark it present)."""
        # intp first: np.bincount and fancy indexing cast any other dtype on every call (10x slower for uint32)
        ids = np.asarray(ids).astype(np.intp, copy=False)
        if not len(ids):
            return
        top = int(ids.max())
        if top >= self.dense_limit:
            large = ids >= self.dense_limit
            unique, counts = np.unique(ids[large], return_counts=True)
            self._pending.append((unique, counts))
            self._pending_size += len(unique)
            if self._pending_size > _COMPACT_EVERY:
                self._compact()
            ids = ids[~large]
            if not len(ids):
                return
            top = int(ids.max())
        if top >= len(self.dense):  # grow by doubling, never past dense_limit
            grown = np.zeros(min(self.dense_limit, max(top + 1, 2 * len(self.dense))), dtype=self.dense.dtype)
            grown[: len(self.dense)] = self.dense
            self.dense = grown
        if self.presence:
            self.dense[ids] = True
        else:
            self.dense += np.bincount(ids, minlength=len(self.dense))

    def _compact(self) -> None:
        if not self._pending:
            return
        ids = np.concatenate([self._ids, *(u for u, _ in self._pending)])
        counts = np.concatenate([self._counts, *(c for _, c in self._pending)])
        self._ids, inverse = np.unique(ids, return_inverse=True)
        self._counts = np.bincount(inverse, weights=counts, minlength=len(self._ids)).astype(np.int64)
        self._pending, self._pending_size = [], 0

    def nonzero(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids ascending int64, their counts int64) of every id seen; counts are 1 under `presence`."""
        self._compact()
        dense_ids = np.flatnonzero(self.dense)
        dense_counts = np.ones(len(dense_ids), np.int64) if self.presence else self.dense[dense_ids]
        large_counts = np.ones(len(self._ids), np.int64) if self.presence else self._counts
        return np.concatenate([dense_ids, self._ids]), np.concatenate([dense_counts, large_counts])

    def ids(self) -> np.ndarray:
        """The ids seen, ascending (int64)."""
        return self.nonzero()[0]

    def counts(self) -> np.ndarray:
        """The counts of the ids seen, in id order (int64)."""
        return self.nonzero()[1]


def quantile_of_counts(ids: np.ndarray, counts: np.ndarray, q: float) -> float:
    """The q-quantile (lower) of a multiset given as ascending values and their counts."""
    if not len(ids):
        return 0.0
    cum = np.cumsum(counts)
    return float(ids[min(int(np.searchsorted(cum, q * cum[-1])), len(ids) - 1)])
