"""ItemKNN against a direct dense computation of its formulas (docs/protocol.md, ItemKNN) on tiny real Parquet."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from yambda_dl.data import views
from yambda_dl.data.layout import DatasetLayout
from yambda_dl.data.split import Protocol, make_split
from yambda_dl.eval.recommend import recommend_all, seen_items
from yambda_dl.models.itemknn import (
    PAPER_MIN_WEIGHT,
    ItemKNN,
    cpu_neighbours,
    decayed_profiles,
    device_neighbours,
    top_per_csr_row,
    top_per_row,
)

from ..conftest import TEST_START, cuda_devices, listen, write_flat

HOUR = 3600
T0 = 20_000_000


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    """Five users, six items; repeats, two events at one user's last timestamp, hours-apart listens."""
    root = tmp_path_factory.mktemp("itemknn")
    layout = DatasetLayout(root, "hand")
    rows = [
        listen(1, T0, 10),
        listen(1, T0 + HOUR, 20),
        listen(1, T0 + 3 * HOUR, 20),
        listen(1, T0 + 5 * HOUR, 30),
        listen(2, T0, 20),
        listen(2, T0 + 2 * HOUR, 40),
        listen(2, T0 + 2 * HOUR, 50),  # two events at user 2's last timestamp
        listen(3, T0, 10),
        listen(3, T0 + 10, 10),
        listen(3, T0 + 7 * HOUR, 60),
        listen(4, T0 + 100, 30),
        listen(4, T0 + HOUR + 100, 40),
        listen(4, T0 + 9 * HOUR, 50),
        listen(5, T0, 60),
        listen(5, T0 + 4 * HOUR, 10),
        listen(5, T0 + 4 * HOUR + 5, 20),
    ]
    rows += [listen(u, TEST_START, 10) for u in range(1, 6)]
    write_flat(layout, "listens", rows)
    return make_split(layout, Protocol(), cache_dir=root / "cache", progress=False)


def dense_events(split) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    batches = list(split.iter_train())
    return tuple(np.concatenate([b[c] for b in batches]) for c in ("user_idx", "item_idx", "timestamp"))


def dense_profiles(split, hours: float) -> np.ndarray:
    """P[u, i] = sum over u's events on i of 0.9 ** ((t_last(u) - t_e) / (3600 h)); h = 0: last timestamp only."""
    users, items, times = dense_events(split)
    profiles = np.zeros((split.num_users, split.num_items))
    for u, i, t in zip(users, items, times, strict=True):
        t_last = times[users == u].max()
        profiles[u, i] += float(t == t_last) if hours == 0 else 0.9 ** ((t_last - t) / (3600 * hours))
    return profiles


def dense_counts(split) -> np.ndarray:
    users, items, _ = dense_events(split)
    counts = np.zeros((split.num_users, split.num_items))
    np.add.at(counts, (users, items), 1.0)
    return counts


def official_scores(split, hours: float) -> np.ndarray:
    """The official code's computation: E = P C^T (users x users), then cosine(E_u, C[:, i])."""
    counts = dense_counts(split)
    user_space = dense_profiles(split, hours) @ counts.T
    return (user_space / np.linalg.norm(user_space, axis=1, keepdims=True)) @ (
        counts / np.linalg.norm(counts, axis=0, keepdims=True)
    )


@pytest.mark.parametrize("hours", [0.0, 1.0, 24.0])
def test_profiles_follow_the_decay_formula(split, hours):
    profiles = decayed_profiles(split, hours)
    dense = np.zeros(profiles.shape)
    dense[profiles.row_ids(), profiles.indices] = profiles.values
    np.testing.assert_allclose(dense, dense_profiles(split, hours), rtol=1e-6)


def test_zero_hours_keeps_only_the_last_timestamp(split):
    profiles = decayed_profiles(split, 0.0)
    user2 = int(split.user_index([2])[0])
    row = slice(profiles.indptr[user2], profiles.indptr[user2 + 1])
    assert sorted(split.items[profiles.indices[row]].tolist()) == [40, 50]
    assert profiles.values[row].tolist() == [1.0, 1.0]


