"""The Global Temporal Split on hand-written Parquet files whose right answer is worked out by hand below."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from yambda_dl.data import schema as S
from yambda_dl.data.io import DataFileError
from yambda_dl.data.layout import DatasetLayout
from yambda_dl.data.split import Protocol, Split, SplitError, Windows, load_split, make_split

from ..conftest import REAL_ROWS_DIR

REAL_ROWS = REAL_ROWS_DIR / "yambda_flat50m_multi_event_observed_rows.parquet"

# (uid, timestamp, item_id, played_ratio_pct) in file order: sorted by (uid, timestamp), ties in file order.
FINAL_ROWS = [
    (1, 0, 10, 100),  # train
    (1, 1_000, 14, 49),  # not Listen+: item 14 never becomes a train item
    (1, 25_911_799, 11, 50),  # train: last second before the gap, Listen+ at exactly 50
    (1, 25_911_800, 12, 100),  # gap: dropped
    (1, 25_913_595, 12, 100),  # gap: dropped
    (1, 25_913_600, 13, 100),  # target: first second of the test day
    (1, 25_950_000, 10, 100),  # target
    (1, 25_950_000, 99, 120),  # target whose item is not in train: item_idx -1
    (1, 25_960_000, 15, 49),  # not Listen+
    (1, 26_000_000, 10, 100),  # target at the last timestamp; a duplicate of item 10
    (2, 500, 20, 100),  # user 2: ranked, no target, so not evaluated
    (2, 600, 13, 80),
    (3, 700, 30, 10),  # user 3: its only train listen is not Listen+, so it is not ranked
    (3, 25_920_000, 30, 100),  # ... and this target is not evaluated
    (5, 100, 52, 100),  # user 5: equal timestamps keep file order
    (5, 100, 50, 100),
    (5, 25_950_000, 52, 60),
    (5, 25_950_000, 50, 70),
    (5, 25_950_000, 52, 60),  # exact duplicate target row
]
# Worked out by hand from FINAL_ROWS.
FINAL_USERS = [1, 2, 5]
FINAL_ITEMS = [10, 11, 13, 20, 50, 52]
FINAL_TRAIN = {
    "user_idx": [0, 0, 1, 1, 2, 2],
    "item_idx": [0, 1, 3, 2, 5, 4],
    "timestamp": [0, 25_911_799, 500, 600, 100, 100],
}
FINAL_TARGET_IDS = [13, 10, 99, 10, 52, 50, 52]


def listens_table(rows: list[tuple[int, int, int, int]]) -> pa.Table:
    """A listens table in the official flat types; is_organic and track length play no part."""
    uid, ts, item, ratio = (list(column) for column in zip(*rows, strict=True))
    return pa.table(
        {
            "uid": uid,
            "timestamp": ts,
            "item_id": item,
            "is_organic": [1] * len(uid),
            "played_ratio_pct": ratio,
            "track_length_seconds": [200] * len(uid),
        },
        schema=S.flat_schema("listens"),
    )


def events_table(event_file: str, rows: list[tuple[int, int, int]]) -> pa.Table:
    """A likes/unlikes table from (uid, timestamp, item_id) rows."""
    uid, ts, item = (list(column) for column in zip(*rows, strict=True))
    return pa.table(
        {"uid": uid, "timestamp": ts, "item_id": item, "is_organic": [0] * len(uid)},
        schema=S.flat_schema(event_file),
    )


def to_sequential(flat: pa.Table) -> pa.Table:
    """One row per uid and one list per other column, each list in the flat file's order."""
    uid = flat.column("uid").to_numpy()
    starts = np.flatnonzero(np.r_[True, uid[1:] != uid[:-1]])
    offsets = pa.array(np.append(starts, len(uid)).astype(np.int32))
    columns = {"uid": pa.array(uid[starts], pa.uint32())}
    for name in flat.column_names[1:]:
        columns[name] = pa.ListArray.from_arrays(offsets, flat.column(name).combine_chunks())
    return pa.table(columns)


