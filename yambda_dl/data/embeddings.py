"""Readers for the item side files: audio embeddings and the item -> artist / album mappings.

`read_embeddings` aligns the 128-d audio vectors of embeddings.parquet (about 7.72M rows, 13.8 GB) to the raw
item ids a run needs. It streams the file one row group at a time: the item_id column first, the vector column
only for row groups that hold a wanted item, so memory is the output plus one row group. Items without an
embedding (about 18%, mostly in the tail) get zeros and `present` False, so a model decides how to treat them.

`read_item_mapping` does the same for artist_item_mapping.parquet / album_item_mapping.parquet: one artist
(the first in file order) or album per wanted item, with a `present` mask.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from yambda_dl.data import io
from yambda_dl.data import schema as S

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
