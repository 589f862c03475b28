"""Bad data: memory bounded whatever the ids, read errors that name the place, unsorted rows, off-grid timestamps."""

from __future__ import annotations

import logging
import tracemalloc
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from yambda_dl.data import io
from yambda_dl.data import protocol as P
from yambda_dl.data import schema as S
from yambda_dl.data.idcounts import IdCounts, quantile_of_counts
from yambda_dl.data.layout import DatasetLayout
from yambda_dl.data.split import Protocol, make_split
from yambda_dl.data.stats import compute_stats

HUGE_ID = 2**32 - 1  # the largest uint32: a corrupted id
BOUND = 64 * 2**20  # what the steps below may allocate on tiny inputs, whatever the ids (the old code: GiBs)


def listens(rows: list[tuple[int, int, int, int, int]]) -> pa.Table:
    """(uid, timestamp, item_id, played_ratio_pct, track_length_seconds) rows as an official listens table."""
    uid, ts, item, ratio, length = (list(c) for c in zip(*rows, strict=True))
    return pa.table(
        {
            "uid": uid,
            "timestamp": ts,
            "item_id": item,
            "is_organic": [1] * len(uid),
            "played_ratio_pct": ratio,
            "track_length_seconds": length,
        },
        schema=S.flat_schema("listens"),
    )


def write(root: Path, table: pa.Table, name: str = "hand") -> DatasetLayout:
    layout = DatasetLayout(root, name)
    path = layout.event_path("listens")
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return layout


T0, TEST = 1_000_000, P.TEST_START
ROWS = [  # two users with train and test-day Listen+ events; user 1 listened to a corrupted id
    (1, T0, 7, 100, 200),
    (1, T0 + 86_400, HUGE_ID, 100, HUGE_ID),
    (1, TEST + 5, 7, 100, 200),
    (2, T0, 9, 100, 180),
    (2, T0 + 5, 7, 100, 200),
    (2, TEST + 10, HUGE_ID, 100, 200),
]


def peak_bytes(fn) -> tuple[object, int]:
    tracemalloc.start()
    try:
        result = fn()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# --- memory never follows one bad id --------------------------------------------------------------------------


def test_split_memory_does_not_grow_with_the_largest_item_id(tmp_path):
    layout = write(tmp_path / "data", listens(ROWS))

    def build_and_read():
        split = make_split(layout, Protocol(), cache_dir=tmp_path / "cache", progress=False)
        return split, np.concatenate([b["item_idx"] for b in split.iter_train(("user_idx", "item_idx"))])

    (split, item_idx), peak = peak_bytes(build_and_read)
    assert peak < BOUND, f"peak {peak / 2**20:.0f} MiB"
    assert split.items.tolist() == [7, 9, HUGE_ID]
    assert item_idx.tolist() == [0, 2, 1, 0]
    assert split.targets.item_idx.tolist() == [0, 2]


def test_stats_memory_does_not_grow_with_the_largest_item_id_or_track_length(tmp_path):
    layout = write(tmp_path, listens(ROWS))
    stats, peak = peak_bytes(lambda: compute_stats(layout))
    assert peak < BOUND, f"peak {peak / 2**20:.0f} MiB"
    assert stats["listens.items"] == 3
    assert stats["items_heard_once"] == pytest.approx(1 / 3)  # 7 x3, HUGE x2, 9 x1
    assert stats["track_length.median"] == 200 and stats["track_length.p90"] == HUGE_ID
    assert stats["top_item_user_reach"] == 1.0  # item 7: both users


def test_id_counts_agree_with_a_dense_bincount_across_the_limit():
    rng = np.random.default_rng(0)
    counts = IdCounts(dense_limit=100)
    flags = IdCounts(presence=True, dense_limit=100)
    batches = [rng.integers(0, 300, 50) for _ in range(5)]
    for batch in batches:
        counts.add(batch)
        flags.add(batch)
    dense = np.bincount(np.concatenate(batches))
    ids, values = counts.nonzero()
    assert ids.tolist() == np.flatnonzero(dense).tolist() and values.tolist() == dense[ids].tolist()
    assert flags.ids().tolist() == ids.tolist()
    assert quantile_of_counts(ids, values, 0.5) == float(np.searchsorted(np.cumsum(dense), 0.5 * dense.sum()))


