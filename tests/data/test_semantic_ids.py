"""Semantic IDs on real Parquet files: codes reproduce from the seed, the cache is reused and rebuilt when the
embeddings change, collisions get a unique last level, and the diagnostics say what they should on known data."""

from __future__ import annotations

import json

import numpy as np
import pytest

from yambda_dl.data import schema as S
from yambda_dl.data.semantic_ids import CodebookConfig, semantic_ids

from ..conftest import write_audio

DIM = S.EMBEDDING_DIM


def clustered(n_clusters: int, per_cluster: int, seed: int = 0, noise: float = 0.01) -> np.ndarray:
    """Unit vectors in tight clusters around random centres: the first level's codes should be the clusters."""
    gen = np.random.default_rng(seed)
    centres = gen.normal(size=(n_clusters, DIM))
    points = np.repeat(centres, per_cluster, axis=0) + noise * gen.normal(size=(n_clusters * per_cluster, DIM))
    return (points / np.linalg.norm(points, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture
def audio(tmp_path):
    vectors = clustered(8, 25)
    ids = np.arange(1, len(vectors) + 1) * 7  # sparse raw ids, ascending
    path = tmp_path / S.EMBEDDINGS_FILE
    write_audio(path, ids, row_group_rows=64, vectors=vectors)
    return path, ids, vectors


CFG = CodebookConfig(levels=2, codebook_size=8, iterations=10, sample_per_centroid=64, diagnostic_queries=50)


def test_codes_reproduce_from_the_seed_and_differ_with_another(audio, tmp_path):
    path, ids, _ = audio
    first = semantic_ids(path, CFG, cache_dir=tmp_path / "a", progress=False)
    again = semantic_ids(path, CFG, cache_dir=tmp_path / "b", progress=False)  # built afresh elsewhere
    assert first.path != again.path
    np.testing.assert_array_equal(first.codes, again.codes)
    np.testing.assert_array_equal(first.centroids, again.centroids)
    assert first.item_ids.tolist() == ids.tolist() and first.codes.shape == (len(ids), 3)
    other = semantic_ids(path, CodebookConfig(**{**CFG.__dict__, "seed": 1}), cache_dir=tmp_path / "a", progress=False)
    assert other.path != first.path and not np.array_equal(other.centroids, first.centroids)


def test_cache_is_reused_and_rebuilt_when_the_embeddings_change(audio, tmp_path):
    path, ids, _ = audio
    first = semantic_ids(path, CFG, progress=False)
    assert first.path.parent == path.parent / ".cache" / "semantic_ids"
    again = semantic_ids(path, CFG, progress=False)
    assert again.path == first.path and again.meta["created"] == first.meta["created"]
    write_audio(path, ids, row_group_rows=64, vectors=clustered(8, 25, seed=5))
    changed = semantic_ids(path, CFG, progress=False)
    assert changed.path != first.path and first.path.is_dir()


def test_codes_are_unique_and_the_first_level_finds_the_clusters(audio, tmp_path):
    path, ids, _ = audio
    sid = semantic_ids(path, CFG, cache_dir=tmp_path, progress=False)
    assert len({tuple(row) for row in sid.codes.tolist()}) == len(ids)  # the collision level makes every code unique
    clusters = np.repeat(np.arange(8), 25)
    first = sid.codes[:, 0]
    # one code per cluster, one cluster per code: k-means on 8 tight clusters with 8 centroids
    assert all(len(np.unique(first[clusters == c])) == 1 for c in range(8)) and len(np.unique(first)) == 8
    d = sid.meta["diagnostics"]
    assert d["level_use"][0] == 1.0 and d["reconstruction_cosine"] > 0.99
    assert 0.0 <= d["collision_rate"] <= 1.0 and 0.0 <= d["neighbour_preservation"] <= 1.0
    stored = json.loads((sid.path / "meta.json").read_text())
    assert stored["diagnostics"] == d and stored["collision_level_size"] == sid.collision_levels
    codes, present = sid.for_items(np.array([7, 8, 14]))
    assert present.tolist() == [True, False, True] and codes[1].tolist() == [-1, -1, -1]


def test_collision_rate_and_level_on_duplicated_vectors(tmp_path):
    # 20 items, each vector given to 3 items: with one level of 32 codes, every tuple is shared by 3
    base = clustered(20, 1, seed=2)
    vectors = np.repeat(base, 3, axis=0)
    path = tmp_path / S.EMBEDDINGS_FILE
    write_audio(path, np.arange(1, 61), vectors=vectors)
    cfg = CodebookConfig(levels=1, codebook_size=32, iterations=5, sample_per_centroid=4, diagnostic_queries=10)
    sid = semantic_ids(path, cfg, cache_dir=tmp_path, progress=False)
    assert sid.meta["diagnostics"]["collision_rate"] == 1.0
    assert sorted(sid.codes[:, 1].tolist()) == sorted([0, 1, 2] * 20) and sid.collision_levels == 3


def test_printed_line_and_bad_settings(audio, tmp_path, capsys):
    path, _, _ = audio
    semantic_ids(path, CFG, cache_dir=tmp_path, progress=True)
    line = capsys.readouterr().out
    assert "collision rate" in line and "reconstruction cosine" in line and "neighbour preservation@10" in line
    with pytest.raises(ValueError, match="codebook_size=1 must be >= 2"):
        CodebookConfig(codebook_size=1)
    with pytest.raises(ValueError, match="levels=0 must be an integer >= 1"):
        CodebookConfig(levels=0)
    with pytest.raises(ValueError, match=r"column='audio'.*embed, normalized_embed"):
        CodebookConfig(column="audio")