def write_dataset(root: Path, name: str, tables: dict[str, pa.Table]) -> DatasetLayout:
    """Write each event table in both layouts: ROOT/flat/NAME/E.parquet and ROOT/sequential/NAME/E.parquet."""
    for event_file, table in tables.items():
        for fmt, data in (("flat", table), ("sequential", to_sequential(table))):
            path = root / fmt / name / f"{event_file}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(data, path, row_group_size=4)  # small row groups: users span them
    return DatasetLayout(root, name)


def train_rows(split: Split) -> dict[str, list]:
    return pq.read_table(split.train_path).to_pydict()


def collect_train(split: Split, columns=("user_idx", "item_idx", "timestamp"), batch_rows: int = 1 << 20):
    batches = list(split.iter_train(columns, batch_rows=batch_rows))
    return {c: np.concatenate([b[c] for b in batches]) for c in columns}, batches


@pytest.fixture
def final_layout(tmp_path: Path) -> DatasetLayout:
    return write_dataset(tmp_path / "data", "hand", {"listens": listens_table(FINAL_ROWS)})


def build(layout: DatasetLayout, tmp_path: Path, cache: str = "cache", **kwargs) -> Split:
    protocol = kwargs.pop("protocol", Protocol())
    return make_split(layout, protocol, cache_dir=tmp_path / cache, progress=False, **kwargs)


# --- protocol -----------------------------------------------------------------------------------------------


def test_protocol_windows_match_spec():
    assert Protocol().windows() == Windows(25_911_800, 25_913_600, 26_000_001)
    assert Protocol(mode="tune").windows() == Windows(25_823_600, 25_825_400, 25_911_800)
    assert Protocol().source_file() == "listens"
    assert Protocol(setup="like").source_file() == "likes"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"setup": "listens"}, "listen_plus, like"),
        ({"mode": "test"}, "final, tune"),
        ({"listen_plus_min_ratio": 200}, "0..159"),
        ({"day": 26_000_000}, "no train window"),
    ],
)
def test_protocol_refuses_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Protocol(**kwargs)


# --- the final split by hand --------------------------------------------------------------------------------


def test_final_split_by_hand(final_layout, tmp_path):
    split = build(final_layout, tmp_path)
    assert split.users.tolist() == FINAL_USERS and split.users.dtype == np.uint32
    assert split.items.tolist() == FINAL_ITEMS and split.items.dtype == np.uint32
    assert (split.num_users, split.num_items, split.num_train_events) == (3, 6, 6)
    targets = split.targets
    assert targets.user_idx.tolist() == [0, 2]  # user 2 has no target; user 3 is not ranked
    assert targets.offsets.tolist() == [0, 4, 7]
    assert targets.item_id.tolist() == FINAL_TARGET_IDS
    assert targets.item_idx.tolist() == [2, 0, -1, 0, 5, 4, 5]
    assert targets.item_idx.dtype == np.int64 and targets.item_id.dtype == np.uint32


def test_train_file_keeps_the_source_schema_and_order(final_layout, tmp_path):
    split = build(final_layout, tmp_path)
    assert pq.read_schema(split.train_path).remove_metadata() == S.flat_schema("listens")
    rows = train_rows(split)
    assert list(zip(rows["uid"], rows["timestamp"], rows["item_id"], rows["played_ratio_pct"], strict=True)) == [
        (1, 0, 10, 100),
        (1, 25_911_799, 11, 50),
        (2, 500, 20, 100),
        (2, 600, 13, 80),
        (5, 100, 52, 100),
        (5, 100, 50, 100),
    ]


def test_rows_out_of_time_order_are_sorted_stably(tmp_path):
    rows = [
        (1, 25_950_000, 12, 100),
        (1, 500, 11, 100),
        (1, 25_920_000, 13, 100),
        (1, 100, 10, 100),
        (1, 500, 14, 100),
        (2, 300, 10, 100),
    ]  # the official files are sorted; a hand-made one may not be
    layout = write_dataset(tmp_path / "data", "unsorted", {"listens": listens_table(rows)})
    split = build(layout, tmp_path)
    rows = train_rows(split)
    assert list(zip(rows["uid"], rows["timestamp"], rows["item_id"], strict=True)) == [
        (1, 100, 10),
        (1, 500, 11),
        (1, 500, 14),
        (2, 300, 10),
    ]  # 11 before 14: file order inside a tie
    assert split.targets.item_id.tolist() == [13, 12]


