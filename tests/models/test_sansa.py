"""SANSA behind the contract: the Gram estimate and refusal (always), the reference package (when installed)."""

from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from yambda_dl.data.csr import CSR
from yambda_dl.data.layout import DatasetLayout
from yambda_dl.data.split import Protocol, make_split
from yambda_dl.data.views import user_item_matrix
from yambda_dl.eval.recommend import recommend_all, seen_items
from yambda_dl.models.base import OptionalDependencyError
from yambda_dl.models.sansa import EXTRA_MODULES, GRAM_BYTES_PER_NONZERO, SANSA, estimate_gram_nonzeros, frozen_heap

from ..conftest import TEST_START, listen, write_flat

EXTRA_MISSING = any(importlib.util.find_spec(name) is None for name in EXTRA_MODULES)
needs_extra = pytest.mark.skipif(EXTRA_MISSING, reason="the optional `sansa` extra (make setup-sansa) is not installed")


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    """Eight users in two taste groups: odd users play 10, 20, 30 twice each; even users 40, 50 twice each."""
    root = tmp_path_factory.mktemp("sansa")
    layout = DatasetLayout(root, "hand")
    rows = []
    for u in range(1, 9):
        group = (10, 20, 30) if u % 2 else (40, 50, 60)
        rows += [listen(u, 1_000_000 + 5 * i, item) for i, item in enumerate(group[: 2 + u % 2] * 2)]
    rows += [listen(u, TEST_START, 10) for u in range(1, 9)]
    write_flat(layout, "listens", rows)
    return make_split(layout, Protocol(), cache_dir=root / "cache", progress=False)


def as_sparse_matrix(matrix: sp.spmatrix) -> CSR:
    return CSR.from_scipy(matrix.tocsr(), np.float32)


def test_gram_estimate_is_exact_when_every_item_is_counted(split):
    counts = user_item_matrix(split, "count")
    scipy_counts = counts.to_scipy()
    estimate = estimate_gram_nonzeros(counts, samples=counts.shape[1])
    assert estimate.exact
    assert estimate.nonzeros == (scipy_counts.T @ scipy_counts).nnz == 3 * 3 + 2 * 2  # blocks {10, 20, 30} and {40, 50}
    assert estimate.upper_bound >= estimate.nonzeros


def test_gram_estimate_is_close_on_a_skewed_random_matrix():
    rng = np.random.default_rng(0)
    users, items = 2000, 3000
    popularity = 1.0 / np.arange(1, items + 1)  # power-law items, as in Yambda
    lengths = rng.integers(1, 40, users)
    cols = np.concatenate([rng.choice(items, n, replace=False, p=popularity / popularity.sum()) for n in lengths])
    rows = np.repeat(np.arange(users), lengths)
    matrix = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(users, items))
    exact = (matrix.T @ matrix).nnz
    estimate = estimate_gram_nonzeros(as_sparse_matrix(matrix), samples=400, seed=1)
    assert not estimate.exact
    assert estimate.nonzeros == pytest.approx(exact, rel=0.15)
    assert estimate.upper_bound >= exact


def test_refuses_with_the_numbers_when_the_gram_cannot_fit(split):
    counts = user_item_matrix(split, "count")
    model = SANSA(memory_limit_gb=1e-9)
    with pytest.raises(MemoryError, match=r"13 nonzeros \(exact; upper bound .*memory_limit_gb=1e-09"):
        model.check_gram_fits(counts)
    with pytest.raises(MemoryError, match=r"over the limit of .* GiB \(0% of the memory available now\)"):
        SANSA(memory_fraction=1e-15).check_gram_fits(counts)  # no memory_limit_gb: a share of what is free now
    fits = SANSA(memory_limit_gb=1.0).check_gram_fits(counts)
    assert fits.bytes == 13 * GRAM_BYTES_PER_NONZERO


