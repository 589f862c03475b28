"""Readers, converters and side-file readers on the real Yambda rows of tests/fixtures/yambda-real-rows."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from yambda_dl.data import io
from yambda_dl.data import schema as S
from yambda_dl.data.convert import flat_to_sequential, sequential_to_flat
from yambda_dl.data.embeddings import read_embeddings, read_item_mapping

from ..conftest import REAL_ROWS_DIR

REAL = REAL_ROWS_DIR
MULTI_EVENT = REAL / "yambda_flat50m_multi_event_observed_rows.parquet"
# uid 30000's eight events at 25,999,235, in file order (README and PROVENANCE of the real rows)
BURST_ITEMS = [2479739, 3049618, 8578148, 2978903, 3049618, 6051828, 5167477, 6051828]

pytestmark = pytest.mark.skipif(not REAL.is_dir(), reason=f"{REAL} is not present")


def concat(tables) -> pa.Table:
    return pa.concat_tables(list(tables)).combine_chunks()


def as_strings(table: pa.Table) -> pa.Table:
    """event_type decoded and every field nullable, so tables compare by value whatever their dictionaries."""
    columns = {n: table.column(n).combine_chunks() for n in table.column_names}
    columns["event_type"] = columns["event_type"].cast(pa.string())
    return pa.table(columns)


def test_multi_event_rows_stream_in_the_official_types():
    table = concat(io.iter_flat_batches(MULTI_EVENT, "multi_event", batch_rows=8))
    assert table.num_rows == 31
    assert [(f.name, f.type) for f in table.schema] == [(f.name, f.type) for f in S.flat_schema("multi_event")]
    assert set(table.column("event_type").to_pylist()) == {"listen"}
    assert as_strings(table).equals(as_strings(pq.read_table(MULTI_EVENT)))


def test_exact_duplicates_are_kept():
    rows = concat(io.iter_flat_batches(MULTI_EVENT, "multi_event")).to_pylist()
    as_tuples = [tuple(r.values()) for r in rows]
    assert len(as_tuples) - len(set(as_tuples)) == 2  # rows 0/1 and rows 6/7 are exact copies
    assert as_tuples.count((100, 12931240, 410868, 1, 0, 245, "listen")) == 2


@pytest.mark.parametrize("batch_rows", range(1, 41))
def test_user_batches_keep_users_whole_and_rows_in_file_order(batch_rows):
    batches = list(io.iter_user_batches(MULTI_EVENT, "multi_event", "flat", batch_rows=batch_rows))
    uids_per_batch = [set(b.column("uid").to_pylist()) for b in batches]
    assert sorted(u for uids in uids_per_batch for u in uids) == [
        100,
        30000,
    ]  # no user split over two batches
    table = concat(batches)
    assert as_strings(table).equals(as_strings(pq.read_table(MULTI_EVENT)))
    burst = table.filter(pa.compute.equal(table.column("timestamp"), 25_999_235))
    assert burst.column("uid").to_pylist() == [30000] * 8
    assert burst.column("item_id").to_pylist() == BURST_ITEMS


def first_rows() -> dict[str, dict[str, str]]:
    """event file -> its first row in the CSV of observed rows."""
    with open(REAL / "yambda_flat50m_observed_rows.csv", newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["note"] == "first row of file"]
    return {Path(r["source_file"]).stem: r for r in rows}


@pytest.mark.parametrize("event_file", S.EVENT_FILES)
def test_first_row_of_each_flat_file_round_trips_in_the_official_types(tmp_path, event_file):
    row = first_rows()[event_file]
    columns = S.flat_columns(event_file)
    values = {n: [row[n]] if n == "event_type" else [int(row[n])] for n in columns}
    table = pa.table({n: pa.array(v).cast(columns[n]) for n, v in values.items()})
    pq.write_table(table, tmp_path / f"{event_file}.parquet")

    back = concat(io.iter_flat_batches(tmp_path / f"{event_file}.parquet", event_file))
    assert back.to_pylist() == [{n: v[0] for n, v in values.items()}]
    assert back.schema.field("uid").type == pa.uint32()
    assert back.column("uid").to_pylist() == [100]  # uid 100 is the first user of every 50m file


def test_real_embedding_row_is_read_from_float64_lists(tmp_path):
    row = json.loads((REAL / "yambda_embeddings_first_row_item2.json").read_text())
    table = pa.table(
        {
            "item_id": pa.array([row["item_id"]], pa.uint32()),
            "embed": pa.array([row["embed"]], pa.list_(pa.float64())),
            "normalized_embed": pa.array([row["normalized_embed"]], pa.list_(pa.float64())),
        }
    )
    pq.write_table(table, tmp_path / "embeddings.parquet")

    normalized, present = read_embeddings(tmp_path / "embeddings.parquet", np.array([3, 2]))
    raw, _ = read_embeddings(tmp_path / "embeddings.parquet", np.array([2]), column="embed")
    assert present.tolist() == [False, True]
    assert np.linalg.norm(normalized[1]) == pytest.approx(1.0, abs=1e-5)
    assert not normalized[0].any()
    assert raw[0, 0] == np.float32(-1.5340346097946167)
    np.testing.assert_allclose(normalized[1], raw[0] / np.linalg.norm(raw[0]), rtol=1e-5)


def mapping_rows() -> list[dict[str, str]]:
    with open(REAL / "yambda_item_mapping_observed_rows.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def write_mapping(path: Path, kind: str) -> None:
    """The observed (kind_id, item_id) pairs in CSV order, duplicates dropped as the real mapping has none."""
    pairs = list(dict.fromkeys((int(r[f"{kind}_id"]), int(r["item_id"])) for r in mapping_rows() if r[f"{kind}_id"]))
    ids, items = zip(*pairs, strict=True)
    pq.write_table(pa.table({f"{kind}_id": pa.array(ids, pa.uint32()), "item_id": pa.array(items, pa.uint32())}), path)


def test_real_mapping_rows_are_read_per_item(tmp_path):
    write_mapping(tmp_path / "artist.parquet", "artist")
    write_mapping(tmp_path / "album.parquet", "album")
    wanted = np.array([8326270, 953587, 732449, 1491131])

    artist, has_artist = read_item_mapping(tmp_path / "artist.parquet", "artist", wanted)
    album, has_album = read_item_mapping(tmp_path / "album.parquet", "album", wanted)
    assert artist.tolist() == [714356, 1, 94924, 0] and has_artist.tolist() == [True, True, True, False]
    # 8326270 is on two albums (1060653 first in the file); 953587 is on none of the observed ones
    assert album.tolist() == [1060653, 0, 1632076, 1] and has_album.tolist() == [True, False, True, True]


@pytest.mark.parametrize("batch_rows", [1, 5, 16, 1000])
def test_real_rows_round_trip_through_the_sequential_layout(tmp_path, batch_rows):
    seq, back = tmp_path / "seq.parquet", tmp_path / "back.parquet"
    there = flat_to_sequential(MULTI_EVENT, seq, "multi_event", batch_rows=batch_rows, progress=False)
    sequential_to_flat(seq, back, "multi_event", batch_rows=batch_rows, progress=False)

    assert (there.rows, there.users) == (31, 2)
    assert pq.read_table(back).schema.remove_metadata() == S.flat_schema("multi_event")
    assert as_strings(pq.read_table(back)).equals(as_strings(pq.read_table(MULTI_EVENT)))
    lists = pq.read_table(seq).to_pylist()
    assert [len(r["item_id"]) for r in lists] == [16, 15]


def test_card_plural_list_names_are_read(tmp_path):
    flat_to_sequential(MULTI_EVENT, tmp_path / "seq.parquet", "multi_event", progress=False)
    table = pq.read_table(tmp_path / "seq.parquet")
    plural = [{"item_id": "item_ids", "timestamp": "timestamps"}.get(n, n) for n in table.column_names]
    pq.write_table(table.rename_columns(plural), tmp_path / "card.parquet")

    exploded = concat(io.iter_user_batches(tmp_path / "card.parquet", "multi_event", "sequential"))
    assert as_strings(exploded).equals(as_strings(pq.read_table(MULTI_EVENT)))
