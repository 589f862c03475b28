"""The Global Temporal Split (docs/protocol.md): train events, per-user targets, ranked users, dense id maps.

One streaming pass over the setup's event file (flat or sequential) writes the train events to a cache folder
named by a content hash, so every model of a run, and every later run on the same data, reads the same split.
Memory grows with one batch, the train-item flags (one byte per id below idcounts.DENSE_LIMIT, 16 bytes per
distinct train item above it: never with one bad id), the ranked users (their count) and the targets (one day of
events), never with the input or the train set.

The cache folder is created once under a lock (io.build_once) and never replaced while it is complete, so runs
started side by side on a fresh root all read the one folder the first of them built. When it is opened, its files
are checked against meta.json (sizes and counts); a damaged folder is rebuilt by make_split.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import shutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pyarrow as pa

from yambda_dl.data import io
from yambda_dl.data import protocol as P
from yambda_dl.data import schema as S
from yambda_dl.data.embeddings import cold_item_ids
from yambda_dl.data.idcounts import DENSE_LIMIT, IdCounts
from yambda_dl.data.layout import DatasetLayout, SideFiles, default_cache_dir
from yambda_dl.utils.progress import Progress

__all__ = ["Protocol", "Split", "SplitError", "Targets", "Windows", "default_cache_dir", "load_split", "make_split"]

logger = logging.getLogger(__name__)

SETUP_SOURCES = {"listen_plus": "listens", "like": "likes"}  # setup -> the event file it is built from
MODES = ("final", "tune")
# which train events a split keeps, by is_organic (1 organic, 0 recommendation-driven); targets are never filtered
TRAIN_EVENTS = {"all": None, "organic": 1, "recommended": 0}
# the items ranked: the paper's train items, or those plus the cold items (an audio vector, no train event)
CANDIDATES = ("train", "train_and_cold")
# Bump when a cache folder's files or their meaning change: old folders then get other keys.
# 2: targets carry timestamp and is_organic; the window events of cold users and (with dedup) of ranked users kept
FORMAT_VERSION = 2
KEY_CHARS = 16  # 64 bits of sha256: collisions are out of reach for the handful of splits a root holds


META_FILE = "meta.json"
# what meta.json's "files" sizes; window.parquet only with dedup_targets (else the targets are the whole stream)
DATA_FILES = ("train.parquet", "targets.parquet", "cold_users.parquet", "users.npy", "items.npy")
WINDOW_FILE = "window.parquet"
# targets, the window stream and cold users' events: (uid, time) order, one row per event of the target window
TARGETS_SCHEMA = pa.schema(
    [
        pa.field("uid", pa.uint32(), nullable=False),
        pa.field("item_id", pa.uint32(), nullable=False),
        pa.field("timestamp", pa.uint32(), nullable=False),
        pa.field("is_organic", pa.uint8(), nullable=False),
    ]
)
DENSE_COLUMNS = ("user_idx", "item_idx")


class SplitError(ValueError):
    """A split cannot be built or opened; the message names the file, the window or the value, and the fix."""


@dataclass(frozen=True)
class Windows:
    """Half-open windows in seconds: train [0, train_end), targets [target_start, target_end)."""

    train_end: int
    target_start: int
    target_end: int


@dataclass(frozen=True)
class Protocol:
    """The protocol's constants (data/protocol.py, docs/protocol.md); each field is a config key, so a sweep never
    edits code."""

    setup: str = "listen_plus"
    mode: str = "final"
    last_timestamp: int = P.LAST_TIMESTAMP
    day: int = P.DAY
    gap: int = P.GAP
    # Listen+ is played_ratio_pct >= this: the official code's >=, not the card's "over 50%"
    listen_plus_min_ratio: int = P.LISTEN_PLUS_MIN_RATIO
    dedup_targets: bool = False  # duplicates are real re-listens and count in |T_u| (docs/protocol.md)
    train_events: str = "all"  # all | organic | recommended: the train events kept, by is_organic
    # train | train_and_cold: what is ranked. Not part of the cache key: the cold items come from the embeddings
    # file when the split is opened, so both choices share one folder
    candidates: str = "train"

    def __post_init__(self) -> None:
        if self.setup not in SETUP_SOURCES:
            raise ValueError(f"unknown split setup {self.setup!r}; valid choices: {', '.join(SETUP_SOURCES)}")
        if self.mode not in MODES:
            raise ValueError(f"unknown split mode {self.mode!r}; valid choices: {', '.join(MODES)}")
        if self.train_events not in TRAIN_EVENTS:
            raise ValueError(
                f"unknown protocol.train_events {self.train_events!r}; valid choices: {', '.join(TRAIN_EVENTS)}"
            )
        if self.candidates not in CANDIDATES:
            raise ValueError(f"unknown protocol.candidates {self.candidates!r}; valid choices: {', '.join(CANDIDATES)}")
        if not 0 <= self.listen_plus_min_ratio <= S.MAX_PLAYED_RATIO_PCT:
            raise ValueError(
                f"listen_plus_min_ratio={self.listen_plus_min_ratio} is outside the played_ratio_pct "
                f"range 0..{S.MAX_PLAYED_RATIO_PCT}"
            )
        if self.day <= 0 or self.gap < 0 or self.windows().train_end <= 0:
            raise ValueError(
                f"day={self.day}, gap={self.gap}, last_timestamp={self.last_timestamp} leave no train window "
                f"in {self.mode!r} mode; need day > 0, gap >= 0 and a positive train end {self.windows()}"
            )

    @property
    def test_start(self) -> int:
        return self.last_timestamp - self.day

    def windows(self) -> Windows:
        """The train and target windows of this mode; the final test day includes last_timestamp itself."""
        if self.mode == "final":
            return Windows(self.test_start - self.gap, self.test_start, self.last_timestamp + 1)
        validation_end = self.test_start - self.gap
        validation_start = validation_end - self.day
        return Windows(validation_start - self.gap, validation_start, validation_end)

    def source_file(self) -> str:
        """The event file this setup reads: listens (Listen+) or likes (Like)."""
        return SETUP_SOURCES[self.setup]


@dataclass(frozen=True)
class Targets:
    """Events of the target window as ragged lists per user: user i's are item_idx[offsets[i]:offsets[i + 1]].

    The evaluated targets (split.targets), the whole window stream of ranked users (split.window_events) and the
    window events of users without train history (split.cold_user_events, user_idx -1) all take this form.
    Plain arrays, not the CSR type (data/csr.py): a target list keeps duplicates, time order and -1 for items outside
    the candidates, none of which a sparse matrix holds; the evaluator reads the arrays as they are.
    """

    user_idx: np.ndarray  # int64 (n_users,) ascending dense indices of the users; -1 for users without train events
    offsets: np.ndarray  # int64 (n_users + 1,)
    item_idx: np.ndarray  # int64 (n_events,) dense candidate index, -1 for items not ranked (they still count)
    item_id: np.ndarray  # uint32 (n_events,) raw ids, in time order within a user
    timestamp: np.ndarray  # int64 (n_events,) seconds, ascending within a user
    is_organic: np.ndarray  # bool (n_events,): False = recommendation-driven
    uid: np.ndarray  # uint32 (n_users,) raw user ids

    @property
    def num_users(self) -> int:
        return len(self.user_idx)

    @property
    def num_targets(self) -> int:
        return len(self.item_idx)


# --- content hash -------------------------------------------------------------------------------------------


def source_fingerprint(path: Path) -> str:
    """A sha256 of the Parquet footer (rows, per-row-group statistics and sizes) and the file size.

    Content-derived and cheap: it changes when the data changes, and reads only the footer, never the data.
    """
    metadata = io.open_parquet(path).metadata.to_dict()
    blob = json.dumps({"bytes": Path(path).stat().st_size, "footer": metadata}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def split_key(protocol: Protocol, fingerprint: str) -> str:
    """The short hash naming a split's cache folder: protocol, source fingerprint, format version."""
    # candidates is applied when the folder is opened (the cold items come from the embeddings file, not the source)
    stored = {k: v for k, v in asdict(protocol).items() if k != "candidates"}
    blob = json.dumps({"protocol": stored, "source": fingerprint, "version": FORMAT_VERSION}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:KEY_CHARS]


