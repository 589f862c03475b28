"""Benchmark: our iALS and BPR (LightningModules) against implicit's CPU ALS and BPR on one split.

Same split (Listen+, final), same factors, iterations and regularization; every model is ranked and scored by our
own recommend_all + evaluate. Each case runs in its own child process, so its peak RSS is its own. One run measures
four scenarios, each case with the same CPU threads for both sides (torch's and implicit's, with single-threaded
BLAS under implicit, as it recommends): 1 and 2 threads, each alone and with one other busy process beside it (a
single-threaded numpy matmul loop started for that scenario). The figures compare ours with implicit's measured in
the same scenario, as ratios, and ours at 2 threads with ours at 1 under the same load.

    .venv/bin/python benchmarks/bench_ials_bpr.py [--root /tmp/bench50m] [--size 50m] [--iterations 10]
        [--pairs als bpr] [--scenarios 1 2 1+busy 2+busy] [--accelerator cpu|gpu] [--bpr-kernel auto|native|torch]
    for s in 0 1 2 3 4; do .venv/bin/python benchmarks/bench_ials_bpr.py --root /tmp/bpr/small --size small \
        --pairs bpr --scenarios 1 --iterations 100 --seed $s; done   # BPR's quality against implicit's, 5 seeds

A modest iteration count (10 by default) keeps the run to minutes on 2 cores; the paper tunes 10-300.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _common import DEFAULT_ROOT, command_line, ensure_dataset, machine, peak_rss_mb, run_child

CASES = ("implicit_als", "ials", "ials_cholesky", "implicit_bpr", "bpr")
# pair -> (implicit's case, ours)
PAIRS = {
    "als": ("implicit_als", "ials"),
    "als_cholesky": ("implicit_als", "ials_cholesky"),
    "bpr": ("implicit_bpr", "bpr"),
}
# scenario -> (threads, with one busy process beside)
SCENARIOS = {"1": (1, False), "2": (2, False), "1+busy": (1, True), "2+busy": (2, True)}
# --bpr-kernel: BPR's kernel (auto: the native C kernel on a CPU with a compiler, else the torch one)
KERNELS = ("auto", "native", "torch")
KS = (10, 100)
# the busy neighbour: one thread of dense matrix products, for as long as the scenario runs
BUSY = (
    "import numpy as np\n"
    "a = np.random.default_rng(0).random((400, 400))\n"
    "while True:\n"
    "    a = a @ a\n"
    "    a /= np.abs(a).max()\n"
)


def _split(args: argparse.Namespace):
    from yambda_dl.data.layout import DatasetLayout
    from yambda_dl.data.split import Protocol, make_split

    return make_split(DatasetLayout(Path(args.root), args.size), Protocol(), progress=False)


def _fit_ours(case: str, split, args: argparse.Namespace) -> tuple[object, list[float]]:
    """Fit our model with a real Trainer; the seconds of each epoch (= iteration) from a callback."""
    import lightning

    from yambda_dl.models.bpr import BPR
    from yambda_dl.models.ials import IALS

    class EpochTimer(lightning.Callback):
        def __init__(self) -> None:
            self.seconds: list[float] = []

        def on_train_epoch_start(self, trainer, module) -> None:
            self._start = time.perf_counter()

        def on_train_epoch_end(self, trainer, module) -> None:
            if module.device.type == "cuda":
                import torch

                torch.cuda.synchronize()
            self.seconds.append(time.perf_counter() - self._start)

    common = {"factors": args.factors, "iterations": args.iterations, "regularization": args.regularization}
    common["seed"] = args.seed
    if case == "bpr":
        model = BPR(lr=args.lr, kernel=args.bpr_kernel, **common)
    else:  # implicit's confidence is alpha * r: on the binary matrix its alpha=1 is our alpha=0
        model = IALS(solver="cg" if case == "ials" else "cholesky", **common)
    timer = EpochTimer()
    trainer = lightning.Trainer(
        max_epochs=args.iterations,
        accelerator=args.accelerator,
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
    )
    model.fit(split, trainer=trainer)
    return model, timer.seconds


def _fit_implicit(case: str, split, args: argparse.Namespace) -> tuple[object, list[float]]:
    """Fit implicit's CPU model on our binary matrix; the seconds of each iteration from its fit callback."""
    import threadpoolctl
    import torch
    from implicit.cpu.als import AlternatingLeastSquares
    from implicit.cpu.bpr import BayesianPersonalizedRanking

    from yambda_dl.data import views

    common = {"factors": args.factors, "iterations": args.iterations, "regularization": args.regularization}
    common.update(num_threads=torch.get_num_threads(), random_state=args.seed)
    if case == "implicit_als":
        model = AlternatingLeastSquares(alpha=1.0, **common)
    else:
        model = BayesianPersonalizedRanking(learning_rate=args.lr, **common)
    seconds: list[float] = []
    last = [time.perf_counter()]

    def on_iteration(iteration: int, *_: object) -> None:
        now = time.perf_counter()  # wall time between calls, as our epoch timer measures (ALS and BPR alike)
        seconds.append(now - last[0])
        last[0] = now

    matrix = views.user_item_matrix(split, "binary").to_scipy()
    with threadpoolctl.threadpool_limits(1, "blas"):  # implicit's own advice: its threads, single-threaded BLAS
        last[0] = time.perf_counter()
        model.fit(matrix, show_progress=False, callback=on_iteration)
    return _Vectors(model.user_factors, model.item_factors), seconds


class _Vectors:
    """implicit's factor arrays as a VectorRecommender, so that our retrieval ranks them like ours."""

    def __init__(self, users, items) -> None:
        import torch

        self.users, self.items = torch.from_numpy(users), torch.from_numpy(items)

    def user_vectors(self, user_idx):
        return self.users[user_idx]

    def item_vectors(self):
        return self.items


