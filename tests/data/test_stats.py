"""compute_stats and format_stats on a hand-made three-user dataset whose answers are worked out below."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from yambda_dl.data import schema as S
from yambda_dl.data.io import DataFileError
from yambda_dl.data.layout import DatasetLayout
from yambda_dl.data.protocol import DAY, GAP
from yambda_dl.data.stats import RECENT_DAYS, RECENT_TOP, SPEC_TARGETS, compute_stats, format_stats
from yambda_dl.data.synthetic import generate

LAST_DAY = 25_913_600

# user 1: three listens on one day, two of them at the same second; a like, then an unlike of item 10.
# user 2: two listens on the test day (one Listen+), a dislike. User 3: no listens, one like.
LISTENS = [  # uid, timestamp, item_id, is_organic, played_ratio_pct, track_length_seconds
    (1, 100, 10, 1, 100, 200),
    (1, 100, 20, 0, 0, 100),
    (1, 200, 10, 1, 60, 200),
    (2, LAST_DAY, 10, 0, 100, 200),
    (2, LAST_DAY + 100, 30, 0, 30, 300),
]
LIKES = [(1, 300, 10, 1), (3, 400, 20, 0)]
DISLIKES = [(2, LAST_DAY + 200, 30, 1)]
UNLIKES = [(1, 500, 10, 1)]
UNDISLIKES: list[tuple] = []


def _write(layout: DatasetLayout, event_file: str, rows: list[tuple]) -> None:
    schema = S.flat_schema(event_file)
    columns = list(zip(*rows, strict=True)) if rows else [[] for _ in schema]
    arrays = [pa.array(list(c), f.type) for c, f in zip(columns, schema, strict=True)]
    path = layout.event_path(event_file, "flat")
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_arrays(arrays, schema=schema), path)


def _multi_event_rows() -> list[tuple]:
    rows = [(*r, "listen") for r in LISTENS] + [LISTENS[3] + ("listen",)]  # one exact duplicate row
    for kind, part in (("like", LIKES), ("dislike", DISLIKES), ("unlike", UNLIKES)):
        rows += [(*r, None, None, kind) for r in part]
    return sorted(rows, key=lambda r: (r[0], r[1]))


@pytest.fixture
def hand(tmp_path: Path) -> DatasetLayout:
    layout = DatasetLayout(tmp_path, "hand")
    for event_file, rows in (
        ("listens", LISTENS),
        ("likes", LIKES),
        ("dislikes", DISLIKES),
        ("unlikes", UNLIKES),
        ("undislikes", UNDISLIKES),
    ):
        _write(layout, event_file, rows)
    schema = S.flat_schema("multi_event")
    columns = list(zip(*_multi_event_rows(), strict=True))
    arrays = [
        pa.array(list(c), pa.string() if f.name == "event_type" else f.type)
        for c, f in zip(columns, schema, strict=True)
    ]
    path = layout.event_path("multi_event", "flat")
    pq.write_table(pa.Table.from_arrays(arrays, names=schema.names), path)
    return layout


EXPECTED = {
    "listens.rows": 5,
    "listens.users": 2,
    "listens.items": 3,
    "listens.per_user_median": 2.5,  # 3 and 2 listens
    "multi_event.rows": 10,  # 5 listens + 1 duplicate + 2 likes + 1 dislike + 1 unlike
    "multi_event.users": 3,
    "undislikes.rows": 0,
    "users_without_listens": 1 / 3,  # user 3
    "likes_per_1000_listens": 400.0,  # 2 likes / 5 listens
    "dislikes_per_1000_listens": 200.0,
    "played_ratio.zero": 1 / 5,
    "played_ratio.0_4": 1 / 5,
    "played_ratio.95_100": 2 / 5,
    "played_ratio.101_159": 0.0,
    "listen_plus_share": 3 / 5,  # 100, 60, 100
    "listen_plus_share.recommended": 1 / 3,  # 0, 100, 30
    "listen_plus_share.organic": 1.0,  # 100, 60
    "track_length.median": 200.0,  # 100 200 200 200 300
    "track_length.p90": 300.0,  # the lowest value with 90% of the events at or below it
    "equal_timestamp_share": 1 / 3,  # consecutive pairs: (100, 100) (100, 200) (LAST_DAY, LAST_DAY + 100)
    "last_day_listen_plus_users": 1 / 3,  # user 2, of 3 users
    "last_day_listen_plus_per_user": 1.0,
    "items_heard_once": 2 / 3,  # items 20 and 30 of 10, 20, 30
    "top1pct_listen_share": 3 / 5,  # the top item (10) of the 3 carries 3 of the 5 listens
    "top_item_user_reach": 1.0,  # item 10 reaches both listening users
    "active_days_mean": 1.0,
    "recommended_share.listens": 3 / 5,
    "recommended_share.likes": 1 / 2,
    "recommended_share.dislikes": 0.0,
    "multi_event.duplicate_share": 1 / 10,
}


def test_compute_stats_matches_hand_computed_values(hand: DatasetLayout) -> None:
    stats = compute_stats(hand)
    assert {k: stats[k] for k in EXPECTED} == pytest.approx(EXPECTED)


def test_format_stats_puts_the_spec_target_beside_each_value(hand: DatasetLayout) -> None:
    table = format_stats(compute_stats(hand))
    lines = table.splitlines()
    assert lines[0] == "| statistic | this dataset | Yambda (docs/data.md) |"
    assert "| listen_plus_share | 0.6 | 0.63 |" in lines
    assert "| listens.rows | 5 |  |" in lines
    names = {line.split(" | ")[0].removeprefix("| ") for line in lines[2:]}
    # the hand data has no undislikes, and no mappings or embeddings (see the catalogue test)
    catalogue = {name for name in SPEC_TARGETS if name.startswith("catalogue.")}
    assert set(SPEC_TARGETS) - names == {"undislikes.per_user_median"} | catalogue


def test_flat_and_sequential_give_the_same_stats(tmp_path: Path) -> None:
    generate("tiny", tmp_path, progress=False)
    layout = DatasetLayout(tmp_path, "tiny")
    assert compute_stats(layout, "sequential") == pytest.approx(compute_stats(layout, "flat"))


def test_missing_files_raise_with_how_to_get_them(tmp_path: Path) -> None:
    with pytest.raises(DataFileError, match="yambda-data synth --preset nothing"):
        compute_stats(DatasetLayout(tmp_path, "nothing"))


def test_catalogue_stats_from_mappings_and_embeddings(hand: DatasetLayout) -> None:
    # 4 items by 2 artists (2 each); 5 album rows over those 4 items; 3 of the 4 items embedded
    pq.write_table(
        pa.table({"artist_id": [1, 1, 2, 2], "item_id": [10, 11, 12, 13]}, S.ARTIST_MAPPING_SCHEMA),
        hand.artist_mapping_path,
    )
    pq.write_table(
        pa.table({"album_id": [5, 6, 6, 7, 8], "item_id": [10, 10, 11, 12, 13]}, S.ALBUM_MAPPING_SCHEMA),
        hand.album_mapping_path,
    )
    vectors = [[1.0] * 128] * 3
    pq.write_table(
        pa.table({"item_id": [10, 11, 12], "embed": vectors, "normalized_embed": vectors}, S.EMBEDDINGS_SCHEMA),
        hand.embeddings_path,
    )
    stats = compute_stats(hand)
    assert stats["catalogue.items_per_artist"] == 2.0
    assert stats["catalogue.albums_per_item"] == 5 / 4
    assert stats["catalogue.embedding_coverage"] == 3 / 4


def test_share_of_test_targets_on_items_without_train_events(tmp_path: Path) -> None:
    """User 1 (a Listen+ train event on 10) has Listen+ test targets 10 and 40, and a 30% listen of 50 (no target);
    user 2's only train listen is a skip, so they are not ranked and their test listen of 60 is no target: 1 of the
    2 targets (40) is on an item without a train event, and 40 has a vector."""
    layout = DatasetLayout(tmp_path, "hand")
    _write(
        layout,
        "listens",
        [
            (1, 100, 10, 1, 100, 200),
            (1, LAST_DAY, 10, 1, 100, 200),
            (1, LAST_DAY + 5, 40, 1, 90, 200),
            (1, LAST_DAY + 10, 50, 1, 30, 200),
            (2, 100, 20, 1, 0, 200),
            (2, LAST_DAY, 60, 1, 100, 200),
        ],
    )
    stats = compute_stats(layout)
    assert stats["test_targets.cold_item_share"] == 0.5
    assert "test_targets.cold_with_vector" not in stats  # no embeddings file
    vectors = pa.array([[0.0] * S.EMBEDDING_DIM], pa.list_(pa.float32()))
    pq.write_table(
        pa.table({"item_id": pa.array([40], pa.uint32()), "embed": vectors, "normalized_embed": vectors}),
        layout.embeddings_path,
    )
    assert compute_stats(layout)["test_targets.cold_with_vector"] == 1.0


def test_organic_and_recommended_test_targets_and_what_is_popular_now(tmp_path: Path, hand: DatasetLayout) -> None:
    """In the train window's last week (RECENT_DAYS), item 10 is played 5 times and items 1000..1100 twice each: the
    top 100 are 10 and 1000..1098; item 20 (once that week) and 30 (10 times, but a month before) are not on it.
    User 1's Listen+ test targets: organic 20, 30, 10, recommended 10, 1000; a 10% listen (1001) is no target, nor
    user 2's play (no train event). So 2 of 5 targets are recommended, 1 of 3 organic and 2 of 2 recommended ones
    are on a recent top-100 item."""
    assert (RECENT_DAYS, RECENT_TOP) == (7, 100)  # the figures below are worked out for these
    train_end = LAST_DAY - GAP
    recent = train_end - 3 * DAY
    rows = [(1, train_end - 30 * DAY + 5 * i, 30, 1, 100, 200) for i in range(10)]
    rows += [(1, recent + 5 * i, 10, 0, 100, 200) for i in range(5)] + [(1, recent + 50, 20, 1, 100, 200)]
    rows += [(1, recent + 100 + 10 * i + 5 * j, 1000 + i, 0, 100, 200) for i in range(101) for j in range(2)]
    organic, recommended = [20, 30, 10], [10, 1000]
    rows += [(1, LAST_DAY + 5 * i, item, 1, 100, 200) for i, item in enumerate(organic)]
    rows += [(1, LAST_DAY + 50 + 5 * i, item, 0, 95, 200) for i, item in enumerate(recommended)]
    rows += [(1, LAST_DAY + 100, 1001, 0, 10, 200), (2, LAST_DAY, 10, 0, 100, 200)]
    layout = DatasetLayout(tmp_path / "popular", "hand")
    _write(layout, "listens", sorted(rows))
    stats = compute_stats(layout)
    assert stats["test_targets.recommended_share"] == 2 / 5
    assert stats["test_targets.recent_top100.organic"] == 1 / 3
    assert stats["test_targets.recent_top100.recommended"] == 1.0
    # no test targets at all (the hand dataset's test-day listener has no train event): no shares of nothing
    assert not [name for name in compute_stats(hand) if name.startswith(("test_targets.rec", "test_targets.recent"))]