# --- pass 1: route each batch's events ----------------------------------------------------------------------


def _setup_mask(table: pa.Table, protocol: Protocol) -> np.ndarray:
    """Which rows are events of the setup: Listen+ listens, or every like as it is."""
    if protocol.setup == "listen_plus":
        return table.column("played_ratio_pct").to_numpy() >= protocol.listen_plus_min_ratio
    return np.ones(table.num_rows, dtype=bool)


def _train_events_mask(table: pa.Table, protocol: Protocol) -> np.ndarray | bool:
    """Which rows the train side keeps by is_organic (protocol.train_events); True keeps every row."""
    organic = TRAIN_EVENTS[protocol.train_events]
    return True if organic is None else table.column("is_organic").to_numpy() == organic


def _route(table: pa.Table, protocol: Protocol, windows: Windows) -> tuple[pa.Table, pa.Table]:
    """(train rows, target-window rows) of a batch's setup events, sorted by (uid, timestamp); rest dropped.

    Filtering the setup and the windows in one mask copies the batch once (its train share), not twice.
    """
    table = io.sort_by_user_time(table)  # sorting commutes with the filters: both are stable
    ts = table.column("timestamp").to_numpy()
    setup = _setup_mask(table, protocol)
    train = setup & (ts < windows.train_end) & _train_events_mask(table, protocol)
    target = setup & (ts >= windows.target_start) & (ts < windows.target_end)
    return table.filter(pa.array(train)), table.filter(pa.array(target))


