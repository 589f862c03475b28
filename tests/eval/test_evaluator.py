"""evaluate() end to end on a tiny hand-made case, the Markdown table, and input errors."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from yambda_dl.eval import metrics
from yambda_dl.eval.evaluator import evaluate, format_metrics_table, format_slices_table


def _targets(user_idx: list[int], rows: list[list[int]]) -> SimpleNamespace:
    """The split's targets contract: user_idx, ragged-list offsets and item_idx, as plain int64 tensors."""
    offsets = [0]
    for row in rows:
        offsets.append(offsets[-1] + len(row))
    return SimpleNamespace(
        user_idx=torch.tensor(user_idx, dtype=torch.int64),
        offsets=torch.tensor(offsets, dtype=torch.int64),
        item_idx=torch.tensor([i for row in rows for i in row], dtype=torch.int64),
    )


# 4 ranked users, 3 recs each, 8 candidate items; users 1 and 3 are evaluated
RECS = torch.tensor([[0, 1, 2], [5, 2, 7], [6, 1, 0], [3, 4, -1]])
TARGETS = _targets([1, 3], [[5, 5, 5, 7], [6, -1]])


def test_evaluate_tiny_case_by_hand():
    got = evaluate(RECS, TARGETS, num_items=8, ks=(1, 3))
    # user 1: rel 1, 0, 1 with |T|=4; user 3: no hit with |T|=2 (row 2 holds item 6: user 2 is not evaluated)
    idcg1, idcg3 = 1 + 1 / math.log2(3) + 0.5, 1 + 1 / math.log2(3)
    expected = {
        "ndcg@1": 0.5,
        "ndcg@3": 1.5 / idcg1 / 2,
        "recall@1": 0.5,
        "recall@3": (2 / 3) / 2,
        "hitrate@1": 0.5,
        "hitrate@3": 0.5,
        "paper_ndcg@1": 0.5,
        "paper_ndcg@3": 1.5 / (idcg1 + idcg3),
        "paper_recall@1": (1 / 4) / 2,
        "paper_recall@3": (2 / 4) / 2,
        # all 4 ranked rows: top-1 {0, 5, 6, 3} = 4/8; top-3 adds 1, 2, 7, 4 = 8/8
        "coverage@1": 0.5,
        "coverage@3": 1.0,
        "num_evaluated_users": 2,
        "num_ranked_users": 4,
    }
    assert got.keys() == expected.keys()
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, abs=1e-15), name


def test_format_metrics_table():
    table = format_metrics_table({"ndcg@10": 0.12345, "coverage@10": 0.5, "ndcg@100": 1.0}, ks=(10, 100))
    assert table.splitlines() == [
        "| metric | @10 | @100 |",
        "|---|---|---|",
        "| ndcg | 0.1235 | 1.0000 |",
        "| recall | - | - |",
        "| hitrate | - | - |",
        "| paper_ndcg | - | - |",
        "| paper_recall | - | - |",
        "| coverage | 0.5000 | - |",
    ]


def test_without_catalogue_metrics_the_ranking_metrics_are_the_same():
    full = evaluate(RECS, TARGETS, num_items=8, ks=(1, 3))
    ranking = evaluate(RECS, TARGETS, num_items=8, ks=(1, 3), catalogue=False)
    assert ranking == {name: value for name, value in full.items() if not name.startswith("coverage@")}


def test_format_slices_table():
    slices = {
        "organic": {"ndcg@10": 0.12345, "recall@10": 0.5, "num_evaluated_users": 3, "num_targets": 7},
        "cold": None,
    }
    assert format_slices_table(slices, ks=(10, 100)).splitlines() == [
        "| slice | users | targets | ndcg@10 | ndcg@100 | recall@10 | recall@100 |",
        "|---|---|---|---|---|---|---|",
        "| organic | 3 | 7 | 0.1235 | - | 0.5000 | - |",
        "| cold | 0 | 0 | - | - | - | - |",
    ]


@pytest.mark.parametrize(
    ("targets", "ks", "message"),
    [
        (_targets([1, 4], [[5], [6]]), (1,), "valid rows of recs are 0..3"),
        (_targets([3, 1], [[5], [6]]), (1,), "strictly ascending"),
        (TARGETS, (4,), "k=4 is out of range: valid cutoffs are 1..K=3"),
        (_targets([], []), (1,), "no evaluated users"),
    ],
)
def test_bad_inputs_are_rejected(targets, ks, message):
    with pytest.raises(ValueError, match=message):
        evaluate(RECS, targets, num_items=8, ks=ks)


def test_recommendations_outside_the_candidates_are_rejected():
    with pytest.raises(ValueError, match=r"valid are -1 or 0\.\.6"):
        evaluate(RECS, TARGETS, num_items=7, ks=(1,))


def test_evaluate_computes_a_newly_registered_metric(monkeypatch):
    monkeypatch.setattr(metrics, "RANKING_METRICS", dict(metrics.RANKING_METRICS))  # registered for this test only

    @metrics.ranking_metric("first_hit")
    def first_hit(hits: metrics.Hits) -> torch.Tensor:
        """Whether rank 1 is a hit, whatever k."""
        return hits.relevant[:, :1].to(torch.float64).expand(-1, len(hits.ks))

    got = evaluate(RECS, TARGETS, num_items=8, ks=(1, 3))
    assert got["first_hit@1"] == got["first_hit@3"] == 0.5  # user 1's rank 1 (item 5) hits, user 3's does not
