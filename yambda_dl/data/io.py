"""Validated, streaming readers and atomic writers for Yambda Parquet files.

Every read goes through here: a file is opened, its schema checked against data/schema.py, and its rows streamed in
bounded batches, cast to the official types, with values checked where they enter. Memory grows with the batch size
only (one Parquet row group at most is decoded at a time), never with the file.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from yambda_dl.data import schema as S

DEFAULT_BATCH_ROWS = 1 << 21  # about 2M events, ~40 MB decoded: large enough for vectorized work, small next to RAM
DEFAULT_BATCH_USERS = 1024


class DataFileError(FileNotFoundError):
    """A Yambda file is missing or unreadable; the message names it and says how to get it."""


def open_parquet(path: Path | str, hint: str = "") -> pq.ParquetFile:
    path = Path(path)
    if not path.is_file():
        raise DataFileError(f"missing file {path}{'; ' + hint if hint else ''}")
    try:
        # pre_buffer=False: with it on (the default), pyarrow keeps every row group read so far until the file is
        # closed, so streaming memory would grow with the file instead of staying at one batch
        return pq.ParquetFile(path, pre_buffer=False)
    except (pa.ArrowInvalid, OSError) as err:
        raise DataFileError(f"{path} is not a readable Parquet file: {err}") from err


def _cast(path: Path, name: str, array: pa.Array | pa.ChunkedArray, target: pa.DataType):
    try:
        return array.cast(target, safe=True)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
        raise S.SchemaError(
            f"{path}: column {name!r} holds values that do not fit the official {target}: {err}"
        ) from err


def _check_values(path: Path, name: str, array: pa.Array, nullable: frozenset[str]) -> None:
    """Value checks that the type alone cannot express. `array` is already of the official type (flat values)."""
    if array.null_count and name not in nullable:
        raise S.SchemaError(
            f"{path}: column {name!r} holds {array.null_count} null value(s); nulls are allowed only "
            f"in {sorted(nullable) or 'no column'} of this file"
        )
    if len(array) == array.null_count:
        return
    if name == "timestamp":
        top = pc.max(array).as_py()
        if top > S.LAST_TIMESTAMP:
            raise S.SchemaError(
                f"{path}: column 'timestamp' holds {top}, past the end of the Yambda time axis "
                f"({S.LAST_TIMESTAMP}); timestamps are seconds in [0, {S.LAST_TIMESTAMP}]"
            )
    elif name == "played_ratio_pct":
        top = pc.max(array).as_py()
        if top > S.MAX_PLAYED_RATIO_PCT:
            raise S.SchemaError(
                f"{path}: column 'played_ratio_pct' holds {top}; valid range 0..{S.MAX_PLAYED_RATIO_PCT}"
            )
    elif name == "is_organic":
        top = pc.max(array).as_py()
        if top > 1:
            raise S.SchemaError(f"{path}: column 'is_organic' holds {top}; valid values: 0, 1")
    elif name == "event_type":
        values = pc.unique(array.dictionary_decode() if pa.types.is_dictionary(array.type) else array)
        bad = sorted(set(values.drop_null().to_pylist()) - set(S.EVENT_TYPES))
        if bad:
            raise S.SchemaError(f"{path}: column 'event_type' holds {bad}; valid choices: {', '.join(S.EVENT_TYPES)}")


def _normalise_event_type(array: pa.Array) -> pa.Array:
    """Dictionary-encode event_type with int32 indices, whatever encoding the file used."""
    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    return pc.dictionary_encode(array.cast(pa.string())).cast(S.EVENT_TYPE_ARROW)


def _combine(array):
    return array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array


def iter_flat_batches(
    path: Path | str, event_file: str, columns: list[str] | None = None, batch_rows: int = DEFAULT_BATCH_ROWS
) -> Iterator[pa.Table]:
    """Stream a flat event file as validated tables of at most `batch_rows` rows in the official types."""
    path = Path(path)
    expected = S.flat_schema(event_file)
    pf = open_parquet(path, hint="see `yambda-data download --help`")
    mapping = S.resolve_columns(path, pf.schema_arrow, expected, columns)
    nullable = S.nullable_columns(event_file)
    for batch in pf.iter_batches(batch_size=batch_rows, columns=list(mapping.values())):
        arrays = []
        for name, in_file in mapping.items():
            array = batch.column(in_file)
            target = expected.field(name).type
            if name == "event_type":
                array = _normalise_event_type(array)
            else:
                array = _cast(path, name, array, target)
            _check_values(path, name, array, nullable)
            arrays.append(array)
        yield pa.Table.from_arrays(arrays, schema=_subschema(expected, mapping))


def _subschema(expected: pa.Schema, names) -> pa.Schema:
    return pa.schema([expected.field(n) for n in names])


def _iter_row_group_batches(pf: pq.ParquetFile, batch_size: int, columns: list[str]) -> Iterator[pa.RecordBatch]:
    """Batches that never span two row groups: pyarrow cannot stitch nested dictionary columns (multi_event's
    list<dictionary> event_type) across row groups, and memory stays bounded by one row group anyway."""
    for group in range(pf.num_row_groups):
        yield from pf.iter_batches(batch_size=batch_size, row_groups=[group], columns=columns)


def iter_sequential_batches(
    path: Path | str,
    event_file: str,
    columns: list[str] | None = None,
    batch_users: int = DEFAULT_BATCH_USERS,
) -> Iterator[pa.Table]:
    """Stream a sequential event file as validated flat tables (one row per event) of `batch_users` users each.

    The lists are exploded in their stored (time) order, so the output is sorted by (uid, timestamp) when the file
    is. List columns may be named as the card does (`item_ids`, `timestamps`) or as the official code does.
    """
    path = Path(path)
    expected = S.sequential_schema(event_file)
    pf = open_parquet(path, hint="see `yambda-data download --help`")
    wanted = None if columns is None else (["uid"] + [c for c in columns if c != "uid"])
    mapping = S.resolve_columns(path, pf.schema_arrow, expected, wanted)
    nullable = S.nullable_columns(event_file)
    list_names = [n for n in mapping if n != "uid"]
    last_uid = -1
    for batch in _iter_row_group_batches(pf, batch_users, list(mapping.values())):
        uid = _cast(path, "uid", batch.column(mapping["uid"]), pa.uint32())
        _check_values(path, "uid", uid, frozenset())
        uid_values = uid.to_numpy(zero_copy_only=False)
        _check_sorted_uids(path, uid_values, last_uid, one_row_per_user=True)
        last_uid = int(uid_values[-1]) if len(uid_values) else last_uid
        lengths = None
        flat: dict[str, pa.Array] = {}
        for name in list_names:
            lists = batch.column(mapping[name])
            if lists.null_count:
                raise S.SchemaError(f"{path}: list column {mapping[name]!r} holds {lists.null_count} null list(s)")
            these = pc.list_value_length(lists)
            if lengths is None:
                lengths = these
            elif not pc.all(pc.equal(lengths, these)).as_py():
                raise S.SchemaError(
                    f"{path}: list columns {mapping[list_names[0]]!r} and {mapping[name]!r} have "
                    f"different lengths for the same user; every list of a row must align"
                )
            values = pc.list_flatten(lists)
            if name == "event_type":
                values = _normalise_event_type(values)
            else:
                values = _cast(path, name, values, expected.field(name).type.value_type)
            _check_values(path, name, values, nullable)
            flat[name] = values
        if lengths is None:  # only uid asked for: one row per user
            yield pa.Table.from_arrays([uid], schema=_subschema(S.flat_schema(event_file), ["uid"]))
            continue
        repeats = lengths.to_numpy(zero_copy_only=False).astype(np.int64)
        out = {"uid": pa.array(np.repeat(uid_values, repeats), pa.uint32())}
        out.update(flat)
        names = list(mapping) if columns is None else [c for c in mapping if c in columns or c == "uid"]
        yield pa.Table.from_arrays([out[n] for n in names], schema=_subschema(S.flat_schema(event_file), names))


def iter_user_batches(
    path: Path | str,
    event_file: str,
    fmt: str,
    columns: list[str] | None = None,
    batch_rows: int = DEFAULT_BATCH_ROWS,
) -> Iterator[pa.Table]:
    """Stream an event file, flat or sequential, as flat tables in which every user is whole.

    The flat layout is sorted by uid, so the rows of the last user of a batch are held back and joined to the next
    batch: memory is one batch plus one user's history. A file whose uids are not in ascending order is refused,
    since every streaming step downstream relies on it. Columns always include uid.
    """
    S.check_format(fmt)
    columns = None if columns is None else ["uid"] + [c for c in columns if c != "uid"]
    if fmt == "sequential":
        # ~batch_rows events per batch at Yambda's mean of about 4,650 listens per user, never fewer than 64 users
        batch_users = max(64, batch_rows // 4096)
        for table in iter_sequential_batches(path, event_file, columns, batch_users):
            if table.num_rows:  # users are whole by construction; the reader checked uid order
                yield table
        return

    carry: pa.Table | None = None
    last_uid = -1
    for table in iter_flat_batches(path, event_file, columns, batch_rows):
        if table.num_rows == 0:
            continue
        uid = _combine(table.column("uid")).to_numpy()
        _check_sorted_uids(path, uid, last_uid, one_row_per_user=False)
        last_uid = int(uid[-1])
        if carry is not None:
            table = pa.concat_tables([carry, table])
            uid = np.concatenate([_combine(carry.column("uid")).to_numpy(), uid])
        cut = int(np.searchsorted(uid, uid[-1], side="left"))  # first row of the last (maybe unfinished) user
        carry = table.slice(cut)
        if cut:
            yield table.slice(0, cut)
    if carry is not None and carry.num_rows:
        yield carry


def _check_sorted_uids(path: Path, uid: np.ndarray, last_uid: int, one_row_per_user: bool) -> None:
    if len(uid) == 0:
        return
    # a sequential file has one row per user, so its uids strictly ascend; a flat file's merely do not descend
    if one_row_per_user:
        unsorted = bool((uid[1:] <= uid[:-1]).any()) or uid[0] <= last_uid
    else:
        unsorted = bool((uid[1:] < uid[:-1]).any()) or uid[0] < last_uid
    if unsorted:
        repeats = " or a uid repeats" if one_row_per_user else ""
        raise S.SchemaError(
            f"{path}: rows are not sorted by 'uid'{repeats} (the Yambda layout sorts by uid, then timestamp, with "
            f"one row per user in the sequential files); sort the file first, e.g. with polars' sink_parquet"
        )


def read_table(path: Path | str, expected: pa.Schema, columns: list[str] | None = None) -> pa.Table:
    """Read a small file (a mapping, a split's targets) whole, validated and cast to `expected`."""
    path = Path(path)
    pf = open_parquet(path)
    mapping = S.resolve_columns(path, pf.schema_arrow, expected, columns)
    table = pf.read(columns=list(mapping.values()))
    arrays = [_cast(path, name, table.column(in_file), expected.field(name).type) for name, in_file in mapping.items()]
    for name, array in zip(mapping, arrays, strict=True):
        if array.null_count and not expected.field(name).nullable:
            raise S.SchemaError(f"{path}: column {name!r} holds {array.null_count} null value(s)")
    return pa.Table.from_arrays(arrays, schema=_subschema(expected, mapping))


@contextlib.contextmanager
def atomic_path(final: Path | str) -> Iterator[Path]:
    """Yield a temporary path beside `final`; on success rename it into place, on failure remove it.

    A killed run leaves at most a `.tmp-*` file or folder behind, never a half-written output under the final name.
    Works for files and folders (the caller creates what it needs at the yielded path).
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=final.parent))
    target = tmp / final.name
    try:
        yield target
        if final.is_dir() and not final.is_symlink():
            old = final.with_name(f".old-{final.name}-{os.getpid()}")
            os.replace(final, old)
            os.replace(target, final)
            _rmtree(old)
        else:
            os.replace(target, final)
    finally:
        _rmtree(tmp)


def _rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


class ParquetSink:
    """Append tables to one Parquet file written atomically: the file appears under its name only on close()."""

    def __init__(
        self,
        path: Path | str,
        schema: pa.Schema,
        row_group_rows: int = DEFAULT_BATCH_ROWS,
        compression: str = "zstd",
    ):
        self.path = Path(path)
        self.schema = schema
        self.row_group_rows = row_group_rows
        self._ctx = atomic_path(self.path)
        self._tmp = self._ctx.__enter__()
        self._writer = pq.ParquetWriter(self._tmp, schema, compression=compression)
        self.rows = 0

    def write(self, table: pa.Table) -> None:
        if table.num_rows:
            self._writer.write_table(
                table.select(self.schema.names).cast(self.schema), row_group_size=self.row_group_rows
            )
            self.rows += table.num_rows

    def close(self) -> Path:
        self._writer.close()
        self._ctx.__exit__(None, None, None)
        return self.path

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self._writer.close()
        with contextlib.suppress(Exception):
            self._ctx.__exit__(RuntimeError, RuntimeError("aborted"), None)

    def __enter__(self) -> ParquetSink:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_parquet(table: pa.Table, path: Path | str, row_group_rows: int = DEFAULT_BATCH_ROWS) -> Path:
    """Write one table atomically."""
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd", row_group_size=row_group_rows)
    return Path(path)