def _first_of_runs(sorted_values: np.ndarray) -> np.ndarray:
    """Boolean mask of the first element of each run of equal values."""
    first = np.ones(len(sorted_values), dtype=bool)
    first[1:] = sorted_values[1:] != sorted_values[:-1]
    return first


def _window_rows(window: pa.Table, rows: np.ndarray) -> pa.Table:
    """The TARGETS_SCHEMA columns of a batch's target-window events at `rows` (a bool mask)."""
    return pa.table(
        {name: window.column(name).to_numpy()[rows] for name in TARGETS_SCHEMA.names}, schema=TARGETS_SCHEMA
    )


@dataclass
class _Accumulator:
    """What pass 1 keeps between batches: every field here is bounded as its comment says."""

    item_seen: IdCounts = field(default_factory=lambda: IdCounts(presence=True))  # see idcounts: bounded
    ranked: list[np.ndarray] = field(default_factory=list)  # 4 bytes per ranked user
    # 13 bytes per setup event of the target window (one day of events), ranked users' and cold users' apart
    window: list[pa.Table] = field(default_factory=list)
    cold_users: list[pa.Table] = field(default_factory=list)
    train_events: int = 0
    window_events: int = 0  # setup events in the target window, ranked users or not: tells the errors apart

    def add(self, train: pa.Table, window: pa.Table) -> None:
        """Mark the batch's train items, its ranked users, and the window events of ranked and of cold users."""
        uid = train.column("uid").to_numpy()
        self.item_seen.add(train.column("item_id").to_numpy())
        ranked = uid[_first_of_runs(uid)]  # the batch holds whole users, uid-sorted: so is the concatenation
        of_ranked = np.isin(window.column("uid").to_numpy(), ranked)  # cold users are never evaluated
        self.ranked.append(ranked)
        self.window.append(_window_rows(window, of_ranked))
        self.cold_users.append(_window_rows(window, ~of_ranked))
        self.train_events += len(uid)
        self.window_events += window.num_rows

    def users(self) -> np.ndarray:
        return np.concatenate(self.ranked).astype(np.uint32) if self.ranked else np.zeros(0, np.uint32)

    def items(self) -> np.ndarray:
        return self.item_seen.ids().astype(np.uint32)

    def window_stream(self) -> pa.Table:
        """Every target-window event of ranked users, in (uid, time) order."""
        return pa.concat_tables([TARGETS_SCHEMA.empty_table(), *self.window])

    def cold_user_stream(self) -> pa.Table:
        """Target-window events of users without a train event, in (uid, time) order."""
        return pa.concat_tables([TARGETS_SCHEMA.empty_table(), *self.cold_users])


