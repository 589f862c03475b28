"""Per-user train sequences: the split's train events as one row per user of dense item indices, cached on disk.

Sequence models read users, not events. One streaming pass over Split.iter_train groups each batch's whole users
into rows (user_idx, item_idx list in time order) of a sequential Parquet file in the split's cache folder, created
once on first use (io.build_file_once: under a lock, written to a temporary and renamed; a complete file is never
replaced, so a run reading it is never disturbed by another that starts beside it) and reused afterwards. Memory:
one iter_train batch; the file holds every train event (or the last `max_events` of each user), never the memory.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from yambda_dl.data import io

if TYPE_CHECKING:
    from yambda_dl.data.split import Split

PAD = -1  # the item index of an empty slot in a padded sequence matrix
# Users per row group: the unit a reader shard loads; ~0.8 MB decoded at 200 events per user, so a shard that
# starts or ends inside a group reads little it does not need.
ROW_GROUP_USERS = 1024
SEQUENCES_SCHEMA = pa.schema(
    [
        pa.field("user_idx", pa.int32(), nullable=False),
        pa.field("item_idx", pa.list_(pa.field("item", pa.int32(), nullable=False)), nullable=False),
    ]
)
# with timestamps (what time-aware backbones such as HSTU read): seconds, int32 as everywhere in the release
TIMESTAMP_FIELD = pa.field("timestamp", pa.list_(pa.field("item", pa.int32(), nullable=False)), nullable=False)
SEQUENCE_COLUMNS = ("item_idx", "timestamp")


def sequences_path(split: Split, max_events: int | None = None, timestamps: bool = False) -> Path:
    """Where the split's sequences live: all train events, or only each user's last `max_events`; with timestamps
    in a file of their own (models that do not read them keep the smaller file)."""
    stem = "sequences_ts" if timestamps else "sequences"
    return split.path / (f"{stem}.parquet" if max_events is None else f"{stem}_last{max_events}.parquet")


def user_sequences(split: Split, max_events: int | None = None, timestamps: bool = False) -> Path:
    """The split's per-user train sequences as sequential Parquet, built on first use; returns its path.

    Rows are the ranked users in user_idx order (every one has a train event); item_idx lists are dense train item
    indices in (timestamp, file) order, cut to the last `max_events` when given (what SASRec reads: a smaller file).
    `timestamps`: a `timestamp` list column beside item_idx, aligned with it.
    """
    if max_events is not None and max_events < 1:
        raise ValueError(f"max_events must be >= 1 or None (all events), got {max_events}")
    path = sequences_path(split, max_events, timestamps)

    def complete(candidate: Path) -> bool:
        return _parquet_rows(candidate) == split.num_users

    if complete(path):
        return path
    # Several processes (DDP ranks, runs side by side) may ask at once: the first builds under the lock, the others
    # wait and then read its file
    with io.build_file_once(path, complete) as tmp:
        if tmp is not None:
            schema = SEQUENCES_SCHEMA.append(TIMESTAMP_FIELD) if timestamps else SEQUENCES_SCHEMA
            columns = ("user_idx", "item_idx", "timestamp") if timestamps else ("user_idx", "item_idx")
            with io.ParquetSink(tmp, schema, row_group_rows=ROW_GROUP_USERS) as sink:
                for batch in split.iter_train(columns=columns):
                    lists = [batch[name] for name in columns[1:]]
                    sink.write(_group_users(batch["user_idx"], lists, max_events, schema))
    return path


def _parquet_rows(path: Path) -> int | None:
    """The row count in a Parquet file's footer, None when it is missing or unreadable (a damaged cache file)."""
    if not path.is_file():
        return None
    try:
        return pq.ParquetFile(path).metadata.num_rows
    except (OSError, pa.ArrowException):
        return None


def _npy_shape(path: Path) -> tuple[int, ...] | None:
    """The shape of an int32 .npy file, None when it is missing, unreadable or of another type."""
    if not path.is_file():
        return None
    try:
        array = np.load(path, mmap_mode="r")
    except (OSError, ValueError):
        return None
    return array.shape if array.dtype == np.int32 else None


