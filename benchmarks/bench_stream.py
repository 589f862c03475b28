"""Streaming evaluation (eval/stream.py) on a Yambda-50M-shaped dataset: time and memory of hourly windows against
the frozen ranking, per model family, with an extrapolation to the 5B shape.

Each model runs in a fresh child process: split (cached), fit (small settings: the cost measured is the
evaluation's, not the fit's), the frozen ranking of every ranked user, then the streaming evaluation with the
frozen ranking reused. Memory is the resident set sampled every 20 ms while streaming, over its value at the start
(the frozen lists' copy, the day's events, one window's states and the pairs' rows). The extrapolation scales the
measured streaming time by how each family's work grows (printed with it): a shared state re-ranks every user each
window (users); a per-user vector state re-ranks the users who acted, each against every item (users x items);
exact ItemKNN scores a user against the whole count matrix (users x train events).

    .venv/bin/python benchmarks/bench_stream.py --root /tmp/bench50m --size 50m
    .venv/bin/python benchmarks/bench_stream.py --root /tmp/bench_small --size small --models mostpop ials --threads 1
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from pathlib import Path

from _common import DEFAULT_ROOT, command_line, ensure_dataset, machine, run_child

KS = (10, 100)
WINDOWS_PER_DAY = 24  # at the default hourly window
MODELS = ("mostpop", "ials", "itemknn", "sasrec")
# the 5B shape (docs/data.md: 1,000,000 users, item ids up to 9,390,623) and, per family, what its streaming work
# grows with: "users" (shared state), "users x items" (per-user vectors), "users x events" (exact ItemKNN)
TARGET_USERS, TARGET_ITEMS = 1_000_000, 9_390_623
GROWTH = {"mostpop": "users", "ials": "users x items", "sasrec": "users x items", "itemknn": "users x events"}
# small settings: the benchmark measures the evaluation, and a fit at the paper's settings takes longer than it
SETTINGS = {
    "mostpop": {},
    "ials": {"factors": 64, "iterations": 2},
    "itemknn": {"hours": 1.0},
    "sasrec": {"epochs": 1, "max_len": 200, "batch_size": 256},
}


def rss_mb() -> float:
    """This process's resident memory now (MiB), from /proc."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class PeakSampler:
    """The largest resident set seen while the block runs, sampled every 20 ms on a thread."""

    def __enter__(self) -> PeakSampler:
        self.start = self.peak = rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, rss_mb())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mb())


def measure_case(root: str, size: str, name: str, window: int, threads: int | None) -> dict:
    import torch

    from yambda_dl.api import build_model
    from yambda_dl.data.layout import DatasetLayout
    from yambda_dl.data.split import Protocol, make_split
    from yambda_dl.eval.settings import EvalSettings
    from yambda_dl.eval.stream import stream_evaluate
    from yambda_dl.utils import progress

    if threads:
        torch.set_num_threads(threads)
    progress.set_enabled(False)
    split = make_split(DatasetLayout(Path(root), size), Protocol(), progress=False)
    model = build_model(name, **SETTINGS[name])
    start = time.perf_counter()
    model.fit(split)
    fit_s = time.perf_counter() - start
    settings = EvalSettings(ks=KS)
    start = time.perf_counter()
    items, _ = settings.rank(model, split)
    rank_s = time.perf_counter() - start
    frozen = settings.score(items, split)
    with PeakSampler() as memory:
        start = time.perf_counter()
        stream = stream_evaluate(model, split, settings, window, items)
        stream_s = time.perf_counter() - start
    return {
        "users": split.num_users,
        "items": split.num_items,
        "train_events": split.num_train_events,
        "day_events": int(split.window_events.num_targets),
        "fit_s": fit_s,
        "rank_s": rank_s,
        "stream_s": stream_s,
        "stream_mb": memory.peak - memory.start,
        "moved": sum(w["moved"] for w in stream["windows"]),
        "pairs": stream["num_pairs"],
        "state": stream["state"],
        "frozen_ndcg@10": frozen["ndcg@10"],
        "stream_ndcg@10": stream["metrics"]["ndcg@10"],
        "pairs_frozen_ndcg@10": stream["frozen"]["ndcg@10"],
    }