def _first_plays(events: pa.Table) -> pa.Table:
    """Each (user, item) pair's first event, time order kept (protocol.dedup_targets)."""
    pair = (events.column("uid").to_numpy().astype(np.uint64) << np.uint64(32)) | events.column(
        "item_id"
    ).to_numpy().astype(np.uint64)
    # return_index gives each pair's first position; sorting restores time order
    return events.take(np.sort(np.unique(pair, return_index=True)[1]))


def _stream_source(
    source: Path, fmt: str, protocol: Protocol, train_path: Path, batch_rows: int, progress: Progress
) -> _Accumulator:
    """Pass 1: stream the source whole-user batch by batch, writing train rows and keeping the small parts."""
    event_file = protocol.source_file()
    windows = protocol.windows()
    acc = _Accumulator()
    with io.ParquetSink(train_path, S.flat_schema(event_file)) as sink:
        for batch in io.iter_user_batches(source, event_file, fmt, batch_rows=batch_rows):
            train, window = _route(batch, protocol, windows)
            sink.write(train)
            acc.add(train, window)
            progress.update(batch.num_rows)
    return acc


def _check_split(source: Path, protocol: Protocol, acc: _Accumulator, num_targets: int) -> None:
    """Refuse a split that cannot be evaluated, naming the file, the window and what to check."""
    windows = protocol.windows()
    what = "Listen+ listen" if protocol.setup == "listen_plus" else "like"
    if acc.train_events == 0:
        raise SplitError(
            f"{source}: the train window [0, {windows.train_end}) holds no {what}; check the file's "
            f"timestamps (the Yambda axis is 0..{S.LAST_TIMESTAMP}) and the protocol's last_timestamp, "
            f"day and gap"
        )
    if acc.window_events == 0:
        raise SplitError(
            f"{source}: empty target window [{windows.target_start}, {windows.target_end}) in "
            f"{protocol.mode!r} mode: no {what} falls in it; check the file's timestamps (the Yambda "
            f"axis is 0..{S.LAST_TIMESTAMP}) and the protocol's last_timestamp, day and gap"
        )
    if num_targets == 0:
        raise SplitError(
            f"{source}: no evaluated users: the {acc.window_events} {what}(s) of the target window "
            f"[{windows.target_start}, {windows.target_end}) all belong to users without a train event"
        )


# --- the cache folder ---------------------------------------------------------------------------------------


def _write_meta(folder: Path, meta: dict) -> None:
    """meta.json is written last: its presence marks the folder complete."""
    with io.atomic_path(folder / META_FILE) as tmp:
        tmp.write_text(json.dumps(meta, indent=2, sort_keys=True))


