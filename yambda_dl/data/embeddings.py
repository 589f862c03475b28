"""Readers for the item side files: audio embeddings and the item -> artist / album mappings.

`read_embeddings` aligns the 128-d audio vectors of embeddings.parquet (about 7.72M rows, 13.8 GB) to the raw
item ids a run needs. It streams the file one row group at a time: the item_id column first, the vector column
only for row groups that hold a wanted item, so memory is the output plus one row group. Items without an
embedding (about 18%, mostly in the tail) get zeros and `present` False, so a model decides how to treat them.

`read_item_mapping` does the same for artist_item_mapping.parquet / album_item_mapping.parquet: one artist
(the first in file order) or album per wanted item, with a `present` mask.

`item_embeddings` is the view a content model eats: the vectors aligned to a split's dense item index (row i is
item_idx i), optionally followed by the cold candidates (items with a vector but no train event), cached beside the
split as memory-mapped .npy files keyed by the embeddings file's footer hash.
"""

from __future__ import annotations

import datetime
import hashlib
import itertools
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from yambda_dl.data import io
from yambda_dl.data import schema as S
from yambda_dl.utils.progress import Progress

if TYPE_CHECKING:
    import torch

    from yambda_dl.data.split import Split

EMBEDDING_COLUMNS = ("embed", "normalized_embed")
MAPPING_SCHEMAS = {"artist": S.ARTIST_MAPPING_SCHEMA, "album": S.ALBUM_MAPPING_SCHEMA}


def read_embeddings(
    path: Path | str, item_ids: np.ndarray, column: str = "normalized_embed"
) -> tuple[np.ndarray, np.ndarray]:
    """Vectors (n, 128) float32 aligned to raw `item_ids`, zeros where missing, and a `present` mask."""
    if column not in EMBEDDING_COLUMNS:
        raise ValueError(f"unknown embedding column {column!r}; valid choices: {', '.join(EMBEDDING_COLUMNS)}")
    wanted, inverse = _wanted(item_ids)
    pf = io.open_parquet(path, hint="download it with `yambda-data download --embeddings`")
    names = S.resolve_columns(path, pf.schema_arrow, S.EMBEDDINGS_SCHEMA, ["item_id", column])
    _check_fixed_size(path, pf.schema_arrow.field(names[column]))
    scatter = _Scatter(inverse, len(wanted))
    # Memory: the output (len(item_ids) x 128 float32) plus one row group's vectors of wanted items.
    vectors = np.zeros((len(inverse), S.EMBEDDING_DIM), dtype=np.float32)
    present = np.zeros(len(inverse), dtype=bool)
    for group in range(pf.num_row_groups):
        file_ids = _ids(path, "item_id", pf.read_row_group(group, columns=[names["item_id"]]).column(0))
        rows, slots = _matches(wanted, file_ids)
        if len(rows) == 0:
            continue  # a row group without a wanted item never has its vectors decoded
        lists = pf.read_row_group(group, columns=[names[column]]).column(0).take(pa.array(rows))
        found = _vectors(path, names[column], lists, file_ids[rows])
        out_rows, src = scatter(slots)
        vectors[out_rows], present[out_rows] = found[src], True
    return vectors, present


