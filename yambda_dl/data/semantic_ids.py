"""Semantic IDs: residual k-means codes of the audio vectors, a cached artefact of the catalogue (not of a model).

Level 1 clusters the vectors into `codebook_size` centroids, level 2 clusters what level 1 leaves (the residuals),
and so on for `levels` levels: an item's code is its tuple of centroid indices, and the sum of those centroids
approximates its vector. Items whose tuples coincide get one more level, their rank inside the collision group, so
that every item's code is unique (TIGER's recipe). Items without a vector get no code here; a model decides
(items.SemanticIds gives them a reserved code and a unique last level).

Fitting: faiss k-means per level on a seeded sample of the vectors (`sample_per_centroid` points per centroid, as
faiss itself caps), then every vector is encoded in one streaming pass over the file, by row group. The same pass
gathers the diagnostics, printed and stored in meta.json:
  collision_rate           share of items whose `levels`-tuple is shared with another item
  level_use / perplexity   share of each level's codes in use, and exp(entropy) of their frequencies
  reconstruction_cosine    mean cosine between a vector and the sum of its centroids
  neighbour_preservation   mean overlap of each sampled item's top-`neighbours` audio neighbours (cosine) with its
                           top neighbours among the reconstructed vectors (1 = the codes keep the audio's geometry)
Codes reproduce from the seed. The folder ROOT/.cache/semantic_ids/KEY (ROOT: the embeddings file's folder) is keyed
by the file's footer hash, the column and every setting; it is created once under a lock (io.build_once) and never
replaced while complete. Memory: the codes (4 bytes per item and level), the file's item ids, the sample, and one
row group with its distances to the centroids.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from yambda_dl.data import io
from yambda_dl.data import schema as S
from yambda_dl.data.embeddings import EMBEDDING_COLUMNS, _check_fixed_size, _ids, _vectors, embeddings_path
from yambda_dl.utils.progress import Progress

if TYPE_CHECKING:
    from yambda_dl.data.split import Split

VERSION = 1  # bump when the codes' meaning or the folder's files change
FILES = ("item_ids.npy", "codes.npy", "centroids.npy")
ENCODE_ROWS = 65_536  # vectors encoded at once: 64 MB of distances at 256 codes
NEIGHBOUR_COLUMNS = 8_192  # items scored against the diagnostic queries at once: 1000 x 8192 x 12 bytes = 98 MB


@dataclass(frozen=True)
class CodebookConfig:
    """What decides the codes (each a config key of items.SemanticIds); part of the cache key."""

    levels: int = 3
    codebook_size: int = 256
    column: str = "normalized_embed"
    seed: int = 0
    iterations: int = 20  # k-means iterations per level
    sample_per_centroid: int = 256  # training points per centroid (faiss' own default cap)
    neighbours: int = 10  # diagnostics: top-k neighbours compared
    diagnostic_queries: int = 1000  # diagnostics: items whose neighbours are compared

    def __post_init__(self) -> None:
        if self.column not in EMBEDDING_COLUMNS:
            raise ValueError(f"semantic_ids column={self.column!r}; valid choices: {', '.join(EMBEDDING_COLUMNS)}")
        sizes = {k: v for k, v in asdict(self).items() if k not in ("column", "seed")}
        bad = next((k for k, v in sizes.items() if not (isinstance(v, int) and v >= 1)), None)
        if bad is not None:
            raise ValueError(f"semantic_ids {bad}={sizes[bad]!r} must be an integer >= 1")
        if self.codebook_size < 2:
            raise ValueError(f"semantic_ids codebook_size={self.codebook_size} must be >= 2")


@dataclass(frozen=True)
class SemanticIds:
    """Codes of every item of the embeddings file: item_ids[r]'s code is codes[r] (levels + 1 columns, the last the
    collision level); centroids[l] is level l's codebook."""

    item_ids: np.ndarray  # (n,) uint32 ascending
    codes: np.ndarray  # (n, levels + 1) int32
    centroids: np.ndarray  # (levels, codebook_size, 128) float32
    meta: dict
    path: Path

    @property
    def levels(self) -> int:
        return self.centroids.shape[0]

    @property
    def collision_levels(self) -> int:
        """Rows the last level's table needs: the largest collision group's size."""
        return int(self.meta["collision_level_size"])

    def for_items(self, item_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(codes (len, levels + 1) int32, present bool) of raw `item_ids`; rows without a vector are -1."""
        item_ids = np.asarray(item_ids).astype(np.int64)
        pos = np.searchsorted(self.item_ids, item_ids)
        present = pos < len(self.item_ids)
        present[present] = self.item_ids[pos[present]] == item_ids[present]
        codes = np.full((len(item_ids), self.codes.shape[1]), -1, dtype=np.int32)
        codes[present] = self.codes[pos[present]]
        return codes, present


def cache_folder(source: Path, cfg: CodebookConfig, cache_dir: Path | None = None) -> Path:
    """ROOT/.cache/semantic_ids/KEY: the key hashes the file's footer (split.source_fingerprint) and the settings."""
    from yambda_dl.data.split import source_fingerprint

    blob = json.dumps({"source": source_fingerprint(source), "config": asdict(cfg), "version": VERSION}, sort_keys=True)
    key = hashlib.sha256(blob.encode()).hexdigest()[:16]
    return Path(cache_dir if cache_dir is not None else source.parent / ".cache" / "semantic_ids") / key


def semantic_ids(
    source: Path | str, cfg: CodebookConfig | None = None, cache_dir: Path | None = None, progress: bool = True
) -> SemanticIds:
    """The semantic IDs of the embeddings file `source` under `cfg`, from the cache or computed now (module doc)."""
    cfg = cfg or CodebookConfig()
    source = Path(source).expanduser()
    pf = io.open_parquet(source, hint="download it with `yambda-data download --embeddings` (or set data.side_files)")
    names = S.resolve_columns(source, pf.schema_arrow, S.EMBEDDINGS_SCHEMA, ["item_id", cfg.column])
    _check_fixed_size(source, pf.schema_arrow.field(names[cfg.column]))
    folder = cache_folder(source, cfg, cache_dir)
    if _problem(folder) is not None:
        with io.build_once(folder, lambda f: _problem(f) is None) as tmp:
            if tmp is not None:
                meta = _build(tmp, source, names, cfg, progress)
                if progress:
                    print(describe(meta) + f" -> {folder}", flush=True)
    return open_semantic_ids(folder)


def split_semantic_ids(split: Split, cfg: CodebookConfig | None = None, progress: bool = True) -> SemanticIds:
    """semantic_ids of the split's embeddings file (data config side_files.embeddings)."""
    return semantic_ids(embeddings_path(split), cfg, progress=progress)


def open_semantic_ids(folder: Path) -> SemanticIds:
    folder = Path(folder)
    return SemanticIds(
        item_ids=np.load(folder / "item_ids.npy"),
        codes=np.load(folder / "codes.npy"),
        centroids=np.load(folder / "centroids.npy"),
        meta=json.loads((folder / "meta.json").read_text()),
        path=folder,
    )


def describe(meta: dict) -> str:
    """One line of the diagnostics."""
    d = meta["diagnostics"]
    use = ", ".join(f"{u:.0%}" for u in d["level_use"])
    return (
        f"semantic IDs: {meta['items']:,} items, {meta['config']['levels']} x {meta['config']['codebook_size']} codes "
        f"(+ a collision level of {meta['collision_level_size']}): collision rate {d['collision_rate']:.2%}, code use "
        f"per level {use}, reconstruction cosine {d['reconstruction_cosine']:.3f}, neighbour preservation@"
        f"{meta['config']['neighbours']} {d['neighbour_preservation']:.3f} ({meta['build_seconds']:.1f} s)"
    )


def _problem(folder: Path) -> str | None:
    meta_path = Path(folder) / "meta.json"
    if not meta_path.is_file():
        return "no meta.json"
    try:
        sizes = json.loads(meta_path.read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        return f"{meta_path} is unreadable: {err}"
    for name in FILES:
        if not (folder / name).is_file() or (folder / name).stat().st_size != sizes.get(name):
            return f"{folder / name} is missing or of another size than meta.json recorded"
    return None


# --- building -------------------------------------------------------------------------------------------------------


def _unit(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


def _kmeans(points: np.ndarray, k: int, cfg: CodebookConfig, level: int) -> np.ndarray:
    """(k, 128) float32 centroids: k-means++ seeding (numpy, seeded per level), then faiss' Lloyd iterations.
    Fewer points than k: the points, repeated (the extra centroids are never nearest to anything new)."""
    import faiss

    points = np.ascontiguousarray(points, dtype=np.float32)
    if len(points) <= k:
        return np.ascontiguousarray(np.resize(points, (k, points.shape[1])))
    init = _kmeans_plus_plus(points, k, np.random.default_rng([cfg.seed, level]))
    kmeans = faiss.Kmeans(
        points.shape[1],
        k,
        niter=cfg.iterations,
        seed=cfg.seed,
        max_points_per_centroid=10**9,
        min_points_per_centroid=1,
    )
    kmeans.train(points, init_centroids=init)
    return kmeans.centroids.astype(np.float32)


def _kmeans_plus_plus(points: np.ndarray, k: int, gen: np.random.Generator) -> np.ndarray:
    """k-means++ seeding: each next centre drawn with probability proportional to the squared distance to the
    nearest chosen one (random seeding leaves whole clusters without a centroid). Memory: one distance per point."""
    centres = np.empty((k, points.shape[1]), np.float32)
    centres[0] = points[gen.integers(len(points))]
    nearest = ((points - centres[0]) ** 2).sum(1)
    for c in range(1, k):  # k draws, each a vectorized pass over the points
        total = nearest.sum()
        pick = gen.choice(len(points), p=nearest / total) if total > 0 else gen.integers(len(points))
        centres[c] = points[pick]
        np.minimum(nearest, ((points - centres[c]) ** 2).sum(1), out=nearest)
    return centres


def _assign(vectors: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Nearest centroid (L2) of each vector, ties to the lower index (int32); memory: rows x k distances."""
    distances = (centroids**2).sum(1)[None, :] - 2.0 * vectors @ centroids.T  # |c|^2 - 2 x.c: |x|^2 is per row
    return np.argmin(distances, axis=1).astype(np.int32)


def _encode(vectors: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Residual encoding through every level: codes (n, levels) and the reconstructions (n, 128)."""
    residual = vectors.astype(np.float32).copy()
    codes = np.empty((len(vectors), len(centroids)), dtype=np.int32)
    for level, book in enumerate(centroids):
        codes[:, level] = _assign(residual, book)
        residual -= book[codes[:, level]]
    return codes, vectors - residual


def _sample(pf, names: dict[str, str], column: str, source: Path, rows: np.ndarray) -> np.ndarray:
    """The vectors of the given (sorted) file rows, streamed row group by row group."""
    out, start = [], 0
    for group in range(pf.num_row_groups):
        n = pf.metadata.row_group(group).num_rows
        take = rows[(rows >= start) & (rows < start + n)] - start
        if len(take):
            lists = pf.read_row_group(group, columns=[names[column]]).column(0).take(pa.array(take))
            out.append(_vectors(source, names[column], lists, take))
        start += n
    return np.concatenate(out) if out else np.zeros((0, S.EMBEDDING_DIM), np.float32)


class _Neighbours:
    """Running top-k neighbours (by cosine, self excluded) of fixed queries among the raw and reconstructed vectors."""

    def __init__(self, rows: np.ndarray, raw: np.ndarray, recon: np.ndarray, k: int):
        self.rows, self.k = rows, k
        self.queries = [_unit(raw), _unit(recon)]
        empty = (np.full((len(rows), k), -np.inf, np.float32), np.full((len(rows), k), -1, np.int64))
        self.best = [empty, empty]  # (scores, file rows) among the raw and the reconstructed vectors

    def add(self, start: int, raw: np.ndarray, recon: np.ndarray) -> None:
        """Merge the rows start.. (raw and reconstructed vectors) into the running top-k, NEIGHBOUR_COLUMNS at a
        time (memory: queries x NEIGHBOUR_COLUMNS scores and indices)."""
        for lo in range(0, len(raw), NEIGHBOUR_COLUMNS):
            self._add(start + lo, raw[lo : lo + NEIGHBOUR_COLUMNS], recon[lo : lo + NEIGHBOUR_COLUMNS])

    def _add(self, start: int, raw: np.ndarray, recon: np.ndarray) -> None:
        index = np.arange(start, start + len(raw))
        mine = np.flatnonzero((self.rows >= start) & (self.rows < start + len(raw)))  # queries inside this chunk
        k = min(self.k, len(raw))
        for which, chunk in enumerate((_unit(raw), _unit(recon))):
            scores = self.queries[which] @ chunk.T  # (queries, chunk)
            scores[mine, self.rows[mine] - start] = -np.inf  # never an item's own neighbour
            part = np.argpartition(-scores, k - 1, axis=1)[:, :k]  # the chunk's top k, unordered: O(chunk)
            scores = np.concatenate([self.best[which][0], np.take_along_axis(scores, part, 1)], axis=1)
            ids = np.concatenate([self.best[which][1], index[part]], axis=1)
            top = np.argsort(-scores, axis=1, kind="stable")[:, : self.k]
            self.best[which] = (np.take_along_axis(scores, top, 1), np.take_along_axis(ids, top, 1))

    def overlap(self) -> float:
        """Mean share of the audio top-k that the reconstructed top-k keeps."""
        audio, codes = self.best[0][1], self.best[1][1]
        hits = (audio[:, :, None] == codes[:, None, :]).any(axis=2) & (audio >= 0)
        return float(hits.sum(1).mean() / self.k) if len(audio) else 1.0


def _build(folder: Path, source: Path, names: dict[str, str], cfg: CodebookConfig, progress: bool = True) -> dict:
    started = time.perf_counter()
    pf = io.open_parquet(source)
    n = pf.metadata.num_rows
    gen = np.random.default_rng(cfg.seed)
    sample_rows = np.sort(gen.choice(n, size=min(n, cfg.codebook_size * cfg.sample_per_centroid), replace=False))
    sample = _sample(pf, names, cfg.column, source, sample_rows)
    centroids = np.zeros((cfg.levels, cfg.codebook_size, S.EMBEDDING_DIM), dtype=np.float32)
    residual = sample.copy()
    for level in range(cfg.levels):
        centroids[level] = _kmeans(residual, cfg.codebook_size, cfg, level)
        residual -= centroids[level][_assign(residual, centroids[level])]
    query_pos = np.sort(gen.choice(len(sample_rows), size=min(len(sample_rows), cfg.diagnostic_queries), replace=False))
    query_raw = sample[query_pos]
    neighbours = _Neighbours(sample_rows[query_pos], query_raw, _encode(query_raw, centroids)[1], cfg.neighbours)
    # one streaming pass: encode every vector, gather the diagnostics
    bar = Progress("semantic ids: encoding", total=n, unit="items", enabled=progress)
    item_ids, codes, cosine_sum, start = np.zeros(n, np.int64), np.zeros((n, cfg.levels), np.int32), 0.0, 0
    for group in range(pf.num_row_groups):
        table = pf.read_row_group(group, columns=[names["item_id"], names[cfg.column]])
        ids = _ids(source, "item_id", table.column(0))
        vectors = _vectors(source, names[cfg.column], table.column(1), ids)
        item_ids[start : start + len(ids)] = ids
        for lo in range(0, len(ids), ENCODE_ROWS):  # bounds the rows x codebook_size distances of a large group
            raw = vectors[lo : lo + ENCODE_ROWS]
            codes[start + lo : start + lo + len(raw)], recon = _encode(raw, centroids)
            cosine_sum += float((_unit(raw) * _unit(recon)).sum())
            neighbours.add(start + lo, raw, recon)
        start += len(ids)
        bar.update(len(ids))
    bar.close()
    order = np.argsort(item_ids, kind="stable")  # the release's file is sorted; any other is sorted here
    item_ids, codes = item_ids[order], codes[order]
    if len(item_ids) > 1 and (item_ids[1:] == item_ids[:-1]).any():
        dup = int(item_ids[1:][item_ids[1:] == item_ids[:-1]][0])
        raise S.SchemaError(f"{source}: item_id {dup} appears twice; an item has one embedding")
    collision, collision_rate = _collision_level(codes)
    np.save(folder / "item_ids.npy", item_ids.astype(np.uint32))
    np.save(folder / "codes.npy", np.concatenate([codes, collision[:, None]], axis=1))
    np.save(folder / "centroids.npy", centroids)
    use = [len(np.unique(codes[:, level])) / cfg.codebook_size for level in range(cfg.levels)]
    perplexity = []
    for level in range(cfg.levels):
        p = np.bincount(codes[:, level], minlength=cfg.codebook_size) / max(n, 1)
        perplexity.append(float(np.exp(-(p[p > 0] * np.log(p[p > 0])).sum())))
    meta = {
        "version": VERSION,
        "config": asdict(cfg),
        "items": n,
        "collision_level_size": int(collision.max()) + 1 if n else 1,
        "diagnostics": {
            "collision_rate": collision_rate,
            "level_use": use,
            "level_perplexity": perplexity,
            "reconstruction_cosine": cosine_sum / max(n, 1),
            "neighbour_preservation": neighbours.overlap(),
        },
        "source": str(source),
        "files": {name: (folder / name).stat().st_size for name in FILES},
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "build_seconds": round(time.perf_counter() - started, 3),
    }
    with io.atomic_path(folder / "meta.json") as tmp:
        tmp.write_text(json.dumps(meta, indent=2, sort_keys=True))
    return meta


def _collision_level(codes: np.ndarray) -> tuple[np.ndarray, float]:
    """Each item's rank among the items of the same code tuple (in item order), and the share of items that share
    their tuple."""
    if not len(codes):
        return np.zeros(0, np.int32), 0.0
    _, group, sizes = np.unique(codes, axis=0, return_inverse=True, return_counts=True)
    group = group.reshape(-1)
    order = np.argsort(group, kind="stable")  # item order inside each group
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    rank = np.empty(len(codes), np.int64)
    rank[order] = np.arange(len(codes)) - np.repeat(starts, sizes)
    return rank.astype(np.int32), float((sizes[group] > 1).mean())