def _build(
    folder: Path,
    source: Path,
    fmt: str,
    protocol: Protocol,
    key: str,
    fingerprint: str,
    batch_rows: int,
    progress: Progress,
) -> dict:
    """Fill an empty folder with the split's files; returns its meta."""
    acc = _stream_source(source, fmt, protocol, folder / "train.parquet", batch_rows, progress)
    users, items, window, cold_users = acc.users(), acc.items(), acc.window_stream(), acc.cold_user_stream()
    targets = _first_plays(window) if protocol.dedup_targets else window
    _check_split(source, protocol, acc, targets.num_rows)
    np.save(folder / "users.npy", users)
    np.save(folder / "items.npy", items)
    io.write_parquet(targets, folder / "targets.parquet")
    io.write_parquet(cold_users, folder / "cold_users.parquet")
    if protocol.dedup_targets:  # the state a streaming evaluation moves takes in every event, not first plays
        io.write_parquet(window, folder / WINDOW_FILE)
    counts = {
        "num_train_events": acc.train_events,
        "num_ranked_users": len(users),
        "num_train_items": len(items),
        "num_eval_users": int(_first_of_runs(targets.column("uid").to_numpy()).sum()),
        "num_targets": targets.num_rows,
        "num_window_events": window.num_rows,  # of ranked users; with dedup_targets more than num_targets
        "num_cold_users": int(_first_of_runs(cold_users.column("uid").to_numpy()).sum()),
        "num_cold_user_events": cold_users.num_rows,
        "num_target_window_events": acc.window_events,
    }
    meta = {
        "format_version": FORMAT_VERSION,
        "key": key,
        "protocol": asdict(protocol),
        "windows": asdict(protocol.windows()),
        "counts": counts,
        # checked when opened
        "files": {name: (folder / name).stat().st_size for name in _data_files(protocol.dedup_targets)},
        "source": {
            "path": str(source),
            "event_file": protocol.source_file(),
            "fmt": fmt,
            "fingerprint": fingerprint,
        },
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "build_seconds": round(progress.elapsed, 3),
    }
    _write_meta(folder, meta)
    return meta


def _data_files(dedup_targets: bool) -> tuple[str, ...]:
    return (*DATA_FILES, WINDOW_FILE) if dedup_targets else DATA_FILES