@pytest.mark.parametrize("hours", [0.0, 1.0, 24.0])
@pytest.mark.parametrize("device", cuda_devices())
def test_scores_equal_the_dense_formula(split, hours, device):
    model = ItemKNN(hours=hours, user_tile=2, item_tile=4, device=device).fit(split)
    ours = model.scores(torch.arange(split.num_users)).cpu().numpy()
    np.testing.assert_allclose(ours, official_scores(split, hours), rtol=1e-5, atol=1e-6)


def test_recommendations_rank_the_dense_scores(split):
    expected = official_scores(split, 1.0)
    model = ItemKNN(hours=1.0, user_tile=2, item_tile=4).fit(split)
    items, scores = recommend_all(model, split.num_users, 6, batch_users=3)
    # ties to the lower item index, as everywhere in retrieval
    order = np.lexsort((np.tile(np.arange(split.num_items), (split.num_users, 1)), -expected.round(5)), axis=1)
    assert items.tolist() == order.tolist()
    np.testing.assert_allclose(scores.numpy(), np.take_along_axis(expected, order, 1), rtol=1e-5)


def test_tiles_do_not_change_the_answer(split):
    small = recommend_all(ItemKNN(hours=2.0, user_tile=1, item_tile=1).fit(split), split.num_users, 4)
    large = recommend_all(ItemKNN(hours=2.0).fit(split), split.num_users, 4)
    assert torch.equal(small[0], large[0])
    torch.testing.assert_close(small[1], large[1])


def test_seen_items_masked_when_asked(split):
    seen = seen_items(split)
    items, _ = recommend_all(ItemKNN(hours=1.0, item_tile=2).fit(split), split.num_users, 3, exclude=seen)
    for user, row in enumerate(items.tolist()):
        user_seen = set(seen.indices[seen.indptr[user] : seen.indptr[user + 1]].tolist())
        allowed = [i for i in row if i >= 0]
        assert not user_seen & set(allowed)
        assert len(allowed) == min(3, split.num_items - len(user_seen))  # -1 pads only when too few remain


def dense_pruned_scores(split, hours: float, neighbors: int) -> np.ndarray:
    """sum_j P_uj M_ji with M_ji = C_j . C_i / |C_i|, each row j keeping its N largest (ties to the lower i)."""
    counts = dense_counts(split)
    m = (counts.T @ counts) / np.linalg.norm(counts, axis=0)[None, :]
    pruned = np.zeros_like(m)
    for j in range(len(m)):
        keep = np.lexsort((np.arange(len(m)), -m[j].round(6)))[:neighbors]
        keep = keep[m[j, keep] > 0]
        pruned[j, keep] = m[j, keep]
    return dense_profiles(split, hours) @ pruned


@pytest.mark.parametrize("neighbors", [1, 2, 3])
def test_pruned_variant_equals_dense_pruning(split, neighbors):
    # a tiny block budget: several blocks of source items
    model = ItemKNN(hours=1.0, neighbors=neighbors, item_tile=4, neighbor_block_nonzeros=3).fit(split)
    ours = model.scores(torch.arange(split.num_users)).numpy()
    np.testing.assert_allclose(ours, dense_pruned_scores(split, 1.0, neighbors), rtol=1e-5, atol=1e-6)


def test_pruned_with_every_neighbour_ranks_as_the_exact_model(split):
    exact = recommend_all(ItemKNN(hours=3.0).fit(split), split.num_users, 6)[0]
    pruned = recommend_all(ItemKNN(hours=3.0, neighbors=split.num_items).fit(split), split.num_users, 6)[0]
    assert torch.equal(exact, pruned)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"hours": -1.0}, "hours must be >= 0"), ({"neighbors": 0}, "neighbors must be >= 1"), ({"user_tile": 0}, ">= 1")],
)
def test_bad_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ItemKNN(**kwargs)


