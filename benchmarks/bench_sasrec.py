"""Benchmark: SASRec training throughput (events, i.e. tokens, per second) and peak memory on the synthetic_50m
scale, with the paper's BCE loss and with sampled softmax, beside RecTools' SASRec on the same sequences and sizes;
then NDCG@10 of each after the same short schedule. Each case runs in its own child process (peak RSS alone).

    .venv/bin/python benchmarks/bench_sasrec.py --root /tmp/bench50m --size 50m [--epochs 1] [--warmup 3]
    .venv/bin/python benchmarks/bench_sasrec.py ... --accelerator gpu --precision bf16-mixed   # where a GPU is lent
    PEER_SITE=/tmp/rectools_site  # where `pip install --target` put rectools (kept out of .venv)

The peer gets exactly what our model trains on: each user's last max_len + 1 Listen+ train events. RecTools'
SASRec differs by design in two ways, kept at its defaults: pre-norm layers and an FFN as wide as d (ours: 256).
A 100-epoch run does not fit this machine's time: throughput is measured over the epochs given, after `warmup` steps,
and quality is NDCG@10 (test day) after those same epochs, for both models.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from _common import DEFAULT_ROOT, command_line, ensure_dataset, machine, peak_rss_mb, run_child

CASES = ("ours:bce", "ours:sampled_softmax", "rectools:bce", "rectools:sampled_softmax")
RECTOOLS_LOSS = {"bce": "BCE", "sampled_softmax": "sampled_softmax"}


def _split(args: argparse.Namespace):
    from yambda_dl.data.layout import DatasetLayout
    from yambda_dl.data.split import Protocol, make_split

    return make_split(DatasetLayout(Path(args.root), args.size), Protocol(), progress=False)


def _negatives(loss: str, args: argparse.Namespace, peer: bool = False) -> int:
    """BCE: the paper's one per position; sampled softmax: ours shares its negatives across the batch, RecTools
    draws its own per position (1024 of them per position would gather 13 GB of embeddings per batch)."""
    if loss == "bce":
        return 1
    return args.peer_negatives if peer else args.negatives


class _Throughput:
    """Wall time and real (non-padding) target events of every step after `warmup` steps, data loading included."""

    def __init__(self, warmup: int, count_tokens) -> None:
        self.warmup, self.count_tokens = warmup, count_tokens
        self.steps, self.tokens, self.started, self.seconds = 0, 0, None, 0.0

    def batch_start(self, batch) -> None:
        if self.steps == self.warmup:
            self.started = time.perf_counter()
        if self.steps >= self.warmup:
            self.tokens += int(self.count_tokens(batch))

    def batch_end(self) -> None:
        self.steps += 1
        if self.started is not None:
            self.seconds = time.perf_counter() - self.started


def _lightning_callback(base, meter: _Throughput):
    """The meter as a callback of the given Lightning flavour (lightning, or pytorch_lightning for RecTools)."""

    class Meter(base):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            meter.batch_start(batch)

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            meter.batch_end()

    return Meter()


def _ours(loss: str, args: argparse.Namespace, split) -> tuple[_Throughput, object]:
    """Train our SASRec; returns the meter and (items (users, 10)) for the evaluator."""
    import lightning

    from yambda_dl.data.sequences import PAD
    from yambda_dl.eval.recommend import recommend_all
    from yambda_dl.models.sasrec.module import build_sasrec

    def real_targets(batch) -> int:
        items = batch["items"]
        return ((items[:, :-1] != PAD) & (items[:, 1:] != PAD)).sum()

    meter = _Throughput(args.warmup, real_targets)
    trainer = lightning.Trainer(
        accelerator=args.accelerator,
        precision=args.precision,
        max_epochs=args.epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[_lightning_callback(lightning.Callback, meter)],
    )
    model = build_sasrec(loss=loss, num_negatives=_negatives(loss, args), epochs=args.epochs, seed=0)
    model.fit(split, trainer)
    items, _ = recommend_all(model, split.num_users, 10, batch_users=2048, user_tile=1024)
    return meter, items


def _rectools(loss: str, args: argparse.Namespace, split) -> tuple[_Throughput, object]:
    """Train RecTools' SASRec on the same last max_len + 1 events per user, same sizes, on CPU."""
    sys.path.insert(0, os.environ.get("PEER_SITE", "/tmp/rectools_site"))
    import numpy as np
    import pandas as pd
    import pyarrow.parquet as pq
    import pytorch_lightning
    import torch
    from rectools import Columns
    from rectools.dataset import Dataset
    from rectools.models import SASRecModel
    from rectools.models.nn.item_net import IdEmbeddingsItemNet

    from yambda_dl.data.sequences import user_sequences

    lists = pq.read_table(user_sequences(split, 201)).column("item_idx").combine_chunks()
    lengths = np.diff(lists.offsets.to_numpy())
    interactions = pd.DataFrame(
        {
            Columns.User: np.repeat(np.arange(len(lengths)), lengths),
            Columns.Item: lists.values.to_numpy(),
            Columns.Weight: 1.0,
            Columns.Datetime: pd.to_datetime(np.arange(lengths.sum()), unit="s"),  # keeps each user's order
        }
    )
    meter = _Throughput(args.warmup, lambda batch: (batch["y"] != 0).sum())

    def trainer() -> pytorch_lightning.Trainer:
        return pytorch_lightning.Trainer(
            accelerator=args.accelerator,
            precision=args.precision,
            max_epochs=args.epochs,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=[_lightning_callback(pytorch_lightning.Callback, meter)],
        )

    torch.manual_seed(0)
    model = SASRecModel(
        n_blocks=2,
        n_heads=2,
        n_factors=64,
        dropout_rate=0.1,
        session_max_len=200,
        loss=RECTOOLS_LOSS[loss],
        n_negatives=_negatives(loss, args, peer=True),
        lr=1e-3,
        batch_size=256,
        epochs=args.epochs,
        item_net_block_types=(IdEmbeddingsItemNet,),
        get_trainer_func=trainer,
        recommend_torch_device="cuda" if args.accelerator == "gpu" else "cpu",
    )
    dataset = Dataset.construct(interactions)
    model.fit(dataset)
    users = np.arange(len(lengths))
    warm = np.unique(interactions[Columns.User].to_numpy()[np.repeat(lengths >= 2, lengths)])
    recs = model.recommend(users=warm, dataset=dataset, k=10, filter_viewed=False)
    items = np.full((len(users), 10), -1, dtype=np.int64)  # users with one event: no training pair, no recs
    items[recs[Columns.User].to_numpy(), recs[Columns.Rank].to_numpy() - 1] = recs[Columns.Item].to_numpy()
    return meter, torch.from_numpy(items)