# --- read errors name the file, the row group and the column -----------------------------------------------------


def test_a_corrupt_compressed_page_names_the_file_row_group_and_column(tmp_path):
    n = 20_000
    table = pa.table(
        {
            "uid": pa.array(np.repeat(np.arange(100), 200), pa.uint32()),
            "timestamp": pa.array(np.tile(np.arange(200) * 5, 100), pa.uint32()),
            "item_id": pa.array(np.arange(n) % 97, pa.uint32()),  # compressible: zstd really compresses the page
            "is_organic": pa.array(np.arange(n) % 2, pa.uint8()),
        }
    )
    path = tmp_path / "likes.parquet"
    pq.write_table(table, path, compression="zstd", row_group_size=5_000, use_dictionary=False)
    chunk = pq.ParquetFile(path).metadata.row_group(2).column(2)
    data = bytearray(path.read_bytes())
    end = chunk.data_page_offset + chunk.total_compressed_size
    data[end - 8 : end - 4] = bytes(b ^ 0xFF for b in data[end - 8 : end - 4])  # inside the compressed frame
    path.write_bytes(bytes(data))
    with pytest.raises(io.DataFileError, match=r"likes\.parquet: cannot read row group 2 \(of 4\), column 'item_id'"):
        for _ in io.iter_user_batches(path, "likes", "flat", batch_rows=3_000):
            pass


# --- statistics on rows not time-sorted within a user -------------------------------------------------------------


def test_stats_on_rows_out_of_time_order_within_users_equal_the_sorted_ones(tmp_path):
    rng = np.random.default_rng(1)
    rows = []
    for uid in range(1, 6):
        days = rng.integers(0, 200, size=30)
        for i, day in enumerate(days):
            rows.append((uid, int(day) * 86_400 + 5 * (i % 3), int(rng.integers(1, 40)), 100, 200))
    ordered = sorted(rows, key=lambda r: (r[0], r[1]))
    shuffled = sorted(rows, key=lambda r: (r[0], rng.random()))  # uid-sorted (valid input), time in any order
    sorted_stats = compute_stats(write(tmp_path / "a", listens(ordered)))
    shuffled_stats = compute_stats(write(tmp_path / "b", listens(shuffled)))
    assert shuffled_stats == pytest.approx(sorted_stats)
    assert sorted_stats["active_days_mean"] == pytest.approx(
        np.mean([len({r[1] // 86_400 for r in rows if r[0] == u}) for u in range(1, 6)])
    )


# --- timestamps off the 5-second grid ----------------------------------------------------------------------------


def test_off_grid_timestamps_warn_once_per_file_with_the_count(tmp_path, caplog):
    rows = [(1, T0 + 1, 7, 100, 200), (1, T0 + 5, 7, 100, 200), (1, T0 + 13, 8, 100, 200), (1, TEST + 5, 7, 100, 200)]
    layout = write(tmp_path, listens(rows))
    with caplog.at_level(logging.WARNING, logger="yambda_dl"):
        compute_stats(layout)
        make_split(layout, Protocol(), cache_dir=tmp_path / "cache", progress=False)
    warnings = [r.getMessage() for r in caplog.records if "5-second grid" in r.getMessage()]
    assert len(warnings) == 1
    assert "listens.parquet: 2 of 4 timestamps are off the 5-second grid" in warnings[0]


def test_on_grid_timestamps_do_not_warn(tmp_path, caplog):
    layout = write(tmp_path, listens([(1, T0, 7, 100, 200), (1, TEST + 5, 7, 100, 200)]))
    with caplog.at_level(logging.WARNING, logger="yambda_dl"):
        compute_stats(layout)
    assert "grid" not in caplog.text


# --- temporaries of killed writes --------------------------------------------------------------------------------


def test_atomic_path_removes_a_killed_writes_temporary_of_the_same_name(tmp_path):
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    tag = io.temporary_name("x").rsplit("-", 1)[1][:4]
    stale = tmp_path / f".tmp-out.parquet-{child.pid}-{tag}0000"
    stale.mkdir()
    (stale / "out.parquet").write_bytes(b"half")
    io.write_parquet(pa.table({"a": [1]}), tmp_path / "out.parquet")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.parquet"]
