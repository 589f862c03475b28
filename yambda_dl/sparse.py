"""Torch CSR helpers shared by the sparse models (ItemKNN, SANSA): row slices and selections, and the CSR @ CSR
product, with the CPU product through scipy (sharing arrays both ways).

Below `models/`, beside the retrieval kernel: the models import it, it imports neither models nor eval.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.sparse import csr_matrix
from torch import Tensor


def csr_rows(matrix: Tensor, start: int, stop: int) -> Tensor:
    """Rows start..stop-1 of a torch CSR matrix; the column and value arrays are views, not copies."""
    crow = matrix.crow_indices()
    lo, hi = int(crow[start]), int(crow[stop])
    return torch.sparse_csr_tensor(
        crow[start : stop + 1] - lo,
        matrix.col_indices()[lo:hi],
        matrix.values()[lo:hi],
        size=(stop - start, matrix.shape[1]),
        device=matrix.device,
        check_invariants=False,  # a slice of a valid CSR is valid
    )


def sparse_matmul(a: Tensor, b: Tensor) -> Tensor:
    """CSR @ CSR -> CSR, on the operands' device.

    On the CPU the product goes through scipy: torch 2.13's CPU CSR @ CSR kernel keeps about 11 bytes per output
    nonzero after every call (RSS grew by 41 MB a call for a 3.6M-nonzero product), which ran the pruned neighbour
    search of 50m Listen+ out of 24 GB. On CUDA torch's own kernel is used. The arrays are shared, not copied.
    """
    if a.device.type != "cpu":
        return a @ b
    product = torch_to_scipy(a) @ torch_to_scipy(b)
    product.sort_indices()
    return scipy_to_torch(product)


def torch_to_scipy(matrix: Tensor) -> csr_matrix:
    """A CPU torch CSR tensor as a scipy CSR matrix sharing its arrays."""
    crow, cols, values = matrix.crow_indices(), matrix.col_indices(), matrix.values()
    return csr_matrix((values.numpy(), cols.numpy(), crow.numpy()), shape=matrix.shape)


def scipy_to_torch(matrix: csr_matrix) -> Tensor:
    """A scipy CSR matrix (canonical: no duplicates) as a float64 torch CSR tensor."""
    return torch.sparse_csr_tensor(
        torch.from_numpy(matrix.indptr.astype(np.int64)),
        torch.from_numpy(matrix.indices.astype(np.int64)),
        torch.from_numpy(np.asarray(matrix.data, dtype=np.float64)),  # shared when float64 already
        size=matrix.shape,
        check_invariants=False,  # scipy's CSR: in range, no duplicates
    )


def select_rows(matrix: Tensor, user_idx: Tensor) -> Tensor:
    """The CSR rows `user_idx` of a torch CSR matrix (any order), as a new CSR."""
    crow = matrix.crow_indices()
    user_idx = user_idx.to(crow.device)
    starts, lengths = crow[user_idx], crow[user_idx + 1] - crow[user_idx]
    new_crow = torch.zeros(len(user_idx) + 1, dtype=torch.int64, device=crow.device)
    torch.cumsum(lengths, 0, out=new_crow[1:])
    # positions of the selected rows' entries: the start of each row plus 0..length-1
    offsets = torch.arange(int(new_crow[-1]), device=crow.device) - torch.repeat_interleave(new_crow[:-1], lengths)
    positions = torch.repeat_interleave(starts, lengths) + offsets
    return torch.sparse_csr_tensor(
        new_crow,
        matrix.col_indices()[positions],
        matrix.values()[positions],
        size=(len(user_idx), matrix.shape[1]),
        check_invariants=False,  # whole rows of a valid CSR
    )
