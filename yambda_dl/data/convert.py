"""Convert Yambda event files between the flat layout (a row per event) and the sequential one (per uid).

Both directions stream by user batch through io.iter_user_batches, so memory is one batch of `batch_rows`
events plus one user's history (held back at a batch boundary), never the whole file. The lists of a
sequential row keep the flat file's stored order, so flat -> sequential -> flat gives back the same rows in
the same order: exact duplicates and the order inside equal timestamps are kept, and multi_event keeps
its nulls and its dictionary event_type.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from yambda_dl.data import io
from yambda_dl.data import schema as S
from yambda_dl.data.layout import DatasetLayout
from yambda_dl.utils.progress import Progress

# List offsets are int32 (schema.sequential_schema uses pa.list_), so a batch must hold fewer than 2**31
# events; a batch is `batch_rows` plus at most one user's history, hence the margin.
MAX_BATCH_ROWS = 1 << 30


@dataclass(frozen=True)
class ConvertSummary:
    """What one conversion wrote: events, users, wall time and the output file."""

    rows: int
    users: int
    seconds: float
    output: Path


def flat_to_sequential(
    src: Path | str,
    dst: Path | str,
    event_file: str,
    batch_rows: int = io.DEFAULT_BATCH_ROWS,
    progress: bool = True,
) -> ConvertSummary:
    """Write a flat event file as a sequential one (one row per uid, one list per column, in stored order)."""
    _check_batch_rows(batch_rows)
    target = S.sequential_schema(event_file)
    total = io.open_parquet(src).metadata.num_rows
    meter = Progress(f"flat->sequential {event_file}", total=total, unit="events", enabled=progress)
    rows = users = 0
    # Memory: one batch of whole users (io.iter_user_batches) and its list copy; each is written out at once.
    with _sequential_writer(dst, target) as writer:
        for table in io.iter_user_batches(src, event_file, "flat", batch_rows=batch_rows):
            grouped = group_by_user(table, target)
            writer.write_table(grouped)  # one row group per batch of users
            rows, users = rows + table.num_rows, users + grouped.num_rows
            meter.update(table.num_rows)
    return _summarise(meter, rows, users, Path(dst))


def sequential_to_flat(
    src: Path | str,
    dst: Path | str,
    event_file: str,
    batch_rows: int = io.DEFAULT_BATCH_ROWS,
    progress: bool = True,
) -> ConvertSummary:
    """Write a sequential event file as a flat one: the lists exploded in their stored order."""
    _check_batch_rows(batch_rows)
    meter = Progress(f"sequential->flat {event_file}", unit="events", enabled=progress)
    rows = users = 0
    # Memory: one batch of users exploded to events (about batch_rows at Yambda's mean history length).
    with io.ParquetSink(dst, S.flat_schema(event_file)) as sink:
        for table in io.iter_user_batches(src, event_file, "sequential", batch_rows=batch_rows):
            sink.write(table)
            rows, users = rows + table.num_rows, users + _count_users(table)
            meter.update(table.num_rows)
    return _summarise(meter, rows, users, Path(dst))


def convert_layout(
    layout: DatasetLayout,
    to: str,
    event_files: Iterable[str] = S.EVENT_FILES,
    batch_rows: int = io.DEFAULT_BATCH_ROWS,
    progress: bool = True,
) -> list[ConvertSummary]:
    """Convert the given event files of a dataset into format `to`, in the layout's folder for `to`."""
    S.check_format(to)
    event_files = list(event_files)
    source_fmt = "flat" if to == "sequential" else "sequential"
    convert = flat_to_sequential if to == "sequential" else sequential_to_flat
    sources = layout.require(event_files, source_fmt)  # fail before writing anything if one file is missing
    return [
        convert(src, layout.event_path(event, to), event, batch_rows=batch_rows, progress=progress)
        for src, event in zip(sources, event_files, strict=True)
    ]


def group_by_user(table: pa.Table, target: pa.Schema) -> pa.Table:
    """One row per uid of a flat table whose users are contiguous; each other column becomes a list."""
    uid = _column(table, "uid").to_numpy()
    starts = np.flatnonzero(np.diff(uid, prepend=np.int64(-1)) != 0)  # first row of every user
    offsets = pa.array(np.append(starts, len(uid)).astype(np.int32))
    arrays = [pa.array(uid[starts], pa.uint32())]
    for field in target:
        if field.name != "uid":
            values = _column(table, field.name)
            arrays.append(pa.ListArray.from_arrays(offsets, values, type=field.type))
    return pa.Table.from_arrays(arrays, schema=target)


@contextlib.contextmanager
def _sequential_writer(dst: Path | str, target: pa.Schema) -> Iterator[pq.ParquetWriter]:
    """A Parquet writer into an atomic path (io.atomic_path); event_type lists go without dictionary pages.

    pyarrow cannot read a dictionary-encoded list<dictionary> column in batches that span row groups ("Nested
    data conversions not implemented for chunked array outputs"); plain pages read back as the same type.
    """
    encoded = [f"{f.name}.list.element" if pa.types.is_list(f.type) else f.name for f in target]
    dictionary_pages = [path for path in encoded if not path.startswith("event_type.")]
    with io.atomic_path(dst) as tmp:
        writer = pq.ParquetWriter(tmp, target, compression="zstd", use_dictionary=dictionary_pages)
        try:
            yield writer
        finally:
            writer.close()


def _column(table: pa.Table, name: str) -> pa.Array:
    """One contiguous array; chunks of a dictionary column are unified by combine_chunks."""
    return table.column(name).combine_chunks()


def _count_users(table: pa.Table) -> int:
    uid = _column(table, "uid").to_numpy()
    return int(np.count_nonzero(np.diff(uid))) + 1 if len(uid) else 0


def _check_batch_rows(batch_rows: int) -> None:
    if not 1 <= batch_rows <= MAX_BATCH_ROWS:
        raise ValueError(f"batch_rows={batch_rows} is out of range; use 1..{MAX_BATCH_ROWS} (list offsets are int32)")


def _summarise(meter: Progress, rows: int, users: int, output: Path) -> ConvertSummary:
    meter.summary(f"{rows:,} events of {users:,} users -> {output}")
    return ConvertSummary(rows=rows, users=users, seconds=meter.elapsed, output=output)
