"""yambda-eval: anyone's raw-id recommendations scored with our protocol, by hand on a tiny split, against our own
evaluator on implicit's ALS lists made from an exported split, and its one-line errors."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp
import torch
from threadpoolctl import threadpool_limits

from yambda_dl.data.layout import DatasetLayout
from yambda_dl.data.split import Protocol, Split, make_split
from yambda_dl.eval.evaluator import evaluate
from yambda_dl.eval.external import (
    RecommendationsError,
    evaluate_recommendations,
    main,
    recommendations_frame,
    run_eval,
    score_recommendations,
    to_dense,
)
from yambda_dl.eval.slices import subset_targets
from yambda_dl.report import collect, markdown_table
from yambda_dl.utils.rundir import read_run

# popularity_layout (conftest): ranked users 1..6, train items 10..50; user u's one target is item 10u, user 6's is
# item 99, which is not a train item
HAND = pl.DataFrame(
    {
        "uid": [1, 2, 3, 4, 6],  # user 5 has no row
        "item_ids": [[10, 20], [10, 20, 999], [30], [], [99, 10]],  # 999 and 99 are not train items
    },
    schema={"uid": pl.UInt32, "item_ids": pl.List(pl.Int64)},
)
LOG2_3 = math.log2(3)
# by hand, every |T_u| = 1 so IDCG = 1: hits at k=1 for users 1 (10) and 3 (30); at k=3 also user 2 (20 at rank 2);
# user 6's 99 is its target but not a candidate: a miss in place, so its 10 stays at rank 2
HAND_METRICS = {
    "ndcg@1": 2 / 6,
    "ndcg@3": (2 + 1 / LOG2_3) / 6,
    "recall@1": 2 / 6,
    "recall@3": 3 / 6,
    "hitrate@1": 2 / 6,
    "hitrate@3": 3 / 6,
    "paper_ndcg@1": 2 / 6,
    "paper_ndcg@3": (2 + 1 / LOG2_3) / 6,
    "paper_recall@1": 2 / 6,
    "paper_recall@3": 3 / 6,
    "coverage@1": 2 / 5,  # {10, 30} of 5 train items (user 6's rank 1 is no candidate)
    "coverage@3": 3 / 5,  # {10, 20, 30}
    "num_evaluated_users": 6,
    "num_ranked_users": 6,
}


@pytest.fixture
def hand_split(popularity_layout: DatasetLayout, tmp_path: Path) -> Split:
    return make_split(popularity_layout, Protocol(), cache_dir=tmp_path / "splits", progress=False)


def assert_metrics(got: dict, expected: dict) -> None:
    assert got.keys() == expected.keys()
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, abs=1e-15), name


def test_hand_computed_case(hand_split, caplog):
    with caplog.at_level(logging.INFO, logger="yambda_dl.eval.external"):
        metrics, report = evaluate_recommendations(HAND, hand_split, ks=(3, 1))
    assert_metrics(metrics, HAND_METRICS)
    assert (report.rows, report.missing_users, report.missing_evaluated_users) == (5, 1, 1)
    assert (report.short_lists, report.non_candidate_items, report.truncated_lists) == (4, 2, 0)
    messages = caplog.text
    assert "1 of 6 ranked users have no row (1 of them evaluated)" in messages
    assert "2 recommended item(s) in the top 3 are not candidates (protocol.candidates=train)" in messages
    assert "4 list(s) are shorter than k=3" in messages


def test_only_the_first_k_items_count(hand_split):
    recs = pl.DataFrame({"uid": [1, 2], "item_ids": [[10, 20, 40, 50, 40], [30]]})
    dense, report = to_dense(recs, hand_split, k=3)
    assert dense[hand_split.user_index([1])[0]].tolist() == [0, 1, 3]  # items 10, 20, 40; the repeat after k is cut
    assert report.truncated_lists == 1 and report.short_lists == 1 and report.missing_users == 4


def test_run_eval_writes_a_run_folder_that_yambda_report_lists(popularity_layout, tmp_path):
    recs = tmp_path / "als_top3.parquet"
    HAND.write_parquet(recs)
    out = tmp_path / "eval"
    ks = (1, 3, 10, 100)
    result = run_eval(recs, out, root=popularity_layout.root, size="hand", ks=ks, cache_dir=tmp_path / "splits")
    run = read_run(out)  # run.json, config.yaml, manifest.json and metrics.json of one run id
    assert run["run"]["status"] == "finished" and run["metrics"]["run_id"] == result["run_id"]
    assert_metrics({name: run["metrics"]["metrics"][name] for name in HAND_METRICS}, HAND_METRICS)
    assert (run["metrics"]["model"], run["metrics"]["data"], run["metrics"]["size"]) == ("als_top3", "yambda", "hand")
    assert run["metrics"]["recommendations"]["missing_users"] == 1
    assert run["manifest"]["recommendations"]["sha256"] and run["config"]["protocol"] == {
        "setup": "listen_plus",
        "mode": "final",
        "candidates": "train",
    }
    # the lists hold 3 items at most: @10 and @100 equal @3
    assert "| als_top3 | 0.4385 | 0.4385 | 0.5000 | 0.5000 | 0.6000 | 0.6000 |" in markdown_table(collect([out]))
    # the target slices, by hand: every play is organic; user 6's target 99 is no train item (cold), users 1..5's
    # are warm, with hits at rank 1 for users 1 and 3 and at rank 2 for user 2
    written = run["metrics"]
    assert written["recommended"] is None
    assert_metrics({name: written["organic"][name] for name in HAND_METRICS}, HAND_METRICS)
    assert (written["warm"]["num_evaluated_users"], written["warm"]["num_targets"]) == (5, 5)
    assert written["warm"]["recall@1"] == pytest.approx(2 / 5) and written["warm"]["recall@3"] == pytest.approx(3 / 5)
    assert written["cold"]["num_targets"] == 1 and written["cold"]["recall@100"] == 0
    assert written["cold"]["coverage@3"] == HAND_METRICS["coverage@3"]  # the lists', whatever the targets


def test_the_command(popularity_layout, tmp_path, capsys):
    recs = tmp_path / "recs.parquet"
    HAND.write_parquet(recs)
    argv = [str(recs), "--root", str(popularity_layout.root), "--size", "hand", "--out", str(tmp_path / "o")]
    assert main([*argv, "--ks", "1", "3", "--model-name", "mine", "--cache-dir", str(tmp_path / "splits")]) == 0
    out = capsys.readouterr().out
    assert "mine on yambda (listen_plus, final)" in out and "| ndcg | 0.3333 | 0.4385 |" in out
    assert "target slices:" in out and "| recommended | 0 | 0 | - |" in out
    assert "| warm | 5 | 5 | 0.4000 | 0.5262 | 0.4000 | 0.6000 |" in out  # ndcg@3 = (2 + 1 / log2(3)) / 5
    assert json.loads((tmp_path / "o" / "metrics.json").read_text())["metrics"]["recall@3"] == 0.5


def test_cold_candidates_are_scored_with_train_and_cold(popularity_layout, tmp_path, capsys):
    """--candidates train_and_cold: item 99 (an audio vector, no train event) is a candidate after the 5 train items,
    so user 6's 99 at rank 1 hits its target; 999 stays a miss in place. The paper's candidates: test_the_command."""
    recs = tmp_path / "recs.parquet"
    HAND.write_parquet(recs)
    argv = [str(recs), "--root", str(popularity_layout.root), "--size", "hand", "--out", str(tmp_path / "o")]
    argv += ["--ks", "1", "3", "--cache-dir", str(tmp_path / "splits"), "--candidates", "train_and_cold"]
    assert main(argv) == 0
    written = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert written["metrics"]["recall@1"] == pytest.approx(3 / 6) and written["metrics"]["ndcg@3"] == pytest.approx(
        (3 + 1 / LOG2_3) / 6
    )
    assert written["metrics"]["coverage@1"] == pytest.approx(3 / 6)  # {10, 30, 99} of 6 candidates
    assert written["cold"]["recall@1"] == 1.0 and written["recommendations"]["non_candidate_items"] == 1
    assert read_run(tmp_path / "o")["config"]["protocol"]["candidates"] == "train_and_cold"
    with pytest.raises(SystemExit):  # argparse: the valid choices, before any work
        main([*argv[:-1], "all", "--out", str(tmp_path / "p")])
    assert "invalid choice: 'all' (choose from 'train', 'train_and_cold')" in capsys.readouterr().err


def bad(**columns) -> pl.DataFrame:
    return pl.DataFrame(columns)


@pytest.mark.parametrize(
    ("recs", "message"),
    [
        (bad(user=[1], item_ids=[[10]]), r"missing column\(s\) \['uid'\]; found \['user', 'item_ids'\]"),
        (bad(uid=["a"], item_ids=[[10]]), "column uid is String; it must hold integer raw user ids"),
        (bad(uid=[1], item_ids=[[1.5]]), "column item_ids is List\\(Float64\\); it must be a list of integer"),
        (bad(uid=[1, 2, 1, 2], item_ids=[[10]] * 4), r"2 uid\(s\) have more than one row \(1, 2\)"),
        (bad(uid=[1, None], item_ids=[[10], [20]]), r"1 null\(s\) in uid"),
        (bad(uid=[1, 2], item_ids=[[10], None]), r"1 null\(s\) in item_ids;"),
        (bad(uid=[1, 2], item_ids=[[10], [20, None]]), r"1 null\(s\) in item_ids' elements"),
        (bad(uid=[1], item_ids=[[10, 20]], scores=[[0.5]]), r"1 row\(s\) have scores of another length"),
        (bad(uid=[1, 7, 8], item_ids=[[10]] * 3), r"2 uid\(s\) are not ranked users of the split \(7, 8\)"),
        (bad(uid=[1, 2], item_ids=[[10, 20], [20, 30, 20]]), "uid 2 lists item 20 twice"),
        (bad(uid=pl.Series([], dtype=pl.Int64), item_ids=pl.Series([], dtype=pl.List(pl.Int64))), "no rows"),
    ],
)
def test_bad_tables_are_refused_with_one_line(hand_split, recs, message):
    with pytest.raises(RecommendationsError, match=message) as error:
        evaluate_recommendations(recs, hand_split, ks=(3,))
    assert "\n" not in str(error.value)


def test_a_file_error_leaves_the_output_folder_alone(popularity_layout, tmp_path, capsys):
    recs = tmp_path / "recs.parquet"
    bad(uid=[1], items=[[10]]).write_parquet(recs)
    out = tmp_path / "previous"
    out.mkdir()
    (out / "keep.txt").write_text("a previous run's file")
    argv = [str(recs), "--root", str(popularity_layout.root), "--size", "hand", "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"yambda-eval: error: {recs}: missing column(s) ['item_ids']") and err.count("\n") == 1
    assert [p.name for p in out.iterdir()] == ["keep.txt"]  # checked before the folder was claimed


def test_frame_round_trip(hand_split):
    items = torch.tensor([[0, 1, -1]] * hand_split.num_users)
    scores = torch.tensor([[2.0, 1.0, 0.0]] * hand_split.num_users)
    frame = recommendations_frame(hand_split, items, scores)
    assert frame.schema == pl.Schema({"uid": pl.UInt32, "item_ids": pl.List(pl.UInt32), "scores": pl.List(pl.Float32)})
    assert frame.row(0) == (1, [10, 20], [2.0, 1.0])  # the -1 padding dropped
    dense, _ = to_dense(frame, hand_split, k=3)
    assert torch.equal(dense, items)


# --- implicit's ALS on an exported split: the metrics our evaluator gives for the same lists --------------------


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    from yambda_dl.data.synthetic import generate

    root = tmp_path_factory.mktemp("synthetic_tiny")
    generate("tiny", root, seed=0, progress=False)
    return root


def implicit_top100(export: Path, out: Path) -> None:
    """What a researcher does with implicit on the exported files: own id maps, fit, top 100 in raw ids."""
    implicit_als = pytest.importorskip("implicit.cpu.als")
    train = pl.read_parquet(export / "train.parquet", columns=["uid", "item_id"]).unique()
    uids, items = np.unique(train["uid"].to_numpy()), np.unique(train["item_id"].to_numpy())
    rows, cols = np.searchsorted(uids, train["uid"].to_numpy()), np.searchsorted(items, train["item_id"].to_numpy())
    matrix = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(len(uids), len(items)))
    with threadpool_limits(1, "blas"):  # implicit's advice: its own threads, not BLAS's
        model = implicit_als.AlternatingLeastSquares(factors=16, iterations=5, random_state=0, num_threads=1)
        model.fit(matrix, show_progress=False)
    ids, scores = model.recommend(np.arange(len(uids)), matrix, N=100, filter_already_liked_items=False)
    pl.DataFrame(
        {"uid": uids, "item_ids": [items[row].tolist() for row in ids], "scores": scores.tolist()}
    ).write_parquet(out)


def test_yambda_eval_on_implicits_recommendations_equals_our_evaluator(tiny_data, tmp_path, capsys):
    layout = DatasetLayout(tiny_data, "tiny")
    split = make_split(layout, Protocol(), cache_dir=tmp_path / "splits", progress=False)
    split.export(tmp_path / "export")
    recs = tmp_path / "implicit_als.parquet"
    implicit_top100(tmp_path / "export", recs)

    argv = [str(recs), "--root", str(tiny_data), "--size", "tiny", "--out", str(tmp_path / "run")]
    assert main([*argv, "--cache-dir", str(tmp_path / "splits")]) == 0
    got = read_run(tmp_path / "run")["metrics"]["metrics"]

    # our evaluator on the same lists, mapped to dense indices the plain way
    table = pl.read_parquet(recs)
    dense = torch.full((split.num_users, 100), -1, dtype=torch.int64)
    for uid, item_ids in table.select("uid", "item_ids").iter_rows():
        dense[int(split.user_index([uid])[0])] = torch.from_numpy(split.item_index(item_ids))
    expected = evaluate(dense, split.targets, split.num_items, (10, 50, 100))
    assert got == expected  # bit for bit: the same lists through the same evaluator
    assert got["num_ranked_users"] == split.num_users and 0 < got["ndcg@100"] < 1


def test_yambda_eval_slices_equal_our_evaluator_on_each_slices_targets(tiny_data, tmp_path):
    """Organic and recommended targets both present (synthetic data): metrics.json's slices are the evaluator's
    metrics on the split's targets cut by is_organic, for the same lists."""
    split = make_split(DatasetLayout(tiny_data, "tiny"), Protocol(), cache_dir=tmp_path / "splits", progress=False)
    rng = np.random.default_rng(0)
    dense = torch.from_numpy(np.argsort(rng.random((split.num_users, split.num_items)), axis=1)[:, :20])
    recs = tmp_path / "shuffled.parquet"
    recommendations_frame(split, dense).write_parquet(recs)
    ks = (5, 20)
    written = run_eval(recs, tmp_path / "run", root=tiny_data, size="tiny", ks=ks, cache_dir=tmp_path / "splits")
    assert read_run(tmp_path / "run")["metrics"]["organic"] == written["organic"]  # what metrics.json holds

    organic = np.asarray(split.targets.is_organic, dtype=bool)
    assert organic.any() and not organic.all()
    for name, mask in (("organic", organic), ("recommended", ~organic)):
        targets = subset_targets(split.targets, mask)
        expected = evaluate(dense, targets, split.num_items, ks)
        got = written[name]
        assert got == expected | {"num_targets": int(mask.sum())}, name  # bit for bit: the same evaluator
        assert 0 < got["recall@20"] < 1 and got["num_evaluated_users"] == len(targets.user_idx)
    assert written["recommended"]["ndcg@20"] != written["organic"]["ndcg@20"]  # two different target sets
    _, slices, _ = score_recommendations(recs, split, ks)
    assert slices == {name: written[name] for name in ("organic", "recommended", "warm", "cold")}
