"""flat <-> sequential conversion on hand-made rows: lossless round trips, exact schema, whole layouts."""

from __future__ import annotations

import logging

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from yambda_dl.data import schema as S
from yambda_dl.data.convert import convert_layout, flat_to_sequential, group_by_user, sequential_to_flat
from yambda_dl.data.layout import DatasetLayout

# Four users: uid 3 has one event; uid 7 has equal timestamps and an exact duplicate (rows 2 and 3); uid 8 has
# two different items at one timestamp (their stored order must survive); uid 12 ends at the last second.
UID = [3, 7, 7, 7, 7, 8, 8, 8, 12, 12]
TIMESTAMP = [5, 10, 15, 15, 15, 100, 100, 105, 25_999_995, 26_000_000]
ITEM = [40, 41, 42, 42, 43, 44, 45, 44, 46, 47]
ORGANIC = [1, 0, 1, 1, 0, 0, 1, 1, 0, 1]
RATIO = [100, 3, 50, 50, 159, 0, 99, 12, 100, 101]
LENGTH = [200, 5, 180, 180, 2500, 30, 30, 45, 200, 300]
# multi_event: likes and dislikes carry nulls in the listen columns
EVENT_TYPE = [
    "listen",
    "like",
    "listen",
    "listen",
    "dislike",
    "listen",
    "unlike",
    "undislike",
    "listen",
    "like",
]
NULL_WHERE_NOT_LISTEN = [None if e != "listen" else 0 for e in EVENT_TYPE]


def flat_table(event_file: str) -> pa.Table:
    """The hand-made rows in the official types of `event_file`."""
    columns = {"uid": UID, "timestamp": TIMESTAMP, "item_id": ITEM, "is_organic": ORGANIC}
    if event_file in ("listens", "multi_event"):
        keep = NULL_WHERE_NOT_LISTEN if event_file == "multi_event" else [0] * len(UID)
        columns["played_ratio_pct"] = [r if k is not None else None for r, k in zip(RATIO, keep, strict=True)]
        columns["track_length_seconds"] = [n if k is not None else None for n, k in zip(LENGTH, keep, strict=True)]
    if event_file == "multi_event":
        columns["event_type"] = pa.array(EVENT_TYPE).dictionary_encode()
    return pa.Table.from_pydict(columns).cast(S.flat_schema(event_file))


def decoded(table: pa.Table) -> pa.Table:
    """The table with event_type as plain strings, so dictionaries built per batch compare by value."""
    if "event_type" not in table.column_names:
        return table.combine_chunks()
    index = table.column_names.index("event_type")
    return table.set_column(index, "event_type", table.column("event_type").cast(pa.string())).combine_chunks()


@pytest.mark.parametrize("event_file", S.EVENT_FILES)
@pytest.mark.parametrize("batch_rows", [1, 2, 7, 1000])
def test_round_trip_is_lossless(tmp_path, event_file, batch_rows):
    original = flat_table(event_file)
    pq.write_table(original, tmp_path / "flat.parquet")

    there = flat_to_sequential(tmp_path / "flat.parquet", tmp_path / "seq.parquet", event_file, batch_rows, False)
    back = sequential_to_flat(tmp_path / "seq.parquet", tmp_path / "back.parquet", event_file, batch_rows, False)

    result = pq.read_table(tmp_path / "back.parquet")
    assert result.schema == S.flat_schema(event_file)
    assert decoded(result).equals(decoded(original))
    assert (there.rows, there.users, back.rows, back.users) == (10, 4, 10, 4)
    assert back.output == tmp_path / "back.parquet"


@pytest.mark.parametrize("event_file", S.EVENT_FILES)
def test_sequential_schema_is_exactly_the_official_one(tmp_path, event_file):
    pq.write_table(flat_table(event_file), tmp_path / "flat.parquet")
    flat_to_sequential(tmp_path / "flat.parquet", tmp_path / "seq.parquet", event_file, 3, False)
    assert pq.read_schema(tmp_path / "seq.parquet").remove_metadata() == S.sequential_schema(event_file)


