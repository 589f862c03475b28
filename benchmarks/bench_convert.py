"""Benchmark flat -> sequential -> flat conversion of a generated listens file, against the naive polars way.

    .venv/bin/python benchmarks/bench_convert.py [--rows 20000000] [--batch-rows 2097152] [--workdir DIR]

Writes a Yambda-like listens file of N rows over N/4650 users (numpy + pyarrow), then runs each conversion in
its own child process and prints seconds, rows/s and the child's peak RSS (ru_maxrss). The naive way reads the
whole file with polars, groups by uid (or explodes) and writes it back: its memory grows with the file, ours
with one batch.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from _common import command_line, machine, peak_rss_mb, run_child

MEAN_LISTENS_PER_USER = 4650  # docs/data.md#statistics
GENERATION_CHUNK_USERS = 256  # about 1.2M rows per generated chunk: bounded memory while writing the input
TASKS = ("ours_flat_to_seq", "ours_seq_to_flat", "polars_flat_to_seq", "polars_seq_to_flat")


def generate_listens(path: Path, rows: int, seed: int = 0) -> int:
    """Write a listens file sorted by (uid, timestamp), log-normal history lengths; returns the user count."""
    rng = np.random.default_rng(seed)
    users = max(1, rows // MEAN_LISTENS_PER_USER)
    lengths = rng.lognormal(0.0, 1.0, users)
    lengths = np.maximum(1, np.floor(lengths / lengths.sum() * rows)).astype(np.int64)
    lengths[-1] += rows - lengths.sum()  # exact total; the last user absorbs the rounding
    schema = pa.schema(
        [
            ("uid", pa.uint32()),
            ("timestamp", pa.uint32()),
            ("item_id", pa.uint32()),
            ("is_organic", pa.uint8()),
            ("played_ratio_pct", pa.uint16()),
            ("track_length_seconds", pa.uint32()),
        ]
    )
    with pq.ParquetWriter(path, schema, compression="zstd") as writer:
        for first in range(0, users, GENERATION_CHUNK_USERS):
            writer.write_table(
                _listen_chunk(rng, np.arange(first, min(first + GENERATION_CHUNK_USERS, users)), lengths, schema),
                row_group_size=1 << 20,
            )
    return users


def _listen_chunk(rng: np.random.Generator, user_index: np.ndarray, lengths: np.ndarray, schema: pa.Schema) -> pa.Table:
    """The events of some users: timestamps sorted within each user, items from a heavy-tailed popularity."""
    uid = np.repeat(user_index + 100, lengths[user_index]).astype(np.uint32)
    n = len(uid)
    timestamp = (rng.integers(0, 26_000_000 // 5, n) * 5).astype(np.uint32)
    order = np.lexsort((timestamp, uid))
    item = np.minimum(rng.pareto(1.0, n) * 1000, 9_390_622).astype(np.uint32)
    columns = [
        uid[order],
        timestamp[order],
        item,
        rng.integers(0, 2, n, dtype=np.uint8),
        rng.integers(0, 160, n, dtype=np.uint16),
        (rng.integers(1, 500, n) * 5).astype(np.uint32),
    ]
    return pa.Table.from_arrays([pa.array(c) for c in columns], schema=schema)


def run_task(task: str, src: Path, dst: Path, batch_rows: int) -> None:
    """Child side: one conversion, then a JSON line with its wall time and peak RSS."""
    start = time.perf_counter()
    if task.startswith("ours"):
        from yambda_dl.data.convert import flat_to_sequential, sequential_to_flat

        convert = flat_to_sequential if task == "ours_flat_to_seq" else sequential_to_flat
        convert(src, dst, "listens", batch_rows=batch_rows, progress=False)
    else:
        import polars as pl

        table = pl.read_parquet(src)
        if task == "polars_flat_to_seq":
            table = table.group_by("uid", maintain_order=True).agg(pl.all())
        else:
            table = table.explode([c for c in table.columns if c != "uid"])
        table.write_parquet(dst, compression="zstd")
    seconds = time.perf_counter() - start
    print(json.dumps({"task": task, "seconds": seconds, "peak_mb": peak_rss_mb()}))


def in_child(task: str, src: Path, dst: Path, batch_rows: int) -> dict:
    """Run one task in a fresh interpreter so that its peak RSS is its own."""
    return run_child(__file__, ["--child", task, "--src", str(src), "--dst", str(dst), "--batch-rows", str(batch_rows)])


def report(rows: int, users: int, results: dict[str, dict], input_mb: float) -> None:
    print(f"machine: {machine('pyarrow', 'polars')}")
    print(f"command: {command_line()}")
    print(f"input: {rows:,} listens, {users:,} users, {input_mb:.0f} MB flat parquet")
    print(f"{'task':<22}{'seconds':>10}{'rows/s':>14}{'peak RSS MB':>14}")
    for task, r in results.items():
        print(f"{task:<22}{r['seconds']:>10.2f}{rows / r['seconds']:>14,.0f}{r['peak_mb']:>14,.0f}")
    for direction in ("flat_to_seq", "seq_to_flat"):
        ours, naive = results[f"ours_{direction}"], results[f"polars_{direction}"]
        print(
            f"{direction}: ours/polars time {ours['seconds'] / naive['seconds']:.2f}x, "
            f"peak RSS {ours['peak_mb'] / naive['peak_mb']:.2f}x"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000_000)
    parser.add_argument("--batch-rows", type=int, default=1 << 21)
    parser.add_argument("--workdir", type=Path, default=None, help="where to write the files (default: a temp dir)")
    parser.add_argument("--child", choices=TASKS, help=argparse.SUPPRESS)
    parser.add_argument("--src", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--dst", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_task(args.child, args.src, args.dst, args.batch_rows)
        return
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        work = Path(tmp)
        users = generate_listens(work / "flat.parquet", args.rows)
        plan = {
            "ours_flat_to_seq": ("flat.parquet", "seq.parquet"),
            "ours_seq_to_flat": ("seq.parquet", "back.parquet"),
            "polars_flat_to_seq": ("flat.parquet", "pl_seq.parquet"),
            "polars_seq_to_flat": ("pl_seq.parquet", "pl_back.parquet"),
        }
        results = {task: in_child(task, work / s, work / d, args.batch_rows) for task, (s, d) in plan.items()}
        report(args.rows, users, results, (work / "flat.parquet").stat().st_size / 2**20)


if __name__ == "__main__":
    main()
