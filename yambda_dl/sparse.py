"""Computing with the CSR type (yambda_dl/data/csr.py, where the type and all its conversions live): the CSR @ CSR
product, and the row batches and padded row blocks that the matrix-factorisation solvers work on, on any device.

Below `models/`, beside the retrieval kernel: the models import it, it imports neither models nor eval.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from yambda_dl.data.csr import CSR

__all__ = [
    "RowBatch",
    "gather_rows",
    "length_order",
    "length_sorted_batches",
    "matmul",
    "padded_rows",
    "row_chunks",
]


def matmul(a: CSR, b: CSR) -> CSR:
    """CSR @ CSR -> CSR in the torch form, on the operands' device (both torch forms on one device).

    On the CPU the product goes through scipy, sharing the arrays both ways, with float64 values: torch 2.13's CPU
    CSR @ CSR kernel keeps about 11 bytes per output nonzero after every call (RSS grew by 41 MB a call for a
    3.6M-nonzero product), which ran the pruned neighbour search of 50m Listen+ out of 24 GB. On CUDA torch's own
    kernel is used.
    """
    if a.indptr.device.type != "cpu":
        return CSR.from_torch_sparse(a.torch_sparse() @ b.torch_sparse())
    return CSR.from_scipy(a.to_scipy() @ b.to_scipy(), np.float64).to("cpu")


# --- the solvers' units of work -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RowBatch:
    """Rows of similar length, padded to one length: the unit a solver works on.

    Rows are padded with column `pad_column` (a zero row the caller appends to the factors) and value 0, so that
    padding adds nothing to any sum.
    """

    rows: torch.Tensor  # int64 (r,)
    columns: torch.Tensor  # int64 (r, length)
    values: torch.Tensor  # float32 (r, length); 0 on padding


def length_sorted_batches(indptr: np.ndarray, batch_rows: int, batch_nonzeros: int) -> list[tuple[int, int, int]]:
    """Batches over the rows ordered by length: (start, stop, padded length) in `length_order(indptr)` positions.

    A new batch starts where the row count reaches batch_rows, the nonzeros pass a multiple of batch_nonzeros, or the
    row length crosses a power of two: rows of one batch differ in length by less than 2x, so padding at most
    doubles a batch, which holds about batch_nonzeros nonzeros (at least one row). Vectorized: no loop over rows.
    """
    lengths = np.sort(np.diff(indptr))
    if len(lengths) == 0:
        return []
    length_class = np.floor(np.log2(np.maximum(lengths, 1))).astype(np.int64)
    nonzeros_before = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    position = np.arange(len(lengths))
    keys = np.stack([position // batch_rows, nonzeros_before // batch_nonzeros, length_class])
    return _runs(keys, lengths)


def row_chunks(indptr: np.ndarray, batch_rows: int, batch_nonzeros: int) -> list[tuple[int, int]]:
    """Contiguous row ranges (start, stop) of at most batch_rows rows and about batch_nonzeros nonzeros (at least
    one row each), in row order: the unit of the sparse-kernel CG, whose work memory grows with the rows' count."""
    lengths = np.diff(indptr)
    if len(lengths) == 0:
        return []
    nonzeros_before = indptr[:-1] - indptr[0]
    position = np.arange(len(lengths))
    keys = np.stack([position // batch_rows, nonzeros_before // batch_nonzeros])
    return [(start, stop) for start, stop, _ in _runs(keys, lengths)]


def _runs(keys: np.ndarray, lengths: np.ndarray) -> list[tuple[int, int, int]]:
    """(start, stop, longest length) of each run of equal key columns (keys: (n_keys, rows))."""
    starts = np.flatnonzero(np.concatenate([[True], (keys[:, 1:] != keys[:, :-1]).any(axis=0)]))
    stops = np.append(starts[1:], len(lengths))
    return [(int(a), int(b), max(int(lengths[a:b].max()), 1)) for a, b in zip(starts, stops, strict=True)]


def length_order(indptr: np.ndarray) -> np.ndarray:
    """The rows by ascending length (stable), the order `length_sorted_batches` counts in."""
    return np.argsort(np.diff(indptr), kind="stable")


def padded_rows(matrix: CSR, rows: torch.Tensor, length: int, pad_column: int) -> RowBatch:
    """The rows' columns and values (torch form) as (r, length) blocks; entries past a row's end get pad_column, 0.

    Memory: 12 bytes per padded entry (columns and values), on the matrix's device.
    """
    starts = matrix.indptr[rows]
    lengths = matrix.indptr[rows + 1] - starts
    offsets = torch.arange(length, device=rows.device)
    inside = offsets[None, :] < lengths[:, None]
    positions = torch.where(inside, starts[:, None] + offsets[None, :], 0)  # 0: any valid position, masked below
    columns = torch.where(inside, gather_rows(matrix.indices, positions), pad_column)
    values = torch.where(inside, gather_rows(matrix.values, positions), 0.0)
    return RowBatch(rows, columns, values)


def gather_rows(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """table[index] for a 2-D index (shape index.shape + table.shape[1:]) through index_select, which runs
    several times faster than advanced indexing on the CPU."""
    return table.index_select(0, index.reshape(-1)).view(*index.shape, *table.shape[1:])