def test_top_per_row_selections_agree_with_a_lexsort():
    """The CPU partition and the device sort keep the same entries: n largest per row, ties to the lower column."""
    rng = np.random.default_rng(0)
    num_rows, num_cols, n = 60, 40, 5
    dense = rng.integers(0, 4, size=(num_rows, num_cols)).astype(np.float64)  # many ties, rows of every length
    dense[rng.random(dense.shape) < 0.5] = 0
    rows, cols = np.nonzero(dense)
    shuffle = rng.permutation(len(rows))  # the CPU path takes rows with unsorted columns
    order = np.lexsort((shuffle, rows))
    rows, cols = rows[order], cols[order]
    values = dense[rows, cols]
    indptr = np.r_[0, np.cumsum(np.bincount(rows, minlength=num_rows))]

    expected = set()
    for r in range(num_rows):
        in_row = np.flatnonzero(dense[r])
        expected |= {(r, c) for c in in_row[np.lexsort((in_row, -dense[r, in_row]))][:n]}

    cpu = top_per_csr_row(indptr, cols, values, n)
    assert set(zip(rows[cpu].tolist(), cols[cpu].tolist(), strict=True)) == expected
    canonical = np.lexsort((cols, rows))  # the device path takes COO sorted by (row, col)
    r_t, c_t, v_t = (torch.from_numpy(a[canonical]) for a in (rows, cols, values))
    device = top_per_row(r_t, c_t, v_t, n).numpy()
    assert set(zip(r_t[device].tolist(), c_t[device].tolist(), strict=True)) == expected


def test_a_neighbour_search_that_cannot_fit_is_refused_with_the_numbers(split):
    with pytest.raises(MemoryError, match=r"neighbour lists \(6 items x 3 neighbours\).*GiB"):
        ItemKNN(neighbors=3, neighbor_block_nonzeros=1 << 50).fit(split)


@pytest.mark.parametrize("n", [1, 2, 6])
@pytest.mark.parametrize("block_rows", [1, 4])
def test_device_neighbour_search_equals_the_cpu_one(split, n, block_rows):
    """The CUDA path's logic (torch products, sort-based top n), run here on the CPU, against the scipy path."""
    items = views.user_item_matrix(split, "count").transpose()
    users = items.transpose()
    norms = np.sqrt(np.add.reduceat(items.values.astype(np.float64) ** 2, items.indptr[:-1]))
    target_values = users.values / norms[users.indices]
    blocks = [(lo, min(lo + block_rows, split.num_items)) for lo in range(0, split.num_items, block_rows)]
    cpu = cpu_neighbours(items, users, target_values, blocks, n, workers=2).T.toarray()
    device = device_neighbours(items, users, target_values, blocks, n, torch.device("cpu")).to_scipy().toarray()
    np.testing.assert_array_equal(device != 0, cpu != 0)
    np.testing.assert_allclose(device, cpu, rtol=1e-12)


def paper_scores(split, hours: float) -> np.ndarray:
    """The official scripts as they ran: profile sums <= 1e-9 (in float32) dropped (`eliminate_zeros`), and the item
    vectors `sparse_normalize(user_item.T, dim=-1)`: C^T with each user's counts scaled to unit length (+1e-12 under
    the root), against which the unit user-space profile E_u = P_u C^T is scored."""
    counts = dense_counts(split)
    profiles = dense_profiles(split, hours)
    profiles[profiles.astype(np.float32) <= np.float32(1e-9)] = 0.0
    user_space = profiles @ counts.T
    item_vectors = counts.T / np.sqrt((counts**2).sum(axis=1) + 1e-12)  # items x users, per-user normalised
    return (user_space / np.linalg.norm(user_space, axis=1, keepdims=True)) @ item_vectors.T


