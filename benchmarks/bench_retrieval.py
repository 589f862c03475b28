"""Benchmark: our tiled exact top-k (torch and faiss backends) vs faiss IndexFlatIP on the whole item set vs a
plain full matmul + topk. Each case runs in its own child process so its peak RSS is measured alone.

    .venv/bin/python benchmarks/bench_retrieval.py [--users 10000] [--items 100000 1000000] [--dim 64]
"""

from __future__ import annotations

import argparse
import json
import time

from _common import command_line, machine, peak_rss_mb, run_child

CASES = ("tiled_torch", "tiled_faiss", "faiss_flat_all_items", "full_matmul_topk")
FULL_MATMUL_MAX_ELEMENTS = 2_000_000_000  # users x items scores above 8 GB would not fit next to the others


def _vectors(users: int, items: int, dim: int):
    """Seeded standard-normal float32 user and item matrices (the same in every child)."""
    import torch

    generator = torch.Generator().manual_seed(0)
    return torch.randn(users, dim, generator=generator), torch.randn(items, dim, generator=generator)


def _run_case(case: str, args: argparse.Namespace, items: int) -> dict:
    """Time one case in this (child) process; peak RSS from getrusage, with the inputs' RSS for reference."""
    import faiss
    import torch

    from yambda_dl.retrieval import topk

    user_vectors, item_vectors = _vectors(args.users, items, args.dim)
    inputs_rss_mb = peak_rss_mb()
    start = time.perf_counter()
    if case in ("tiled_torch", "tiled_faiss"):
        backend = case.removeprefix("tiled_")
        topk(
            user_vectors,
            item_vectors,
            args.k,
            backend=backend,
            user_tile=args.user_tile,
            item_tile=args.item_tile,
            device=args.device if backend == "torch" else None,
        )
    elif case == "faiss_flat_all_items":
        index = faiss.IndexFlatIP(args.dim)
        index.add(item_vectors.numpy())
        index.search(user_vectors.numpy(), args.k)
    else:
        torch.topk(user_vectors @ item_vectors.T, args.k, dim=1)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "peak_rss_mb": peak_rss_mb(), "inputs_rss_mb": inputs_rss_mb}


def _child(case: str, args: argparse.Namespace, items: int) -> dict | None:
    """Run one case in a fresh interpreter; None where the case is skipped."""
    if case == "full_matmul_topk" and args.users * items > FULL_MATMUL_MAX_ELEMENTS:
        return None
    arguments = ["--case", case, "--users", str(args.users), "--items", str(items), "--dim", str(args.dim)]
    arguments += ["--k", str(args.k), "--user-tile", str(args.user_tile), "--item-tile", str(args.item_tile)]
    return run_child(__file__, [*arguments, "--device", args.device])


def _report(args: argparse.Namespace) -> None:
    """Run every case at every item count and print a table with the ratios against faiss on all items."""
    print(f"machine: {machine('torch', 'faiss')}")
    print(f"command: {command_line()}")
    print(f"users={args.users:,} dim={args.dim} k={args.k} tiles={args.user_tile} x {args.item_tile} on {args.device}")
    print("| items | case | seconds | x faiss_flat time | peak RSS MB | inputs RSS MB |")
    print("|---|---|---|---|---|---|")
    for items in args.items:
        results = {case: _child(case, args, items) for case in CASES}
        reference = results["faiss_flat_all_items"]["seconds"]
        for case, result in results.items():
            if result is None:
                print(f"| {items:,} | {case} | skipped (users x items scores do not fit) | | | |")
                continue
            ratio = result["seconds"] / reference
            print(
                f"| {items:,} | {case} | {result['seconds']:.2f} | {ratio:.2f} | "
                f"{result['peak_rss_mb']:.0f} | {result['inputs_rss_mb']:.0f} |",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--items", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--k", type=int, default=100)
    # 1024 x 262,144 float32 scores = 1 GiB per tile: the library default (4096 users) is sized for a GPU
    parser.add_argument("--user-tile", type=int, default=1024)
    parser.add_argument("--item-tile", type=int, default=262_144)
    parser.add_argument("--device", default="cpu", help="where the tiled torch case computes (cuda on a GPU)")
    parser.add_argument("--case", choices=CASES, help="internal: run one case in this process and print JSON")
    args = parser.parse_args()
    if args.case:
        print(json.dumps(_run_case(args.case, args, args.items[0])))
    else:
        _report(args)


if __name__ == "__main__":
    main()
