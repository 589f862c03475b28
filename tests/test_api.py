"""The notebook API: load a split, build and fit a model, recommend in raw ids, evaluate, from `import yambda_dl`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

import yambda_dl
from yambda_dl import build_model, evaluate, load_split, recommend
from yambda_dl.eval import evaluator
from yambda_dl.eval.recommend import recommend_all


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    root = tmp_path_factory.mktemp("data") / "synthetic_tiny"
    return load_split(root, "tiny", synthetic_preset="tiny", progress=False)  # generated, then split


def test_import_loads_neither_torch_nor_lightning():
    code = "import sys, yambda_dl; heavy = {'torch', 'lightning', 'hydra', 'polars'} & set(sys.modules); print(heavy)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "set()"


def test_the_whole_path_gives_the_evaluators_numbers(split):
    model = build_model("ials", factors=8, iterations=2, seed=3).fit(split)
    recs = recommend(model, split, k=50)
    assert recs.schema == pl.Schema({"uid": pl.UInt32, "item_ids": pl.List(pl.UInt32), "scores": pl.List(pl.Float32)})
    assert recs.height == split.num_users and recs["uid"].to_list() == split.users.tolist()
    assert recs["item_ids"].list.len().to_list() == [50] * split.num_users
    assert set(recs["item_ids"].explode().to_list()) <= set(split.items.tolist())  # train items only

    got = evaluate(recs, split, ks=(10, 50))
    items, _ = recommend_all(model, split.num_users, 50)  # the path yambda-train takes, in dense ids
    assert got == evaluator.evaluate(items, split.targets, split.num_items, (10, 50))
    assert got["num_ranked_users"] == split.num_users and got["num_evaluated_users"] == split.targets.num_users


def test_settings_reach_the_model_and_the_seed_is_a_setting(split):
    model = build_model("ials", factors=8, iterations=2, seed=3)
    assert (model.factors, model.max_epochs) == (8, 2)
    again = build_model("ials", factors=8, iterations=2, seed=3).fit(split)
    model.fit(split)
    assert recommend(model, split, k=10).equals(recommend(again, split, k=10))  # same seed, same lists


def test_a_parquet_path_evaluates_like_its_frame(split, tmp_path):
    recs = recommend(build_model("mostpop").fit(split), split, k=20)
    recs.write_parquet(tmp_path / "recs.parquet")
    assert evaluate(tmp_path / "recs.parquet", split, ks=(10, 20)) == evaluate(recs, split, ks=(10, 20))


def test_seen_items_can_be_filtered(split):
    model = build_model("mostpop").fit(split)
    unfiltered, filtered = recommend(model, split, k=10), recommend(model, split, k=10, filter_seen=True)
    assert not unfiltered.equals(filtered)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda split: build_model("als"), "unknown model 'als'; valid choices: audio_knn, bert4rec, bpr, decaypop"),
        (
            lambda split: build_model("ials", factorz=8),
            r"unknown setting.*'factorz'.*'ials'; valid: fac",
        ),
        (lambda split: recommend(None, split, k=0), r"k=0: valid values are 1\.\."),
        (lambda split: load_split(Path("/nonexistent"), "tiny"), "missing .*yambda-data synth --preset tiny"),
        (lambda split: load_split(Path("/nonexistent"), "tiny", setup="likes"), "unknown split setup 'likes'"),
    ],
)
def test_bad_input_is_a_clear_error(split, call, message):
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        call(split)


def test_the_api_is_listed_on_the_package():
    assert {"load_split", "build_model", "recommend", "evaluate"} <= set(dir(yambda_dl))
    with pytest.raises(AttributeError, match="no attribute 'fit_everything'"):
        yambda_dl.fit_everything  # noqa: B018
