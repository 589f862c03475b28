"""Time the synthetic generator: wall seconds, peak RSS, rows per file and bytes on disk for one preset.

    .venv/bin/python benchmarks/bench_synth.py [--preset 50m] [--root DIR] [--seed 0] [--keep]

generate() runs in a child process so that its peak RSS (ru_maxrss of the children) is measured alone.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

from _common import command_line, machine


def _run(preset: str, root: str, seed: int) -> None:
    from yambda_dl.data.synthetic import generate

    generate(preset, Path(root), seed=seed, overwrite=True)


def _bytes_on_disk(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*.parquet"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="50m")
    parser.add_argument("--root", default=None, help="where to write (default: a temporary folder, removed)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", action="store_true", help="keep the generated files")
    args = parser.parse_args(argv)
    root = Path(args.root or tempfile.mkdtemp(prefix=f"bench-synth-{args.preset}-"))

    start = time.perf_counter()
    child = mp.get_context("spawn").Process(target=_run, args=(args.preset, str(root), args.seed))
    child.start()
    child.join()
    wall = time.perf_counter() - start
    if child.exitcode != 0:
        print(f"generate({args.preset!r}) failed with exit code {child.exitcode}", file=sys.stderr)
        return 1
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # Linux reports KiB

    import pyarrow.parquet as pq

    print(f"# bench_synth: preset {args.preset}, seed {args.seed}")
    print(f"command : {command_line()}")
    print(f"machine : {machine('numpy', 'pyarrow')}")
    print(f"wall    : {wall:.1f} s (child process, imports included)")
    print(f"peak RSS: {peak_mb:,.0f} MB")
    print(f"on disk : {_bytes_on_disk(root) / 2**20:,.1f} MB under {root}")
    for path in sorted(root.rglob("*.parquet")):
        meta = pq.ParquetFile(path).metadata
        print(f"  {path.relative_to(root)}: {meta.num_rows:,} rows, {path.stat().st_size / 2**20:,.1f} MB")
    if not args.keep and args.root is None:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
