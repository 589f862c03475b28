"""The one sparse-matrix type: compressed sparse rows, on the host (numpy) or as torch tensors on a device.

Views build it (the user x item matrix), the models compute with it (iALS and BPR on their device, ItemKNN and SANSA
through sparse products), retrieval reads per-user masks from it. Every conversion lives here, as a method: to and
from scipy and torch sparse tensors, to a device, row slices and selections, the transpose, per-row lengths and row
ids. The sparse products and the row batches of the solvers are in yambda_dl/sparse.py, one layer up.

It lives in `data` (the lowest layer that needs it: views build it) so that imports run one way: data < sparse <
models (tests/test_layering.py).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
import torch

from yambda_dl.utils.memory import check_fits

if TYPE_CHECKING:
    from scipy.sparse import csr_matrix

Array = np.ndarray | torch.Tensor  # the host form holds numpy arrays, the torch form tensors

# host form: an int32 column index and a float32 value (4 bytes without values); the transpose costs as much again.
# The torch form takes 8 + the value's size (int64 columns: what torch's sparse and index kernels take), see CSR.to
HOST_BYTES_PER_NONZERO = 8


@dataclass(frozen=True)
class CSR:
    """A rows x cols sparse matrix: row r's columns are indices[indptr[r]:indptr[r + 1]], ascending and distinct,
    with values[...] beside them, or values None for a pattern (a per-user mask of items).

    One type in two forms, told apart by the arrays' type:
      host (numpy; what views build, what scipy and implicit share without a copy): indptr int64, indices int32,
        values float32 (float64 where a model asks): 8 bytes per nonzero (4 for a pattern) + 8 per row.
      torch (`.to(device)`; what torch's sparse kernels take): indptr and indices int64, values as given:
        12 bytes per nonzero with float32 values (16 with float64, 8 for a pattern) + 8 per row.
    Row slices share their arrays; every other method says what it copies. Built valid (sorted, in range, no
    duplicates) by its makers, so nothing re-checks it on a hot path.
    """

    indptr: Array  # int64 (rows + 1,)
    indices: Array  # int32 on the host, int64 in torch (nnz,)
    values: Array | None  # (nnz,), or None: a pattern
    shape: tuple[int, int]

    # --- what it holds ---------------------------------------------------------------------------------------

    @property
    def is_torch(self) -> bool:
        return isinstance(self.indptr, torch.Tensor)

    @property
    def nnz(self) -> int:
        return len(self.indices)

    @property
    def nbytes(self) -> int:
        """Bytes of the arrays it holds (a row slice counts the part of its parent that it views)."""
        arrays = [a for a in (self.indptr, self.indices, self.values) if a is not None]
        if self.is_torch:
            return sum(a.element_size() * a.numel() for a in arrays)
        return sum(a.nbytes for a in arrays)

    def lengths(self) -> Array:
        """Nonzeros per row (rows,), int64, in the matrix's form."""
        return self.indptr.diff() if self.is_torch else np.diff(self.indptr)

    def row_ids(self) -> Array:
        """The row of every stored entry (nnz,), the COO companion of `indices`: int32 on the host, int64 in torch."""
        if self.is_torch:
            rows = torch.arange(self.shape[0], device=self.indptr.device)
            return torch.repeat_interleave(rows, self.lengths(), output_size=self.nnz)
        return np.repeat(np.arange(self.shape[0], dtype=np.int32), self.lengths())

    # --- rows ------------------------------------------------------------------------------------------------

    def rows(self, start: int, stop: int) -> CSR:
        """Rows [start, stop) as a CSR of their own: views of the columns and values, a new (small) indptr."""
        first, last = int(self.indptr[start]), int(self.indptr[stop])
        return CSR(
            self.indptr[start : stop + 1] - first,
            self.indices[first:last],
            None if self.values is None else self.values[first:last],
            (stop - start, self.shape[1]),
        )

    def select(self, rows: Array) -> CSR:
        """The rows `rows` (any order, repeats allowed) as a new CSR: a copy of their entries, no loop over rows."""
        if self.is_torch:
            rows = torch.as_tensor(rows, dtype=torch.int64).to(self.indptr.device)
            starts = self.indptr[rows]
            lengths = self.indptr[rows + 1] - starts
            indptr = torch.zeros(len(rows) + 1, dtype=torch.int64, device=starts.device)
            torch.cumsum(lengths, 0, out=indptr[1:])
            total = int(indptr[-1])
            # the selected rows' entries: each row's start plus 0..length-1
            offsets = torch.arange(total, device=starts.device) - torch.repeat_interleave(indptr[:-1], lengths)
            positions = torch.repeat_interleave(starts, lengths, output_size=total) + offsets
        else:
            rows = np.asarray(rows, dtype=np.int64)
            starts = self.indptr[rows]
            lengths = self.indptr[rows + 1] - starts
            indptr = np.zeros(len(rows) + 1, dtype=np.int64)
            np.cumsum(lengths, out=indptr[1:])
            positions = np.repeat(starts - indptr[:-1], lengths) + np.arange(indptr[-1])
        values = None if self.values is None else self.values[positions]
        return CSR(indptr, self.indices[positions], values, (len(rows), self.shape[1]))

    def transpose(self) -> CSR:
        """The cols x rows CSR (the CSC of this one) by a stable sort of the column ids, rows ascending in each column.

        Memory: the result, plus (host) an int64 permutation and int32 row ids while it sorts, checked against the
        free memory; torch: an int64 permutation and row ids.
        """
        if self.is_torch:
            order = torch.argsort(self.indices, stable=True)
            counts = torch.bincount(self.indices, minlength=self.shape[1])
            indptr = torch.zeros(self.shape[1] + 1, dtype=torch.int64, device=counts.device)
            torch.cumsum(counts, 0, out=indptr[1:])
            indices = self.row_ids()[order]
        else:
            check_fits(self.nnz * (HOST_BYTES_PER_NONZERO + 12) + 8 * self.shape[1], "the transposed matrix")
            order = np.argsort(self.indices, kind="stable")  # stable: rows stay ascending within each column
            indptr = np.zeros(self.shape[1] + 1, dtype=np.int64)
            np.cumsum(np.bincount(self.indices, minlength=self.shape[1]), out=indptr[1:])
            indices = self.row_ids()[order]
        values = None if self.values is None else self.values[order]
        return CSR(indptr, indices, values, (self.shape[1], self.shape[0]))

    # --- values ----------------------------------------------------------------------------------------------

    def with_values(self, values: Array | None) -> CSR:
        """The same pattern with other values (or none): no copy of the index arrays."""
        return replace(self, values=values)

    # --- conversions -----------------------------------------------------------------------------------------

    def to(
        self,
        device: str | torch.device,
        values_dtype: torch.dtype | None = None,
        fraction: float | None = None,
    ) -> CSR:
        """The torch form on `device`: int64 indptr and indices, values in `values_dtype` (default: as they are).

        With `fraction`, refused (MemoryError naming the sizes) when the copy would take more than that share of the
        device's free memory. A host form's indptr and float values are shared on the CPU; its int32 indices are
        widened (a copy).
        """
        device = torch.device(device)
        value_bytes = 0 if self.values is None else (values_dtype or self.values.dtype).itemsize  # numpy or torch
        if fraction is not None:
            check_fits(
                self.nnz * (8 + value_bytes) + 8 * (self.shape[0] + 1), "the matrix on the device", device, fraction
            )
        indptr, indices, values = (
            (torch.as_tensor(a) if a is not None else None) for a in (self.indptr, self.indices, self.values)
        )
        return CSR(
            indptr.to(device, torch.int64),
            indices.to(device, torch.int64),
            None if values is None else values.to(device, values_dtype),
            self.shape,
        )

    def to_scipy(self) -> csr_matrix:
        """The same matrix as scipy.sparse.csr_matrix, sharing the arrays (a torch form must be on the CPU); a
        pattern gets float32 ones."""
        from scipy.sparse import csr_matrix  # imported lazily: most runs never need scipy

        indptr, indices, values = (a.numpy() if isinstance(a, torch.Tensor) else a for a in self._with_data())
        return csr_matrix((values, indices, indptr), shape=self.shape)

    @classmethod
    def from_scipy(cls, matrix: csr_matrix, values_dtype: np.dtype | type | None = None) -> CSR:
        """A scipy CSR matrix (no duplicates) as the host form, sharing its arrays where the dtypes already match
        (indices as scipy holds them: int32, or int64 past 2**31 entries); its columns are sorted in place first
        when they are not."""
        matrix.sort_indices()
        values = matrix.data if values_dtype is None else matrix.data.astype(values_dtype, copy=False)
        return cls(matrix.indptr.astype(np.int64, copy=False), matrix.indices, values, matrix.shape)

    def torch_sparse(self, values: torch.Tensor | None = None) -> torch.Tensor:
        """A torch sparse CSR tensor (for torch.sparse.mm, sampled_addmm, CSR @ dense) of the torch form, with
        `values` in place of its own when given: the same structure, no copy of the indices."""
        if not self.is_torch:
            raise TypeError("torch_sparse() needs the torch form: call .to(device) first")
        indptr, indices, own = self._with_data()
        return torch.sparse_csr_tensor(
            indptr,
            indices,
            own if values is None else values,
            self.shape,
            check_invariants=False,  # valid by construction; checking would cost a pass over the matrix each call
        )

    @classmethod
    def from_torch_sparse(cls, matrix: torch.Tensor) -> CSR:
        """A torch sparse tensor (CSR, or COO: coalesced first) as the torch form, sharing its arrays."""
        if matrix.layout != torch.sparse_csr:
            matrix = matrix.coalesce().to_sparse_csr()
        return cls(matrix.crow_indices(), matrix.col_indices(), matrix.values(), tuple(matrix.shape))

    def _with_data(self) -> tuple[Array, Array, Array]:
        """(indptr, indices, values), with float32 ones standing in for a pattern's values."""
        if self.values is not None:
            return self.indptr, self.indices, self.values
        if self.is_torch:
            return self.indptr, self.indices, torch.ones(self.nnz, device=self.indices.device)
        return self.indptr, self.indices, np.ones(self.nnz, dtype=np.float32)
