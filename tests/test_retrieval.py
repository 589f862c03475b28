"""Tiled exact top-k (torch and faiss backends) against a brute-force numpy ranking, with ties and masking."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from yambda_dl.data.csr import CSR
from yambda_dl.retrieval import _FaissTile, _torch_tile_topk, topk

BACKENDS = ["torch", "faiss"]


def _brute_force(users: np.ndarray, items: np.ndarray, k: int, mask: list[list[int]] | None = None):
    """Full float64 score matrix, masked to -inf, ranked by lexsort on (index, -score); -inf -> index -1."""
    scores = users.astype(np.float64) @ items.astype(np.float64).T
    for user, masked in enumerate(mask or []):
        scores[user, masked] = -np.inf
    order = np.stack([np.lexsort((np.arange(len(items)), -row))[:k] for row in scores])
    top = np.take_along_axis(scores, order, axis=1)
    return top, np.where(np.isinf(top), -1, order)


def _csr(rows: list[list[int]]) -> CSR:
    """A pattern (torch form) whose row u holds the items rows[u]; as many columns as its largest item needs."""
    indptr = torch.tensor([0, *np.cumsum([len(r) for r in rows]).tolist()], dtype=torch.int64)
    indices = torch.tensor([i for r in rows for i in r], dtype=torch.int64)
    return CSR(indptr, indices, None, (len(rows), int(indices.max()) + 1 if len(indices) else 0))


def _tie_heavy(seed: int, n_users: int = 40, n_items: int = 300, dim: int = 4):
    """Integer vectors in -2..2: scores are exact small integers in every backend, full of ties."""
    rng = np.random.default_rng(seed)
    users = rng.integers(-2, 3, (n_users, dim)).astype(np.float32)
    return users, rng.integers(-2, 3, (n_items, dim)).astype(np.float32)


def _mask(n_users: int, n_items: int, seed: int) -> list[list[int]]:
    """Random masked items per user, plus user 1 with more masked items than k and user 2 with everything."""
    rng = np.random.default_rng(seed)
    rows = [rng.choice(n_items, int(rng.integers(0, 30)), replace=False).tolist() for _ in range(n_users)]
    rows[1] = rng.choice(n_items, n_items - 10, replace=False).tolist()  # 290 masked: only 10 items remain
    rows[2] = list(range(n_items))
    return rows


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("k", [1, 7, 120])
@pytest.mark.parametrize(("user_tile", "item_tile"), [(7, 13), (16, 64), (4096, 262_144)])
def test_tie_heavy_masked_equals_brute_force(backend: str, k: int, user_tile: int, item_tile: int):
    users, items = _tie_heavy(seed=k)
    mask = _mask(len(users), len(items), seed=k)
    expected_scores, expected_items = _brute_force(users, items, k, mask)
    scores, found = topk(
        torch.from_numpy(users),
        torch.from_numpy(items),
        k,
        exclude=_csr(mask),
        backend=backend,
        user_tile=user_tile,
        item_tile=item_tile,
    )
    assert scores.dtype == torch.float32 and found.dtype == torch.int64
    np.testing.assert_array_equal(found.numpy(), expected_items)
    np.testing.assert_array_equal(scores.numpy(), expected_scores.astype(np.float32))
    # user 2 has everything masked: all padding; user 1 keeps 10 items, so k > 10 pads the tail
    assert (found[2] == -1).all() and torch.isneginf(scores[2]).all()
    assert (found[1, 10:] == -1).all() and (found[1, : min(k, 10)] >= 0).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_grid_random_data_equals_brute_force_without_mask(backend: str):
    # multiples of 1/8 in [-2, 2]: dot products are exact in float32, so rankings can be compared exactly
    rng = np.random.default_rng(3)
    users = (rng.integers(-16, 17, (50, 16)) / 8).astype(np.float32)
    items = (rng.integers(-16, 17, (700, 16)) / 8).astype(np.float32)
    expected_scores, expected_items = _brute_force(users, items, 100)
    scores, found = topk(torch.from_numpy(users), torch.from_numpy(items), 100, backend=backend, item_tile=64)
    np.testing.assert_array_equal(found.numpy(), expected_items)
    np.testing.assert_array_equal(scores.numpy(), expected_scores.astype(np.float32))


@pytest.mark.parametrize("backend", BACKENDS)
def test_continuous_random_data_finds_the_true_top_scores(backend: str):
    # real-valued scores differ between backends in the last bits; the top scores must still be the true ones
    rng = np.random.default_rng(4)
    users, items = rng.standard_normal((30, 8)), rng.standard_normal((500, 8))
    expected_scores, _ = _brute_force(users, items, 20)
    _, found = topk(torch.from_numpy(users), torch.from_numpy(items), 20, backend=backend, item_tile=33)
    true_scores = np.take_along_axis(users @ items.T, found.numpy(), axis=1)
    np.testing.assert_allclose(true_scores, expected_scores, rtol=0, atol=1e-5)


def test_backends_return_identical_indices_on_ties():
    users, items = _tie_heavy(seed=5, n_users=25, n_items=200)
    mask = _csr(_mask(25, 200, seed=5))
    users, items = torch.from_numpy(users), torch.from_numpy(items)
    results = [topk(users, items, 60, exclude=mask, backend=b, user_tile=9, item_tile=17) for b in BACKENDS]
    assert torch.equal(results[0][1], results[1][1])


@pytest.mark.parametrize("cap", [4, 16])
def test_faiss_sub_tiles_under_a_search_cap_stay_exact(cap: int):
    # the GPU index caps k at 2048; a small cap forces the same split into whole-fetched sub-tiles on the CPU
    users, items = _tie_heavy(seed=6, n_users=12, n_items=50)
    mask = _mask(12, 50, seed=6)
    rows = torch.tensor([u for u, masked in enumerate(mask) for _ in masked])
    cols = torch.tensor([i for masked in mask for i in masked])
    tile = _FaissTile(torch.from_numpy(items), cap=cap)
    expected = _torch_tile_topk(torch.from_numpy(items), torch.from_numpy(users), 20, rows, cols)
    got = tile(torch.from_numpy(users), 20, rows, cols)
    finite = torch.isfinite(expected[0])  # masked -inf slots become -1 padding in topk, not in the tile
    assert torch.equal(got[0], expected[0])
    assert torch.equal(got[1][finite], expected[1][finite])


def test_padding_when_k_equals_the_item_count():
    users, items = torch.ones((2, 2)), torch.tensor([[1.0, 0.0], [2.0, 0.0], [1.0, 0.0]])
    # user 0 masks item 1; scores 1, 2, 1 -> user 0: items 0, 2, padding; user 1: 1, 0, 2 (lower tie first)
    scores, found = topk(users, items, 3, exclude=_csr([[1], []]), item_tile=2)
    assert found.tolist() == [[0, 2, -1], [1, 0, 2]]
    assert scores.tolist() == [[1.0, 1.0, -np.inf], [2.0, 1.0, 1.0]]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"k": 0}, "k=0 is out of range: valid k are 1..5"),
        ({"k": 6}, "k=6 is out of range: valid k are 1..5"),
        ({"k": 2, "backend": "annoy"}, "unknown retrieval backend 'annoy'; valid choices: torch, faiss"),
        ({"k": 2, "exclude": CSR(torch.tensor([0, 1]), torch.tensor([0]), None, (1, 5))}, "n_users \\+ 1 = 3"),
        ({"k": 2, "exclude": CSR(torch.tensor([0, 1, 1]), torch.tensor([5]), None, (2, 6))}, "valid are 0..4"),
    ],
)
def test_bad_inputs_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        topk(torch.ones((2, 3)), torch.ones((5, 3)), **kwargs)


def test_dimension_mismatch_is_rejected():
    with pytest.raises(ValueError, match="user_vectors have d=3 but item_vectors have d=4"):
        topk(torch.ones((2, 3)), torch.ones((5, 4)), 1)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("backend", BACKENDS)
def test_cuda_equals_cpu_on_ties_with_masking(backend: str):
    users, items = _tie_heavy(5)
    mask = _csr(_mask(len(users), len(items), 5))
    cpu = topk(torch.from_numpy(users), torch.from_numpy(items), 20, exclude=mask, backend=backend, item_tile=64)
    gpu = topk(
        torch.from_numpy(users).cuda(),
        torch.from_numpy(items).cuda(),
        20,
        exclude=mask,
        backend=backend,
        item_tile=64,
        device="cuda",
    )
    assert torch.equal(cpu[1], gpu[1].cpu()) and torch.equal(cpu[0], gpu[0].cpu())


def test_a_host_mask_ranks_as_its_torch_form():
    """seen_items hands retrieval the host form (int32 indices); it masks exactly as the int64 torch form does."""
    users, items = _tie_heavy(6)
    mask = _csr(_mask(len(users), len(items), 6))
    host = CSR(mask.indptr.numpy(), mask.indices.numpy().astype(np.int32), None, mask.shape)
    on_host = topk(torch.from_numpy(users), torch.from_numpy(items), 15, exclude=host, item_tile=64)
    on_torch = topk(torch.from_numpy(users), torch.from_numpy(items), 15, exclude=mask, item_tile=64)
    assert torch.equal(on_host[1], on_torch[1]) and torch.equal(on_host[0], on_torch[0])
