"""Random, MostPop and DecayPop against hand-computed answers (docs/protocol.md#baselines)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from yambda_dl.data.csr import CSR
from yambda_dl.data.layout import DatasetLayout
from yambda_dl.data.split import Protocol, make_split
from yambda_dl.models.popularity import DecayPop, MostPop, Random

from ..conftest import listen, write_flat


@pytest.fixture
def split(popularity_layout, tmp_path):
    return make_split(popularity_layout, Protocol(), cache_dir=tmp_path / "cache", progress=False)


def raw(split, items: torch.Tensor) -> list[list[int]]:
    return [[int(split.items[i]) if i >= 0 else -1 for i in row] for row in items.tolist()]


def test_mostpop_ranks_by_train_counts(split):
    model = MostPop().fit(split)
    items, scores = model.recommend(torch.arange(split.num_users), k=5)
    assert raw(split, items) == [[10, 20, 30, 40, 50]] * split.num_users
    assert scores[0].tolist() == [6.0, 5.0, 4.0, 3.0, 2.0]


def test_decaypop_scores_are_the_papers_formula(split):
    hours = 0.5
    model = DecayPop(hours=hours).fit(split)
    # t_max = the last train event (item 50 at TRAIN_END - 5); all others are 1_000_000 + 5 i seconds
    t_max = 25_911_795
    expected_50 = 2 * 0.9**0
    expected_10 = sum(0.9 ** ((t_max - (1_000_000 + 5 * 0)) / (3600 * hours)) for _ in range(6))
    assert model.scores[split.item_index([50])[0]] == pytest.approx(expected_50)
    assert model.scores[split.item_index([10])[0]] == pytest.approx(expected_10, rel=1e-9, abs=1e-300)
    items, _ = model.recommend(torch.arange(2), k=1)
    assert raw(split, items) == [[50], [50]]  # recent beats frequent with a short horizon


def test_decaypop_with_long_horizon_approaches_mostpop(split):
    items, _ = DecayPop(hours=1e9).fit(split).recommend(torch.arange(1), k=5)
    assert raw(split, items) == [[10, 20, 30, 40, 50]]


def test_ties_break_by_lower_item_index(popularity_layout, tmp_path):
    split = make_split(popularity_layout, Protocol(), cache_dir=tmp_path / "c", progress=False)
    model = MostPop().fit(split)
    model.scores[:] = 1.0  # every item ties
    model._order = np.argsort(-model.scores, kind="stable")
    items, _ = model.recommend(torch.arange(1), k=5)
    assert items.tolist() == [[0, 1, 2, 3, 4]]


def test_exclusion_masks_each_users_items(split):
    # user 0 masks items 0 and 2, user 1 masks nothing, user 2 masks everything but item 4
    exclude = CSR(torch.tensor([0, 2, 2, 6]), torch.tensor([0, 2, 0, 1, 2, 3]), None, (3, 5))
    items, scores = MostPop().fit(split).recommend(torch.arange(3), k=3, exclude=exclude)
    assert items.tolist() == [[1, 3, 4], [0, 1, 2], [4, -1, -1]]
    assert math.isinf(scores[2, 1]) and scores[2, 1] < 0


def test_random_is_uniform_distinct_seeded_and_batch_independent(split):
    model = Random(seed=3).fit(split)
    users = torch.arange(split.num_users)
    items, scores = model.recommend(users, k=5)
    assert sorted(items[0].tolist()) == [0, 1, 2, 3, 4]  # k = all items: a permutation
    again, _ = Random(seed=3).fit(split).recommend(users[3:], k=5)
    assert torch.equal(items[3:], again)  # a user's list does not depend on the batch
    other, _ = Random(seed=4).fit(split).recommend(users, k=5)
    assert not torch.equal(items, other)
    assert (scores[:, :-1] >= scores[:, 1:]).all()


def test_random_large_catalogue_draws_distinct_uniform_items(tmp_path):
    layout = DatasetLayout(tmp_path / "big", "hand")
    write_flat(
        layout,
        "listens",
        [listen(1, 1000 + 5 * (i % 1000), i + 1) for i in range(100_000)] + [listen(1, 25_913_600, 1)],
    )
    split = make_split(layout, Protocol(), cache_dir=tmp_path / "cache", progress=False)
    model = Random(seed=0).fit(split)
    items, _ = model.recommend(torch.arange(2000), k=100)
    assert all(len(set(row)) == 100 for row in items.tolist())
    counts = np.bincount(items.flatten().numpy() // 10_000, minlength=10)  # 10 equal bins of items
    assert counts.min() > 0.9 * counts.mean()  # uniform: each bin within 10% of 20,000 draws
    cover = len(np.unique(items.numpy())) / 100_000
    assert cover == pytest.approx(1 - math.exp(-2000 * 100 / 100_000), abs=0.01)  # docs/protocol.md's coverage check


def test_bad_arguments(split):
    with pytest.raises(ValueError, match="hours"):
        DecayPop(hours=0)
    with pytest.raises(ValueError, match="number of candidate"):
        MostPop().fit(split).recommend(torch.arange(1), k=6)
    with pytest.raises(RuntimeError, match="before fit"):
        MostPop().recommend(torch.arange(1), k=1)
