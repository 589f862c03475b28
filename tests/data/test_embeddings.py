"""read_embeddings and read_item_mapping on small Parquet files written here, with hand-computed answers."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from yambda_dl.data import schema as S
from yambda_dl.data.embeddings import read_embeddings, read_item_mapping

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
