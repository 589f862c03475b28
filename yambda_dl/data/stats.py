"""Dataset statistics (docs/data.md), streamed through the files, and a table beside the real Yambda's.

Memory: one user batch of io.iter_user_batches, plus per-item counters (idcounts.IdCounts: dense by raw item id up to
the largest id seen, at most idcounts.DENSE_LIMIT entries, about 75 MB each for Yambda's 9.4M ids; ids above the
limit cost 16 bytes per distinct id, so one corrupted id never decides the memory), a track-length histogram (the
same counter, by length in seconds) and per-user counts (one number per user).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl
import pyarrow as pa

from yambda_dl.data import io
from yambda_dl.data import protocol as P
from yambda_dl.data import schema as S
from yambda_dl.data.idcounts import IdCounts, quantile_of_counts
from yambda_dl.data.layout import DatasetLayout

TEST_START = P.TEST_START  # re-exported: older code reads the names from here
LISTEN_PLUS = P.LISTEN_PLUS_MIN_RATIO
# "popular now" at the end of the final train window: its last RECENT_DAYS days' RECENT_TOP most played Listen+ items,
# what a recency-weighted popularity model ranks first; the test targets on them tell organic from recommended plays
RECENT_DAYS = 7
RECENT_TOP = 100

# The real Yambda's figures (docs/data.md; 50M where the value depends on the size)
SPEC_TARGETS: dict[str, float] = {
    "listens.per_user_median": 3_000,
    "listens.per_user_p90": 13_000,
    "listens.per_user_mean": 4_650,
    "users_without_listens": 0.08,
    "likes.per_user_median": 45,
    "likes.per_user_p90": 269,
    "dislikes.per_user_median": 4,
    "unlikes.per_user_median": 15,
    "undislikes.per_user_median": 3,
    "likes_per_1000_listens": 19,
    "dislikes_per_1000_listens": 2.3,
    "active_days_mean": 86,
    "equal_timestamp_share": 0.12,
    "last_day_listen_plus_users": 0.46,
    "last_day_listen_plus_per_user": 34,
    "items_heard_once": 1 / 3,
    "top1pct_listen_share": 0.5,
    "top_item_user_reach": 0.5,
    "played_ratio.zero": 0.074,
    "played_ratio.0_4": 0.24,
    "played_ratio.95_100": 0.57,
    "played_ratio.101_159": 0.005,
    "listen_plus_share": 0.63,
    "listen_plus_share.recommended": 0.68,
    "listen_plus_share.organic": 0.59,
    "track_length.median": 200,
    "track_length.p90": 275,
    "recommended_share.listens": 0.49,
    "recommended_share.likes": 0.42,
    "recommended_share.dislikes": 0.48,
    "recommended_share.unlikes": 0.05,
    "recommended_share.undislikes": 0.10,
    "multi_event.duplicate_share": 0.005,
    "catalogue.items_per_artist": 7,
    "catalogue.albums_per_item": 1.1,
    "catalogue.embedding_coverage": 0.82,
}


@dataclass
class _FileTally:
    """Running totals of one event file."""

    rows: int = 0
    recommended: int = 0
    items: IdCounts = field(default_factory=IdCounts)  # events per raw item id (bounded: see idcounts)
    per_user: list[np.ndarray] = field(default_factory=list)  # events per user, batch by batch


def compute_stats(layout: DatasetLayout, fmt: str = "flat") -> dict:
    """The statistics of docs/data.md that the event files can tell, streamed user batch by batch.

    Files that are absent are skipped; at least one event file must exist. Returns {name: value}.
    """
    present = [f for f in S.EVENT_FILES if layout.has(f, fmt)]
    if not present:
        layout.require(S.EVENT_FILES, fmt)  # raises, naming the missing files and how to get them
    stats: dict = {}
    for event_file in present:
        tally = _FileTally()
        extra = _ListenTally() if event_file == "listens" else None
        dups = _DuplicateTally() if event_file == "multi_event" else None
        for table in io.iter_user_batches(layout.event_path(event_file, fmt), event_file, fmt):
            _tally_batch(tally, table)
            if extra is not None:
                extra.add(io.sort_by_user_time(table))  # its active days and equal-time pairs need time order
            if dups is not None:
                dups.add(table)
        stats.update(_file_stats(event_file, tally))
        if extra is not None:
            stats.update(extra.result(tally))
            stats.update(_cold_vector_stats(layout, extra.cold_targets()))
        if dups is not None:
            stats.update(dups.result())
    stats.update(_cross_file_stats(stats))
    stats.update(_catalogue_stats(layout))
    return stats


def _catalogue_stats(layout: DatasetLayout) -> dict:
    """Items per artist, albums per item and embedding coverage, from the mappings and embeddings when present.

    The catalogue is the items of the artist mapping (every track has an artist). Memory: the two id columns of one
    mapping (8 bytes per row, ~75 MB at Yambda); the embeddings file is counted from its footer, never read.
    """
    out: dict = {}
    if layout.artist_mapping_path.is_file():
        artists = io.read_table(layout.artist_mapping_path, S.ARTIST_MAPPING_SCHEMA)
        catalogue = len(np.unique(artists.column("item_id").to_numpy()))
        out["catalogue.items_per_artist"] = catalogue / max(1, len(np.unique(artists.column("artist_id").to_numpy())))
        if layout.embeddings_path.is_file():
            out["catalogue.embedding_coverage"] = io.open_parquet(layout.embeddings_path).metadata.num_rows / catalogue
    if layout.album_mapping_path.is_file():
        albums = io.read_table(layout.album_mapping_path, S.ALBUM_MAPPING_SCHEMA, ["item_id"]).column("item_id")
        out["catalogue.albums_per_item"] = len(albums) / max(1, len(np.unique(albums.to_numpy())))
    return out


def _cold_vector_stats(layout: DatasetLayout, cold_targets: np.ndarray) -> dict:
    """Share of the cold test targets whose item has an audio vector (what content models can rank), when the
    embeddings file is there; reads its item_id column only (4 bytes per row)."""
    if not len(cold_targets) or not layout.embeddings_path.is_file():
        return {}
    ids = io.read_table(layout.embeddings_path, S.EMBEDDINGS_SCHEMA, ["item_id"]).column("item_id").to_numpy()
    return {"test_targets.cold_with_vector": float(np.isin(cold_targets, ids).mean())}


def _tally_batch(tally: _FileTally, table: pa.Table) -> None:
    uid = table.column("uid").to_numpy()
    tally.rows += table.num_rows
    tally.recommended += int((table.column("is_organic").to_numpy() == 0).sum())
    tally.items.add(table.column("item_id").to_numpy())
    tally.per_user.append(np.diff(_user_starts(uid)))


def _user_starts(uid: np.ndarray) -> np.ndarray:
    """Start index of each user's rows in a uid-sorted array, plus len(uid)."""
    change = np.flatnonzero(uid[1:] != uid[:-1]) + 1
    return np.concatenate([[0], change, [len(uid)]]) if len(uid) else np.zeros(1, np.int64)


