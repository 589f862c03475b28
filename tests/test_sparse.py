"""The CSR type (yambda_dl/data/csr.py) and the sparse helpers (yambda_dl/sparse.py) against scipy and dense numpy,
in both forms (host numpy, torch), on random matrices with empty rows and columns."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from yambda_dl.data.csr import CSR
from yambda_dl.sparse import matmul, padded_rows, row_chunks

from .conftest import cuda_devices


def random_csr(rows: int = 9, cols: int = 7, density: float = 0.3, seed: int = 0) -> tuple[CSR, np.ndarray]:
    """A host-form CSR (int32 columns, float32 values) and its dense twin; rows 0 and 4 and column 3 are empty."""
    rng = np.random.default_rng(seed)
    dense = np.where(rng.random((rows, cols)) < density, rng.integers(1, 9, (rows, cols)), 0).astype(np.float32)
    dense[[0, 4]] = 0.0
    dense[:, 3] = 0.0
    matrix = CSR.from_scipy(sp.csr_matrix(dense))
    return CSR(matrix.indptr, matrix.indices.astype(np.int32), matrix.values, matrix.shape), dense


def to_dense(matrix: CSR) -> np.ndarray:
    """The dense array of either form (through scipy, so a bug in to_dense cannot hide one in the type)."""
    host = matrix.to("cpu") if matrix.is_torch else matrix
    return host.to_scipy().toarray()


@pytest.fixture(params=["host", "torch"])
def form(request) -> str:
    return request.param


def in_form(matrix: CSR, form: str) -> CSR:
    return matrix.to("cpu") if form == "torch" else matrix


def test_scipy_round_trip_shares_the_arrays():
    matrix, dense = random_csr()
    scipy_matrix = matrix.to_scipy()
    np.testing.assert_array_equal(scipy_matrix.toarray(), dense)
    assert np.shares_memory(scipy_matrix.data, matrix.values) and np.shares_memory(scipy_matrix.indices, matrix.indices)
    back = CSR.from_scipy(scipy_matrix)
    assert back.indptr.dtype == np.int64 and back.shape == matrix.shape
    np.testing.assert_array_equal(to_dense(back), dense)


def test_from_scipy_sorts_the_columns_of_each_row():
    unsorted = sp.csr_matrix((np.array([1.0, 2.0, 3.0]), np.array([2, 0, 1]), np.array([0, 2, 3])), shape=(2, 3))
    matrix = CSR.from_scipy(unsorted, np.float32)
    assert matrix.indices.tolist() == [0, 2, 1] and matrix.values.tolist() == [2.0, 1.0, 3.0]
    assert matrix.values.dtype == np.float32


def test_the_torch_form_has_int64_indices_and_the_asked_value_type():
    matrix, dense = random_csr()
    on_cpu = matrix.to("cpu")
    assert on_cpu.is_torch and on_cpu.indptr.dtype == on_cpu.indices.dtype == torch.int64
    assert on_cpu.values.dtype == torch.float32 and matrix.to("cpu", torch.float64).values.dtype == torch.float64
    np.testing.assert_array_equal(on_cpu.torch_sparse().to_dense().numpy(), dense)
    assert on_cpu.to("cpu").indices is on_cpu.indices  # already in that form there: no copy
    back = CSR.from_torch_sparse(on_cpu.torch_sparse())
    np.testing.assert_array_equal(to_dense(back), dense)
    coo = CSR.from_torch_sparse(torch.from_numpy(dense).to_sparse_coo())
    np.testing.assert_array_equal(to_dense(coo), dense)


def test_torch_sparse_takes_other_values_on_the_same_pattern():
    matrix, dense = random_csr()
    on_cpu = matrix.to("cpu")
    doubled = on_cpu.torch_sparse(on_cpu.values * 2).to_dense().numpy()
    np.testing.assert_array_equal(doubled, 2 * dense)
    with pytest.raises(TypeError, match="torch form"):
        matrix.torch_sparse()


def test_a_copy_that_would_not_fit_is_refused_before_it_is_made():
    matrix, _ = random_csr()
    with pytest.raises(MemoryError, match="the matrix on the device"):
        matrix.to("cpu", fraction=1e-15)


def test_lengths_and_row_ids(form):
    matrix, dense = random_csr()
    matrix = in_form(matrix, form)
    np.testing.assert_array_equal(np.asarray(matrix.lengths()), (dense != 0).sum(axis=1))
    rows, _ = np.nonzero(dense)
    np.testing.assert_array_equal(np.asarray(matrix.row_ids()), rows)


def test_row_slices_are_views(form):
    matrix, dense = random_csr()
    matrix = in_form(matrix, form)
    part = matrix.rows(2, 6)
    np.testing.assert_array_equal(to_dense(part), dense[2:6])
    base = matrix.indices if form == "host" else matrix.indices.numpy()
    sliced = part.indices if form == "host" else part.indices.numpy()
    assert np.shares_memory(base, sliced)
    assert to_dense(matrix.rows(4, 4)).shape == (0, dense.shape[1])


def test_select_takes_rows_in_any_order_with_repeats(form):
    matrix, dense = random_csr()
    matrix = in_form(matrix, form)
    rows = [5, 0, 5, 8, 2]
    picked = matrix.select(np.array(rows) if form == "host" else torch.tensor(rows))
    np.testing.assert_array_equal(to_dense(picked), dense[rows])
    assert to_dense(matrix.select(np.zeros(0, dtype=np.int64))).shape == (0, dense.shape[1])


def test_transpose_keeps_rows_ascending_in_each_column(form):
    matrix, dense = random_csr()
    transposed = in_form(matrix, form).transpose()
    np.testing.assert_array_equal(to_dense(transposed), dense.T)
    host = transposed.to("cpu") if transposed.is_torch else transposed
    assert host.to_scipy().has_sorted_indices


def test_a_pattern_converts_with_ones():
    matrix, dense = random_csr()
    pattern = matrix.with_values(None)
    assert pattern.values is None and pattern.nbytes == matrix.indptr.nbytes + matrix.indices.nbytes
    np.testing.assert_array_equal(pattern.to_scipy().toarray(), dense != 0)
    np.testing.assert_array_equal(to_dense(pattern.transpose()), (dense != 0).T)
    on_cpu = pattern.to("cpu")
    assert on_cpu.values is None
    np.testing.assert_array_equal(on_cpu.torch_sparse().to_dense().numpy(), dense != 0)


def test_memory_per_nonzero_is_what_the_docstring_says():
    matrix, _ = random_csr(rows=50, cols=40, density=0.5)
    rows = matrix.shape[0] + 1
    assert matrix.nbytes == 8 * matrix.nnz + 8 * rows  # host: int32 column + float32 value
    assert matrix.to("cpu").nbytes == 12 * matrix.nnz + 8 * rows  # torch: int64 column + float32 value


@pytest.mark.parametrize("device", cuda_devices())
def test_matmul_equals_scipy_in_float64(device):
    a, dense_a = random_csr(seed=1)
    b, dense_b = random_csr(rows=7, cols=5, seed=2)
    product = matmul(a.to(device), b.to(device))
    assert product.is_torch and product.indptr.device.type == torch.device(device).type
    np.testing.assert_allclose(to_dense(product), dense_a @ dense_b, rtol=1e-6)
    if device == "cpu":  # scipy's product, upcast: every model's numbers were taken with float64 products
        assert product.values.dtype == torch.float64


def test_row_chunks_cover_the_rows_in_order_within_their_bounds():
    lengths = np.array([0, 5, 1, 1, 7, 0, 2, 2, 3])
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    chunks = row_chunks(indptr, batch_rows=3, batch_nonzeros=6)
    assert [start for start, _ in chunks] == [0, *[stop for _, stop in chunks[:-1]]] and chunks[-1][1] == len(lengths)
    assert all(stop - start <= 3 for start, stop in chunks)
    assert row_chunks(np.zeros(1, dtype=np.int64), 3, 6) == []


def test_padded_rows_pad_with_the_given_column_and_zero():
    matrix, dense = random_csr()
    on_cpu = matrix.to("cpu")
    rows = torch.tensor([1, 4, 7])
    length = int(on_cpu.lengths()[rows].max())
    batch = padded_rows(on_cpu, rows, length, pad_column=99)
    for position, row in enumerate(rows.tolist()):
        columns, values = batch.columns[position], batch.values[position]
        real = columns != 99
        np.testing.assert_array_equal(columns[real].numpy(), np.flatnonzero(dense[row]))
        np.testing.assert_array_equal(values[real].numpy(), dense[row][dense[row] != 0])
        assert (values[~real] == 0).all()
