"""Every error of io.py and schema.py names the file and column (and the value or the choices)."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from yambda_dl.data import io
from yambda_dl.data import schema as S

LIKES = S.flat_schema("likes")


def likes(**overrides) -> pa.Table:
    """Three valid like rows (two users) with some columns replaced by the given arrays."""
    columns = {
        "uid": pa.array([1, 1, 2], pa.int64()),
        "timestamp": pa.array([0, 5, 26_000_000], pa.int64()),
        "item_id": pa.array([7, 8, 9], pa.int64()),
        "is_organic": pa.array([0, 1, 1], pa.int64()),
    }
    columns.update(overrides)
    return pa.table(columns)


def write(tmp_path, table: pa.Table, name: str = "likes.parquet"):
    path = tmp_path / name
    pq.write_table(table, path)
    return path


def types(table: pa.Table) -> list[tuple[str, pa.DataType]]:
    """Names and types; the readers' fields are nullable while the official schema marks some not-null."""
    return [(f.name, f.type) for f in table.schema]


def read_flat(path, event_file: str = "likes", batch_rows: int = 1000) -> pa.Table:
    return pa.concat_tables(io.iter_flat_batches(path, event_file, batch_rows=batch_rows))


def test_int64_columns_with_valid_values_are_cast_to_the_official_types(tmp_path):
    table = read_flat(write(tmp_path, likes()))
    assert types(table) == types(LIKES.empty_table())
    assert table.column("timestamp").to_pylist() == [0, 5, 26_000_000]


def test_missing_file_names_it_and_the_download_command(tmp_path):
    with pytest.raises(io.DataFileError, match=r"missing file .*nowhere\.parquet; see `yambda-data download"):
        read_flat(tmp_path / "nowhere.parquet")


def test_not_a_parquet_file_is_named(tmp_path):
    (tmp_path / "likes.parquet").write_text("uid,timestamp\n1,5\n")
    with pytest.raises(io.DataFileError, match=r"likes\.parquet is not a readable Parquet file"):
        read_flat(tmp_path / "likes.parquet")


def test_missing_column_names_file_column_and_what_the_file_has(tmp_path):
    path = write(tmp_path, likes().drop_columns(["is_organic"]))
    with pytest.raises(S.SchemaError, match=r"likes\.parquet: missing column 'is_organic'; the file has: uid, "):
        read_flat(path)


def test_a_column_outside_the_schema_is_named_with_the_valid_ones(tmp_path):
    path = write(tmp_path, likes())
    with pytest.raises(S.SchemaError, match=r"column 'event_type' is not part .*valid columns: uid, timestamp"):
        next(io.iter_flat_batches(path, "likes", columns=["uid", "event_type"]))


def test_string_uid_cannot_be_cast(tmp_path):
    path = write(tmp_path, likes(uid=pa.array(["1", "1", "2"])))
    with pytest.raises(S.SchemaError, match=r"likes\.parquet: column 'uid' has type string.*official uint32"):
        read_flat(path)


@pytest.mark.parametrize(
    ("column", "values", "official"),
    [
        ("uid", [1, -1, 2], "uint32"),
        ("timestamp", [0, 2**40, 5], "uint32"),
        ("is_organic", [0, 300, 1], "uint8"),
    ],
)
def test_values_that_do_not_fit_the_official_type(tmp_path, column, values, official):
    path = write(tmp_path, likes(**{column: pa.array(values, pa.int64())}))
    with pytest.raises(S.SchemaError, match=rf"likes\.parquet: column '{column}' holds values .* official {official}"):
        read_flat(path)


def test_nulls_in_uid_are_refused(tmp_path):
    path = write(tmp_path, likes(uid=pa.array([1, None, 2], pa.int64())))
    with pytest.raises(S.SchemaError, match=r"likes\.parquet: column 'uid' holds 1 null value\(s\)"):
        read_flat(path)


@pytest.mark.parametrize(
    ("column", "values", "message"),
    [
        ("timestamp", [0, 5, 26_000_005], r"'timestamp' holds 26000005, past the end .*\[0, 26000000\]"),
        ("is_organic", [0, 2, 1], r"'is_organic' holds 2; valid values: 0, 1"),
    ],
)
def test_values_outside_the_yambda_ranges(tmp_path, column, values, message):
    path = write(tmp_path, likes(**{column: pa.array(values, pa.int64())}))
    with pytest.raises(S.SchemaError, match=r"likes\.parquet: column " + message):
        read_flat(path)


def listens(**overrides) -> pa.Table:
    columns = {"played_ratio_pct": pa.array([100, 50, 0]), "track_length_seconds": pa.array([200, 5, 30])}
    columns.update(overrides)
    return (
        likes()
        .append_column("played_ratio_pct", columns["played_ratio_pct"])
        .append_column("track_length_seconds", columns["track_length_seconds"])
    )


def test_played_ratio_over_159_is_refused(tmp_path):
    path = write(tmp_path, listens(played_ratio_pct=pa.array([100, 200, 0])), "listens.parquet")
    with pytest.raises(S.SchemaError, match=r"listens\.parquet: column 'played_ratio_pct' holds 200; .*0\.\.159"):
        read_flat(path, "listens")


def test_nulls_in_listen_columns_are_allowed_only_in_multi_event(tmp_path):
    path = write(tmp_path, listens(played_ratio_pct=pa.array([100, None, 0])), "listens.parquet")
    with pytest.raises(S.SchemaError, match=r"'played_ratio_pct' holds 1 null value\(s\); nulls are allowed only"):
        read_flat(path, "listens")