def _run_case(case: str, args: argparse.Namespace) -> dict:
    """Fit, rank and evaluate one case in this (child) process; peak RSS from getrusage."""
    import torch

    from yambda_dl.eval.evaluator import evaluate
    from yambda_dl.eval.recommend import recommend_all

    torch.set_num_threads(args.threads)  # implicit reads the same count back from torch.get_num_threads()
    split = _split(args)
    start = time.perf_counter()
    fit = _fit_implicit if case.startswith("implicit") else _fit_ours
    model, seconds = fit(case, split, args)
    fit_seconds = time.perf_counter() - start
    start = time.perf_counter()
    items, _ = recommend_all(model, split.num_users, max(KS), user_tile=1024)
    rank_seconds = time.perf_counter() - start
    metrics = evaluate(items, split.targets, split.num_items, KS)
    return {
        "fit_s": fit_seconds,
        "iteration_s": statistics.median(seconds),
        "iterations": len(seconds),
        "rank_s": rank_seconds,
        **{f"ndcg@{k}": metrics[f"ndcg@{k}"] for k in KS},
        "peak_rss_mb": peak_rss_mb(),
    }


def _child(case: str, args: argparse.Namespace, threads: int) -> dict:
    """Run one case in a fresh interpreter."""
    arguments = ["--case", case, "--root", args.root, "--size", args.size, "--iterations", str(args.iterations)]
    arguments += ["--factors", str(args.factors), "--regularization", str(args.regularization)]
    arguments += ["--lr", str(args.lr), "--accelerator", args.accelerator, "--bpr-kernel", args.bpr_kernel]
    arguments += ["--seed", str(args.seed)]
    return run_child(__file__, [*arguments, "--threads", str(threads)])


def _busy_process() -> subprocess.Popen:
    """A single-threaded CPU-bound child (BLAS pinned to one thread), the 'other work' of the loaded scenario."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", BUSY], env=env)


def _report(args: argparse.Namespace) -> None:
    """Run every pair in every scenario and print one table; ratios are against implicit in the same scenario."""
    ensure_dataset(args.root, args.size)
    print(f"machine: {machine('torch', 'implicit')}")
    print(f"command: {command_line()}")
    print(
        f"data: {args.root} ({args.size}), Listen+, final; factors={args.factors} iterations={args.iterations} "
        f"regularization={args.regularization} bpr lr={args.lr} kernel={args.bpr_kernel} seed={args.seed}; "
        f"ours on {args.accelerator}"
    )
    print(
        "| threads | model | ours s / iteration | implicit s / iteration | x implicit time | ours NDCG@10 | "
        "implicit NDCG@10 | x implicit NDCG@10 | ours fit s | ours peak RSS MB |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    ours: dict[tuple[str, str], dict] = {}
    for scenario in args.scenarios:
        threads, busy = SCENARIOS[scenario]
        neighbour = _busy_process() if busy else None
        try:
            for pair in args.pairs:
                peer_case, our_case = PAIRS[pair]
                peer, result = _child(peer_case, args, threads), _child(our_case, args, threads)
                ours[scenario, pair] = result
                label = f"{threads}" + (", 1 busy process beside" if busy else "")
                print(
                    f"| {label} | {our_case} | {result['iteration_s']:.3f} | {peer['iteration_s']:.3f} | "
                    f"{result['iteration_s'] / peer['iteration_s']:.2f} | {result['ndcg@10']:.4f} | "
                    f"{peer['ndcg@10']:.4f} | {result['ndcg@10'] / peer['ndcg@10']:.3f} | {result['fit_s']:.1f} | "
                    f"{result['peak_rss_mb']:.0f} |",
                    flush=True,
                )
        finally:
            if neighbour is not None:
                neighbour.kill()
                neighbour.wait()
    for pair in args.pairs:
        for one, two, label in (("1", "2", "quiet"), ("1+busy", "2+busy", "one busy process beside")):
            if (one, pair) in ours and (two, pair) in ours:
                ratio = ours[two, pair]["iteration_s"] / ours[one, pair]["iteration_s"]
                print(f"{PAIRS[pair][1]}, {label}: time per iteration at 2 threads / at 1 thread = {ratio:.2f}")
    print(f"load average at the end: {', '.join(f'{value:.1f}' for value in os.getloadavg())}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=DEFAULT_ROOT, help="generated there when missing")
    parser.add_argument("--size", default="50m")
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--factors", type=int, default=64)
    parser.add_argument("--regularization", type=float, default=0.01)
    parser.add_argument("--lr", type=float, default=0.01, help="BPR's learning rate (implicit's learning_rate)")
    parser.add_argument(
        "--bpr-kernel",
        choices=KERNELS,
        default="auto",
        help="our BPR's kernel; its fit seconds include building the native one (cached on disk after a first run)",
    )
    parser.add_argument("--seed", type=int, default=0, help="both sides' seed (ours: seed; implicit's random_state)")
    parser.add_argument("--accelerator", default="cpu", choices=("cpu", "gpu"), help="where our models train")
    parser.add_argument("--pairs", nargs="+", choices=PAIRS, default=["als", "bpr"], help="ours against implicit's")
    parser.add_argument("--scenarios", nargs="+", choices=SCENARIOS, default=list(SCENARIOS))
    parser.add_argument("--threads", type=int, default=1, help="internal: the CPU threads of one case")
    parser.add_argument("--case", choices=CASES, help="internal: run one case in this process and print JSON")
    args = parser.parse_args()
    if args.case:
        print(json.dumps(_run_case(args.case, args)))
    else:
        _report(args)


if __name__ == "__main__":
    main()