@pytest.mark.parametrize("batch_rows", [1, 3, 1 << 20])
def test_iter_train_streams_dense_ids_in_whole_users(final_layout, tmp_path, batch_rows):
    split = build(final_layout, tmp_path)
    columns = ("user_idx", "item_idx", "timestamp", "played_ratio_pct")
    train, batches = collect_train(split, columns, batch_rows)
    assert {c: train[c].tolist() for c in FINAL_TRAIN} == FINAL_TRAIN
    assert train["played_ratio_pct"].tolist() == [100, 50, 100, 80, 100, 100]
    assert all(b[c].dtype == np.int64 for b in batches for c in FINAL_TRAIN)
    firsts = [int(b["user_idx"][0]) for b in batches[1:]]
    lasts = [int(b["user_idx"][-1]) for b in batches[:-1]]
    assert all(f > last for f, last in zip(firsts, lasts, strict=True))  # no user is cut between two batches


def test_iter_train_gives_raw_columns_in_their_types(final_layout, tmp_path):
    split = build(final_layout, tmp_path)
    train, _ = collect_train(split, ("item_id", "user_idx"))
    assert train["item_id"].tolist() == [10, 11, 20, 13, 52, 50] and train["item_id"].dtype == np.uint32
    assert train["user_idx"].tolist() == FINAL_TRAIN["user_idx"]


def test_iter_train_refuses_an_unknown_column(final_layout, tmp_path):
    split = build(final_layout, tmp_path)
    with pytest.raises(ValueError, match="valid choices: user_idx, item_idx, uid"):
        next(split.iter_train(("user_idx", "event_type")))


def test_user_and_item_index_map_raw_ids(final_layout, tmp_path):
    split = build(final_layout, tmp_path)
    assert split.user_index([5, 1, 3, 999]).tolist() == [2, 0, -1, -1]
    assert split.item_index(np.array([52, 10, 14, 99, 0, 10_000], np.uint32)).tolist() == [
        5,
        0,
        -1,
        -1,
        -1,
        -1,
    ]


def test_dedup_targets_keeps_first_occurrences(final_layout, tmp_path):
    split = build(final_layout, tmp_path, protocol=Protocol(dedup_targets=True))
    assert split.targets.item_id.tolist() == [13, 10, 99, 52, 50]
    assert split.targets.offsets.tolist() == [0, 3, 5]
    assert split.num_train_events == 6


def test_tune_mode_boundaries(tmp_path):
    rows = [
        (1, 25_823_599, 10, 100),  # train: last second
        (1, 25_823_600, 11, 100),  # first gap: dropped
        (1, 25_825_395, 12, 100),  # first gap: dropped
        (1, 25_825_400, 13, 100),  # validation: first second
        (1, 25_911_799, 14, 100),  # validation: last second
        (1, 25_911_800, 15, 100),  # second gap: dropped
        (1, 26_000_000, 16, 100),
    ]  # test day: not part of a tuning split
    layout = write_dataset(tmp_path / "data", "tune", {"listens": listens_table(rows)})
    split = build(layout, tmp_path, protocol=Protocol(mode="tune"))
    assert split.items.tolist() == [10]
    assert split.targets.item_id.tolist() == [13, 14]
    assert split.targets.item_idx.tolist() == [-1, -1]


def test_like_setup_ignores_unlikes_and_listen_filter(tmp_path):
    likes = events_table("likes", [(1, 100, 10), (1, 200, 11), (2, 300, 10), (2, 25_950_000, 11)])
    unlikes = events_table("unlikes", [(1, 150, 10), (2, 400, 10)])  # would cancel the likes if they were read
    layout = write_dataset(tmp_path / "data", "likes", {"likes": likes, "unlikes": unlikes})
    split = build(layout, tmp_path, protocol=Protocol(setup="like"))
    assert split.users.tolist() == [1, 2]
    assert split.items.tolist() == [10, 11]
    assert split.num_train_events == 3
    assert split.targets.user_idx.tolist() == [1]
    assert split.targets.item_idx.tolist() == [1]
    assert pq.read_schema(split.train_path).names == list(S.flat_columns("likes"))


