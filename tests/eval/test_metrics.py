"""Ranking metrics and coverage against hand arithmetic and an independent per-user reference (docs/protocol.md),
and the metric registry."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from yambda_dl.eval import metrics
from yambda_dl.eval.metrics import coverage, ranking_metrics

LOG2_3 = math.log2(3)


def _csr(rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    offsets = torch.tensor([0, *np.cumsum([len(r) for r in rows]).tolist()], dtype=torch.int64)
    return offsets, torch.tensor([i for r in rows for i in r], dtype=torch.int64)


def _hand_case() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    # user 0: targets 5,5,5,7 (|T|=4 with duplicates, set {5, 7}); recs 5, 2, 7 -> rel 1, 0, 1
    # user 1: targets 9, -1 (|T|=2; -1 never hit); recs 3, 4, -1 (padded) -> no hit
    recs = torch.tensor([[5, 2, 7], [3, 4, -1]])
    offsets, items = _csr([[5, 5, 5, 7], [9, -1]])
    return recs, offsets, items


def test_hand_computed_standard_and_paper_metrics():
    recs, offsets, items = _hand_case()
    got = ranking_metrics(recs, offsets, items, ks=(1, 3))
    # user 0, k=3: DCG = 1 + 1/log2(4) = 1.5; IDCG over min(3, 4) = 3 ranks = 1 + 1/log2(3) + 0.5
    idcg0 = 1 + 1 / LOG2_3 + 0.5
    # user 1, k=3: DCG = 0; IDCG over min(3, 2) = 2 ranks = 1 + 1/log2(3)
    idcg1 = 1 + 1 / LOG2_3
    expected = {
        "ndcg@1": (1 + 0) / 2,  # user 0: 1/1, user 1: 0/1
        "ndcg@3": (1.5 / idcg0 + 0) / 2,
        "recall@1": (1 / 1 + 0) / 2,  # hits / min(1, |T|)
        "recall@3": (2 / 3 + 0) / 2,  # user 0: 2 hits / min(3, 4); a track 3 times in T_u hits once
        "hitrate@1": 0.5,
        "hitrate@3": 0.5,
        "paper_ndcg@1": (1 + 0) / (1 + 1),  # mean DCG / mean IDCG: the 1/2 factors cancel
        "paper_ndcg@3": (1.5 + 0) / (idcg0 + idcg1),
        "paper_recall@1": (1 / 4 + 0) / 2,  # hits / |T_u| with duplicates counted
        "paper_recall@3": (2 / 4 + 0 / 2) / 2,
    }
    assert got.keys() == expected.keys()
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, abs=1e-15), name
    # the ratio of means (0.3987) differs from the mean of ratios (0.3520 = 1.5 / 2.1309 / 2)
    assert got["paper_ndcg@3"] == pytest.approx(0.398739, abs=1e-6)
    assert got["ndcg@3"] == pytest.approx(0.351959, abs=1e-6)


def test_padding_never_aliases_the_previous_users_last_item():
    # keys are user * (max item + 1) + item: user 1's -1 would equal user 0's item 9 without an explicit check
    recs = torch.tensor([[8], [-1]])
    offsets, items = _csr([[9], [9]])
    got = ranking_metrics(recs, offsets, items, ks=(1,))
    assert got["hitrate@1"] == 0.0


def test_unknown_targets_only_give_zero_not_nan():
    # only -1 targets: |T_u| = 2, nothing can be hit; NDCG is 0, not NaN
    recs = torch.tensor([[0, 1]])
    offsets, items = _csr([[-1, -1]])
    got = ranking_metrics(recs, offsets, items, ks=(2,))
    assert got == {
        "ndcg@2": 0.0,
        "recall@2": 0.0,
        "hitrate@2": 0.0,
        "paper_ndcg@2": 0.0,
        "paper_recall@2": 0.0,
    }


def _reference(recs: np.ndarray, rows: list[list[int]], ks: list[int]) -> dict[str, float]:
    """Straightforward per-user loops, written from docs/protocol.md independently of the vectorized code."""
    out = {}
    for k in ks:
        ndcg, recall, hit, dcg_sum, idcg_sum, paper_recall = 0.0, 0.0, 0.0, 0.0, 0.0, 0.0
        for user, targets in enumerate(rows):
            target_set = {t for t in targets if t >= 0}
            dcg, hits = 0.0, 0
            for rank in range(1, k + 1):
                if recs[user, rank - 1] in target_set:
                    dcg += 1 / math.log2(rank + 1)
                    hits += 1
            idcg = sum(1 / math.log2(rank + 1) for rank in range(1, min(k, len(targets)) + 1))
            ndcg += dcg / idcg
            recall += hits / min(k, len(targets))
            hit += hits > 0
            dcg_sum += dcg
            idcg_sum += idcg
            paper_recall += hits / len(targets)
        n = len(rows)
        out |= {f"ndcg@{k}": ndcg / n, f"recall@{k}": recall / n, f"hitrate@{k}": hit / n}
        out |= {f"paper_ndcg@{k}": dcg_sum / idcg_sum, f"paper_recall@{k}": paper_recall / n}
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_independent_reference_on_random_data(seed: int):
    rng = np.random.default_rng(seed)
    n_users, n_items, k_recs = 300, 40, int(rng.integers(5, 30))
    # distinct items per row (as a top-k is), with a random-length -1 tail on some rows
    recs = np.stack([rng.permutation(n_items)[:k_recs] for _ in range(n_users)])
    padded, kept = rng.random(n_users) < 0.2, rng.integers(0, k_recs, n_users)
    recs[padded[:, None] & (np.arange(k_recs)[None, :] >= kept[:, None])] = -1
    # 1..20 targets per user, drawn with replacement (duplicates) from items and -1
    rows = [rng.integers(-1, n_items, int(rng.integers(1, 21))).tolist() for _ in range(n_users)]
    ks = sorted({1, int(rng.integers(1, k_recs + 1)), k_recs})
    offsets, items = _csr(rows)
    got = ranking_metrics(torch.from_numpy(recs), offsets, items, ks, user_chunk=37)
    expected = _reference(recs, rows, ks)
    assert got.keys() == expected.keys()
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, abs=1e-12), name


def test_coverage_by_hand():
    recs = torch.tensor([[0, 1, 2], [1, 3, -1], [0, 1, 4]])
    # top-1 union {0, 1}; top-2 adds 3; top-3 adds 2 and 4 (the -1 pad is no item); 10 candidates
    expected = {"coverage@3": 0.5, "coverage@1": 0.2, "coverage@2": 0.3}
    assert coverage(recs, num_items=10, ks=(3, 1, 2)) == expected


def test_random_coverage_follows_the_occupancy_formula():
    # docs/protocol.md (Paper results): coverage@k = 1 - exp(-U k / N); U=2000, N=50,000, k=10 -> 1 - exp(-0.4) = 0.3297
    generator = torch.Generator().manual_seed(0)
    recs = torch.randint(0, 50_000, (2_000, 100), generator=generator)
    got = coverage(recs, num_items=50_000, ks=(10, 100))
    assert got["coverage@10"] == pytest.approx(1 - math.exp(-0.4), abs=0.01)
    assert got["coverage@100"] == pytest.approx(1 - math.exp(-4.0), abs=0.01)


@pytest.mark.parametrize(
    ("ks", "message"),
    [((4,), "k=4 is out of range: valid cutoffs are 1..K=3"), ((0,), "k=0"), ((), "ks is empty")],
)
def test_bad_cutoffs_are_rejected(ks, message):
    recs, offsets, items = _hand_case()
    with pytest.raises(ValueError, match=message):
        ranking_metrics(recs, offsets, items, ks)
    with pytest.raises(ValueError, match=message):
        coverage(recs, num_items=10, ks=ks)


def test_empty_targets_are_rejected():
    with pytest.raises(ValueError, match="no evaluated users"):
        ranking_metrics(torch.zeros((0, 3), dtype=torch.int64), *_csr([]), ks=(1,))


def test_user_without_targets_is_rejected():
    with pytest.raises(ValueError, match="row 1 has 0 targets"):
        ranking_metrics(torch.tensor([[1], [2]]), *_csr([[1], []]), ks=(1,))


def test_offsets_not_matching_recs_are_rejected():
    with pytest.raises(ValueError, match="length n_eval \\+ 1 = 3"):
        ranking_metrics(torch.tensor([[1], [2]]), *_csr([[1]]), ks=(1,))


def test_coverage_rejects_items_outside_the_candidates():
    with pytest.raises(ValueError, match=r"valid are -1 or 0\.\.4"):
        coverage(torch.tensor([[0, 5]]), num_items=5, ks=(2,))


@pytest.fixture
def own_registry(monkeypatch):
    """Registrations made in a test go into copies of the registries, so other tests see the built-in ones."""
    monkeypatch.setattr(metrics, "RANKING_METRICS", dict(metrics.RANKING_METRICS))
    monkeypatch.setattr(metrics, "CATALOGUE_METRICS", dict(metrics.CATALOGUE_METRICS))


def test_a_newly_registered_metric_is_computed(own_registry):
    @metrics.ranking_metric("mrr")
    def mrr(hits: metrics.Hits) -> torch.Tensor:
        """1 / rank of the first hit within k, 0 without a hit."""
        ranks = torch.arange(1, hits.relevant.shape[1] + 1, dtype=torch.float64)
        return hits.at_k((hits.relevant / ranks).cummax(1).values)

    recs, offsets, items = _hand_case()
    got = ranking_metrics(recs, offsets, items, ks=(1, 3))
    # user 0 hits at ranks 1 and 3 -> 1; user 1 never hits -> 0
    assert got["mrr@1"] == got["mrr@3"] == 0.5
    assert got["ndcg@3"] == pytest.approx((1.5 / (1 + 1 / LOG2_3 + 0.5)) / 2, abs=1e-15)  # built-ins unchanged
    assert "mrr" in metrics.registered_metrics()


def test_a_newly_registered_ratio_of_means_metric(own_registry):
    @metrics.ranking_metric("hits_per_target", ratio_of_means=True)
    def hits_per_target(hits: metrics.Hits) -> tuple[torch.Tensor, torch.Tensor]:
        return hits.hits, hits.n_targets.to(torch.float64).unsqueeze(1).expand_as(hits.hits)

    recs, offsets, items = _hand_case()
    got = ranking_metrics(recs, offsets, items, ks=(3,), names=["hits_per_target"])
    assert got == {"hits_per_target@3": (2 + 0) / (4 + 2)}  # only the metric asked for


def test_a_newly_registered_catalogue_metric(own_registry):
    @metrics.catalogue_metric("distinct_share")
    def distinct_share(recs: torch.Tensor, num_items: int, ks: list[int]) -> list[float]:
        return [len({int(i) for i in recs[:, :k].flatten() if i >= 0}) / num_items for k in ks]

    recs = torch.tensor([[0, 1, 2], [1, 3, -1]])
    got = metrics.catalogue_metrics(recs, num_items=8, ks=(1, 3))
    assert got == {"coverage@1": 0.25, "coverage@3": 0.5, "distinct_share@1": 0.25, "distinct_share@3": 0.5}


@pytest.mark.parametrize(("name", "message"), [("ndcg", "already registered"), ("NDCG@5", "lower-case")])
def test_bad_metric_names_are_rejected(own_registry, name, message):
    with pytest.raises(ValueError, match=message):
        metrics.ranking_metric(name)


def test_unknown_metric_names_are_rejected():
    recs, offsets, items = _hand_case()
    with pytest.raises(ValueError, match=r"unknown metric.*'mrr'.*valid choices: ndcg, recall"):
        ranking_metrics(recs, offsets, items, ks=(1,), names=["mrr"])