def test_multi_event_keeps_nulls_and_refuses_unknown_event_types(tmp_path):
    table = listens(played_ratio_pct=pa.array([100, None, 0]))
    good = write(tmp_path, table.append_column("event_type", pa.array(["listen", "like", "listen"])), "good.parquet")
    result = read_flat(good, "multi_event")
    assert result.column("played_ratio_pct").to_pylist() == [100, None, 0]
    assert result.schema.field("event_type").type == S.EVENT_TYPE_ARROW

    bad = write(tmp_path, table.append_column("event_type", pa.array(["listen", "play", "listen"])), "bad.parquet")
    with pytest.raises(S.SchemaError, match=r"bad\.parquet: column 'event_type' holds \['play'\]; valid choices: "):
        read_flat(bad, "multi_event")


def sequential(**lists) -> pa.Table:
    columns = {
        "uid": pa.array([1, 2], pa.uint32()),
        "timestamp": pa.array([[0, 5], [10]], pa.list_(pa.uint32())),
        "item_id": pa.array([[7, 8], [9]], pa.list_(pa.uint32())),
        "is_organic": pa.array([[0, 1], [1]], pa.list_(pa.uint8())),
    }
    columns.update(lists)
    return pa.table(columns)


def read_sequential(path) -> pa.Table:
    return pa.concat_tables(io.iter_user_batches(path, "likes", "sequential"))


def test_sequential_file_is_exploded_in_stored_order(tmp_path):
    table = read_sequential(write(tmp_path, sequential()))
    assert types(table) == types(LIKES.empty_table())
    assert table.column("uid").to_pylist() == [1, 1, 2]
    assert table.column("item_id").to_pylist() == [7, 8, 9]


def test_list_columns_of_different_lengths_are_refused(tmp_path):
    path = write(tmp_path, sequential(item_id=pa.array([[7, 8], [9, 10]], pa.list_(pa.uint32()))))
    with pytest.raises(S.SchemaError, match=r"likes\.parquet: list columns 'timestamp' and 'item_id' have different"):
        read_sequential(path)


def test_null_list_is_refused(tmp_path):
    path = write(tmp_path, sequential(item_id=pa.array([[7, 8], None], pa.list_(pa.uint32()))))
    with pytest.raises(S.SchemaError, match=r"likes\.parquet: list column 'item_id' holds 1 null list\(s\)"):
        read_sequential(path)


def test_unsorted_uids_are_refused_in_both_formats(tmp_path):
    flat = write(tmp_path, likes(uid=pa.array([2, 2, 1], pa.int64())))
    with pytest.raises(S.SchemaError, match=r"likes\.parquet: rows are not sorted by 'uid'"):
        list(io.iter_user_batches(flat, "likes", "flat", batch_rows=1))
    seq = write(tmp_path, sequential(uid=pa.array([2, 1], pa.uint32())), "seq.parquet")
    with pytest.raises(S.SchemaError, match=r"seq\.parquet: rows are not sorted by 'uid'"):
        read_sequential(seq)


def test_unknown_event_file_and_format_names_list_the_choices(tmp_path):
    path = write(tmp_path, likes())
    with pytest.raises(S.SchemaError, match=r"unknown event file 'plays'; valid choices: listens, likes, dislikes"):
        read_flat(path, "plays")
    with pytest.raises(S.SchemaError, match=r"unknown format 'csv'; valid choices: flat, sequential"):
        list(io.iter_user_batches(path, "likes", "csv"))


def test_read_table_casts_and_refuses_nulls_in_required_columns(tmp_path):
    path = write(tmp_path, pa.table({"item_id": pa.array([5, None], pa.int64())}), "embeddings.parquet")
    with pytest.raises(S.SchemaError, match=r"embeddings\.parquet: column 'item_id' holds 1 null value\(s\)"):
        io.read_table(path, S.EMBEDDINGS_SCHEMA, columns=["item_id"])
    path = write(tmp_path, pa.table({"artist_id": [1, 2], "item_id": [5, 6]}), "artist.parquet")
    table = io.read_table(path, S.ARTIST_MAPPING_SCHEMA)
    assert table.schema == S.ARTIST_MAPPING_SCHEMA and table.column("item_id").to_pylist() == [5, 6]


def test_atomic_path_leaves_nothing_when_the_writer_fails(tmp_path):
    final = tmp_path / "out" / "result.parquet"
    with pytest.raises(RuntimeError, match="mid-write"), io.atomic_path(final) as tmp:
        tmp.write_bytes(b"half a file")
        raise RuntimeError("mid-write")
    assert list((tmp_path / "out").iterdir()) == []


def test_atomic_path_replaces_the_final_file_on_success(tmp_path):
    final = tmp_path / "result.txt"
    final.write_text("old")
    with io.atomic_path(final) as tmp:
        tmp.write_text("new")
        assert final.read_text() == "old"  # nothing visible under the final name before the end
    assert final.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["result.txt"]


def test_parquet_sink_leaves_nothing_when_an_exception_is_raised_mid_write(tmp_path):
    final = tmp_path / "likes.parquet"
    with pytest.raises(RuntimeError, match="mid-write"), io.ParquetSink(final, LIKES) as sink:
        sink.write(likes())
        raise RuntimeError("mid-write")
    assert list(tmp_path.iterdir()) == []


def test_parquet_sink_writes_the_official_types_on_close(tmp_path):
    final = tmp_path / "likes.parquet"
    with io.ParquetSink(final, LIKES) as sink:
        sink.write(likes())
        sink.write(likes().slice(0, 0))
        assert not final.exists()
    assert sink.rows == 3
    assert pq.read_table(final).schema.remove_metadata() == LIKES