def _file_stats(event_file: str, tally: _FileTally) -> dict:
    per_user = np.concatenate(tally.per_user) if tally.per_user else np.zeros(0, np.int64)
    out = {
        f"{event_file}.rows": tally.rows,
        f"{event_file}.users": len(per_user),
        f"{event_file}.items": len(tally.items.ids()),
        f"recommended_share.{event_file}": tally.recommended / max(tally.rows, 1),
    }
    if len(per_user):
        out[f"{event_file}.per_user_median"] = float(np.median(per_user))
        out[f"{event_file}.per_user_p90"] = float(np.quantile(per_user, 0.9))
        out[f"{event_file}.per_user_mean"] = float(per_user.mean())
    if event_file == "listens":
        out.update(_popularity_stats(tally.items.counts()))
    return out


def _popularity_stats(item_counts: np.ndarray) -> dict:
    """Share of items heard once, and the share of listens that the top 1% of the heard items carry."""
    heard = np.sort(item_counts[item_counts > 0])[::-1]  # counts of the items heard at least once
    if not len(heard):
        return {}
    top = max(1, len(heard) // 100)
    return {
        "items_heard_once": float((heard == 1).mean()),
        "top1pct_listen_share": float(heard[:top].sum() / heard.sum()),
    }


@dataclass
class _ListenTally:
    """Listen-only statistics: played ratio, Listen+, lengths, sessions in time, the test day, item reach."""

    ratio_hist: np.ndarray = field(default_factory=lambda: np.zeros(S.MAX_PLAYED_RATIO_PCT + 1, np.int64))
    plus: np.ndarray = field(default_factory=lambda: np.zeros((2, 2), np.int64))  # [is_organic, is_plus]
    lengths: IdCounts = field(default_factory=IdCounts)  # listens per track length in seconds
    equal_pairs: int = 0
    pairs: int = 0
    active_days: list[np.ndarray] = field(default_factory=list)
    last_day_plus: list[np.ndarray] = field(default_factory=list)
    reach: IdCounts = field(default_factory=IdCounts)  # distinct users per raw item id
    # the final split's Listen+ train items and the test-day Listen+ targets of users with a train event (one day)
    train_items: IdCounts = field(default_factory=lambda: IdCounts(presence=True))
    targets: list[np.ndarray] = field(default_factory=list)
    targets_organic: list[np.ndarray] = field(default_factory=list)  # one bool per target (one day of events)
    recent: IdCounts = field(default_factory=IdCounts)  # Listen+ plays per item in the train window's last days

    def add(self, table: pa.Table) -> None:
        """Tally a batch of whole users sorted by (uid, timestamp) (io.sort_by_user_time)."""
        uid = table.column("uid").to_numpy()
        ts = table.column("timestamp").to_numpy().astype(np.int64)
        ratio = table.column("played_ratio_pct").to_numpy()
        organic = table.column("is_organic").to_numpy().astype(np.int64)
        plus = ratio >= LISTEN_PLUS
        self.ratio_hist += np.bincount(ratio, minlength=len(self.ratio_hist))
        self.plus += np.bincount(organic * 2 + plus, minlength=4).reshape(2, 2)
        self.lengths.add(table.column("track_length_seconds").to_numpy())
        same_user = uid[1:] == uid[:-1]
        self.pairs += int(same_user.sum())
        self.equal_pairs += int((same_user & (ts[1:] == ts[:-1])).sum())
        starts = _user_starts(uid)
        self.active_days.append(_distinct_per_user(uid, (P.LAST_TIMESTAMP - 1 - ts) // P.DAY, starts))
        in_last_day = plus & (ts >= TEST_START)
        self.last_day_plus.append(
            np.add.reduceat(in_last_day.astype(np.int64), starts[:-1]) if len(uid) else np.zeros(0, np.int64)
        )
        self.reach.add(_distinct_pairs(uid, table.column("item_id").to_numpy().astype(np.int64)))
        item = table.column("item_id").to_numpy()
        train = plus & (ts < TEST_START - P.GAP)  # the final split's train window (docs/protocol.md)
        self.train_items.add(item[train])
        self.recent.add(item[train & (ts >= TEST_START - P.GAP - RECENT_DAYS * P.DAY)])
        if len(uid):
            ranked = np.repeat(np.add.reduceat(train.astype(np.int64), starts[:-1]) > 0, np.diff(starts))
            self.targets.append(item[in_last_day & ranked])
            self.targets_organic.append(organic[in_last_day & ranked] == 1)

    def cold_targets(self) -> np.ndarray:
        """Raw item ids of the final test day's Listen+ targets (of users with a train event) whose item has no
        Listen+ train event: the targets that only a content model can rank."""
        targets = np.concatenate(self.targets) if self.targets else np.zeros(0, np.int64)
        return targets[~np.isin(targets, self.train_items.ids())]

    def _organic_targets(self) -> dict:
        """The recommendation-driven share of the final test day's Listen+ targets, and the share of organic and of
        recommended targets on an item that is popular now (RECENT_TOP of the train window's last RECENT_DAYS):
        how far the recommender's plays follow the charts, which a popularity model can see."""
        item = np.concatenate(self.targets) if self.targets else np.zeros(0, np.int64)
        if not len(item):
            return {}
        organic = np.concatenate(self.targets_organic)
        ids, counts = self.recent.nonzero()
        top = ids[np.argsort(-counts, kind="stable")[:RECENT_TOP]]
        on_top = np.isin(item, top)
        out = {"test_targets.recommended_share": float((~organic).mean())}
        for name, kind in (("organic", organic), ("recommended", ~organic)):
            if kind.any():
                out[f"test_targets.recent_top{RECENT_TOP}.{name}"] = float(on_top[kind].mean())
        return out

    def result(self, tally: _FileTally) -> dict:
        total = max(int(self.ratio_hist.sum()), 1)
        users = max(sum(len(a) for a in self.active_days), 1)
        last = np.concatenate(self.last_day_plus) if self.last_day_plus else np.zeros(0, np.int64)
        reach = self.reach.counts()
        out = {
            "played_ratio.zero": self.ratio_hist[0] / total,
            "played_ratio.0_4": self.ratio_hist[:5].sum() / total,
            "played_ratio.95_100": self.ratio_hist[95:101].sum() / total,
            "played_ratio.101_159": self.ratio_hist[101:].sum() / total,
            "listen_plus_share": self.ratio_hist[LISTEN_PLUS:].sum() / total,
            "listen_plus_share.recommended": self.plus[0, 1] / max(self.plus[0].sum(), 1),
            "listen_plus_share.organic": self.plus[1, 1] / max(self.plus[1].sum(), 1),
            "track_length.median": quantile_of_counts(*self.lengths.nonzero(), 0.5),
            "track_length.p90": quantile_of_counts(*self.lengths.nonzero(), 0.9),
            "equal_timestamp_share": self.equal_pairs / max(self.pairs, 1),
            "active_days_mean": float(np.concatenate(self.active_days).mean()) if self.active_days else 0.0,
            "last_day_listen_plus_users_of_listeners": float((last > 0).sum() / users),
            "last_day_listen_plus_count": int((last > 0).sum()),
            "last_day_listen_plus_per_user": float(last[last > 0].mean()) if (last > 0).any() else 0.0,
            "top_item_user_reach": float(reach.max() / users) if len(reach) else 0.0,
            "test_targets.cold_item_share": len(self.cold_targets()) / max(sum(len(t) for t in self.targets), 1),
            **self._organic_targets(),
        }
        return {k: float(v) if isinstance(v, np.floating) else v for k, v in out.items()}


def _distinct_per_user(uid: np.ndarray, values: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Number of distinct values per user, for values sorted within each user (the days of sorted times)."""
    new = np.ones(len(uid), bool)
    new[1:] = (uid[1:] != uid[:-1]) | (values[1:] != values[:-1])
    return np.add.reduceat(new.astype(np.int64), starts[:-1]) if len(uid) else np.zeros(0, np.int64)


def _distinct_pairs(uid: np.ndarray, item: np.ndarray) -> np.ndarray:
    """The item of each distinct (uid, item) pair, in no particular order.

    polars' hash-based unique: 8x faster than np.unique's sort on a 2M-event batch (measured on synthetic `small`).
    """
    key = (uid.astype(np.uint64) << np.uint64(32)) | item.astype(np.uint64)
    distinct = pl.Series(key, dtype=pl.UInt64).unique().to_numpy()
    return (distinct & np.uint64(0xFFFFFFFF)).astype(np.int64)


@dataclass
class _DuplicateTally:
    """Rows of multi_event that repeat an earlier row exactly (all columns equal)."""

    duplicates: int = 0
    rows: int = 0

    def add(self, table: pa.Table) -> None:
        """Count the batch's rows beyond the first of each distinct row (a batch holds whole users, and equal rows
        share a uid, so no duplicate spans two batches). polars hashes whole rows, nulls and event_type strings
        included: 4x faster than a lexsort of every column (measured on synthetic `small`)."""
        frame = pl.from_arrow(table)
        self.duplicates += frame.height - frame.n_unique()
        self.rows += table.num_rows

    def result(self) -> dict:
        return {"multi_event.duplicate_share": self.duplicates / max(self.rows, 1)}


def _cross_file_stats(stats: dict) -> dict:
    """Statistics that combine files: feedback per 1000 listens, users without listens, test-day share."""
    out = {}
    listens = stats.get("listens.rows", 0)
    for kind in ("likes", "dislikes"):
        if listens and f"{kind}.rows" in stats:
            out[f"{kind}_per_1000_listens"] = 1000 * stats[f"{kind}.rows"] / listens
    all_users = stats.get("multi_event.users")
    if all_users and "listens.users" in stats:
        out["users_without_listens"] = 1 - stats["listens.users"] / all_users
    if all_users and "last_day_listen_plus_count" in stats:
        out["last_day_listen_plus_users"] = stats["last_day_listen_plus_count"] / all_users
    return out


def format_stats(stats: dict) -> str:
    """A Markdown table: each statistic, this dataset's value and the real Yambda's (docs/data.md)."""
    lines = ["| statistic | this dataset | Yambda (docs/data.md) |", "|---|---|---|"]
    for name in sorted(stats):
        target = SPEC_TARGETS.get(name)
        lines.append(f"| {name} | {_fmt(stats[name])} | {'' if target is None else _fmt(target)} |")
    return "\n".join(lines)


def _fmt(value: float) -> str:
    if isinstance(value, (int, np.integer)) or (float(value).is_integer() and abs(value) >= 10):
        return f"{int(value):,}"
    return f"{value:.3g}" if abs(value) < 10 else f"{value:,.1f}"