# --- flat and sequential inputs -----------------------------------------------------------------------------


@pytest.mark.parametrize("batch_rows", [1, 3, 1 << 20])
def test_flat_and_sequential_give_identical_splits(final_layout, tmp_path, batch_rows):
    splits = [
        build(final_layout, tmp_path, cache=f"cache-{fmt}-{batch_rows}", fmt=fmt, batch_rows=batch_rows)
        for fmt in ("flat", "sequential")
    ]
    flat, sequential = splits
    assert flat.key != sequential.key  # different files, different fingerprints
    assert flat.users.tolist() == sequential.users.tolist() == FINAL_USERS
    assert flat.items.tolist() == sequential.items.tolist() == FINAL_ITEMS
    for name in ("user_idx", "offsets", "item_idx", "item_id"):
        np.testing.assert_array_equal(getattr(flat.targets, name), getattr(sequential.targets, name))
    assert train_rows(flat) == train_rows(sequential)
    assert flat.describe()["num_targets"] == sequential.describe()["num_targets"] == 7


# --- the cache ----------------------------------------------------------------------------------------------


def test_cache_is_reused_without_rebuilding(final_layout, tmp_path):
    first = build(final_layout, tmp_path)
    meta = first.path / "meta.json"
    created, mtime = json.loads(meta.read_text())["created"], meta.stat().st_mtime_ns
    second = build(final_layout, tmp_path)
    assert second.path == first.path and second.key == first.key
    assert json.loads(meta.read_text())["created"] == created and meta.stat().st_mtime_ns == mtime
    assert first.path.parent.name == "cache" and first.path.name == first.key


def test_default_cache_dir_is_under_the_root(final_layout):
    split = make_split(final_layout, Protocol(), progress=False)
    assert split.path == final_layout.root / ".cache" / "splits" / split.key


def test_changed_data_or_protocol_changes_the_key(final_layout, tmp_path):
    before = build(final_layout, tmp_path)
    assert build(final_layout, tmp_path, protocol=Protocol(dedup_targets=True)).key != before.key
    write_dataset(final_layout.root, final_layout.size, {"listens": listens_table([*FINAL_ROWS, (6, 10, 10, 100)])})
    after = build(final_layout, tmp_path)
    assert after.key != before.key
    assert after.users.tolist() == [*FINAL_USERS, 6]


def test_half_written_cache_folder_is_rebuilt(final_layout, tmp_path):
    split = build(final_layout, tmp_path)
    (split.path / "meta.json").unlink()  # as if the build had died before its last write
    (split.path / "users.npy").write_bytes(b"truncated")
    rebuilt = build(final_layout, tmp_path)
    assert rebuilt.path == split.path
    assert rebuilt.users.tolist() == FINAL_USERS
    assert sorted(p.name for p in rebuilt.path.iterdir()) == [
        "cold_users.parquet",
        "items.npy",
        "meta.json",
        "targets.parquet",
        "train.parquet",
        "users.npy",
    ]


def test_load_split_reopens_a_folder_and_describes_it(final_layout, tmp_path):
    split = load_split(build(final_layout, tmp_path).path)
    assert split.targets.item_id.tolist() == FINAL_TARGET_IDS
    described = split.describe()
    assert {
        k: described[k]
        for k in (
            "setup",
            "mode",
            "num_train_events",
            "num_ranked_users",
            "num_train_items",
            "num_eval_users",
            "num_targets",
        )
    } == {
        "setup": "listen_plus",
        "mode": "final",
        "num_train_events": 6,
        "num_ranked_users": 3,
        "num_train_items": 6,
        "num_eval_users": 2,
        "num_targets": 7,
    }


def test_load_split_refuses_an_incomplete_folder(tmp_path):
    with pytest.raises(SplitError, match=r"no meta\.json"):
        load_split(tmp_path)


def test_progress_logs_a_closing_summary(final_layout, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="yambda_dl"):
        make_split(final_layout, Protocol(), cache_dir=tmp_path / "cache", progress=True)
    assert "6 train events, 3 ranked users, 6 train items, 2 evaluated users, 7 targets" in caplog.text


