"""The Yambda schema in one place: file names, column names and official Arrow types (docs/data.md).

Every reader and writer in yambda_dl takes its types from here; nothing else spells a column type.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from yambda_dl.data import protocol as P

# --- dataset facts (docs/data.md) -------------------------------------------------------------------------------
RELEASE_SIZES = ("50m", "500m", "5b")
FORMATS = ("flat", "sequential")
EVENT_FILES = ("listens", "likes", "dislikes", "unlikes", "undislikes", "multi_event")
EVENT_TYPES = ("listen", "like", "dislike", "unlike", "undislike")
# event file -> the value of event_type its rows carry in multi_event
EVENT_TYPE_OF_FILE = {
    "listens": "listen",
    "likes": "like",
    "dislikes": "dislike",
    "unlikes": "unlike",
    "undislikes": "undislike",
}
# the time axis' end and grid are protocol constants (data/protocol.py), re-exported for the value checks
LAST_TIMESTAMP = P.LAST_TIMESTAMP  # seconds; the end of the global time axis
TIMESTAMP_STEP = P.TIMESTAMP_STEP  # timestamps are floored to multiples of 5 seconds
MAX_PLAYED_RATIO_PCT = 159
EMBEDDING_DIM = 128

EMBEDDINGS_FILE = "embeddings.parquet"
ARTIST_MAPPING_FILE = "artist_item_mapping.parquet"
ALBUM_MAPPING_FILE = "album_item_mapping.parquet"

# --- column types ---------------------------------------------------------------------------------------------------
EVENT_TYPE_ARROW = pa.dictionary(pa.int32(), pa.string())

BASE_COLUMNS: dict[str, pa.DataType] = {
    "uid": pa.uint32(),
    "timestamp": pa.uint32(),
    "item_id": pa.uint32(),
    "is_organic": pa.uint8(),
}
LISTEN_COLUMNS: dict[str, pa.DataType] = {
    "played_ratio_pct": pa.uint16(),
    "track_length_seconds": pa.uint32(),
}

# Sequential list columns: the dataset card names two of them in the plural; the official code reads the singular.
# We write the singular and accept both when reading.
SEQUENTIAL_ALIASES = {"item_ids": "item_id", "timestamps": "timestamp"}


def flat_columns(event_file: str) -> dict[str, pa.DataType]:
    """Column name -> official Arrow type of a flat event file."""
    check_event_file(event_file)
    columns = dict(BASE_COLUMNS)
    if event_file in ("listens", "multi_event"):
        columns.update(LISTEN_COLUMNS)
    if event_file == "multi_event":
        columns["event_type"] = EVENT_TYPE_ARROW
    return columns


def nullable_columns(event_file: str) -> frozenset[str]:
    """Columns allowed to hold nulls: in multi_event, the listen columns of non-listen rows."""
    return frozenset(LISTEN_COLUMNS) if event_file == "multi_event" else frozenset()


def flat_schema(event_file: str) -> pa.Schema:
    nullable = nullable_columns(event_file)
    return pa.schema([pa.field(n, t, nullable=n in nullable) for n, t in flat_columns(event_file).items()])


def sequential_schema(event_file: str) -> pa.Schema:
    """One row per user: uid plus one list column per other flat column, each list in time order."""
    fields = [pa.field("uid", pa.uint32(), nullable=False)]
    for name, dtype in flat_columns(event_file).items():
        if name != "uid":
            fields.append(pa.field(name, pa.list_(dtype)))
    return pa.schema(fields)


EMBEDDINGS_SCHEMA = pa.schema(
    [
        pa.field("item_id", pa.uint32(), nullable=False),
        pa.field("embed", pa.list_(pa.float32())),
        pa.field("normalized_embed", pa.list_(pa.float32())),
    ]
)
ARTIST_MAPPING_SCHEMA = pa.schema(
    [pa.field("artist_id", pa.uint32(), nullable=False), pa.field("item_id", pa.uint32(), nullable=False)]
)
ALBUM_MAPPING_SCHEMA = pa.schema(
    [pa.field("album_id", pa.uint32(), nullable=False), pa.field("item_id", pa.uint32(), nullable=False)]
)


class SchemaError(ValueError):
    """A Yambda file does not match the official layout; the message names the file, the column and the fix."""


def check_event_file(event_file: str) -> None:
    if event_file not in EVENT_FILES:
        raise SchemaError(f"unknown event file {event_file!r}; valid choices: {', '.join(EVENT_FILES)}")


def check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise SchemaError(f"unknown format {fmt!r}; valid choices: {', '.join(FORMATS)}")


def _castable(source: pa.DataType, target: pa.DataType) -> bool:
    """Whether values of `source` can be cast to `target` (value range is checked on the data, by a safe cast)."""
    if source == target:
        return True
    if pa.types.is_dictionary(target):
        return pa.types.is_dictionary(source) or pa.types.is_string(source) or pa.types.is_large_string(source)
    if pa.types.is_integer(target):
        return pa.types.is_integer(source)
    if pa.types.is_floating(target):
        return pa.types.is_floating(source) or pa.types.is_integer(source)
    if pa.types.is_list(target) or pa.types.is_large_list(target):
        return (
            pa.types.is_list(source) or pa.types.is_large_list(source) or pa.types.is_fixed_size_list(source)
        ) and _castable(source.value_type, target.value_type)
    return False


def resolve_columns(
    path: Path | str, file_schema: pa.Schema, expected: pa.Schema, wanted: list[str] | None = None
) -> dict[str, str]:
    """Map each wanted expected column to its name in the file (aliases allowed), checking presence and type.

    Raises SchemaError naming the file, the column, its type and the valid choices.
    """
    wanted = list(expected.names) if wanted is None else wanted
    aliases_in_file = {SEQUENTIAL_ALIASES.get(n, n): n for n in file_schema.names}
    mapping: dict[str, str] = {}
    for name in wanted:
        if name not in expected.names:
            raise SchemaError(
                f"{path}: column {name!r} is not part of this file's schema; valid columns: {', '.join(expected.names)}"
            )
        if name not in aliases_in_file:
            alias = [a for a, c in SEQUENTIAL_ALIASES.items() if c == name]
            also = f" (or its alias {alias[0]!r})" if alias else ""
            raise SchemaError(f"{path}: missing column {name!r}{also}; the file has: {', '.join(file_schema.names)}")
        in_file = aliases_in_file[name]
        source, target = file_schema.field(in_file).type, expected.field(name).type
        if not _castable(source, target):
            raise SchemaError(
                f"{path}: column {in_file!r} has type {source}, which cannot be cast safely to the official {target}"
            )
        mapping[name] = in_file
    return mapping
