"""Validated, streaming readers and atomic writers for Yambda Parquet files.

Every read goes through here: a file is opened, its schema checked against data/schema.py, and its rows streamed in
bounded batches, cast to the official types, with values checked where they enter. Memory grows with the batch size
only (one Parquet row group at most is decoded at a time), never with the file.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from yambda_dl.data import schema as S
from yambda_dl.utils.atomic import (
    atomic_path,
    remove_path,
    remove_stale_temporaries,
    temporary_name,
)

logger = logging.getLogger(__name__)

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


_GRID_WARNED: set[tuple[str, int, int]] = set()  # (path, size, mtime_ns) of the files already warned about


class _GridCheck:
    """Counts a file's timestamps off the 5-second grid during one pass and warns once per file and process."""

    def __init__(self, path: Path, enabled: bool = True):
        self.path, self.enabled, self.off, self.rows = path, enabled, 0, 0

    def add(self, timestamps: pa.Array) -> None:
        if self.enabled and len(timestamps):
            values = timestamps.to_numpy(zero_copy_only=False)
            self.off += int(np.count_nonzero(values % S.TIMESTAMP_STEP))
            self.rows += len(values)

    def finish(self, complete: bool) -> None:
        if not self.off:
            return
        try:
            stat = self.path.stat()
            key = (str(self.path.resolve()), stat.st_size, stat.st_mtime_ns)
        except OSError:
            key = (str(self.path), -1, -1)
        if key in _GRID_WARNED:
            return
        _GRID_WARNED.add(key)
        counted = "" if complete else " (in the rows read so far)"
        logger.warning(
            "%s: %d of %d timestamps%s are off the %d-second grid (Yambda floors every timestamp to a multiple of "
            "%d); the file may not be Yambda data or was altered",
            self.path,
            self.off,
            self.rows,
            counted,
            S.TIMESTAMP_STEP,
            S.TIMESTAMP_STEP,
        )


def _read_error(pf: pq.ParquetFile, path: Path, first_row: int, columns: list[str], err: Exception) -> DataFileError:
    """A DataFileError naming the file, the row group and the column that cannot be decoded.

    Only on the error path: from the row group holding `first_row` (where the failed batch began) on, each column is
    read alone until one fails, which names the culprit exactly (a corrupt compressed page, a truncated chunk).
    """
    metadata = pf.metadata
    starts = np.cumsum([0] + [metadata.row_group(g).num_rows for g in range(metadata.num_row_groups)])
    group = max(0, int(np.searchsorted(starts, first_row, side="right")) - 1)
    for g in range(group, metadata.num_row_groups):
        for column in columns:
            try:
                pf.read_row_group(g, columns=[column])
            except (OSError, pa.ArrowException) as inner:
                return DataFileError(
                    f"{path}: cannot read row group {g} (of {metadata.num_row_groups}), column {column!r}: {inner}; "
                    f"the file is damaged: download or generate it again"
                )
    return DataFileError(
        f"{path}: cannot read row group {group} (of {metadata.num_row_groups}), columns {columns}: {err}; "
        f"the file is damaged: download or generate it again"
    )


def _guarded_batches(
    pf: pq.ParquetFile, path: Path, columns: list[str], batch_size: int, by_row_group: bool
) -> Iterator[pa.RecordBatch]:
    """pf's batches, with decoding errors re-raised naming the file, the row group and the column."""
    row = 0
    groups = [[g] for g in range(pf.num_row_groups)] if by_row_group else [None]
    for row_groups in groups:
        iterator = pf.iter_batches(batch_size=batch_size, row_groups=row_groups, columns=columns)
        while True:
            try:
                batch = next(iterator)
            except StopIteration:
                break
            except (OSError, pa.ArrowException) as err:
                raise _read_error(pf, path, row, columns, err) from err
            row += batch.num_rows
            yield batch


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
    path: Path | str,
    event_file: str,
    columns: list[str] | None = None,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    check_grid: bool = True,
) -> Iterator[pa.Table]:
    """Stream a flat event file as validated tables of at most `batch_rows` rows in the official types.

    `check_grid`: warn (once per file) when timestamps lie off the 5-second grid; off for our own derived files.
    """
    path = Path(path)
    expected = S.flat_schema(event_file)
    pf = open_parquet(path, hint="see `yambda-data download --help`")
    mapping = S.resolve_columns(path, pf.schema_arrow, expected, columns)
    nullable = S.nullable_columns(event_file)
    grid = _GridCheck(path, check_grid and "timestamp" in mapping)
    complete = False
    try:
        for batch in _guarded_batches(pf, path, list(mapping.values()), batch_rows, by_row_group=False):
            arrays = []
            for name, in_file in mapping.items():
                array = batch.column(in_file)
                target = expected.field(name).type
                if name == "event_type":
                    array = _normalise_event_type(array)
                else:
                    array = _cast(path, name, array, target)
                _check_values(path, name, array, nullable)
                if name == "timestamp":
                    grid.add(array)
                arrays.append(array)
            yield pa.Table.from_arrays(arrays, schema=_subschema(expected, mapping))
        complete = True
    finally:
        grid.finish(complete)