def test_sequential_rows_hold_each_users_events_in_stored_order(tmp_path):
    pq.write_table(flat_table("multi_event"), tmp_path / "flat.parquet")
    flat_to_sequential(tmp_path / "flat.parquet", tmp_path / "seq.parquet", "multi_event", 2, False)
    rows = pq.read_table(tmp_path / "seq.parquet").to_pylist()

    assert [r["uid"] for r in rows] == [3, 7, 8, 12]
    assert rows[1]["item_id"] == [41, 42, 42, 43]  # the exact duplicate stays
    assert rows[1]["timestamp"] == [10, 15, 15, 15]
    assert rows[1]["played_ratio_pct"] == [None, 50, 50, None]  # nulls inside the lists stay
    assert rows[2]["item_id"] == [44, 45, 44]  # equal timestamps in stored order
    assert rows[2]["event_type"] == ["listen", "unlike", "undislike"]
    assert rows[0]["track_length_seconds"] == [200]


def test_group_by_user_builds_lists_from_offsets():
    table = flat_table("likes").slice(1, 7)  # users 7 (4 events), 8 (3 events)
    grouped = group_by_user(table, S.sequential_schema("likes"))
    assert grouped.column("uid").to_pylist() == [7, 8]
    assert grouped.column("item_id").to_pylist() == [[41, 42, 42, 43], [44, 45, 44]]


def test_card_plural_names_are_read(tmp_path):
    pq.write_table(flat_table("likes"), tmp_path / "flat.parquet")
    flat_to_sequential(tmp_path / "flat.parquet", tmp_path / "seq.parquet", "likes", 1000, False)
    seq = pq.read_table(tmp_path / "seq.parquet").rename_columns(["uid", "timestamps", "item_ids", "is_organic"])
    pq.write_table(seq, tmp_path / "card.parquet")
    sequential_to_flat(tmp_path / "card.parquet", tmp_path / "back.parquet", "likes", 1000, False)
    assert pq.read_table(tmp_path / "back.parquet").equals(flat_table("likes"))


def test_convert_layout_converts_every_file_both_ways(tmp_path):
    layout = DatasetLayout(tmp_path, "tiny")
    for event_file in S.EVENT_FILES:
        layout.event_path(event_file).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(flat_table(event_file), layout.event_path(event_file))

    to_sequential = convert_layout(layout, "sequential", batch_rows=3, progress=False)
    for event_file in S.EVENT_FILES:
        layout.event_path(event_file).unlink()
    to_flat = convert_layout(layout, "flat", batch_rows=3, progress=False)

    assert [s.output for s in to_sequential] == [layout.event_path(e, "sequential") for e in S.EVENT_FILES]
    assert [s.users for s in to_flat] == [4] * len(S.EVENT_FILES)
    for event_file in S.EVENT_FILES:
        assert decoded(pq.read_table(layout.event_path(event_file))).equals(decoded(flat_table(event_file)))


def test_convert_layout_refuses_a_missing_source_before_writing(tmp_path):
    layout = DatasetLayout(tmp_path, "tiny")
    with pytest.raises(FileNotFoundError, match=r"flat/tiny/likes\.parquet.*yambda-data synth"):
        convert_layout(layout, "sequential", event_files=["likes"], progress=False)
    assert not (tmp_path / "sequential").exists()


def test_convert_layout_refuses_an_unknown_format(tmp_path):
    with pytest.raises(S.SchemaError, match=r"'columnar'.*flat, sequential"):
        convert_layout(DatasetLayout(tmp_path, "tiny"), "columnar")


def test_bad_batch_rows_is_refused_before_reading(tmp_path):
    with pytest.raises(ValueError, match="batch_rows=0"):
        flat_to_sequential(tmp_path / "absent.parquet", tmp_path / "seq.parquet", "likes", 0, False)


def test_unsorted_input_leaves_no_output(tmp_path):
    pq.write_table(flat_table("likes").take([5, 0, 1]), tmp_path / "flat.parquet")  # uid 8 before uid 3
    with pytest.raises(S.SchemaError, match="not sorted by 'uid'"):
        flat_to_sequential(tmp_path / "flat.parquet", tmp_path / "seq.parquet", "likes", 1000, False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["flat.parquet"]


def test_progress_logs_a_closing_line(tmp_path, caplog):
    pq.write_table(flat_table("likes"), tmp_path / "flat.parquet")
    with caplog.at_level(logging.INFO, logger="yambda_dl"):
        flat_to_sequential(tmp_path / "flat.parquet", tmp_path / "seq.parquet", "likes", 1000, progress=True)
    assert "flat->sequential likes: 10 events of 4 users ->" in caplog.text
