"""ItemKNN (exact and pruned) and SANSA on a Yambda-50M-shaped dataset: fit and scoring time, peak memory, NDCG.

Each (setup, model) case runs in a fresh child process, so its peak RSS (ru_maxrss) is its own; the pruned ItemKNN's
quality loss is a ratio to the exact one measured in the same run. SANSA first estimates its Gram matrix and, when
that cannot fit, reports the refusal with the numbers instead of a fit. Splits come from the cache (final mode).

    .venv/bin/python benchmarks/bench_itemknn_sansa.py --root /tmp/bench50m --size 50m
    .venv/bin/python benchmarks/bench_itemknn_sansa.py --root /tmp/bench50m --size 50m --setups like --neighbors 50
    python benchmarks/bench_itemknn_sansa.py --setups listen_plus --models itemknn itemknn_pruned --device cuda
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

from _common import DEFAULT_ROOT, command_line, ensure_dataset, machine, run_child

K = 100  # every model returns its top 100 per ranked user (docs/protocol.md#candidates-and-seen-items)


def build_model(name: str, hours: float, neighbors: int, device: str):
    from yambda_dl.models.itemknn import ItemKNN
    from yambda_dl.models.sansa import SANSA

    if name == "itemknn":
        return ItemKNN(hours=hours, device=device)
    if name == "itemknn_pruned":
        return ItemKNN(hours=hours, neighbors=neighbors, device=device)
    return SANSA()


def measure_case(root: str, size: str, setup: str, name: str, hours: float, neighbors: int, device: str) -> dict:
    """Split (cached), fit, rank every ranked user, evaluate; seconds and peak RSS measured in this process."""
    from yambda_dl.data.layout import DatasetLayout
    from yambda_dl.data.split import Protocol, make_split
    from yambda_dl.data.views import user_item_matrix
    from yambda_dl.eval.evaluator import evaluate
    from yambda_dl.eval.recommend import recommend_all
    from yambda_dl.models.sansa import estimate_gram_nonzeros

    baseline_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    split = make_split(DatasetLayout(Path(root), size), Protocol(setup=setup), progress=False)
    counts = user_item_matrix(split, "count")
    result = {"users": split.num_users, "items": split.num_items, "nnz": counts.nnz}
    if name == "sansa":
        gram = estimate_gram_nonzeros(counts)
        result |= {"gram_nonzeros_est": gram.nonzeros, "gram_upper_bound": gram.upper_bound}
    del counts
    model = build_model(name, hours, neighbors, device)
    start = time.perf_counter()
    try:
        model.fit(split)
    except MemoryError as refusal:
        return result | {"refused": str(refusal), "peak_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}
    fit_s = time.perf_counter() - start
    start = time.perf_counter()
    recs, _ = recommend_all(model, split.num_users, K)
    score_s = time.perf_counter() - start
    metrics = evaluate(recs, split.targets, split.num_items, ks=(10, 100))
    return result | {
        "fit_s": fit_s,
        "score_s": score_s,
        "ndcg@10": metrics["ndcg@10"],
        "ndcg@100": metrics["ndcg@100"],
        "peak_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "baseline_kib": baseline_kib,
    }


def run_case(args: argparse.Namespace, setup: str, name: str) -> dict:
    arguments = ["--child", setup, name, "--root", args.root, "--size", args.size, "--hours", str(args.hours)]
    return run_child(__file__, [*arguments, "--neighbors", str(args.neighbors), "--device", args.device])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=DEFAULT_ROOT, help="a synthetic preset is generated there when missing")
    parser.add_argument("--size", default="50m")
    parser.add_argument("--setups", nargs="+", default=["listen_plus", "like"])
    parser.add_argument("--models", nargs="+", default=["itemknn", "itemknn_pruned", "sansa"])
    parser.add_argument("--hours", type=float, default=1.0, help="ItemKNN decay horizon (paper: tuned)")
    parser.add_argument("--neighbors", type=int, default=100, help="pruned ItemKNN: neighbours kept per item")
    parser.add_argument("--device", default="cpu", help="where ItemKNN's sparse products run (cuda on a GPU)")
    parser.add_argument("--child", nargs=2, metavar=("SETUP", "MODEL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure_case(args.root, args.size, *args.child, args.hours, args.neighbors, args.device)))
        return

    ensure_dataset(args.root, args.size)
    print(f"# machine: {machine('torch', 'scipy')}")
    print(f"# command: {command_line()}")
    print(f"# data: {args.size} at {args.root}; hours={args.hours}, neighbors={args.neighbors}, device={args.device}")
    header = f"{'setup':12} {'model':15} {'users':>6} {'items':>8} {'nnz':>11} {'fit s':>7} {'score s':>8} "
    print(header + f"{'peak GiB':>8} {'NDCG@10':>8} {'NDCG@100':>8}")
    results = {}
    for setup in args.setups:
        for name in args.models:
            r = results[setup, name] = run_case(args, setup, name)
            peak = r["peak_kib"] / 2**20
            row = f"{setup:12} {name:15} {r['users']:>6,} {r['items']:>8,} {r['nnz']:>11,} "
            if "refused" in r:
                print(row + f"{'refused':>7} {'-':>8} {peak:>8.2f}   (see below)")
                continue
            print(
                row + f"{r['fit_s']:>7.1f} {r['score_s']:>8.1f} {peak:>8.2f} {r['ndcg@10']:>8.4f} {r['ndcg@100']:>8.4f}"
            )
    for (setup, name), r in results.items():
        if "gram_nonzeros_est" in r:
            print(
                f"# {setup} SANSA Gram: ~{r['gram_nonzeros_est']:.3g} nonzeros estimated "
                f"(upper bound {r['gram_upper_bound']:.3g})"
            )
        if "refused" in r:
            print(f"# {setup} {name} refused: {r['refused']}")
        exact = results.get((setup, "itemknn"))
        if name == "itemknn_pruned" and exact and "ndcg@10" in r and "ndcg@10" in exact:
            print(
                f"# {setup} pruned ({args.neighbors} neighbours) / exact: "
                f"NDCG@10 {ratio(r['ndcg@10'], exact['ndcg@10'])}, NDCG@100 {ratio(r['ndcg@100'], exact['ndcg@100'])}, "
                f"fit+score time {ratio(r['fit_s'] + r['score_s'], exact['fit_s'] + exact['score_s'])}x"
            )


def ratio(value: float, reference: float) -> str:
    return f"{value / reference:.3f}" if reference else "- (reference 0)"


if __name__ == "__main__":
    main()