def _subschema(expected: pa.Schema, names) -> pa.Schema:
    return pa.schema([expected.field(n) for n in names])


def _iter_row_group_batches(
    pf: pq.ParquetFile, path: Path, batch_size: int, columns: list[str]
) -> Iterator[pa.RecordBatch]:
    """Batches that never span two row groups: pyarrow cannot stitch nested dictionary columns (multi_event's
    list<dictionary> event_type) across row groups, and memory stays bounded by one row group anyway."""
    yield from _guarded_batches(pf, path, columns, batch_size, by_row_group=True)


def iter_sequential_batches(
    path: Path | str,
    event_file: str,
    columns: list[str] | None = None,
    batch_users: int = DEFAULT_BATCH_USERS,
    check_grid: bool = True,
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
    list_names = [n for n in mapping if n != "uid"]
    grid = _GridCheck(path, check_grid and "timestamp" in mapping)
    complete = False
    try:
        yield from _sequential_tables(path, pf, event_file, columns, batch_users, expected, mapping, list_names, grid)
        complete = True
    finally:
        grid.finish(complete)


def _sequential_tables(
    path: Path,
    pf: pq.ParquetFile,
    event_file: str,
    columns: list[str] | None,
    batch_users: int,
    expected: pa.Schema,
    mapping: dict[str, str],
    list_names: list[str],
    grid: _GridCheck,
) -> Iterator[pa.Table]:
    """iter_sequential_batches' body: one validated flat table per batch of users."""
    nullable = S.nullable_columns(event_file)
    last_uid = -1
    for batch in _iter_row_group_batches(pf, path, batch_users, list(mapping.values())):
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
            if name == "timestamp":
                grid.add(values)
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
    check_grid: bool = True,
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
        for table in iter_sequential_batches(path, event_file, columns, batch_users, check_grid):
            if table.num_rows:  # users are whole by construction; the reader checked uid order
                yield table
        return

    carry: pa.Table | None = None
    last_uid = -1
    for table in iter_flat_batches(path, event_file, columns, batch_rows, check_grid):
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


def sort_by_user_time(table: pa.Table) -> pa.Table:
    """Sort a table stably by (uid, timestamp), file order kept inside equal timestamps; no-op when sorted.

    Yambda files are sorted so, but a file that is only uid-sorted is valid input: every step whose result depends on
    the time order within a user (the split's windows, the statistics' active days) sorts its batch through here.
    """
    uid = table.column("uid").to_numpy()
    ts = table.column("timestamp").to_numpy()
    in_order = (uid[1:] > uid[:-1]) | ((uid[1:] == uid[:-1]) & (ts[1:] >= ts[:-1]))
    if in_order.all():  # the official flat files already are: skip the copy
        return table
    return table.take(np.lexsort((ts, uid)))  # lexsort is stable


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


# --- temporary names, stale temporaries, create-once caches ----------------------------------------------------

# flock on a file system that does not support it (some network and parallel file systems) fails with one of these
_NO_FLOCK = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}


