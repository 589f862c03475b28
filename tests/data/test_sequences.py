"""Per-user train sequences and scoring sequences, checked against hand-written histories."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from yambda_dl.data.layout import DatasetLayout
from yambda_dl.data.sequences import PAD, right_aligned, scoring_matrix, sequences_path, user_sequences
from yambda_dl.data.split import Protocol, make_split

from ..conftest import TEST_START, listen, write_flat

EARLY = 1_000_000
# raw uid -> items in listening order; user 3's first two share a timestamp (file order decides), user 4 has one
HISTORIES = {1: [30, 10, 20], 2: [20, 20, 50, 40, 10], 3: [10, 40, 30], 4: [50]}


@pytest.fixture
def split(tmp_path):
    layout = DatasetLayout(tmp_path / "yambda", "hand")
    rows = []
    for uid, items in HISTORIES.items():
        times = [EARLY + 5 * max(i - 1, 0) if uid == 3 else EARLY + 5 * i for i in range(len(items))]
        rows += [listen(uid, t, item) for t, item in zip(times, items, strict=True)]
        rows.append(listen(uid, TEST_START + 5, 10))
    rows.append(listen(2, EARLY + 3, 99, ratio=10))  # not Listen+: never in a sequence
    write_flat(layout, "listens", rows)
    return make_split(layout, Protocol(), cache_dir=tmp_path / "cache", progress=False)


def dense(split, raw_items):
    return split.item_index(raw_items).tolist()


def test_sequences_hold_every_train_event_in_time_order(split):
    table = pq.read_table(user_sequences(split))
    assert table.column("user_idx").to_pylist() == [0, 1, 2, 3]
    assert table.column("item_idx").to_pylist() == [dense(split, items) for items in HISTORIES.values()]


def test_max_events_keeps_the_newest(split):
    table = pq.read_table(user_sequences(split, max_events=2))
    assert table.column("item_idx").to_pylist() == [dense(split, items[-2:]) for items in HISTORIES.values()]
    assert sequences_path(split, 2) != sequences_path(split)


def test_built_once_atomically(split):
    path = user_sequences(split, 3)
    before = path.stat().st_mtime_ns
    assert user_sequences(split, 3) == path and path.stat().st_mtime_ns == before  # reused, not rebuilt
    assert not [p for p in split.path.iterdir() if p.name.startswith(".tmp")]


def test_right_aligned_pads_on_the_left():
    lists = pa.array([[1, 2, 3, 4], [5], [], [6, 7]], pa.list_(pa.int32()))
    expected = [[2, 3, 4], [PAD, PAD, 5], [PAD, PAD, PAD], [PAD, 6, 7]]
    assert right_aligned(lists, 3).tolist() == expected
    assert right_aligned(lists.slice(1, 3), 3).tolist() == expected[1:]  # a slice of a larger array


def test_scoring_matrix_is_each_users_last_events(split):
    matrix = scoring_matrix(split, 4)
    expected = [[PAD] * (4 - len(items[-4:])) + dense(split, items[-4:]) for items in HISTORIES.values()]
    assert matrix.tolist() == expected
    assert isinstance(matrix, np.memmap)  # mapped, not loaded
    assert scoring_matrix(split, 4).tolist() == expected  # reopened from its cache


def test_bad_lengths_are_refused(split):
    with pytest.raises(ValueError, match="max_events must be >= 1"):
        user_sequences(split, 0)
    with pytest.raises(ValueError, match="max_len must be >= 1"):
        scoring_matrix(split, 0)


def test_scoring_matrix_from_a_longer_sequences_file(split):
    matrix = scoring_matrix(split, 2, source=user_sequences(split, 3))  # the file SASRec's training reads
    assert matrix.tolist() == [[PAD] * (2 - len(items[-2:])) + dense(split, items[-2:]) for items in HISTORIES.values()]
    assert not sequences_path(split, 2).exists()  # no second pass over the train events
