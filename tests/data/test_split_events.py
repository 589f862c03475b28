"""What the split keeps of the target window beyond the paper's targets: timestamps and is_organic of every target,
the whole window stream (with dedup_targets), the events of users without train history, the train-side
is_organic filter (protocol.train_events) and the cold candidates (protocol.candidates), on a hand-written file."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from yambda_dl.data import schema as S
from yambda_dl.data.split import Protocol, SplitError, make_split

from ..conftest import write_audio
from .test_split import write_dataset

T0 = 25_913_600  # the final test day's first second
# (uid, timestamp, item_id, played_ratio_pct, is_organic)
ROWS = [
    (1, 0, 10, 100, 1),  # train, organic
    (1, 100, 11, 100, 0),  # train, recommendation-driven
    (1, T0, 10, 100, 0),  # target, recommended
    (1, T0 + 6_400, 12, 100, 1),  # target on an item without train events
    (1, T0 + 16_400, 10, 100, 1),  # target, a re-listen
    (2, 200, 11, 100, 1),  # user 2: ranked, no Listen+ target
    (2, T0 + 26_400, 11, 30, 1),  # not Listen+
    (7, T0 + 1_400, 10, 100, 1),  # user 7: no train event, acts during the test day
    (7, T0 + 2_400, 13, 100, 0),
    (8, 300, 14, 100, 0),  # user 8: only a recommendation-driven train event
    (8, T0 + 36_400, 14, 100, 1),
]


def table(rows) -> pa.Table:
    uid, ts, item, ratio, organic = (list(c) for c in zip(*rows, strict=True))
    return pa.table(
        {
            "uid": uid,
            "timestamp": ts,
            "item_id": item,
            "is_organic": organic,
            "played_ratio_pct": ratio,
            "track_length_seconds": [200] * len(uid),
        },
        schema=S.flat_schema("listens"),
    )


@pytest.fixture
def layout(tmp_path):
    layout = write_dataset(tmp_path / "data", "hand", {"listens": table(ROWS)})
    write_audio(layout.root / "embeddings.parquet", [10, 12, 13, 99])
    return layout


def split_of(layout, tmp_path, fmt="flat", **protocol):
    return make_split(layout, Protocol(**protocol), fmt=fmt, cache_dir=tmp_path / "cache", progress=False)


def per_user(events, name):
    values = getattr(events, name)
    return [values[a:b].tolist() for a, b in zip(events.offsets[:-1], events.offsets[1:], strict=True)]


@pytest.mark.parametrize("fmt", ["flat", "sequential"])
def test_targets_carry_time_and_is_organic(layout, tmp_path, fmt):
    split = split_of(layout, tmp_path, fmt)
    assert split.users.tolist() == [1, 2, 8] and split.items.tolist() == [10, 11, 14]
    targets = split.targets
    assert targets.user_idx.tolist() == [0, 2] and targets.uid.tolist() == [1, 8]
    assert per_user(targets, "item_id") == [[10, 12, 10], [14]]
    assert per_user(targets, "item_idx") == [[0, -1, 0], [2]]
    assert per_user(targets, "timestamp") == [[T0, T0 + 6_400, T0 + 16_400], [T0 + 36_400]]
    assert per_user(targets, "is_organic") == [[False, True, True], [True]]
    assert split.window_events is split.targets  # without dedup the targets are the whole stream


def test_dedup_keeps_the_whole_stream_for_state(layout, tmp_path):
    split = split_of(layout, tmp_path, dedup_targets=True)
    assert per_user(split.targets, "item_id") == [[10, 12], [14]]
    assert per_user(split.window_events, "item_id") == [[10, 12, 10], [14]]
    assert per_user(split.window_events, "timestamp")[0] == [T0, T0 + 6_400, T0 + 16_400]
    assert split.describe()["num_window_events"] == 4 and split.describe()["num_targets"] == 3


def test_users_without_train_history_keep_their_day(layout, tmp_path):
    cold = split_of(layout, tmp_path).cold_user_events
    assert cold.uid.tolist() == [7] and cold.user_idx.tolist() == [-1]
    assert per_user(cold, "item_id") == [[10, 13]]
    assert per_user(cold, "item_idx") == [[0, -1]]
    assert per_user(cold, "is_organic") == [[True, False]]


@pytest.mark.parametrize(
    ("train_events", "users", "items", "target_users", "cold_users"),
    [
        ("organic", [1, 2], [10, 11], [1], [7, 8]),  # user 8's only train event is recommended: now cold
        ("recommended", [1, 8], [11, 14], [1, 8], [7]),
    ],
)
def test_train_events_filter_the_train_side_only(
    layout, tmp_path, train_events, users, items, target_users, cold_users
):
    split = split_of(layout, tmp_path, train_events=train_events)
    assert split.users.tolist() == users and split.items.tolist() == items
    assert split.targets.uid.tolist() == target_users
    assert split.cold_user_events.uid.tolist() == cold_users
    organic = np.concatenate([b["is_organic"] for b in split.iter_train(("is_organic",))])
    assert organic.tolist() == [int(train_events == "organic")] * 2
    assert split.key != split_of(layout, tmp_path).key


def test_cold_candidates_follow_the_train_items(layout, tmp_path):
    split = split_of(layout, tmp_path, candidates="train_and_cold")
    assert split.num_items == 3
    assert split.cold_items.tolist() == [12, 13, 99]  # a vector, no train event
    assert split.num_candidates == 6
    assert per_user(split.targets, "item_idx") == [[0, 3, 0], [2]]  # 12 is the first cold candidate
    assert per_user(split.cold_user_events, "item_idx") == [[0, 4]]
    assert split.candidate_index(np.array([11, 99, 5])).tolist() == [1, 5, -1]
    plain = split_of(layout, tmp_path)
    assert plain.path == split.path  # one cache folder for both candidate sets
    assert plain.num_candidates == plain.num_items and len(plain.cold_items) == 0


def test_bad_protocol_values_name_the_choices():
    with pytest.raises(ValueError, match="train_events 'bots'; valid choices: all, organic, recommended"):
        Protocol(train_events="bots")
    with pytest.raises(ValueError, match="candidates 'all'; valid choices: train, train_and_cold"):
        Protocol(candidates="all")


def test_cold_candidates_need_the_embeddings_file(layout, tmp_path):
    (layout.root / "embeddings.parquet").unlink()
    with pytest.raises(SplitError, match=r"embeddings\.parquet, which does not exist.*candidates=train$"):
        split_of(layout, tmp_path, candidates="train_and_cold")
    assert not (tmp_path / "cache").exists()  # refused before any build