# --- export -------------------------------------------------------------------------------------------------


def test_export_writes_train_and_targets_rows(final_layout, tmp_path):
    split = build(final_layout, tmp_path)
    split.export(tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["targets.parquet", "train.parquet"]
    targets = pq.read_table(tmp_path / "out" / "targets.parquet").select(["uid", "item_id"])
    assert targets.schema.types == [pa.uint32(), pa.uint32()]
    assert list(zip(*targets.to_pydict().values(), strict=True)) == [
        (1, 13),
        (1, 10),
        (1, 99),
        (1, 10),
        (5, 52),
        (5, 50),
        (5, 52),
    ]
    train = pq.read_table(tmp_path / "out" / "train.parquet")
    assert train.num_rows == 6 and train.to_pydict() == train_rows(split)


# --- errors -------------------------------------------------------------------------------------------------


def test_missing_source_file_names_the_fix(tmp_path):
    with pytest.raises(DataFileError, match="yambda-data synth --preset nothing"):
        build(DatasetLayout(tmp_path, "nothing"), tmp_path)
    with pytest.raises(DataFileError, match="yambda-data download --size 50m"):
        build(DatasetLayout(tmp_path, "50m"), tmp_path, fmt="sequential")


@pytest.mark.parametrize(
    ("rows", "match"),
    [
        ([(1, 100, 10, 100), (1, 25_911_800, 10, 100)], r"empty target window \[25913600, 26000001\)"),
        ([(1, 100, 10, 100), (2, 25_950_000, 10, 100)], "no evaluated users"),
        ([(1, 100, 10, 20), (1, 25_950_000, 10, 100)], r"train window \[0, 25911800\) holds no Listen\+"),
    ],
)
def test_unusable_splits_are_refused(tmp_path, rows, match):
    layout = write_dataset(tmp_path / "data", "bad", {"listens": listens_table(rows)})
    with pytest.raises(SplitError, match=match) as err:
        build(layout, tmp_path)
    assert "listens.parquet" in str(err.value)
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())  # nothing half-made left


# --- real rows ----------------------------------------------------------------------------------------------


def real_listens() -> pa.Table:
    """The real multi_event rows' listens as a listens file (event_type dropped), in their stored order."""
    table = pq.read_table(REAL_ROWS)
    table = table.filter(pc.equal(table.column("event_type").cast(pa.string()), "listen"))
    return table.drop_columns(["event_type"]).cast(S.flat_schema("listens"))


def test_real_rows_without_evaluated_users_are_refused(tmp_path):
    # uid 30000's only Listen+ (item 7857368 at 25,999,045) is in the test day, but it has no train event
    layout = write_dataset(tmp_path / "data", "real", {"listens": real_listens()})
    with pytest.raises(SplitError, match="no evaluated users: the 1 Listen"):
        build(layout, tmp_path)


def test_real_rows_split_by_hand(tmp_path):
    real = real_listens()
    uid = real.column("uid").to_numpy()
    cut = int(np.searchsorted(uid, 30000))
    extra = listens_table([(100, 25_999_715, 8_326_270, 100)])  # one test-day Listen+ for uid 100, by hand
    layout = write_dataset(
        tmp_path / "data", "real", {"listens": pa.concat_tables([real.slice(0, cut), extra, real.slice(cut)])}
    )
    split = build(layout, tmp_path, batch_rows=3)
    # uid 100's Listen+ rows (ratio >= 50), all before the gap; its file rows are out of time order
    assert split.users.tolist() == [100]
    assert split.items.tolist() == [286361, 732449, 1441281, 5338928, 5527368, 8326270, 8437556]
    train, _ = collect_train(split)
    assert train["timestamp"].tolist() == [39420, 39420, 39420, 39625, 40110, 5520685, 5520685, 8720300]
    assert train["item_idx"].tolist() == [5, 5, 2, 0, 1, 3, 4, 6]  # ties keep file order: the duplicate first
    assert split.targets.user_idx.tolist() == [0]
    assert split.targets.item_id.tolist() == [8_326_270]
    assert split.targets.item_idx.tolist() == [5]