@needs_extra
def test_fit_refuses_for_memory_before_importing_the_package(split, monkeypatch):
    monkeypatch.delitem(sys.modules, "sansa", raising=False)  # so that an import would show in sys.modules
    with pytest.raises(MemoryError):
        SANSA(memory_limit_gb=1e-9).fit(split)
    assert "sansa" not in sys.modules


@pytest.mark.parametrize("module", EXTRA_MODULES)
def test_a_missing_extra_is_refused_before_any_work(module, monkeypatch):
    monkeypatch.setitem(sys.modules, module, None)  # what Python's import machinery reports for an absent package
    with pytest.raises(
        OptionalDependencyError, match=rf"optional `sansa` extra \(.*{module}.*not installed\).*make setup-sansa"
    ):
        SANSA().fit(split=None)  # no split: the refusal comes before anything reads it
    assert issubclass(OptionalDependencyError, ImportError)  # code that catches ImportError still catches it


@needs_extra
def test_shift_settings_reach_the_package():
    config = SANSA(factorization_shift_step=0.5, factorization_shift_multiplier=3.0, scans=2).reference_config()
    factorizer = config.gramian_factorizer_config
    assert (factorizer.factorization_shift_step, factorizer.factorization_shift_multiplier) == (0.5, 3.0)
    assert config.lower_triangle_inverter_config.scans == 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"l2": 0.0}, "l2 > 0"),
        ({"user_tile": 0}, ">= 1"),
        ({"factorization_shift_multiplier": 1.0}, "factorization_shift_multiplier > 1.*=1.0"),
    ],
)
def test_bad_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SANSA(**kwargs)


def reference_scores(split, **settings) -> np.ndarray:
    """The package's own forward pass on the same counts, densified."""
    from sansa import SANSA as Reference
    from sansa import ICFGramianFactorizerConfig, SANSAConfig, UMRUnitLowerTriangleInverterConfig

    config = SANSAConfig(
        l2=settings.get("l2", 10.0),
        weight_matrix_density=5e-5,
        gramian_factorizer_config=ICFGramianFactorizerConfig(),
        lower_triangle_inverter_config=UMRUnitLowerTriangleInverterConfig(scans=1, finetune_steps=15),
    )
    counts = user_item_matrix(split, "count").to_scipy()
    with frozen_heap():  # the package's ~36 gc.collect() calls per fit walk only what the fit creates
        return Reference(config).fit(counts).forward(counts).toarray()


@pytest.mark.slow  # the package's numba kernels compile on first use (~10 s)
def test_scores_are_the_packages_and_ranked_exactly(split):
    pytest.importorskip("sansa", reason="the optional `sansa` extra (scikit-sparse + SuiteSparse) is not installed")
    model = SANSA(user_tile=3, item_tile=4).fit(split)
    expected = reference_scores(split)
    np.testing.assert_allclose(model.scores(torch.arange(split.num_users)).numpy(), expected, rtol=1e-5, atol=1e-6)
    items, scores = recommend_all(model, split.num_users, split.num_items, batch_users=5)
    assert (items.sort(dim=1).values == torch.arange(split.num_items)).all()  # every item ranked, zeros too
    np.testing.assert_allclose(scores.numpy(), np.take_along_axis(expected, items.numpy(), 1), rtol=1e-5, atol=1e-6)
    assert (scores[:, :-1] >= scores[:, 1:]).all()


@pytest.mark.slow
def test_input_items_masked_only_when_asked(split):
    pytest.importorskip("sansa", reason="the optional `sansa` extra (scikit-sparse + SuiteSparse) is not installed")
    seen = seen_items(split)
    k = split.num_items
    plain = recommend_all(SANSA().fit(split), split.num_users, k)[0]
    masked = recommend_all(SANSA(mask_input=True).fit(split), split.num_users, k)[0]
    for user in range(split.num_users):
        user_seen = set(seen.indices[seen.indptr[user] : seen.indptr[user + 1]].tolist())
        assert set(plain[user].tolist()) == set(range(k))  # unmasked: the user's own items are ranked too
        assert set(masked[user].tolist()) == (set(range(k)) - user_seen) | {-1}  # masked: -1 pads the rest