def _run_case(case: str, args: argparse.Namespace) -> dict:
    """Train and score one case in this (child) process; peak RSS from getrusage, peak GPU memory from torch."""
    import torch

    from yambda_dl.eval.evaluator import evaluate

    split = _split(args)
    library, loss = case.split(":")
    start = time.perf_counter()
    meter, items = (_ours if library == "ours" else _rectools)(loss, args, split)
    total = time.perf_counter() - start
    metrics = evaluate(items, split.targets, split.num_items, [10])
    gpu_peak = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else 0.0
    return {
        "peak_gpu_mb": gpu_peak,
        "tokens_per_s": meter.tokens / meter.seconds if meter.seconds else float("nan"),
        "steps": meter.steps,
        "total_s": total,
        "ndcg@10": metrics["ndcg@10"],
        "paper_ndcg@10": metrics["paper_ndcg@10"],
        "peak_rss_mb": peak_rss_mb(),
    }


def _child(case: str, args: argparse.Namespace) -> dict:
    """Run one case in a fresh interpreter; a failed case (RecTools missing, out of memory) is reported, not fatal."""
    arguments = ["--case", case, "--root", args.root, "--size", args.size, "--epochs", str(args.epochs)]
    arguments += ["--warmup", str(args.warmup), "--accelerator", args.accelerator, "--precision", args.precision]
    arguments += ["--negatives", str(args.negatives), "--peer-negatives", str(args.peer_negatives)]
    try:
        return run_child(__file__, arguments)
    except RuntimeError as failure:
        return {"error": str(failure).strip().splitlines()[-1]}


def _report(args: argparse.Namespace) -> None:
    """Every case, then each loss's throughput ratio ours / RecTools measured in this same run."""
    ensure_dataset(args.root, args.size)
    print(f"machine: {machine('torch', 'lightning')}")
    print(f"command: {command_line()}")
    split = _split(args)
    print(f"data: {split}")
    print(
        f"sizes: 2 layers, 2 heads, d 64, max_len 200, batch 256, {args.epochs} epoch(s); sampled softmax negatives: "
        f"ours {args.negatives} shared per batch, RecTools {args.peer_negatives} per position"
    )
    print(f"accelerator {args.accelerator}, precision {args.precision}")
    print("| case | tokens/s | steps | total s | NDCG@10 | paper NDCG@10 | peak RSS MB | peak GPU MB |")
    print("|---|---|---|---|---|---|---|---|")
    results = {}
    for case in CASES:
        results[case] = result = _child(case, args)
        if "error" in result:
            print(f"| {case} | failed: {result['error']} | | | | | | |", flush=True)
            continue
        print(
            f"| {case} | {result['tokens_per_s']:,.0f} | {result['steps']} | {result['total_s']:.0f} | "
            f"{result['ndcg@10']:.4f} | {result['paper_ndcg@10']:.4f} | {result['peak_rss_mb']:,.0f} | "
            f"{result['peak_gpu_mb']:,.0f} |",
            flush=True,
        )
    for loss in ("bce", "sampled_softmax"):
        ours, peer = results[f"ours:{loss}"], results[f"rectools:{loss}"]
        if "error" not in ours and "error" not in peer:
            print(f"throughput ours / RecTools, {loss}: {ours['tokens_per_s'] / peer['tokens_per_s']:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=DEFAULT_ROOT, help="generated there when missing")
    parser.add_argument("--size", default="50m")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=3, help="steps left out of the throughput")
    parser.add_argument("--negatives", type=int, default=1024, help="sampled softmax: negatives per batch")
    parser.add_argument("--peer-negatives", type=int, default=16, help="RecTools sampled softmax: per position")
    parser.add_argument("--accelerator", default="cpu", help="gpu: where CUDA is present")
    parser.add_argument("--precision", default="32-true", help="bf16-mixed on a GPU")
    parser.add_argument("--case", choices=CASES, help="internal: run one case in this process and print JSON")
    args = parser.parse_args()
    if args.case:
        print(json.dumps(_run_case(args.case, args)))
    else:
        _report(args)


if __name__ == "__main__":
    main()
