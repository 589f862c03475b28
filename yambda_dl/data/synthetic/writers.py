"""Writing a dataset: each user batch's six flat tables and their sequential form, embeddings and mappings, all in
the release's layout and official types (docs/data.md)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa

from yambda_dl.data import io
from yambda_dl.data import schema as S
from yambda_dl.data.layout import DatasetLayout
from yambda_dl.data.synthetic import guarantee
from yambda_dl.data.synthetic.catalogue import Catalogue
from yambda_dl.data.synthetic.config import MAX_ALBUM_ID, MAX_ARTIST_ID, MAX_UID, Behaviour, SynthConfig
from yambda_dl.data.synthetic.feedback import Events, feedback
from yambda_dl.data.synthetic.sampling import group_starts, rng, sparse_ids
from yambda_dl.data.synthetic.sessions import Listens, generate_listens
from yambda_dl.data.synthetic.users import Users, make_users
from yambda_dl.utils.progress import Progress

COMPRESSION = "zstd"  # pyarrow writes zstd at level 1 by default: fast, and still 3-5x smaller than raw
ONE_ROW_GROUP = 1 << 30  # one Parquet row group per user batch, whatever its size


def write_events(
    cfg: SynthConfig, cat: Catalogue, root: Path, seed: int, bar: Progress
) -> tuple[dict[str, int], int, int]:
    """Generate user batch after user batch, writing flat and sequential files from the same tables.

    Memory: the catalogue plus one batch (cfg.batch_users users' events and their tables); nothing else grows.
    """
    layout = DatasetLayout(root, cfg.name)
    uids = sparse_ids(rng(seed, 1), cfg.n_users, MAX_UID - 1)
    heard = np.zeros(len(cat.item_ids), bool)
    dense_of = _dense_lookup(cat.item_ids)
    covered = np.zeros((len(guarantee.KINDS), len(guarantee.WINDOWS)), bool)
    starts = range(0, cfg.n_users, cfg.batch_users)
    users_seen = 0
    with contextlib.ExitStack() as stack:
        sinks = {
            (fmt, f): stack.enter_context(
                io.ParquetSink(layout.event_path(f, fmt), _schema(fmt, f), ONE_ROW_GROUP, COMPRESSION)
            )
            for fmt in S.FORMATS
            for f in S.EVENT_FILES
        }
        for b, lo in enumerate(starts):
            batch_rng = rng(seed, 2, b)
            batch_uids = uids[lo : lo + cfg.batch_users]
            users = make_users(cfg, cat, batch_rng, len(batch_uids))
            listens = generate_listens(cat, users, cfg.behaviour, batch_rng)
            events = feedback(listens, users, cfg.behaviour, batch_rng)
            covered |= guarantee.coverage(users, listens, events)
            if b == len(starts) - 1:  # the last chance to give both target days events of every type
                users, listens, events = guarantee.complete(cat, users, listens, events, covered, rng(seed, 6))
            tables = _batch_tables(cat, users, listens, events, batch_uids, cfg.behaviour, batch_rng)
            for f, table in tables.items():
                sinks["flat", f].write(table)
                sinks["sequential", f].write(_to_sequential(table, f))
            heard[dense_of(tables["multi_event"].column("item_id").to_numpy())] = True
            users_seen += len(np.unique(tables["multi_event"].column("uid").to_numpy()))
            bar.update(len(batch_uids))
        rows = {f: sinks["flat", f].rows for f in S.EVENT_FILES}
    return rows, users_seen, int(heard.sum())


def _batch_tables(
    cat: Catalogue,
    users: Users,
    listens: Listens,
    events: dict[str, Events],
    uids: np.ndarray,
    b: Behaviour,
    rng: np.random.Generator,
) -> dict[str, pa.Table]:
    """The six flat tables of one user batch, each sorted by (uid, timestamp)."""
    visible = users.listening[listens.user]
    # phantom users' listens are dropped; 0.5% of the others are written twice (exact duplicates)
    repeat = visible.astype(np.int64) * (1 + (rng.random(len(visible)) < b.duplicates))
    keep = np.repeat(np.arange(len(visible)), repeat)
    item = listens.item[keep]
    columns = {
        "uid": uids[listens.user[keep]],
        "timestamp": listens.timestamp[keep],
        "item_id": cat.item_ids[item],
        "is_organic": listens.organic[keep],
        "played_ratio_pct": listens.ratio[keep],
        "track_length_seconds": cat.track_length[item],
    }
    tables = {"listens": _table(columns, "listens")}
    for kind, (user, timestamp, item, organic) in events.items():
        order = np.lexsort((timestamp, user))
        columns = {
            "uid": uids[user[order]],
            "timestamp": timestamp[order],
            "item_id": cat.item_ids[item[order]],
            "is_organic": organic[order],
        }
        tables[kind] = _table(columns, kind)
    tables["multi_event"] = _merge(tables)
    return tables


def _table(columns: dict[str, np.ndarray], event_file: str) -> pa.Table:
    schema = S.flat_schema(event_file)
    arrays = {f.name: pa.array(columns[f.name].astype(f.type.to_pandas_dtype()), f.type) for f in schema}
    return pa.table(arrays, schema=schema)


def _merge(tables: dict[str, pa.Table]) -> pa.Table:
    """multi_event: the five files merged in (uid, timestamp) order, listen columns null on other rows."""
    parts = [tables[f] for f in S.EVENT_TYPE_OF_FILE]  # listens first: EVENT_TYPES order
    code = np.repeat(np.arange(len(parts), dtype=np.int32), [p.num_rows for p in parts])
    column = {n: np.concatenate([p.column(n).to_numpy() for p in parts]) for n in S.BASE_COLUMNS}
    order = np.lexsort((column["timestamp"], column["uid"]))  # stable: listens first within a timestamp
    arrays = {n: pa.array(v[order]) for n, v in column.items()}
    is_listen = order < parts[0].num_rows
    for name, dtype in S.LISTEN_COLUMNS.items():
        values = np.zeros(len(order), dtype.to_pandas_dtype())
        values[is_listen] = parts[0].column(name).to_numpy()[order[is_listen]]
        arrays[name] = pa.array(values, dtype, mask=~is_listen)
    arrays["event_type"] = pa.DictionaryArray.from_arrays(pa.array(code[order]), pa.array(S.EVENT_TYPES))
    return pa.table(arrays, schema=S.flat_schema("multi_event"))


def _to_sequential(table: pa.Table, event_file: str) -> pa.Table:
    """One row per uid, every other column a list in time order (the table is sorted by uid, timestamp)."""
    uid = table.column("uid").to_numpy()
    starts = group_starts(uid) if len(uid) else np.zeros(1, np.int64)
    offsets = pa.array(starts.astype(np.int32))
    columns = {"uid": pa.array(uid[starts[:-1]], pa.uint32())}
    for name in table.column_names[1:]:
        columns[name] = pa.ListArray.from_arrays(offsets, table.column(name).combine_chunks())
    return pa.table(columns).cast(S.sequential_schema(event_file))


def _schema(fmt: str, event_file: str) -> pa.Schema:
    return S.flat_schema(event_file) if fmt == "flat" else S.sequential_schema(event_file)


def _dense_lookup(item_ids: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """raw item id -> dense index, by binary search over the sorted ids."""
    order = np.argsort(item_ids)
    sorted_ids = item_ids[order]
    return lambda raw: order[np.searchsorted(sorted_ids, raw)]


def write_embeddings(cat: Catalogue, root: Path, seed: int, b: Behaviour, chunk: int = 65_536) -> None:
    """embeddings.parquet sorted by item_id: genre + artist + item noise, so audio neighbours share listeners.

    82% of the items, the missing ones leaning to the unpopular tail. Written chunk by chunk of ids, one row
    group each (memory: a chunk of 2 x 128 float32 per item, ~70 MB).
    """
    gen = rng(seed, 4)
    n_artists = len(cat.artist_start) - 1
    genre_of_artist = np.repeat(np.arange(len(cat.genre_artist_start) - 1), np.diff(cat.genre_artist_start))
    genre_centre = gen.normal(0.0, b.genre_spread, (len(cat.genre_p), S.EMBEDDING_DIM)).astype(np.float32)
    artist_noise = gen.normal(0.0, b.artist_spread, (n_artists, S.EMBEDDING_DIM)).astype(np.float32)
    artist_centre = genre_centre[genre_of_artist] + artist_noise
    popularity = np.diff(cat.item_cum)
    tail_rank = np.argsort(np.argsort(-popularity)) / len(popularity)  # 0 the most popular item, ~1 the least
    present = gen.random(len(popularity)) >= 2 * (1 - b.embedded) * tail_rank
    present |= cat.release_day > 0  # new releases come with their audio: the cold items content models can rank
    order = np.argsort(cat.item_ids)
    order = order[present[order]]
    with io.ParquetSink(root / S.EMBEDDINGS_FILE, S.EMBEDDINGS_SCHEMA, ONE_ROW_GROUP, COMPRESSION) as sink:
        for c, lo in enumerate(range(0, len(order), chunk)):
            dense = order[lo : lo + chunk]
            noise = rng(seed, 5, c).normal(0.0, b.item_spread, (len(dense), S.EMBEDDING_DIM)).astype(np.float32)
            embed = artist_centre[cat.artist_of[dense]] + noise
            unit = embed / np.linalg.norm(embed, axis=1, keepdims=True)
            ids = pa.array(cat.item_ids[dense])
            sink.write(pa.table({"item_id": ids, "embed": _vectors(embed), "normalized_embed": _vectors(unit)}))


def _vectors(matrix: np.ndarray) -> pa.ListArray:
    offsets = pa.array(np.arange(0, matrix.size + 1, matrix.shape[1], dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(matrix.ravel()))


def write_mappings(cat: Catalogue, root: Path, gen: np.random.Generator, b: Behaviour) -> None:
    """artist_item_mapping (one artist per item) and album_item_mapping (albums of ~3 consecutive tracks of
    an artist, 10% of tracks also on a second album), in sparse raw ids, sorted like the release."""
    n_items = len(cat.item_ids)
    artist_ids = gen.permutation(sparse_ids(gen, len(cat.artist_start) - 1, MAX_ARTIST_ID, low=1))
    _write_pairs(root / S.ARTIST_MAPPING_FILE, "artist_id", artist_ids[cat.artist_of], cat.item_ids)
    rank_in_artist = np.arange(n_items) - cat.artist_start[cat.artist_of]
    opens = (rank_in_artist == 0) | (gen.random(n_items) < 1 / b.items_per_album)
    album = np.cumsum(opens) - 1
    n_albums = int(album[-1]) + 1
    album_ids = gen.permutation(sparse_ids(gen, n_albums, max(MAX_ALBUM_ID, n_albums), low=1))
    extra = np.flatnonzero(gen.random(n_items) < b.second_album)
    albums = np.concatenate([album, gen.integers(0, n_albums, len(extra))])
    items = np.concatenate([np.arange(n_items), extra])
    _write_pairs(root / S.ALBUM_MAPPING_FILE, "album_id", album_ids[albums], cat.item_ids[items])


def _write_pairs(path: Path, key: str, keys: np.ndarray, item_ids: np.ndarray) -> None:
    order = np.lexsort((item_ids, keys))
    keys_array, items_array = pa.array(keys[order], pa.uint32()), pa.array(item_ids[order], pa.uint32())
    io.write_parquet(pa.table({key: keys_array, "item_id": items_array}), path)