def extrapolate(r: dict, name: str) -> tuple[float, float, float]:
    """(factor, 5B streaming seconds, 5B streaming extra GiB): time by the family's growth (exact ItemKNN: the train
    events grow with the users, ~100x on both from 50m to 5B); memory from what eval/stream.py holds, with users,
    pairs and day events scaled by the users: the lists' copy (8 x K per user), the pairs' rows streamed and frozen
    (16 x K per pair), the day's three event streams (~40 bytes per event each) and one window's ranking."""
    users = TARGET_USERS / r["users"]
    growth = {"users": users, "users x items": users * TARGET_ITEMS / r["items"], "users x events": users * users}
    k = max(KS)
    per_window = r["moved"] / WINDOWS_PER_DAY  # users re-ranked in a window, on average
    memory = 8 * k * TARGET_USERS + users * (16 * k * r["pairs"] + 3 * 40 * r["day_events"] + 8 * k * per_window)
    return growth[GROWTH[name]], r["stream_s"] * growth[GROWTH[name]], memory / 2**30


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=DEFAULT_ROOT, help="a synthetic preset is generated there when missing")
    parser.add_argument("--size", default="50m")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--window", type=int, default=3600, help="seconds per window (3600: hourly)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per child (default: torch's)")
    parser.add_argument("--child", metavar="MODEL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure_case(args.root, args.size, args.child, args.window, args.threads)))
        return

    ensure_dataset(args.root, args.size)
    print(f"# machine: {machine('torch', 'numpy')}")
    print(f"# command: {command_line()}")
    print(f"# data: {args.size} at {args.root}, Listen+ final; window {args.window} s; ks {list(KS)}")
    print(
        f"{'model':9} {'users':>7} {'items':>9} {'day ev':>8} {'fit s':>7} {'rank s':>7} {'stream s':>9} "
        f"{'x rank':>7} {'moved':>8} {'pairs':>7} {'+MiB':>7} {'NDCG@10 frozen':>14} {'on pairs':>8} {'stream':>7}"
    )
    results = {}
    for name in args.models:
        extra = ["--threads", str(args.threads)] if args.threads else []
        child = ["--child", name, "--root", args.root, "--size", args.size, "--window", str(args.window), *extra]
        r = results[name] = run_child(__file__, child)
        print(
            f"{name:9} {r['users']:>7,} {r['items']:>9,} {r['day_events']:>8,} {r['fit_s']:>7.1f} {r['rank_s']:>7.2f} "
            f"{r['stream_s']:>9.2f} {r['stream_s'] / max(r['rank_s'], 1e-9):>7.1f} {r['moved']:>8,} {r['pairs']:>7,} "
            f"{r['stream_mb']:>7.0f} {r['frozen_ndcg@10']:>14.4f} {r['pairs_frozen_ndcg@10']:>8.4f} "
            f"{r['stream_ndcg@10']:>7.4f}"
        )
    print(f"# extrapolation to the 5B shape ({TARGET_USERS:,} users, {TARGET_ITEMS:,} items), one machine like this:")
    print(
        "# (x rank: streaming over the frozen ranking's time; it stays near re-rankings per user, which is behaviour)"
    )
    for name, r in results.items():
        factor, seconds, gigabytes = extrapolate(r, name)
        print(
            f"#   {name:9} grows with {GROWTH[name]:15} x{factor:,.0f}: ~{seconds / 3600:,.1f} h of streaming, "
            f"~{gigabytes:,.1f} GiB over the frozen run; {r['moved'] / r['users']:.1f} re-rankings per user "
            f"(state: {r['state']})"
        )


if __name__ == "__main__":
    main()