@pytest.mark.parametrize("hours", [0.0, 0.01, 1.0, 24.0])
@pytest.mark.parametrize("device", cuda_devices())
def test_paper_variant_equals_the_official_scripts(split, hours, device):
    model = ItemKNN(hours=hours, user_tile=2, item_tile=4, device=device, normalize="paper").fit(split)
    ours = model.scores(torch.arange(split.num_users)).cpu().numpy()
    np.testing.assert_allclose(ours, paper_scores(split, hours), rtol=1e-5, atol=1e-6)
    # on this data the two normalisations rank differently: the test tells them apart
    assert not np.allclose(paper_scores(split, hours), official_scores(split, hours), atol=1e-3)


def test_paper_variant_drops_what_the_scripts_drop(split):
    """hours = 0.01: an event 5 hours back weighs 0.9 ** 500 ~ 1e-23, kept by the cosine, dropped by the paper's."""
    kept = decayed_profiles(split, 0.01)
    dropped = decayed_profiles(split, 0.01, min_weight=PAPER_MIN_WEIGHT)
    assert dropped.values.min() > PAPER_MIN_WEIGHT
    assert kept.values.min() < PAPER_MIN_WEIGHT
    assert kept.nnz > dropped.nnz
    assert dropped.nnz == np.count_nonzero(dense_profiles(split, 0.01).astype(np.float32) > np.float32(1e-9))


def dense_paper_pruned_scores(split, hours: float, neighbors: int) -> np.ndarray:
    """sum_j P_uj M_ji with the paper's M_ji = sum_v C_vj C_vi / |C_v|, each row j keeping its N largest."""
    counts = dense_counts(split)
    m = (counts / np.sqrt((counts**2).sum(axis=1, keepdims=True) + 1e-12)).T @ counts
    pruned = np.zeros_like(m)
    for j in range(len(m)):
        keep = np.lexsort((np.arange(len(m)), -m[j].round(6)))[:neighbors]
        keep = keep[m[j, keep] > 0]
        pruned[j, keep] = m[j, keep]
    profiles = dense_profiles(split, hours)
    profiles[profiles.astype(np.float32) <= np.float32(1e-9)] = 0.0
    return profiles @ pruned


@pytest.mark.parametrize("neighbors", [1, 3])
def test_paper_pruned_variant_equals_dense_pruning(split, neighbors):
    model = ItemKNN(hours=1.0, neighbors=neighbors, neighbor_block_nonzeros=3, normalize="paper").fit(split)
    ours = model.scores(torch.arange(split.num_users)).numpy()
    np.testing.assert_allclose(ours, dense_paper_pruned_scores(split, 1.0, neighbors), rtol=1e-5, atol=1e-6)


def test_paper_pruned_with_every_neighbour_ranks_as_the_paper_model(split):
    exact = recommend_all(ItemKNN(hours=3.0, normalize="paper").fit(split), split.num_users, 6)[0]
    pruned = ItemKNN(hours=3.0, neighbors=split.num_items, normalize="paper").fit(split)
    assert torch.equal(exact, recommend_all(pruned, split.num_users, 6)[0])


def test_unknown_normalisation_is_refused_with_the_choices():
    with pytest.raises(ValueError, match=r"normalize='l2' is not one of cosine, paper"):
        ItemKNN(normalize="l2")


@pytest.mark.gpu  # no skipif of its own: tests/conftest.py skips every gpu-marked test where CUDA is absent
@pytest.mark.parametrize("normalize", ["cosine", "paper"])
def test_pruned_model_on_cuda_equals_the_cpu_one(split, normalize):
    users = torch.arange(split.num_users)
    cpu = ItemKNN(hours=1.0, neighbors=2, normalize=normalize).fit(split).scores(users)
    cuda = ItemKNN(hours=1.0, neighbors=2, normalize=normalize, device="cuda").fit(split).scores(users)
    torch.testing.assert_close(cuda.cpu(), cpu)
