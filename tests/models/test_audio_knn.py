"""AudioKNN on a hand case: the user vector is the time-decayed mean of their items' audio vectors, ranked by cosine."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from yambda_dl.data import schema as S
from yambda_dl.data.layout import DatasetLayout
from yambda_dl.data.split import Protocol, make_split
from yambda_dl.models.audio_knn import AudioKNN

from ..conftest import TEST_START, listen, write_flat

DIM = S.EMBEDDING_DIM
HOUR = 3600


def _vec(*values: float) -> list[float]:
    return [*values] + [0.0] * (DIM - len(values))


# items with hand vectors in 3 dims: 10 and 20 on axes; 30 between them; 40 opposite of 10; 50 without a vector;
# 70 and 80 have a vector and no event (cold candidates)
VECTORS = {
    10: _vec(1, 0, 0),
    20: _vec(0, 1, 0),
    30: _vec(0.6, 0.8, 0),
    40: _vec(-1, 0, 0),
    60: _vec(0, 0, 2),
    70: _vec(0.7, 0.7, 0),
    80: _vec(0, -1, 0),
}


@pytest.fixture
def layout(tmp_path):
    layout = DatasetLayout(tmp_path, "hand")
    t = 1_000_000
    rows = [
        listen(1, t, 10),  # user 1: 10 one hour before 20 and the vectorless 50 -> weights 0.9 and 1 (50 skipped)
        listen(1, t + HOUR, 20),
        listen(1, t + HOUR, 50),
        listen(2, t, 40),  # user 2: only 40
        listen(3, t, 50),  # user 3: only an item without a vector
        listen(4, t, 30),
        listen(4, t, 60),
    ]
    rows += [listen(u, TEST_START, 10) for u in (1, 2, 3, 4)]
    write_flat(layout, "listens", rows)
    ids = sorted(VECTORS)
    lists = pa.array([VECTORS[i] for i in ids], pa.list_(pa.float32()))
    pq.write_table(
        pa.table({"item_id": pa.array(ids, pa.uint32()), "embed": lists, "normalized_embed": lists}),
        tmp_path / S.EMBEDDINGS_FILE,
    )
    return layout


@pytest.fixture
def split(layout, tmp_path):
    return make_split(layout, Protocol(), cache_dir=tmp_path / "cache", progress=False)


def test_scores_are_the_cosine_to_the_decayed_mean(split):
    model = AudioKNN(hours=1.0).fit(split)
    idx = {int(raw): i for i, raw in enumerate(split.items)}
    # user 1: mean of 0.9 * e10 + 1 * e20 (50 has no vector) -> direction (0.9, 1)
    user = np.array([0.9, 1.0]) / np.linalg.norm([0.9, 1.0])
    expected = {10: user[0], 20: user[1], 30: 0.6 * user[0] + 0.8 * user[1], 40: -user[0], 50: 0.0, 60: 0.0}
    items, scores = model.recommend(torch.tensor([0]), k=len(split.items))
    got = {int(split.items[i]): float(s) for i, s in zip(items[0].tolist(), scores[0].tolist(), strict=True)}
    assert got == pytest.approx(expected, abs=1e-6)
    assert [int(split.items[i]) for i in items[0, :3]] == [30, 20, 10]  # 30 is nearest the mean's direction
    # user 2 listened to 40 only: 40 first, 10 last
    items, _ = model.recommend(torch.tensor([1]), k=len(split.items))
    assert int(split.items[items[0, 0]]) == 40 and int(split.items[items[0, -1]]) == 10
    assert set(idx) == {10, 20, 30, 40, 50, 60}


def test_decay_changes_the_mix_and_a_user_without_audio_gets_zeros(split):
    # hours -> 0 keeps only the last timestamp's events: user 1 is e20 alone
    last_only = AudioKNN(hours=0.0).fit(split)
    assert torch.allclose(last_only.user_vectors(torch.tensor([0]))[0, :2], torch.tensor([0.0, 1.0]))
    flat = AudioKNN(hours=1e9).fit(split)  # no decay: the plain mean of e10 and e20
    torch.testing.assert_close(flat.user_vectors(torch.tensor([0]))[0, :2], torch.tensor([0.5**0.5, 0.5**0.5]))
    assert not flat.user_vectors(torch.tensor([2])).any()  # user 3 heard only item 50, which has no vector
    # an item vector's length does not matter (cosine): 60 = 2 * e3 is unit-length in the model
    assert float(flat.item_vectors().norm(dim=1).max()) == pytest.approx(1.0)


def test_cold_candidates_are_ranked_by_the_same_cosine(layout, tmp_path):
    split = make_split(layout, Protocol(candidates="train_and_cold"), cache_dir=tmp_path / "cache", progress=False)
    assert split.cold_items.tolist() == [70, 80] and split.num_candidates == split.num_items + 2
    model = AudioKNN(hours=1.0).fit(split)
    assert model.item_vectors().shape[0] == split.num_candidates
    items, scores = model.recommend(torch.tensor([0]), k=split.num_candidates)
    user = np.array([0.9, 1.0]) / np.linalg.norm([0.9, 1.0])
    cosine_70 = (0.7 * user[0] + 0.7 * user[1]) / np.linalg.norm([0.7, 0.7])  # nearer the mean than 30
    assert int(items[0, 0]) == split.num_items and float(scores[0, 0]) == pytest.approx(cosine_70, abs=1e-6)
    assert int(items[0, -1]) == split.num_items + 1  # 80 points away from user 1's taste


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="hours must be >= 0"):
        AudioKNN(hours=-1)
    with pytest.raises(ValueError, match=r"'audio'.*embed, normalized_embed"):
        AudioKNN(column="audio")
    with pytest.raises(ValueError, match="base must be in"):
        AudioKNN(base=0)


def run_audio_knn(tmp_path, *overrides: str) -> dict:
    from yambda_dl.train import train

    from ..test_train import compose_cfg

    out = tmp_path / "run"
    base = ["model=audio_knn", "data=synthetic_tiny", f"data.root={tmp_path / 'tiny'}", "logger=none", "progress=false"]
    return train(compose_cfg([*base, *overrides, f"hydra.run.dir={out}"], out))


def test_yambda_train_runs_audio_knn_on_synthetic_data(tmp_path):
    """`yambda-train model=audio_knn data=synthetic_tiny` through the app, the vectors from the dataset root."""
    metrics = run_audio_knn(tmp_path)
    assert metrics["model"] == "audio_knn" and 0.0 < metrics["metrics"]["hitrate@100"] <= 1.0


def test_a_side_files_override_reaches_the_model(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nowhere\.parquet"):
        run_audio_knn(tmp_path, f"data.side_files.embeddings={tmp_path}/nowhere.parquet")
