"""The Recommender contract (docs/architecture.md): each model passes this suite on a tiny dataset with a known answer.

A new model joins by adding a factory and the raw item it must put first for user 0 to MODELS.
"""

from __future__ import annotations

from collections.abc import Callable

import lightning
import numpy as np
import pytest
import torch

from yambda_dl.data.split import Protocol, make_split
from yambda_dl.eval.recommend import recommend_all, seen_items
from yambda_dl.models.audio_knn import AudioKNN
from yambda_dl.models.base import Recommender
from yambda_dl.models.bpr import BPR
from yambda_dl.models.ials import IALS
from yambda_dl.models.itemknn import ItemKNN
from yambda_dl.models.popularity import DecayPop, MostPop, Random
from yambda_dl.models.sansa import SANSA
from yambda_dl.models.sequential.module import SequentialRecommender

from ..conftest import optional_model_param
from .sequential.zoo import tiny, zoo

# name -> (factory, raw item id expected first for every user, or None when the model is random)
MODELS: dict[str, tuple[Callable[[], Recommender], int | None]] = {
    "random": (lambda: Random(seed=7), None),
    "audio_knn": (lambda: AudioKNN(hours=1.0), None),
    "mostpop": (MostPop, 10),
    "decaypop": (lambda: DecayPop(hours=1.0), 50),
    # personalised: no one item is first for everyone, so None checks that the first items differ between users
    "itemknn": (lambda: ItemKNN(hours=1.0, item_tile=2), None),
    "itemknn_pruned": (lambda: ItemKNN(hours=1.0, neighbors=2), None),
    "sansa": (lambda: SANSA(item_tile=2), None),
    "ials": (lambda: IALS(factors=8, iterations=5), None),
    "ials_cholesky": (lambda: IALS(factors=8, iterations=5, solver="cholesky"), None),
    "bpr": (lambda: BPR(factors=8, iterations=20, lr=0.1, batch_size=64), 10),  # 10: everyone played it
}
# every sequential zoo model (configs/model/ YAMLs with the sequential target), small
MODELS.update({name: (lambda name=name: tiny(name, max_len=8, batch_size=4, epochs=10), None) for name in zoo()})


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    from yambda_dl.data.layout import DatasetLayout

    from ..conftest import TEST_START, listen, write_audio, write_flat

    root = tmp_path_factory.mktemp("contract")
    layout = DatasetLayout(root, "hand")
    write_audio(layout.embeddings_path, [10, 20, 30, 40, 50])
    early, late = 1_000_000, 25_911_000
    rows = [listen(u, early + 5 * i, item) for u in range(1, 9) for i, item in enumerate((10, 20, 30, 40)[: u % 4 + 1])]
    rows += [listen(u, early, 10) for u in range(1, 9)]  # item 10 is the most played
    rows += [listen(u, late, 50) for u in (1, 2)]  # item 50: the most recent
    rows += [listen(u, TEST_START, 10 * (u % 5 + 1)) for u in range(1, 9)]
    write_flat(layout, "listens", rows)
    return make_split(layout, Protocol(), cache_dir=root / "cache", progress=False)


@pytest.fixture(params=[optional_model_param(name) for name in sorted(MODELS)])
def name(request) -> str:
    return request.param


_FITTED: dict[str, Recommender] = {}


@pytest.fixture
def fitted(split, name) -> Recommender:
    """The model fitted once per test module (fits are the slow part); test_deterministic fits its own."""
    if name not in _FITTED:
        _FITTED[name] = MODELS[name][0]().fit(split)
    return _FITTED[name]


def test_satisfies_the_protocol(name):
    assert isinstance(MODELS[name][0](), Recommender)


def test_top_k_shape_order_and_range(split, fitted):
    k = 4
    items, scores = recommend_all(fitted, split.num_users, k, batch_users=3)
    assert items.shape == scores.shape == (split.num_users, k)
    assert items.dtype == torch.int64 and scores.dtype == torch.float32
    assert ((items >= 0) & (items < split.num_items)).all()
    assert all(len(set(row)) == k for row in items.tolist())  # no item twice in a list
    assert not torch.isnan(scores).any()
    assert (scores[:, :-1] >= scores[:, 1:]).all()  # best first


def test_known_answer(split, name, fitted):
    expected_first = MODELS[name][1]
    items, _ = recommend_all(fitted, split.num_users, 1)
    firsts = set(split.items[items[:, 0].numpy()].tolist())
    if expected_first is None:  # random or personalised: first items differ between users, not one for all
        assert len(firsts) > 1
    else:
        assert firsts == {expected_first}


def test_deterministic(split, name, fitted):
    """A refit gives bit-equal results at the same batch size; another batch size the same items, scores to 1e-5.

    Scores computed in other batch shapes may differ in the last bits (other BLAS blockings), never more.
    """
    first = recommend_all(fitted, split.num_users, 3)
    refit = MODELS[name][0]().fit(split)
    again = recommend_all(refit, split.num_users, 3)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    rebatched = recommend_all(refit, split.num_users, 3, batch_users=2)
    assert torch.equal(first[0], rebatched[0])
    torch.testing.assert_close(first[1], rebatched[1], rtol=1e-5, atol=1e-6)


def test_seen_items_are_masked_when_asked(split, fitted):
    seen = seen_items(split)
    items, _ = recommend_all(fitted, split.num_users, 1, exclude=seen)
    for user, row in enumerate(items.tolist()):
        user_seen = set(seen.indices[seen.indptr[user] : seen.indptr[user + 1]].tolist())
        assert row[0] not in user_seen


def test_raw_ids_at_the_edges(split, fitted):
    items, _ = recommend_all(fitted, split.num_users, 2)
    raw = split.items[items.numpy()]
    assert set(np.unique(raw)) <= {10, 20, 30, 40, 50}


def test_checkpoint_round_trip(split, fitted, tmp_path):
    """Save, load, same recommendations: every model that trains through Lightning (closed-form models have no
    checkpoint; refitting them is test_deterministic)."""
    if not isinstance(fitted, lightning.LightningModule):
        pytest.skip(f"{type(fitted).__name__} is closed-form: no checkpoint")
    path = tmp_path / "model.ckpt"
    fitted.trainer.save_checkpoint(path)
    if isinstance(fitted, SequentialRecommender):
        loaded = SequentialRecommender.from_checkpoint(path, split)
    else:  # iALS, BPR: resume from the final epoch, i.e. load without training further
        loaded = type(fitted)(**fitted.hparams, ckpt_path=str(path)).fit(split)
    users = torch.arange(split.num_users)
    expected, got = fitted.recommend(users, 3), loaded.recommend(users, 3)
    assert torch.equal(got[0], expected[0])
    torch.testing.assert_close(got[1], expected[1])