def _group_users(
    user_idx: np.ndarray, values: list[np.ndarray], max_events: int | None, schema: pa.Schema = SEQUENCES_SCHEMA
) -> pa.Table:
    """One row per user of a user-sorted batch of events, keeping each user's last `max_events` events; `values`
    are the per-event columns of `schema` after user_idx (item_idx, and timestamp when the schema has it)."""
    starts = np.flatnonzero(np.diff(user_idx, prepend=np.int64(-1)) != 0)
    ends = np.append(starts[1:], len(user_idx))
    users = user_idx[starts]
    if max_events is not None:
        lengths = ends - starts
        from_end = np.repeat(ends, lengths) - np.arange(len(user_idx)) - 1  # 0 for each user's newest event
        keep = from_end < max_events
        values = [column[keep] for column in values]
        kept = np.minimum(lengths, max_events)
        starts = np.concatenate([[0], np.cumsum(kept)[:-1]]).astype(np.int64)
        ends = starts + kept
    offsets = pa.array(np.append(starts, ends[-1] if len(ends) else 0).astype(np.int32))
    if len(values) > 1 and len(values[1]) and int(values[1].max()) > np.iinfo(np.int32).max:
        raise ValueError(f"timestamp {int(values[1].max())} does not fit the sequences' int32 seconds")
    lists = [
        pa.ListArray.from_arrays(offsets, pa.array(column.astype(np.int32)), type=schema[i + 1].type)
        for i, column in enumerate(values)
    ]
    return pa.Table.from_arrays([pa.array(users.astype(np.int32)), *lists], schema=schema)


def right_aligned(lists: pa.ListArray | pa.ChunkedArray, width: int) -> np.ndarray:
    """An (n, width) int32 matrix of each list's last `width` values at the right end, PAD before them.

    Right alignment puts every user's newest event in the last column, so "the last hidden state" and "positions
    counted from the newest event" need no per-row lengths. Memory: the matrix plus 16 bytes per listed value.
    """
    if isinstance(lists, pa.ChunkedArray):
        lists = lists.combine_chunks()
    offsets = lists.offsets.to_numpy().astype(np.int64)
    values = lists.values.to_numpy()[offsets[0] : offsets[-1]]  # a sliced array shares its parent's values
    offsets -= offsets[0]
    lengths = np.diff(offsets)
    out = np.full((len(lengths), width), PAD, dtype=np.int32)
    rows = np.repeat(np.arange(len(lengths)), lengths)
    from_end = np.repeat(offsets[1:], lengths) - np.arange(len(values)) - 1
    keep = from_end < width
    out[rows[keep], width - 1 - from_end[keep]] = values[keep]
    return out


def scoring_matrix(split: Split, max_len: int, source: Path | None = None, column: str = "item_idx") -> np.ndarray:
    """The last `max_len` train events of every ranked user, right-aligned, (num_users, max_len) int32, PAD-filled.

    What a sequence model scores from: the users' histories frozen at the end of train (docs/protocol.md). Cached as
    an .npy beside the sequences and memory-mapped: 4 * max_len bytes per user on disk, only touched rows in RAM.
    `source`: a sequences file with at least max_len events per user (say, the one training reads), so that one pass
    over the train events serves both; default: the last-max_len file, built if missing. `column="timestamp"`: the
    events' timestamps instead of their items (the source must have them).
    """
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    if column not in SEQUENCE_COLUMNS:
        raise ValueError(f"unknown sequence column {column!r}; valid choices: {', '.join(SEQUENCE_COLUMNS)}")
    path = split.path / (f"scoring_last{max_len}.npy" if column == "item_idx" else f"scoring_ts_last{max_len}.npy")

    def complete(candidate: Path) -> bool:
        return _npy_shape(candidate) == (split.num_users, max_len)

    if complete(path):
        return np.load(path, mmap_mode="r")
    sequences = source if source is not None else user_sequences(split, max_len, timestamps=column == "timestamp")
    with io.build_file_once(path, complete) as tmp:
        if tmp is not None:
            _write_scoring(split, Path(sequences), tmp, max_len, column)
    return np.load(path, mmap_mode="r")


def _write_scoring(split: Split, sequences: Path, tmp: Path, max_len: int, column: str) -> None:
    """Fill the (num_users, max_len) scoring matrix at `tmp` from a sequences file, row group by row group."""
    source = pq.ParquetFile(sequences)
    if column not in source.schema_arrow.names:
        raise ValueError(f"{sequences}: no {column!r} column (columns: {', '.join(source.schema_arrow.names)})")
    matrix = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.int32, shape=(split.num_users, max_len))
    row = 0
    for group in range(source.num_row_groups):
        table = source.read_row_group(group)
        users = table.column("user_idx").to_numpy()
        if not np.array_equal(users, np.arange(row, row + len(users))):
            raise ValueError(f"{sequences}: users are not 0..{split.num_users - 1} in order at row {row}")
        matrix[row : row + len(users)] = right_aligned(table.column(column), max_len)
        row += len(users)
    if row != split.num_users:
        raise ValueError(f"{sequences}: {row} users, the split has {split.num_users}; delete it to rebuild")
    matrix.flush()
    del matrix
