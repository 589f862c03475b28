"""Views derived from a split: counts, decayed counts and the user x item matrix, against hand-computed answers."""

from __future__ import annotations

import numpy as np
import pytest

from yambda_dl.data import views
from yambda_dl.data.layout import DatasetLayout
from yambda_dl.data.split import Protocol, make_split
from yambda_dl.utils import memory

from ..conftest import TEST_START, listen, write_flat


@pytest.fixture
def split(tmp_path):
    # user 1: items 10, 10, 30; user 2: item 20; user 3: items 30, 20, 30, 30; a target so that every user counts
    layout = DatasetLayout(tmp_path / "y", "hand")
    rows = [listen(1, 100, 10), listen(1, 105, 10), listen(1, 110, 30), listen(2, 100, 20)]
    rows += [listen(3, 100, 30), listen(3, 105, 20), listen(3, 110, 30), listen(3, 115, 30)]
    rows += [listen(u, TEST_START, 10) for u in (1, 2, 3)]
    write_flat(layout, "listens", rows)
    return make_split(layout, Protocol(), cache_dir=tmp_path / "c", progress=False, batch_rows=2)


def test_item_counts(split):
    assert views.item_counts(split).tolist() == [2, 2, 4]  # items 10, 20, 30


@pytest.mark.parametrize(
    "values,expected", [("binary", [[1, 0, 1], [0, 1, 0], [0, 1, 1]]), ("count", [[2, 0, 1], [0, 1, 0], [0, 1, 3]])]
)
def test_user_item_matrix(split, values, expected):
    matrix = views.user_item_matrix(split, values)
    assert matrix.indices.dtype == np.int32 and matrix.values.dtype == np.float32
    assert matrix.to_scipy().toarray().tolist() == expected
    assert matrix.transpose().to_scipy().toarray().tolist() == np.array(expected).T.tolist()
    assert matrix.to("cpu").torch_sparse().to_dense().tolist() == expected
    assert matrix.nnz == sum(v > 0 for row in expected for v in row)


def test_unknown_values_and_memory_refusal(split):
    with pytest.raises(ValueError, match="valid choices: binary, count"):
        views.user_item_matrix(split, "tfidf")
    with pytest.raises(
        MemoryError, match=r"a huge matrix needs .* GiB but only .* GiB is free \(the limit is 80% of it\)"
    ):
        memory.check_fits(1 << 60, "a huge matrix")
    with pytest.raises(MemoryError, match=r"needs about .* GiB \(parts\) but .*is 50% of it\); lower x"):
        memory.check_fits(1 << 60, "a huge step", "cpu", 0.5, detail=" (parts)", hint="lower x", estimate=True)
    memory.check_fits(1 << 20, "a small matrix", available=1 << 21)  # 50% of what is free: fits
    with pytest.raises(MemoryError, match=r"only 1.00 GiB is free on cuda:0 \(the limit is 80% of it\); .* a device"):
        memory.check_fits(1 << 40, "a matrix on the device", "cuda:0", available=1 << 30)  # no CUDA needed here