@contextlib.contextmanager
def _exclusive_lock(final: Path) -> Iterator[bool]:
    """Hold an exclusive fcntl lock on `final.parent/.<final.name>.lock` (released by the kernel if we die).

    Yields True when locked, False where the file system has no flock (a warning says so; the caller then relies on
    atomic create-if-absent renames alone). The holder removes the lock file when done, so a cache folder holds no
    leftovers; a waiter that then gets the lock on the removed file sees that the path no longer names its file and
    locks the path afresh (the usual lock-then-check-inode loop), so two processes never hold locks on two different
    files of one name.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    lock_path = final.parent / f".{final.name}.lock"
    waited_since = None
    while True:
        handle = open(lock_path, "a+b")  # held across the yield, closed below
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno in _NO_FLOCK:
                handle.close()
                with contextlib.suppress(FileNotFoundError):
                    lock_path.unlink()  # useless here: leave no clutter
                logger.warning("%s: the file system does not support locks (%s); building without one", final, err)
                yield False
                return
            if err.errno not in (errno.EAGAIN, errno.EACCES):
                handle.close()
                raise
            if waited_since is None:
                waited_since = time.perf_counter()
                logger.info("waiting for another process that is building %s", final)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            same = os.stat(lock_path).st_ino == os.fstat(handle.fileno()).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        handle.close()  # the previous holder removed this file: lock the path's current file instead
    if waited_since is not None:
        logger.info("lock on %s acquired after %.1f s", final, time.perf_counter() - waited_since)
    try:
        yield True
    finally:
        with contextlib.suppress(FileNotFoundError):
            lock_path.unlink()  # before unlocking: a waiter then finds the inode changed and retries
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


def _complete_or_cleared(final: Path, is_complete: Callable[[Path], bool], locked: bool) -> bool:
    """Under the name's lock: True if `final` is complete; else remove what lies under its name and say False."""
    if locked:
        remove_stale_temporaries(final.parent, final.name, any_owner=True)  # no one else can be building this name
    remove_stale_temporaries(final.parent)  # only dead processes' leftovers
    if not (final.exists() or final.is_symlink()):
        return False
    if is_complete(final):
        return True
    # a killed build (or a damaged cache): moved aside in one rename, so that no reader can open a half-removed
    # folder, then removed; readers that still hold its files keep their open handles
    logger.warning("%s is incomplete or damaged; removing it and building it again", final)
    aside = final.parent / temporary_name(final.name)
    os.replace(final, aside)
    remove_path(aside)
    return False


def _publish(target: Path, final: Path, locked: bool) -> None:
    """Rename a finished build to its final name. Under the lock `final` is absent (cleared above); without one,
    create-if-absent: a folder renames only onto nothing (or an empty folder), a file is hard-linked, which fails when
    the name exists; then the other process's complete copy wins and ours is dropped."""
    if locked:
        os.replace(target, final)
        return
    try:
        if target.is_dir():
            os.rename(target, final)
        else:
            os.link(target, final)
    except OSError as err:  # EEXIST / ENOTEMPTY: the name was taken meanwhile
        if not final.exists():
            raise
        logger.info("%s was built by another process meanwhile; keeping it (%s)", final, err)


@contextlib.contextmanager
def _build_path_once(final: Path, is_complete: Callable[[Path], bool], make_dir: bool) -> Iterator[Path | None]:
    """build_once for a folder (make_dir) or a single file; see build_once."""
    final = Path(final)
    with _exclusive_lock(final) as locked:
        if not _complete_or_cleared(final, is_complete, locked):
            # a folder build fills the temporary folder itself; a file build writes tmp/<name> inside one, so that
            # the path it writes keeps its name and extension (np.save appends ".npy" to any other name)
            tmp = final.parent / temporary_name(final.name)
            tmp.mkdir()
            target = tmp if make_dir else tmp / final.name
            try:
                yield target
                if target.exists():
                    _publish(target, final, locked)
            finally:
                remove_path(tmp)
            return
    # complete: the lock is released before the caller reads, so readers never wait on each other
    yield None


@contextlib.contextmanager
def build_once(folder: Path | str, is_complete: Callable[[Path], bool]) -> Iterator[Path | None]:
    """Create `folder` exactly once, across processes.

    Under an exclusive lock file beside it (fcntl.flock on folder.parent / f".{folder.name}.lock"), yield None when
    `folder` is already complete, else a fresh temporary folder beside it (".tmp-<name>-<pid>-<hex>") to fill; on
    normal exit it is renamed to `folder`, on an exception it is removed. A complete folder is never replaced or
    deleted while readers may have it open; an incomplete one (killed build, or one `is_complete` rejects) is moved
    aside and removed. Stale .tmp-* folders of dead processes are removed. Other processes asking for the same
    folder wait on the lock while it is built, then get None.
    """
    with _build_path_once(Path(folder), is_complete, make_dir=True) as tmp:
        yield tmp


@contextlib.contextmanager
def build_file_once(path: Path | str, is_complete: Callable[[Path], bool]) -> Iterator[Path | None]:
    """build_once for a single file: yield None when `path` is complete, else a temporary path to write (of the same
    name, inside a temporary folder beside `path`).

    On normal exit the written temporary is renamed to `path`. The complete file is never replaced, so a reader
    that has it open (or memory-mapped) is never disturbed.
    """
    with _build_path_once(Path(path), is_complete, make_dir=False) as tmp:
        yield tmp


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
