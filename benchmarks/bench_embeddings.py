"""Benchmark: the split-aligned audio view (data/embeddings.aligned_embeddings) on a full-size synthetic
embeddings file, 7.72M items x 128 float32 in both columns, in the release's schema and sorted by item_id. Time and
peak memory (ru_maxrss of a fresh child process per case; the output is a memory-mapped file, so its pages are in the
page cache, and counted in RSS only while touched):

    .venv/bin/python benchmarks/bench_embeddings.py --dir /tmp/bench_embeddings [--items 7720000]

Cases (each builds its cache folder from scratch, then reopens it):
    5b_train   the 5B shape: 9.39M train items, the file's 7.72M among them (18% of the train items have no vector)
    50m_cold   the 50M shape: 0.93M train items, plus the cold candidates (every other item with a vector, ~6.9M)
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from _common import command_line, machine, peak_rss_mb, run_child

MAX_ITEM_ID = 9_390_623  # the release's largest item id
ROW_GROUP_ROWS = 65_536  # what the synthetic generator writes (one chunk per row group)


def write_file(path: Path, n_items: int, seed: int = 0) -> float:
    """A (n_items, 128) embeddings.parquet of random unit vectors (both columns), written by row group; seconds."""
    import numpy as np
    import pyarrow as pa

    from yambda_dl.data import io
    from yambda_dl.data import schema as S

    started = time.perf_counter()
    gen = np.random.default_rng(seed)
    ids = np.sort(gen.choice(MAX_ITEM_ID, size=n_items, replace=False).astype(np.uint32) + 1)
    with io.ParquetSink(path, S.EMBEDDINGS_SCHEMA, row_group_rows=ROW_GROUP_ROWS, compression="zstd") as sink:
        for start in range(0, n_items, ROW_GROUP_ROWS):
            rows = ids[start : start + ROW_GROUP_ROWS]
            vectors = gen.standard_normal((len(rows), S.EMBEDDING_DIM), dtype=np.float32)
            unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
            offsets = pa.array(np.arange(0, vectors.size + 1, S.EMBEDDING_DIM, dtype=np.int32))
            lists = [pa.ListArray.from_arrays(offsets, pa.array(m.ravel())) for m in (vectors, unit)]
            sink.write(pa.table({"item_id": pa.array(rows), "embed": lists[0], "normalized_embed": lists[1]}))
    return time.perf_counter() - started


def case(path: Path, cache: Path, name: str) -> dict:
    """One case in this (child) process: build the view, then reopen it; times and peak RSS."""
    import numpy as np
    import pyarrow.parquet as pq

    from yambda_dl.data.embeddings import aligned_embeddings

    file_ids = pq.read_table(path, columns=["item_id"]).column(0).to_numpy().astype(np.int64)
    gen = np.random.default_rng(1)
    if name == "5b_train":  # every id up to the largest: the file's items and 18% more without a vector
        items, cold = np.arange(1, MAX_ITEM_ID + 1, dtype=np.uint32), False
    else:  # 50m_cold: a tenth of the catalogue has train events, the rest of the file are cold candidates
        items, cold = (
            np.sort(gen.choice(MAX_ITEM_ID, size=MAX_ITEM_ID // 10, replace=False) + 1).astype(np.uint32),
            True,
        )
    del file_ids
    before = peak_rss_mb()
    started = time.perf_counter()
    view = aligned_embeddings(path, items, cache, cold=cold, progress=False)
    build = time.perf_counter() - started
    build_peak = peak_rss_mb()
    started = time.perf_counter()
    view = aligned_embeddings(path, items, cache, cold=cold, progress=False)  # the cache, memory-mapped
    reopen = time.perf_counter() - started
    return {
        "case": name,
        "rows": int(view.vectors.shape[0]),
        "train_items": int(view.num_items),
        "present_train": int(view.present[: view.num_items].sum()),
        "cold": int(view.num_cold),
        "build_s": round(build, 1),
        "reopen_s": round(reopen, 3),
        "peak_rss_mb_before_build": round(before),
        "peak_rss_mb": round(build_peak),
        "output_mb": round(view.vectors.nbytes / 2**20),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", default="/tmp/bench_embeddings", help="scratch folder (~16 GB for the full size)")
    parser.add_argument("--items", type=int, default=7_720_000, help="rows of the embeddings file (the release's)")
    parser.add_argument("--case", choices=("5b_train", "50m_cold"), help=argparse.SUPPRESS)  # a child's one case
    args = parser.parse_args()
    folder = Path(args.dir)
    path = folder / "embeddings.parquet"
    if args.case:
        print(json.dumps(case(path, folder / "cache", args.case)))
        return
    folder.mkdir(parents=True, exist_ok=True)
    written = None
    if not path.is_file() or __import__("pyarrow.parquet").parquet.ParquetFile(path).metadata.num_rows != args.items:
        written = round(write_file(path, args.items), 1)
    results = []
    for name in ("5b_train", "50m_cold"):
        shutil.rmtree(folder / "cache", ignore_errors=True)  # built from scratch each time
        results.append(run_child(__file__, ["--dir", str(folder), "--items", str(args.items), "--case", name]))
        print(json.dumps(results[-1]), flush=True)
    shutil.rmtree(folder / "cache", ignore_errors=True)
    report = {
        "command": command_line(),
        "machine": machine("pyarrow", "numpy"),
        "file_rows": args.items,
        "file_mb": round(path.stat().st_size / 2**20),
        "write_s": written,
        "cases": results,
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    sys.exit(main())
