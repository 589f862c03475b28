"""Target slices (eval/slices.py): organic / recommended / warm / cold metrics computed by hand on a tiny case, the
subset's alignment, empty slices, a newly registered slice, and the slices of a real split."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from yambda_dl.data.layout import DatasetLayout
from yambda_dl.data.split import Protocol, Targets, make_split
from yambda_dl.eval import slices
from yambda_dl.eval.settings import EvalSettings
from yambda_dl.eval.slices import subset_targets

from ..conftest import TEST_START, listen, write_audio, write_flat

L3 = math.log2(3)  # disc(2) = 1 / L3; disc(1) = 1, disc(3) = 1 / 2


def _targets(rows: dict[int, list[tuple[int, bool]]]) -> Targets:
    """Targets of evaluated users {user_idx: [(item_idx, is_organic), ...]}, with raw ids and times of their own."""
    offsets, items, organic = [0], [], []
    for row in rows.values():
        offsets.append(offsets[-1] + len(row))
        items += [item for item, _ in row]
        organic += [flag for _, flag in row]
    n = len(items)
    return Targets(
        user_idx=np.array(list(rows), dtype=np.int64),
        offsets=np.array(offsets, dtype=np.int64),
        item_idx=np.array(items, dtype=np.int64),
        item_id=np.arange(100, 100 + n, dtype=np.uint32),
        timestamp=np.arange(1_000, 1_000 + n, dtype=np.int64),
        is_organic=np.array(organic, dtype=bool),
        uid=np.array([7_000 + u for u in rows], dtype=np.uint32),
    )


# 4 ranked users, 3 recs each; 6 train items (0..5) and 2 cold candidates (6, 7): num_candidates = 8
RECS = torch.tensor([[0, 1, 2], [3, 6, 4], [5, 0, 1], [2, 7, 3]])
ORG, REC = True, False
# user 2 is ranked but has no target; -1 is a target on an item that is not a candidate at all
TARGETS = _targets(
    {
        0: [(1, ORG), (2, REC), (4, REC), (-1, ORG)],
        1: [(6, REC), (3, ORG), (3, ORG)],
        3: [(7, ORG)],
    }
)
SPLIT = SimpleNamespace(targets=TARGETS, num_items=6, num_candidates=8)
SETTINGS = EvalSettings(ks=(1, 3))


def _mean(*values: float) -> float:
    return sum(values) / len(values)


# Every slice by hand. Recs: u0 [0, 1, 2], u1 [3, 6, 4], u3 [2, 7, 3]; standard NDCG@3 = DCG / IDCG over
# min(3, |T_u|) ranks, Recall@3 = hits / min(3, |T_u|) with |T_u| the user's target count in the slice.
EXPECTED = {
    # u0 T={1, -1}: hit at rank 2; u1 T={3, 3}: rank 1; u3 T={7}: rank 2
    "organic": {
        "users": 3,
        "targets": 5,
        "ndcg@1": _mean(0, 1, 0),
        "recall@1": _mean(0, 1 / 1, 0),
        "ndcg@3": _mean((1 / L3) / (1 + 1 / L3), 1 / (1 + 1 / L3), (1 / L3) / 1),
        "recall@3": _mean(1 / 2, 1 / 2, 1 / 1),
    },
    # u0 T={2, 4}: hit at rank 3; u1 T={6}: rank 2; u3 has none (dropped)
    "recommended": {
        "users": 2,
        "targets": 3,
        "ndcg@1": 0.0,
        "recall@1": 0.0,
        "ndcg@3": _mean(0.5 / (1 + 1 / L3), (1 / L3) / 1),
        "recall@3": _mean(1 / 2, 1 / 1),
    },
    # train items only (0..5): u0 T={1, 2, 4}: ranks 2, 3; u1 T={3, 3}: rank 1; u3 none
    "warm": {
        "users": 2,
        "targets": 5,
        "ndcg@1": _mean(0, 1),
        "recall@1": _mean(0, 1),
        "ndcg@3": _mean((1 / L3 + 0.5) / (1 + 1 / L3 + 0.5), 1 / (1 + 1 / L3)),
        "recall@3": _mean(2 / 3, 1 / 2),
    },
    # u0 T={-1}: never hit; u1 T={6}: rank 2; u3 T={7}: rank 2
    "cold": {
        "users": 3,
        "targets": 3,
        "ndcg@1": 0.0,
        "recall@1": 0.0,
        "ndcg@3": _mean(0, 1 / L3, 1 / L3),
        "recall@3": _mean(0, 1, 1),
    },
    # every target, as the paper evaluates: u0 T={1, 2, 4, -1}: ranks 2, 3; u1 T={6, 3, 3}: ranks 1, 2; u3 rank 2
    "all": {
        "users": 3,
        "targets": 8,
        "ndcg@1": _mean(0, 1, 0),
        "recall@1": _mean(0, 1, 0),
        "ndcg@3": _mean((1 / L3 + 0.5) / (1.5 + 1 / L3), (1 + 1 / L3) / (1.5 + 1 / L3), 1 / L3),
        "recall@3": _mean(2 / 3, 2 / 3, 1),
    },
}
# the union of every ranked user's top 1 = {0, 3, 5, 2}, top 3 = all 8 candidates: the same for every slice
COVERAGE = {"coverage@1": 4 / 8, "coverage@3": 8 / 8}


def _check(got: dict, expected: dict) -> None:
    assert got["num_evaluated_users"] == expected["users"]
    assert got["num_ranked_users"] == 4
    for name in ("ndcg@1", "recall@1", "ndcg@3", "recall@3"):
        assert got[name] == pytest.approx(expected[name], abs=1e-15), name
    for name, value in COVERAGE.items():
        assert got[name] == pytest.approx(value, abs=1e-15), name


def test_every_slice_matches_the_hand_computed_metrics():
    got = SETTINGS.score_slices(RECS, SPLIT)
    assert list(got) == ["organic", "recommended", "warm", "cold"]
    for name, metrics in got.items():
        _check(metrics, EXPECTED[name])
        assert metrics["num_targets"] == EXPECTED[name]["targets"], name


def test_the_all_targets_metrics_are_unchanged_and_slices_share_their_names():
    everything = SETTINGS.score(RECS, SPLIT)
    _check(everything, EXPECTED["all"])
    for name, metrics in SETTINGS.score_slices(RECS, SPLIT, catalogue=everything).items():
        assert set(metrics) == set(everything) | {"num_targets"}, name


def test_organic_and_recommended_partition_the_targets_as_do_warm_and_cold():
    got = SETTINGS.score_slices(RECS, SPLIT)
    assert got["organic"]["num_targets"] + got["recommended"]["num_targets"] == TARGETS.num_targets
    assert got["warm"]["num_targets"] + got["cold"]["num_targets"] == TARGETS.num_targets


def test_a_slice_without_targets_is_none():
    organic_only = _targets({0: [(1, ORG)], 3: [(2, ORG)]})
    got = SETTINGS.score_slices(RECS, SimpleNamespace(targets=organic_only, num_items=8))
    assert got["recommended"] is None and got["cold"] is None
    assert got["organic"]["num_evaluated_users"] == got["warm"]["num_evaluated_users"] == 2


def test_subset_keeps_each_targets_fields_aligned_and_drops_users_left_empty():
    sub = subset_targets(TARGETS, TARGETS.is_organic)
    assert isinstance(sub, Targets)
    assert sub.user_idx.tolist() == [0, 1, 3] and sub.uid.tolist() == [7_000, 7_001, 7_003]
    assert sub.offsets.tolist() == [0, 2, 4, 5]
    assert sub.item_idx.tolist() == [1, -1, 3, 3, 7]
    assert sub.item_id.tolist() == [100, 103, 105, 106, 107]  # the raw ids and times of the kept rows
    assert sub.timestamp.tolist() == [1_000, 1_003, 1_005, 1_006, 1_007]
    rec = subset_targets(TARGETS, ~TARGETS.is_organic)
    assert rec.user_idx.tolist() == [0, 1] and rec.uid.tolist() == [7_000, 7_001] and rec.offsets.tolist() == [0, 2, 3]
    empty = subset_targets(TARGETS, np.zeros(TARGETS.num_targets, bool))
    assert empty.num_users == 0 and empty.offsets.tolist() == [0]


def test_bad_masks_and_names_are_rejected():
    with pytest.raises(ValueError, match=r"mask has shape \(3,\); the targets have \(8,\) rows"):
        subset_targets(TARGETS, np.ones(3, bool))
    with pytest.raises(ValueError, match=r"unknown target slice 'nope'; valid choices: organic, recommended"):
        slices.slice_mask("nope", TARGETS, SPLIT)
    with pytest.raises(ValueError, match=r"slice 'organic' is already registered"):
        slices.target_slice("organic")
    with pytest.raises(ValueError, match=r"slice name 'metrics'"):
        slices.target_slice("metrics")


def test_a_new_slice_is_one_function(monkeypatch):
    monkeypatch.setattr(slices, "TARGET_SLICES", dict(slices.TARGET_SLICES))  # registered for this test only
    monkeypatch.setattr("yambda_dl.eval.settings.TARGET_SLICES", slices.TARGET_SLICES)

    @slices.target_slice("repeats")
    def repeats(targets, split) -> np.ndarray:
        """Targets whose item the user already had earlier in the day."""
        out = np.zeros(len(targets.item_idx), bool)
        for start, stop in zip(targets.offsets[:-1], targets.offsets[1:], strict=True):
            row = targets.item_idx[start:stop]
            out[start:stop] = [item in row[:i] for i, item in enumerate(row)]
        return out

    got = SETTINGS.score_slices(RECS, SPLIT)["repeats"]
    # only u1's second play of item 3 (ranked first): one user, one target, a hit at rank 1
    assert got["num_evaluated_users"] == 1 and got["num_targets"] == 1
    assert got["ndcg@1"] == got["recall@3"] == 1.0


def test_the_slices_of_a_real_split_with_cold_candidates(tmp_path):
    """Raw Listen+ rows -> make_split -> score_slices: the flags and item indices reach the slices. Train items 10,
    20, 30 (dense 0, 1, 2); item 99 has a vector and no train event (cold candidate 3); 77 has neither (-1)."""
    layout = DatasetLayout(tmp_path / "yambda", "hand")
    early = 1_000_000
    rows = [listen(1, early, 10), listen(1, early + 5, 20), listen(2, early, 10), listen(2, early + 5, 30)]
    rows += [listen(3, early, 20)]
    rows += [  # the test day: (user, item, organic); a skip and a user without train events are no targets
        listen(1, TEST_START, 10, organic=1),
        listen(1, TEST_START + 5, 20, organic=0),
        listen(1, TEST_START + 10, 99, organic=1),
        listen(2, TEST_START, 30, organic=0),
        listen(2, TEST_START + 5, 77, organic=0),
        listen(3, TEST_START, 20, organic=1),
        listen(3, TEST_START + 5, 30, ratio=10, organic=0),
        listen(4, TEST_START, 10, organic=1),
    ]
    write_flat(layout, "listens", rows)
    write_audio(layout.embeddings_path, [10, 20, 30, 99])
    recs = torch.tensor([[0, 3], [2, 0], [0, 1]])  # users 1, 2, 3
    settings = EvalSettings(ks=(2,))
    split = make_split(layout, Protocol(candidates="train_and_cold"), cache_dir=tmp_path / "cache", progress=False)
    assert split.num_candidates == 4
    got = settings.score_slices(recs, split)
    counts = {name: (m["num_evaluated_users"], m["num_targets"]) for name, m in got.items()}
    assert counts == {"organic": (2, 3), "recommended": (2, 3), "warm": (3, 4), "cold": (2, 2)}
    recall = {name: m["recall@2"] for name, m in got.items()}
    # organic: u1 {10, 99} both hit, u3 {20} hit; recommended: u1 {20} none, u2 {30, 77} one of min(2, 2);
    # warm: u1 {10, 20} one of 2, u2 {30} and u3 {20} hit; cold: u1 {99} hit, u2 {77} never
    assert recall == pytest.approx({"organic": 1.0, "recommended": 0.25, "warm": 2.5 / 3, "cold": 0.5}, abs=1e-15)
    # the paper's candidates: item 99 is outside them, so no model hits a cold target
    split = make_split(layout, Protocol(), cache_dir=tmp_path / "cache", progress=False)
    got = settings.score_slices(torch.tensor([[0, 1], [2, 0], [0, 1]]), split)
    assert got["cold"]["num_targets"] == 2 and got["cold"]["recall@2"] == 0.0
