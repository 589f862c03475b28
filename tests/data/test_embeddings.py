"""read_embeddings and read_item_mapping on small Parquet files written here, with hand-computed answers."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from yambda_dl.data import schema as S
from yambda_dl.data.embeddings import read_embeddings, read_item_mapping

from ..conftest import audio_vectors, write_audio

DIM = S.EMBEDDING_DIM
FLOAT32 = pa.float32()
FILE_IDS = [2, 5, 9, 14, 20, 31]  # sorted, as in the real file


def vector(item_id: int) -> list[float]:
    """A recognisable vector: item_id in the first slot, then a ramp."""
    return [float(item_id)] + [i / 1000 for i in range(1, DIM)]


def write_embeddings(path, value_type: pa.DataType = FLOAT32, fixed=False, row_group_rows=2, ids=FILE_IDS) -> None:
    list_type = pa.list_(value_type, DIM) if fixed else pa.list_(value_type)
    vectors = pa.array([vector(i) for i in ids], list_type)
    table = pa.table({"item_id": pa.array(ids, pa.uint32()), "embed": vectors, "normalized_embed": vectors})
    pq.write_table(table, path, row_group_size=row_group_rows)


def test_vectors_are_aligned_to_wanted_ids_in_any_order(tmp_path):
    write_embeddings(tmp_path / "e.parquet")
    wanted = np.array([31, 7, 2, 14, 100, 2])  # 7 and 100 are missing; 2 is asked twice
    vectors, present = read_embeddings(tmp_path / "e.parquet", wanted)

    assert vectors.shape == (6, DIM) and vectors.dtype == np.float32
    assert present.tolist() == [True, False, True, True, False, True]
    assert vectors[:, 0].tolist() == [31.0, 0.0, 2.0, 14.0, 0.0, 2.0]
    assert not vectors[1].any() and not vectors[4].any()
    assert vectors[0, 5] == np.float32(0.005)


@pytest.mark.parametrize("row_group_rows", [1, 4, 100])
def test_row_groups_without_wanted_items_are_skipped_correctly(tmp_path, row_group_rows):
    write_embeddings(tmp_path / "e.parquet", row_group_rows=row_group_rows)
    vectors, present = read_embeddings(tmp_path / "e.parquet", np.array([20, 5], dtype=np.uint32))
    assert present.all()
    assert vectors[:, 0].tolist() == [20.0, 5.0]


@pytest.mark.parametrize("fixed", [False, True])
def test_float64_and_fixed_size_lists_are_read_as_float32(tmp_path, fixed):
    write_embeddings(tmp_path / "e.parquet", value_type=pa.float64(), fixed=fixed)
    vectors, present = read_embeddings(tmp_path / "e.parquet", np.array([9]), column="embed")
    assert vectors.dtype == np.float32 and present.tolist() == [True]
    assert vectors[0, 0] == 9.0 and vectors[0, 1] == np.float32(0.001)


def test_a_wanted_vector_of_the_wrong_dimension_names_file_item_and_length(tmp_path):
    vectors = pa.array([vector(2), vector(5)[:64]], pa.list_(pa.float64()))
    pq.write_table(
        pa.table({"item_id": pa.array([2, 5], pa.uint32()), "embed": vectors, "normalized_embed": vectors}),
        tmp_path / "e.parquet",
    )
    with pytest.raises(S.SchemaError, match=r"e\.parquet.*'normalized_embed'.*length 64 for item_id 5"):
        read_embeddings(tmp_path / "e.parquet", np.array([5]))


def test_fixed_size_lists_of_another_dimension_are_refused(tmp_path):
    vectors = pa.array([[1.0] * 64], pa.list_(pa.float32(), 64))
    pq.write_table(
        pa.table({"item_id": pa.array([2], pa.uint32()), "embed": vectors, "normalized_embed": vectors}),
        tmp_path / "e.parquet",
    )
    with pytest.raises(S.SchemaError, match=r"e\.parquet.*'normalized_embed'.*64 dimensions"):
        read_embeddings(tmp_path / "e.parquet", np.array([2]))


def test_missing_and_mistyped_columns_are_refused(tmp_path):
    pq.write_table(pa.table({"item_id": pa.array([2], pa.uint32())}), tmp_path / "e.parquet")
    with pytest.raises(S.SchemaError, match=r"e\.parquet: missing column 'normalized_embed'"):
        read_embeddings(tmp_path / "e.parquet", np.array([2]))
    strings = pa.array([["a"] * DIM])
    pq.write_table(
        pa.table({"item_id": pa.array([2]), "embed": strings, "normalized_embed": strings}),
        tmp_path / "s.parquet",
    )
    with pytest.raises(S.SchemaError, match=r"s\.parquet: column 'embed' has type list<element: string>"):
        read_embeddings(tmp_path / "s.parquet", np.array([2]), column="embed")


def test_bad_arguments_are_refused_with_the_choices(tmp_path):
    write_embeddings(tmp_path / "e.parquet")
    with pytest.raises(ValueError, match=r"'audio'.*embed, normalized_embed"):
        read_embeddings(tmp_path / "e.parquet", np.array([2]), column="audio")
    with pytest.raises(ValueError, match="1-d integer array"):
        read_embeddings(tmp_path / "e.parquet", np.array([2.0]))
    with pytest.raises(FileNotFoundError, match=r"missing file .*absent\.parquet.*--embeddings"):
        read_embeddings(tmp_path / "absent.parquet", np.array([2]))


def test_artist_mapping_keeps_the_first_artist_across_batches(tmp_path):
    # item 7 has two artists (10 first, then 11, in another batch); item 8 has one; item 9 none
    table = pa.table(
        {"artist_id": pa.array([10, 12, 11, 13], pa.uint32()), "item_id": pa.array([7, 8, 7, 4], pa.uint32())}
    )
    pq.write_table(table, tmp_path / "artist.parquet", row_group_size=2)
    artist, present = read_item_mapping(tmp_path / "artist.parquet", "artist", np.array([9, 8, 7, 7]))
    assert artist.dtype == np.uint32
    assert artist.tolist() == [0, 12, 10, 10]
    assert present.tolist() == [False, True, True, True]


def test_album_mapping_and_unknown_kind(tmp_path):
    table = pa.table({"album_id": pa.array([1, 2], pa.int64()), "item_id": pa.array([1491131, 5], pa.int64())})
    pq.write_table(table, tmp_path / "album.parquet")
    album, present = read_item_mapping(tmp_path / "album.parquet", "album", np.array([5, 1491131]))
    assert album.tolist() == [2, 1] and present.all()
    with pytest.raises(ValueError, match=r"'label'.*artist, album"):
        read_item_mapping(tmp_path / "album.parquet", "label", np.array([5]))
    with pytest.raises(S.SchemaError, match=r"album\.parquet: missing column 'artist_id'"):
        read_item_mapping(tmp_path / "album.parquet", "artist", np.array([5]))


def test_mapping_with_negative_ids_names_file_and_column(tmp_path):
    table = pa.table({"artist_id": pa.array([-1], pa.int64()), "item_id": pa.array([5], pa.int64())})
    pq.write_table(table, tmp_path / "artist.parquet")
    with pytest.raises(S.SchemaError, match=r"artist\.parquet: column 'artist_id'.*uint32"):
        read_item_mapping(tmp_path / "artist.parquet", "artist", np.array([5]))


# --- the split-aligned view (item_embeddings) -------------------------------------------------------------------


# train items 10..80; 30 and 70 have no vector; 500, 600 have a vector but no train event (cold)
AUDIO_TRAIN = [10, 20, 30, 40, 50, 60, 70, 80]
AUDIO_FILE_IDS = [10, 20, 40, 50, 60, 80, 500, 600]


def audio_split(root, file_ids=AUDIO_FILE_IDS, users: int = 8):
    """A tiny split whose dataset root holds an embeddings.parquet (real files, real make_split)."""
    from yambda_dl.data.layout import DatasetLayout
    from yambda_dl.data.split import Protocol, make_split

    from ..conftest import TEST_START, listen, write_flat

    layout = DatasetLayout(root, "hand")
    rows = [
        listen(u, 1_000_000 + 60 * i, item)
        for u in range(1, users + 1)
        for i, item in enumerate(AUDIO_TRAIN[u % 5 : u % 5 + 4])  # 4 consecutive items each, shifted per user
    ]
    rows += [listen(u, TEST_START + 10, AUDIO_TRAIN[(u + 1) % 8]) for u in range(1, users + 1)]
    rows += [listen(1, TEST_START + 20, 500)]  # a cold target: vector, no train event
    write_flat(layout, "listens", rows)
    write_audio(root / S.EMBEDDINGS_FILE, file_ids)
    return make_split(layout, Protocol(), cache_dir=root / "cache", progress=False)


def test_view_is_aligned_to_the_dense_item_index_like_a_join_on_raw_ids(tmp_path):
    import polars as pl

    from yambda_dl.data.embeddings import item_embeddings

    split = audio_split(tmp_path)
    view = item_embeddings(split, progress=False)
    assert view.vectors.shape == (split.num_items, DIM) and view.vectors.dtype == np.float32
    joined = (
        pl.DataFrame({"item_id": split.items.astype(np.int64), "item_idx": np.arange(split.num_items)})
        .join(
            pl.read_parquet(tmp_path / S.EMBEDDINGS_FILE).with_columns(pl.col("item_id").cast(pl.Int64)),
            on="item_id",
            how="left",
        )
        .sort("item_idx")
    )
    has = joined["normalized_embed"].is_not_null().to_numpy()
    assert view.present.tolist() == has.tolist()
    expected = np.array([v if v is not None else [0.0] * DIM for v in joined["normalized_embed"].to_list()])
    np.testing.assert_array_equal(view.vectors, expected.astype(np.float32))
    # the missing items are the hand-picked ones, zero rows
    missing = split.items[~view.present].tolist()
    assert missing == [30, 70] and not view.vectors[~view.present].any()
    assert view.coverage == 6 / 8 and view.num_cold == 0


def test_cold_candidates_follow_the_train_items(tmp_path):
    from yambda_dl.data.embeddings import item_embeddings

    split = audio_split(tmp_path)
    view = item_embeddings(split, cold=True, progress=False)
    assert view.cold_ids.tolist() == [500, 600] and view.cold_ids.dtype == np.uint32
    assert view.vectors.shape == (split.num_items + 2, DIM)
    np.testing.assert_array_equal(view.vectors[split.num_items :], audio_vectors([500, 600]))
    assert view.present[split.num_items :].all()
    assert view.tensor().shape == (split.num_items, DIM) and view.tensor(cold=True).shape[0] == split.num_items + 2


def test_view_cache_is_reused_and_rebuilt_when_the_embeddings_change(tmp_path):
    from yambda_dl.data.embeddings import item_embeddings

    split = audio_split(tmp_path)
    first = item_embeddings(split, progress=False)
    created = first.meta["created"]
    again = item_embeddings(split, progress=False)
    assert again.path == first.path and again.meta["created"] == created  # reused, not rebuilt
    write_audio(tmp_path / S.EMBEDDINGS_FILE, [10, 20, 30, 40])  # new content: 30 now has a vector
    changed = item_embeddings(split, progress=False)
    assert changed.path != first.path
    assert split.items[changed.present].tolist() == [10, 20, 30, 40]
    assert first.path.is_dir()  # the old folder is never replaced under a reader


def test_a_damaged_view_is_rebuilt(tmp_path):
    from yambda_dl.data.embeddings import item_embeddings

    split = audio_split(tmp_path)
    view = item_embeddings(split, progress=False)
    path, present = view.path, view.present.tolist()
    del view
    (path / "present.npy").write_bytes(b"broken")
    again = item_embeddings(split, progress=False)
    assert again.path == path and again.present.tolist() == present


def test_view_dtypes_columns_and_side_file_override(tmp_path):
    import torch

    from yambda_dl.data.embeddings import embeddings_path, item_embeddings
    from yambda_dl.data.layout import DatasetLayout, SideFiles

    split = audio_split(tmp_path)
    assert embeddings_path(split) == tmp_path / S.EMBEDDINGS_FILE
    view = item_embeddings(split, progress=False)
    assert view.tensor("bfloat16").dtype == torch.bfloat16
    with pytest.raises(ValueError, match=r"'float16'.*float32, bfloat16"):
        view.tensor("float16")
    with pytest.raises(ValueError, match=r"'audio'.*embed, normalized_embed"):
        item_embeddings(split, column="audio")
    other = tmp_path / "other.parquet"
    write_audio(other, [10, 80])
    assert item_embeddings(split, path=other, progress=False).present.sum() == 2
    with pytest.raises(FileNotFoundError, match=r"absent\.parquet.*side_files"):
        item_embeddings(split, path=tmp_path / "absent.parquet")
    layout = DatasetLayout(tmp_path, "hand", embeddings_file=other)
    assert layout.side_files == SideFiles(other, tmp_path / S.ARTIST_MAPPING_FILE, tmp_path / S.ALBUM_MAPPING_FILE)
    with pytest.raises(ValueError, match=r"unknown side file.*embeddings, artist_mapping, album_mapping"):
        SideFiles.at_root(tmp_path, audio=other)


def test_an_unsorted_file_gives_the_same_view(tmp_path):
    """The release's file is sorted by item_id (sequential writes); any other order goes through the memory map."""
    from yambda_dl.data.embeddings import item_embeddings

    split = audio_split(tmp_path)
    sorted_view = item_embeddings(split, cold=True, progress=False)
    ids = [600, 40, 10, 500, 80, 20, 60, 50]
    vectors = pa.array(list(audio_vectors(ids)), pa.list_(FLOAT32))
    other = tmp_path / "unsorted.parquet"
    table = pa.table({"item_id": pa.array(ids, pa.uint32()), "embed": vectors, "normalized_embed": vectors})
    pq.write_table(table, other, row_group_size=3)
    view = item_embeddings(split, cold=True, path=other, progress=False)
    assert view.path != sorted_view.path
    np.testing.assert_array_equal(view.vectors, sorted_view.vectors)
    assert view.present.tolist() == sorted_view.present.tolist() and view.cold_ids.tolist() == [500, 600]