def split_problem(folder: Path) -> str | None:
    """Why `folder` is not a complete, intact split folder, or None when it is.

    Cheap (no data read): meta.json readable and of this format version; every data file present with the size
    meta.json recorded; users.npy, items.npy, train.parquet and targets.parquet hold as many rows as meta counts
    (npy headers and Parquet footers only). Catches killed builds, truncated or deleted files and edited metas.
    """
    folder = Path(folder)
    meta_path = folder / META_FILE
    if not meta_path.is_file():
        return f"no {META_FILE} (an unfinished build)"
    try:
        meta = json.loads(meta_path.read_text())
        counts = meta["counts"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        return f"{meta_path} is unreadable: {err}"
    if meta.get("format_version") != FORMAT_VERSION:
        return f"{meta_path}: split format version {meta.get('format_version')!r}, this code reads {FORMAT_VERSION}"
    for name in _data_files(bool(meta.get("protocol", {}).get("dedup_targets"))):
        if not (folder / name).is_file():
            return f"missing {folder / name}"
    for name, size in meta.get("files", {}).items():  # folders of older builds have no sizes: counts still checked
        actual = (folder / name).stat().st_size
        if actual != size:
            return f"{folder / name} has {actual} bytes, meta.json recorded {size} (truncated or replaced)"
    try:
        rows = {
            "num_ranked_users": len(np.load(folder / "users.npy", mmap_mode="r")),
            "num_train_items": len(np.load(folder / "items.npy", mmap_mode="r")),
            "num_train_events": io.open_parquet(folder / "train.parquet").metadata.num_rows,
            "num_targets": io.open_parquet(folder / "targets.parquet").metadata.num_rows,
            "num_cold_user_events": io.open_parquet(folder / "cold_users.parquet").metadata.num_rows,
        }
    except (OSError, ValueError) as err:
        return f"unreadable file in {folder}: {err}"
    for name, found in rows.items():
        if counts.get(name) != found:
            return f"meta.json counts {name}={counts.get(name)} but the files hold {found}"
    return None


def _is_intact(folder: Path) -> bool:
    problem = split_problem(folder)
    if problem is not None and (folder / META_FILE).is_file():  # an unfinished build is expected after a kill
        logger.warning("cached split %s is damaged (%s); building it again", folder, problem)
    return problem is None


def make_split(
    layout: DatasetLayout,
    protocol: Protocol,
    fmt: str = "flat",
    cache_dir: Path | None = None,
    batch_rows: int = io.DEFAULT_BATCH_ROWS,
    progress: bool = True,
) -> Split:
    """The split of `layout`'s setup file under `protocol`, from the cache when built before, else built now.

    The cache folder is cache_dir/KEY (default ROOT/.cache/splits/KEY). It is created once across processes
    (io.build_once: built in a temporary folder under a lock, then renamed), so runs started together on a fresh
    root wait for one build and share it, a killed run never leaves a folder that looks complete, and a complete
    folder is never replaced under a reader. A cached folder that fails split_problem is rebuilt.
    """
    S.check_format(fmt)
    source = layout.require([protocol.source_file()], fmt)[0]
    embeddings = layout.side_files.embeddings
    if protocol.candidates == "train_and_cold" and not embeddings.is_file():  # before the build, not after it
        raise SplitError(
            f"protocol.candidates=train_and_cold ranks the items of {embeddings}, which does not exist; download it "
            f"with `yambda-data download --embeddings`, point data.side_files.embeddings at it, or use "
            f"protocol.candidates=train"
        )
    fingerprint = source_fingerprint(source)
    key = split_key(protocol, fingerprint)
    folder = Path(cache_dir if cache_dir is not None else default_cache_dir(layout.root)) / key
    if split_problem(folder) is None:  # complete: reuse without the lock or reading the data
        return load_split(folder, layout.side_files, protocol.candidates)
    with io.build_once(folder, _is_intact) as tmp:
        if tmp is not None:
            total = io.open_parquet(source).metadata.num_rows if fmt == "flat" else None  # sequential: rows = users
            bar = Progress(f"split {protocol.setup}/{protocol.mode}", total=total, unit="events", enabled=progress)
            counts = _build(tmp, source, fmt, protocol, key, fingerprint, batch_rows, bar)["counts"]
            bar.summary(
                f"{counts['num_train_events']:,} train events, {counts['num_ranked_users']:,} ranked users, "
                f"{counts['num_train_items']:,} train items, {counts['num_eval_users']:,} evaluated users, "
                f"{counts['num_targets']:,} targets -> {folder}"
            )
    return load_split(folder, layout.side_files, protocol.candidates)


def load_split(path: Path, side_files: SideFiles | None = None, candidates: str = "train") -> Split:
    """Reopen a complete split folder written by make_split; `side_files`: the dataset's item side files (default:
    those at the root that holds the split's source); `candidates`: train | train_and_cold (Protocol.candidates)."""
    return Split(Path(path), side_files, candidates)


# --- the handle ---------------------------------------------------------------------------------------------


def _dense_index(sorted_ids: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Position of each id in an ascending id array, -1 where absent (int64)."""
    ids = np.asarray(ids)
    if not len(sorted_ids):
        return np.full(ids.shape, -1, dtype=np.int64)
    pos = np.searchsorted(sorted_ids, ids)
    found = sorted_ids[np.minimum(pos, len(sorted_ids) - 1)] == ids
    return np.where(found, pos, -1).astype(np.int64)


def _targets_from_rows(rows: pa.Table, users: np.ndarray, item_index: Callable[[np.ndarray], np.ndarray]) -> Targets:
    """Ragged per-user events from TARGETS_SCHEMA rows in (uid, time) order; user_idx -1 for users not in `users`."""
    uid = rows.column("uid").to_numpy()
    item_id = rows.column("item_id").to_numpy()
    starts = np.flatnonzero(_first_of_runs(uid)) if len(uid) else np.zeros(0, np.int64)
    return Targets(
        user_idx=_dense_index(users, uid[starts]),
        offsets=np.append(starts, len(uid)).astype(np.int64),
        item_idx=item_index(item_id),
        item_id=item_id.astype(np.uint32),
        timestamp=rows.column("timestamp").to_numpy().astype(np.int64),
        is_organic=rows.column("is_organic").to_numpy().astype(bool),
        uid=uid[starts].astype(np.uint32),
    )


class Split:
    """A handle on a cached split folder: users, items and targets are loaded, train events are streamed."""

    def __init__(self, path: Path, side_files: SideFiles | None = None, candidates: str = "train"):
        meta_path = Path(path) / META_FILE
        if not meta_path.is_file():
            raise SplitError(f"{path} is not a complete split folder (no {META_FILE}); build it with make_split")
        problem = split_problem(Path(path))
        if problem is not None:
            raise SplitError(
                f"{path} is not a usable split folder: {problem}; make_split (or `yambda-data split`) rebuilds it "
                f"when it is under its cache folder, or delete the folder and build it again"
            )
        meta = json.loads(meta_path.read_text())
        self.path = Path(path)
        self.meta = meta
        # the embeddings and artist / album maps a model reaches through views, never through a path of its own
        self.side_files = side_files or SideFiles.of_event_file(meta["source"]["path"])
        self.protocol = Protocol(**{**meta["protocol"], "candidates": candidates})
        self.key: str = meta["key"]
        self.users: np.ndarray = np.load(self.path / "users.npy")  # uint32, ascending; user_idx = position
        self.items: np.ndarray = np.load(self.path / "items.npy")  # uint32, ascending; item_idx = position
        self.num_users, self.num_items = len(self.users), len(self.items)
        self.num_train_events: int = meta["counts"]["num_train_events"]
        self.train_path = self.path / "train.parquet"
        # the cold candidates (train_and_cold): items with an audio vector and no train event, ranked after the
        # train items (candidate index num_items + position); read from the embeddings file, 4 bytes per item
        self.cold_items: np.ndarray = (
            cold_item_ids(self.side_files.embeddings, self.items)
            if candidates == "train_and_cold"
            else np.zeros(0, np.uint32)
        )
        self.num_candidates = self.num_items + len(self.cold_items)
        self.targets = self._events("targets.parquet")

    def _events(self, name: str) -> Targets:
        return _targets_from_rows(io.read_table(self.path / name, TARGETS_SCHEMA), self.users, self.candidate_index)

    @cached_property
    def window_events(self) -> Targets:
        """Every setup event of the target window of the ranked users, never deduplicated: the stream a user state
        takes in during the day (the targets themselves unless protocol.dedup_targets)."""
        return self._events(WINDOW_FILE) if self.protocol.dedup_targets else self.targets

    @cached_property
    def cold_user_events(self) -> Targets:
        """Target-window events of users without a train event (never evaluated by the paper's protocol);
        user_idx is -1, raw ids in `uid`."""
        return self._events("cold_users.parquet")

    def __repr__(self) -> str:
        return (
            f"Split({self.protocol.setup}/{self.protocol.mode}, {self.num_users:,} users, {self.num_items:,} "
            f"items, {self.num_train_events:,} train events, {self.targets.num_users:,} evaluated, "
            f"{self.path})"
        )

    @cached_property
    def _item_lookup(self) -> np.ndarray:
        """Raw item id -> item_idx (-1 elsewhere) for ids below idcounts.DENSE_LIMIT: 4 bytes per id up to the max
        train id (~38 MB at Yambda), never more than DENSE_LIMIT entries; larger ids go through a binary search."""
        dense = self.items[self.items < DENSE_LIMIT]
        lookup = np.full(int(dense[-1]) + 1 if len(dense) else 0, -1, dtype=np.int32)
        lookup[dense] = np.arange(len(dense), dtype=np.int32)  # items ascend: the dense ones come first
        return lookup

    def user_index(self, uids: np.ndarray | Sequence[int]) -> np.ndarray:
        """Raw uids -> dense user_idx (int64), -1 where the user is not ranked."""
        return _dense_index(self.users, np.asarray(uids))

    def item_index(self, item_ids: np.ndarray | Sequence[int]) -> np.ndarray:
        """Raw item ids -> dense item_idx (int64), -1 where the item is not a train item."""
        return _dense_index(self.items, np.asarray(item_ids))

    def candidate_index(self, item_ids: np.ndarray | Sequence[int]) -> np.ndarray:
        """Raw item ids -> candidate index (int64): item_idx for train items, num_items + position for cold
        candidates (protocol.candidates=train_and_cold), -1 for the rest."""
        index = self.item_index(item_ids)
        if len(self.cold_items):
            cold = _dense_index(self.cold_items, np.asarray(item_ids)[index < 0])
            index[index < 0] = np.where(cold >= 0, cold + self.num_items, -1)
        return index

    def iter_train(
        self,
        columns: Sequence[str] = ("user_idx", "item_idx", "timestamp"),
        batch_rows: int = io.DEFAULT_BATCH_ROWS,
    ) -> Iterator[dict[str, np.ndarray]]:
        """Stream train events sorted by (user_idx, timestamp), whole users per batch, with dense ids.

        user_idx, item_idx and timestamp come as int64; any other raw column of the source file in its type.
        Memory: one batch plus the item lookup array.
        """
        event_file = self.protocol.source_file()
        raw_columns = list(S.flat_columns(event_file))
        unknown = [c for c in columns if c not in DENSE_COLUMNS and c not in raw_columns]
        if unknown:
            raise ValueError(
                f"unknown train column(s) {unknown}; valid choices: {', '.join((*DENSE_COLUMNS, *raw_columns))}"
            )
        read = [c for c in raw_columns if c in columns or (c == "item_id" and "item_idx" in columns)]
        # the train file is ours, cut from a source that was checked: no second grid warning for it
        for batch in io.iter_user_batches(self.train_path, event_file, "flat", read, batch_rows, check_grid=False):
            yield {name: self._train_column(batch, name) for name in columns}

    def _train_column(self, batch: pa.Table, name: str) -> np.ndarray:
        if name == "user_idx":
            return np.searchsorted(self.users, batch.column("uid").to_numpy()).astype(np.int64)
        if name == "item_idx":
            item_id = batch.column("item_id").to_numpy()
            lookup = self._item_lookup
            if not len(item_id) or int(item_id.max()) < len(lookup):  # every train id of real data: the fast path
                return lookup[item_id].astype(np.int64)
            inside = item_id < len(lookup)
            out = _dense_index(self.items, item_id)
            out[inside] = lookup[item_id[inside]]
            return out
        values = batch.column(name).to_numpy()
        return values.astype(np.int64) if name == "timestamp" else values

    def export(self, out_dir: Path) -> None:
        """Write OUT/train.parquet (raw train events) and OUT/targets.parquet (uid, item_id, timestamp, is_organic
        per target)."""
        out_dir = Path(out_dir)
        for name in ("train.parquet", "targets.parquet"):
            with io.atomic_path(out_dir / name) as tmp:
                shutil.copyfile(self.path / name, tmp)

    def describe(self) -> dict:
        """Counts and provenance for summaries and run manifests."""
        return {
            "key": self.key,
            "setup": self.protocol.setup,
            "mode": self.protocol.mode,
            "windows": asdict(self.protocol.windows()),
            "source": self.meta["source"]["path"],
            "fmt": self.meta["source"]["fmt"],
            "train_events": self.protocol.train_events,
            "candidates": self.protocol.candidates,
            "num_cold_candidates": len(self.cold_items),
            **self.meta["counts"],
        }
