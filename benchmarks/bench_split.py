"""Speed and peak memory of the Global Temporal Split (Listen+, final) as the input grows.

Runs make_split in a fresh child process per (input size, batch_rows) and reports seconds, peak RSS (the
child's ru_maxrss) and the input's rows and decoded size: peak memory should stay flat as the input grows.

    .venv/bin/python benchmarks/bench_split.py --root DIR --size 50m
    .venv/bin/python benchmarks/bench_split.py --root /tmp/bench --size bench40m --make  # writes its input

The smaller inputs are prefixes of the whole listens file (first 1/4, 1/2 of rows), written once beside it.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from _common import command_line, machine

from yambda_dl.data import io
from yambda_dl.data import schema as S
from yambda_dl.data.layout import DatasetLayout
from yambda_dl.data.split import Protocol, make_split

MAX_ITEM_ID = 9_390_623  # Yambda's item id range, so the train-item bitmap has its real size
CATALOGUE = 1_000_000  # distinct items, about the 934,057 of the 50M release, spread over the whole id range
USERS_PER_CHUNK = 256  # users generated at once: ~1M rows, ~20 MB, whatever the total


def flat_row_bytes(event_file: str) -> int:
    """Bytes one event takes decoded in the official flat types (19 for listens)."""
    return sum(t.bit_width // 8 for t in S.flat_columns(event_file).values())


# --- input --------------------------------------------------------------------------------------------------


def _user_chunk(rng: np.random.Generator, uids: np.ndarray, lengths: np.ndarray, catalogue: np.ndarray) -> pa.Table:
    """Listens of a few users, sorted by (uid, timestamp), Yambda-like value ranges (docs/data.md#statistics)."""
    n = int(lengths.sum())
    uid = np.repeat(uids, lengths).astype(np.uint32)
    ts = rng.integers(0, S.LAST_TIMESTAMP // 5 + 1, n, dtype=np.uint64) * 5
    ts = (np.sort((uid.astype(np.uint64) << np.uint64(32)) | ts) & np.uint64(0xFFFFFFFF)).astype(np.uint32)
    item = catalogue[(len(catalogue) * rng.random(n) ** 4).astype(np.int64)]  # power-law-ish: a heavy head
    kind = rng.random(n)  # played_ratio_pct is bimodal: ~24% skipped at once, ~57% played through
    ratio = np.where(
        kind < 0.24,
        rng.integers(0, 5, n),
        np.where(kind < 0.81, rng.integers(95, 101, n), rng.integers(5, 95, n)),
    )
    return pa.table(
        {
            "uid": uid,
            "timestamp": ts,
            "item_id": item,
            "is_organic": rng.integers(0, 2, n, dtype=np.uint8),
            "played_ratio_pct": ratio.astype(np.uint16),
            "track_length_seconds": (5 * rng.integers(1, 100, n)).astype(np.uint32),
        },
        schema=S.flat_schema("listens"),
    )


def make_listens(path: Path, rows: int, users: int, seed: int = 0) -> None:
    """Write a flat listens file of about `rows` events over `users` users; memory: one chunk of users."""
    rng = np.random.default_rng(seed)
    catalogue = rng.choice(MAX_ITEM_ID + 1, CATALOGUE, replace=False).astype(np.uint32)
    lengths = rng.lognormal(0.0, 1.0, users)  # heavy-tailed history lengths, as Yambda's (sigma ~ 1)
    lengths = np.maximum(1, np.round(lengths * rows / lengths.sum())).astype(np.int64)
    with io.ParquetSink(path, S.flat_schema("listens"), row_group_rows=1 << 20) as sink:
        for start in range(0, users, USERS_PER_CHUNK):
            chunk = slice(start, start + USERS_PER_CHUNK)
            sink.write(_user_chunk(rng, np.arange(users, dtype=np.uint32)[chunk], lengths[chunk], catalogue))


def make_prefix(source: Path, rows: int, dest: Path) -> None:
    """Write the first `rows` events of `source` to `dest` (skipped when already there), batch by batch."""
    if dest.is_file() and pq.ParquetFile(dest).metadata.num_rows == rows:
        return
    with io.ParquetSink(dest, S.flat_schema("listens"), row_group_rows=1 << 20) as sink:
        for batch in io.iter_flat_batches(source, "listens"):
            sink.write(batch.slice(0, rows - sink.rows))
            if sink.rows >= rows:
                break


# --- one measured run (child process) -----------------------------------------------------------------------


def run_child(root: str, size: str, batch_rows: int) -> dict:
    """Split once with no cache to reuse; returns seconds and peak RSS (KiB), measured in this process."""
    baseline_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # after imports, before any data
    with tempfile.TemporaryDirectory(prefix="bench-split-") as cache_dir:
        start = time.perf_counter()
        split = make_split(
            DatasetLayout(Path(root), size),
            Protocol(),
            cache_dir=Path(cache_dir),
            batch_rows=batch_rows,
            progress=False,
        )
        seconds = time.perf_counter() - start
        described = split.describe()
    return {
        "seconds": seconds,
        "peak_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "baseline_kib": baseline_kib,
        **{k: v for k, v in described.items() if k.startswith("num_")},
    }


def in_child(*args: str) -> dict | list:
    """Run this script with `args` in a fresh interpreter and return the JSON its last stdout line holds.

    Linux carries the spawning process's peak RSS into the child's ru_maxrss (through fork and exec), so the
    parent never touches data itself: it stays at its import footprint and the child's peak is its own.
    """
    command = [sys.executable, __file__, *args]
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=False)  # stderr shows as it comes
    if done.returncode:
        raise RuntimeError(f"child failed with exit status {done.returncode}: {' '.join(command)}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(root: Path, size: str, batch_rows: int) -> dict:
    """One split in a fresh interpreter, so that its peak RSS is its own."""
    return in_child("--child", "--root", str(root), "--size", size, "--batch-rows", str(batch_rows))


# --- report -------------------------------------------------------------------------------------------------


def inputs(args: argparse.Namespace) -> list[tuple[str, int]]:
    """(dataset name, rows) of each input size, writing the whole file and its prefixes when needed."""
    whole = DatasetLayout(args.root, args.size).event_path("listens")
    if not whole.is_file():
        if not args.make:
            raise SystemExit(f"missing {whole}; pass --make to write a synthetic one ({args.rows:,} rows)")
        print(f"writing {whole} ({args.rows:,} rows over {args.users:,} users) ...", file=sys.stderr)
        make_listens(whole, args.rows, args.users)
    total = pq.ParquetFile(whole).metadata.num_rows
    sizes = []
    for fraction in sorted(args.fractions):
        if fraction >= 1:
            sizes.append((args.size, total))
            continue
        name, rows = f"{args.size}-first{round(fraction * 100)}pct", int(total * fraction)
        make_prefix(whole, rows, DatasetLayout(args.root, name).event_path("listens"))
        sizes.append((name, rows))
    return sizes


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("data"))
    parser.add_argument("--size", default="50m")
    parser.add_argument("--make", action="store_true", help="write a synthetic listens file if it is missing")
    parser.add_argument("--rows", type=int, default=40_000_000, help="rows of the file --make writes")
    parser.add_argument("--users", type=int, default=10_000, help="users of the file --make writes")
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.25, 0.5, 1.0])
    parser.add_argument("--batch-rows", type=int, nargs="+", default=[1 << 19, io.DEFAULT_BATCH_ROWS])
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--prepare", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args()