def read_item_mapping(path: Path | str, kind: str, item_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The artist_id (the first in the file) or album_id of each raw item id (uint32) and a `present` mask."""
    if kind not in MAPPING_SCHEMAS:
        raise ValueError(f"unknown mapping kind {kind!r}; valid choices: {', '.join(MAPPING_SCHEMAS)}")
    key = f"{kind}_id"
    wanted, inverse = _wanted(item_ids)
    pf = io.open_parquet(path, hint="download it with `yambda-data download --mappings`")
    names = S.resolve_columns(path, pf.schema_arrow, MAPPING_SCHEMAS[kind], ["item_id", key])
    # Memory: two uint32 values and a flag per wanted id, plus one batch of the file.
    by_wanted = np.zeros(len(wanted), dtype=np.uint32)
    found = np.zeros(len(wanted), dtype=bool)
    for batch in pf.iter_batches(columns=[names["item_id"], names[key]]):
        rows, slots = _matches(wanted, _ids(path, "item_id", batch.column(0)))
        slots, first = np.unique(slots, return_index=True)  # the first row of each item in this batch
        new = ~found[slots]  # an item already seen in an earlier batch keeps its first value
        by_wanted[slots[new]] = _ids(path, key, batch.column(1))[rows[first[new]]]
        found[slots[new]] = True
    return by_wanted[inverse], found[inverse]


def cold_item_ids(path: Path | str, train_items: np.ndarray) -> np.ndarray:
    """Raw ids (uint32, ascending) of the items that have a vector in the embeddings file but are not among the
    ascending `train_items`: the cold candidates, in the order the view's cold rows take (item_embeddings).

    Reads the item_id column only, one row group at a time; memory: 8 bytes per file row (~62 MB at Yambda).
    """
    pf = io.open_parquet(path, hint="download it with `yambda-data download --embeddings`")
    name = S.resolve_columns(path, pf.schema_arrow, S.EMBEDDINGS_SCHEMA, ["item_id"])["item_id"]
    groups = [_ids(path, "item_id", pf.read_row_group(g, columns=[name]).column(0)) for g in range(pf.num_row_groups)]
    file_ids = np.unique(np.concatenate(groups)) if groups else np.zeros(0, np.int64)
    return file_ids[~np.isin(file_ids, np.asarray(train_items, dtype=np.int64))].astype(np.uint32)


def _wanted(item_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted unique wanted ids (for np.searchsorted) and, per given id, its slot among them."""
    item_ids = np.asarray(item_ids)
    if item_ids.ndim != 1 or not np.issubdtype(item_ids.dtype, np.integer):
        raise ValueError(
            f"item_ids must be a 1-d integer array of raw Yambda item ids, got {item_ids.dtype} "
            f"with shape {item_ids.shape}"
        )
    return np.unique(item_ids.astype(np.int64), return_inverse=True)


def _ids(path: Path | str, name: str, array: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """An id column as int64 numpy, refusing nulls and values outside uint32 (the official type)."""
    try:
        ids = pc.cast(array, pa.uint32(), safe=True)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
        raise S.SchemaError(f"{path}: column {name!r} holds values that do not fit the official uint32: {err}") from err
    if ids.null_count:
        raise S.SchemaError(f"{path}: column {name!r} holds {ids.null_count} null value(s)")
    return ids.to_numpy().astype(np.int64)


def _matches(wanted: np.ndarray, file_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows of `file_ids` that are wanted, and each one's slot in `wanted` (sorted)."""
    slots = np.searchsorted(wanted, file_ids)
    hit = slots < len(wanted)
    hit[hit] = wanted[slots[hit]] == file_ids[hit]
    rows = np.flatnonzero(hit)
    return rows, slots[rows]


class _Scatter:
    """Maps slots of unique wanted ids to every output row that asked for them (item_ids may repeat an id)."""

    def __init__(self, inverse: np.ndarray, n_wanted: int):
        self.order = np.argsort(inverse, kind="stable")  # output rows grouped by slot
        self.starts = np.searchsorted(inverse[self.order], np.arange(n_wanted + 1))

    def __call__(self, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Output rows to fill and, for each, the index into `slots` whose value goes there."""
        counts = self.starts[slots + 1] - self.starts[slots]
        src = np.repeat(np.arange(len(slots)), counts)
        within = np.arange(len(src)) - np.repeat(np.cumsum(counts) - counts, counts)
        return self.order[self.starts[slots][src] + within], src


def _check_fixed_size(path: Path | str, field: pa.Field) -> None:
    if pa.types.is_fixed_size_list(field.type) and field.type.list_size != S.EMBEDDING_DIM:
        raise S.SchemaError(
            f"{path}: column {field.name!r} holds vectors of {field.type.list_size} dimensions; "
            f"Yambda embeddings have {S.EMBEDDING_DIM}"
        )


def _vectors(path: Path | str, name: str, lists: pa.ChunkedArray, ids: np.ndarray) -> np.ndarray:
    """(len(lists), 128) float32 from a float64 or float32 list column, fixed or variable size."""
    lists = lists.combine_chunks()
    lengths = pc.fill_null(pc.list_value_length(lists), 0).to_numpy(zero_copy_only=False)
    bad = np.flatnonzero(lengths != S.EMBEDDING_DIM)
    if len(bad):
        raise S.SchemaError(
            f"{path}: column {name!r} holds a vector of length {int(lengths[bad[0]])} for item_id "
            f"{int(ids[bad[0]])}; Yambda embeddings have {S.EMBEDDING_DIM} dimensions"
        )
    values = pc.list_flatten(lists)
    if values.null_count:
        raise S.SchemaError(f"{path}: column {name!r} holds {values.null_count} null element(s)")
    return values.to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, S.EMBEDDING_DIM)


# --- the split-aligned view ---------------------------------------------------------------------------------------

# Bump when the cached view's files or their meaning change: old folders then get other keys.
VIEW_VERSION = 1
VIEW_FILES = ("vectors.npy", "present.npy", "cold_ids.npy")
VIEW_DTYPES = ("float32", "bfloat16")


@dataclass(frozen=True)
class ItemEmbeddings:
    """Audio vectors aligned to a split's dense item index; rows num_items.. are the cold candidates, if asked.

    vectors and present are memory-mapped (copy-on-write: writing to them never touches the cache).
    """

    vectors: np.ndarray  # (num_items + num_cold, 128) float32, zeros where an item has no vector
    present: np.ndarray  # (num_items + num_cold,) bool: the item has a vector (always True for cold rows)
    cold_ids: np.ndarray  # (num_cold,) uint32 raw ids of the cold rows, ascending; empty unless cold was asked
    num_items: int  # the split's train items: rows 0..num_items-1 are their item_idx
    column: str  # embed | normalized_embed
    path: Path  # the cache folder
    meta: dict

    @property
    def num_cold(self) -> int:
        return len(self.cold_ids)

    @property
    def coverage(self) -> float:
        """Share of the split's train items that have a vector."""
        return float(self.present[: self.num_items].mean()) if self.num_items else 0.0

    def tensor(self, dtype: str = "float32", cold: bool = False) -> torch.Tensor:
        """The train rows (and the cold rows when `cold`) as a CPU tensor of `dtype` (float32 | bfloat16)."""
        import torch

        if dtype not in VIEW_DTYPES:
            raise ValueError(f"unknown embedding dtype {dtype!r}; valid choices: {', '.join(VIEW_DTYPES)}")
        rows = self.vectors if cold else self.vectors[: self.num_items]
        out = torch.from_numpy(rows)  # the copy-on-write map: no copy until written
        return out.to(torch.bfloat16) if dtype == "bfloat16" else out

    def present_tensor(self, cold: bool = False) -> torch.Tensor:
        import torch

        return torch.from_numpy(np.array(self.present if cold else self.present[: self.num_items]))


def embeddings_path(split: Split) -> Path:
    """The embeddings file of a split's dataset (Split.side_files: the data config's `side_files.embeddings`, or
    the file at the root that holds the split's source events)."""
    return split.side_files.embeddings


def item_embeddings(
    split: Split,
    column: str = "normalized_embed",
    cold: bool = False,
    path: Path | str | None = None,
    progress: bool = True,
) -> ItemEmbeddings:
    """The audio vectors of the split's train items (row = item_idx), then, with `cold`, of every item that has a
    vector but no train event (raw ids in `cold_ids`, ascending).

    `path`: another embeddings file than the split's (data config side_files.embeddings, see embeddings_path).
    Built once per (embeddings file content, column, cold) into split.path/embeddings/ and memory-mapped afterwards
    (aligned_embeddings).
    """
    source = Path(path).expanduser() if path is not None else embeddings_path(split)
    return aligned_embeddings(source, split.items, split.path / "embeddings", column, cold, progress)


def candidate_embeddings(split: Split, column: str = "normalized_embed", progress: bool = True) -> ItemEmbeddings:
    """The audio vectors of the split's candidates: its train items, then, with protocol.candidates=train_and_cold,
    its cold items (row num_items + j = split.cold_items[j]); what a content model ranks."""
    cold = split.num_candidates > split.num_items
    view = item_embeddings(split, column=column, cold=cold, progress=progress)
    if cold and not np.array_equal(view.cold_ids, split.cold_items):
        raise ValueError(
            f"{view.path}: the view's {view.num_cold} cold rows are not the split's {len(split.cold_items)} cold "
            f"candidates (the embeddings file changed while the run was open?); run again"
        )
    return view


def aligned_embeddings(
    source: Path | str,
    items: np.ndarray,
    cache_dir: Path,
    column: str = "normalized_embed",
    cold: bool = False,
    progress: bool = True,
) -> ItemEmbeddings:
    """The vectors of `source` aligned to the ascending raw ids `items` (row i = items[i]), then, with `cold`, those
    of every other id of the file, cached in cache_dir/COLUMN-{train,cold}-KEY.

    The folder is created once (io.build_once: under a lock, in a temporary folder renamed into place; a complete
    folder is never replaced under a reader) and keyed by the file's footer hash, so new embeddings get a new folder.
    Two streaming passes over the file: the item_id column of every row group, then the vector column of the row
    groups that hold a wanted item, written straight into the memory-mapped output. Memory: the file's item ids
    (8 bytes per row, 62 MB at Yambda) and `items` (8 bytes each) plus one row group's vectors; the output lives in
    the page cache, not the heap.
    """
    if column not in EMBEDDING_COLUMNS:
        raise ValueError(f"unknown embedding column {column!r}; valid choices: {', '.join(EMBEDDING_COLUMNS)}")
    source = Path(source).expanduser()
    pf = io.open_parquet(source, hint="download it with `yambda-data download --embeddings` (or set data.side_files)")
    names = S.resolve_columns(source, pf.schema_arrow, S.EMBEDDINGS_SCHEMA, ["item_id", column])
    _check_fixed_size(source, pf.schema_arrow.field(names[column]))
    key = view_key(source, column, cold)
    folder = Path(cache_dir) / f"{column}-{'cold' if cold else 'train'}-{key}"
    if view_problem(folder) is not None:
        with io.build_once(folder, lambda f: view_problem(f) is None) as tmp:
            if tmp is not None:
                _build_view(tmp, source, names, column, cold, items, key, progress, folder)
    return open_view(folder)


def view_key(source: Path, column: str, cold: bool) -> str:
    """The view's cache key: the embeddings file's footer hash (split.source_fingerprint), column, cold, version."""
    from yambda_dl.data.split import source_fingerprint  # split imports layout only; this keeps data acyclic

    blob = json.dumps(
        {"source": source_fingerprint(source), "column": column, "cold": cold, "version": VIEW_VERSION},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def view_problem(folder: Path) -> str | None:
    """Why `folder` is not a complete view (None when it is): meta.json present and every file of its size."""
    meta_path = Path(folder) / "meta.json"
    if not meta_path.is_file():
        return "no meta.json (an unfinished build)"
    try:
        meta = json.loads(meta_path.read_text())
        sizes = meta["files"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        return f"{meta_path} is unreadable: {err}"
    for name in VIEW_FILES:
        file = Path(folder) / name
        if not file.is_file() or file.stat().st_size != sizes.get(name):
            return f"{file} is missing or not of the {sizes.get(name)} bytes meta.json recorded"
    return None


def open_view(folder: Path) -> ItemEmbeddings:
    """Reopen a complete view folder written by item_embeddings."""
    meta = json.loads((Path(folder) / "meta.json").read_text())
    return ItemEmbeddings(
        vectors=np.load(folder / "vectors.npy", mmap_mode="c"),
        present=np.load(folder / "present.npy", mmap_mode="c"),
        cold_ids=np.load(folder / "cold_ids.npy"),
        num_items=meta["num_items"],
        column=meta["column"],
        path=Path(folder),
        meta=meta,
    )


def _build_view(
    folder: Path,
    source: Path,
    names: dict[str, str],
    column: str,
    cold: bool,
    items: np.ndarray,
    key: str,
    progress: bool,
    final: Path,
) -> None:
    """Fill an empty folder with the view's files (meta.json last: its presence marks the folder complete)."""
    started = time.perf_counter()
    pf = io.open_parquet(source)
    # pass 1: the item ids of every row group (8 bytes per file row)
    group_ids = [
        _ids(source, "item_id", pf.read_row_group(group, columns=[names["item_id"]]).column(0))
        for group in range(pf.num_row_groups)
    ]
    file_ids = np.concatenate(group_ids) if group_ids else np.zeros(0, np.int64)
    items = np.asarray(items).astype(np.int64)
    slot = np.searchsorted(items, file_ids)
    in_train = slot < len(items)
    in_train[in_train] = items[slot[in_train]] == file_ids[in_train]
    cold_ids = np.unique(file_ids[~in_train]) if cold else np.zeros(0, np.int64)
    # each file row's output row: its item_idx, num_items + its rank among the cold ids, or -1 (not wanted)
    dest = np.where(in_train, slot, -1)
    if cold:
        dest[~in_train] = len(items) + np.searchsorted(cold_ids, file_ids[~in_train])
    rows = len(items) + len(cold_ids)
    present = np.zeros(rows, dtype=bool)
    out = _VectorFile(folder / "vectors.npy", rows, dest, [(0, len(items)), (len(items), rows)])
    # pass 2: vectors of the row groups that hold a wanted row (an id twice in the file: the last wins)
    bar = Progress("embeddings view", total=len(file_ids), unit="file rows", enabled=progress)
    start = 0
    for group, ids in enumerate(group_ids):
        group_dest = dest[start : start + len(ids)]
        start += len(ids)
        bar.update(len(ids))
        wanted = np.flatnonzero(group_dest >= 0)
        if not len(wanted):
            continue
        lists = pf.read_row_group(group, columns=[names[column]]).column(0).take(pa.array(wanted))
        out.write(group_dest[wanted], _vectors(source, names[column], lists, ids[wanted]))
        present[group_dest[wanted]] = True
    out.close()
    bar.close()
    np.save(folder / "present.npy", present)
    np.save(folder / "cold_ids.npy", cold_ids.astype(np.uint32))
    meta = {
        "version": VIEW_VERSION,
        "key": key,
        "column": column,
        "cold": cold,
        "num_items": len(items),
        "num_cold": len(cold_ids),
        "num_present_train": int(present[: len(items)].sum()),
        "source": {"path": str(source), "rows": len(file_ids)},
        "files": {name: (folder / name).stat().st_size for name in VIEW_FILES},
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "build_seconds": round(time.perf_counter() - started, 3),
    }
    with io.atomic_path(folder / "meta.json") as tmp:
        tmp.write_text(json.dumps(meta, indent=2, sort_keys=True))
    if progress:
        print(
            f"embeddings view: {meta['num_present_train']:,} of {len(items):,} train items have a vector"
            + (f", {len(cold_ids):,} cold candidates" if cold else "")
            + f" ({meta['build_seconds']:.1f} s) -> {final}",
            flush=True,
        )


class _VectorFile:
    """A (rows, 128) float32 .npy file written row group by row group, rows absent from every write left zero.

    When the file's rows map to ascending output rows within each region (train rows, cold rows: the release's
    file is sorted by item_id, and so are both), each write appends to its region in order: plain sequential
    writes through the page cache, never the process's memory, and stretches without a vector are left as holes
    (zeros). Otherwise (an unsorted file) the rows go through a memory map, in any order: correct, and slower (a
    page fault per scattered row)."""

    def __init__(self, path: Path, rows: int, dest: np.ndarray, regions: list[tuple[int, int]]) -> None:
        self.rows = rows
        ordered = all(np.all(np.diff(dest[(dest >= lo) & (dest < hi)]) > 0) for lo, hi in regions)
        self.map = None
        if not ordered:
            self.map = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(rows, S.EMBEDDING_DIM))
            return
        self.handle = open(path, "wb")  # closed in close()
        np.lib.format.write_array_header_1_0(
            self.handle, {"descr": "<f4", "fortran_order": False, "shape": (rows, S.EMBEDDING_DIM)}
        )
        self.data_start = self.handle.tell()
        self.regions = regions
        self.next_row = [lo for lo, _ in regions]  # the first row of each region not written yet

    def write(self, rows: np.ndarray, vectors: np.ndarray) -> None:
        """Rows (ascending within each region when ordered) get `vectors`."""
        if self.map is not None:
            self.map[rows] = vectors
            return
        for region, (lo, hi) in enumerate(self.regions):
            inside = (rows >= lo) & (rows < hi)
            if not inside.any():
                continue
            block_rows, block_vectors = rows[inside], vectors[inside]
            first, last = self.next_row[region], int(block_rows[-1]) + 1
            # the span in pieces of BLOCK_ROWS rows (memory: one piece); pieces without a vector are left as holes
            starts = np.arange(first, last, BLOCK_ROWS)
            bounds = np.searchsorted(block_rows, np.append(starts, last))
            for piece, (a, b) in enumerate(itertools.pairwise(bounds)):
                if a == b:
                    continue
                piece_first = int(starts[piece])
                piece_last = int(block_rows[b - 1]) + 1
                block = np.zeros((piece_last - piece_first, S.EMBEDDING_DIM), np.float32)
                block[block_rows[a:b] - piece_first] = block_vectors[a:b]
                os.pwrite(self.handle.fileno(), block.data, self.data_start + piece_first * ROW_BYTES)
            self.next_row[region] = last

    def close(self) -> None:
        if self.map is not None:
            self.map.flush()
            self.map = None
            return
        self.handle.truncate(self.data_start + self.rows * ROW_BYTES)  # rows never written read as zeros (holes)
        self.handle.close()


BLOCK_ROWS = 65_536  # output rows written at once: 32 MB
ROW_BYTES = S.EMBEDDING_DIM * 4