def prepare_in_child(args: argparse.Namespace) -> list[tuple[str, int]]:
    """Write the inputs in a child process, so that this one never holds data (see in_child)."""
    fractions = [str(f) for f in args.fractions]
    make = ["--make"] if args.make else []
    return in_child(
        "--prepare",
        "--root",
        str(args.root),
        "--size",
        args.size,
        "--rows",
        str(args.rows),
        "--users",
        str(args.users),
        "--fractions",
        *fractions,
        *make,
    )


def report(args: argparse.Namespace, sizes: list[tuple[str, int]]) -> None:
    """One line per (input, batch_rows): speed, peak memory next to the input's decoded size, split counts."""
    print(f"machine: {machine('pyarrow')}")
    print(f"command: {command_line()}")
    row_bytes = flat_row_bytes("listens")
    print(
        f"{'input':>22} {'rows':>12} {'in memory':>10} {'batch_rows':>10} {'seconds':>8} {'peak RSS':>9} "
        f"{'baseline':>9} {'train':>12} {'users':>7} {'items':>9} {'eval':>6} {'targets':>9}"
    )
    for name, rows in sizes:
        for batch_rows in args.batch_rows:
            r = measure(args.root, name, batch_rows)
            print(
                f"{name:>22} {rows:>12,} {rows * row_bytes / 2**20:>7.0f} MB {batch_rows:>10,} "
                f"{r['seconds']:>8.1f} {r['peak_kib'] / 1024:>6.0f} MB {r['baseline_kib'] / 1024:>6.0f} MB "
                f"{r['num_train_events']:>12,} {r['num_ranked_users']:>7,} {r['num_train_items']:>9,} "
                f"{r['num_eval_users']:>6,} {r['num_targets']:>9,}",
                flush=True,
            )
    print("peak RSS: the split child's ru_maxrss; baseline: the same right after its imports, before any data")


def main() -> None:
    args = parse_args()
    if args.child:
        print(json.dumps(run_child(str(args.root), args.size, args.batch_rows[0])))
    elif args.prepare:
        print(json.dumps(inputs(args)))
    else:
        report(args, prepare_in_child(args))


if __name__ == "__main__":
    main()
