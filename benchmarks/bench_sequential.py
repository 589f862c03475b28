"""Benchmark: training throughput (real input events, i.e. tokens, per second) and peak memory of our sequential
models `sasrec`, `bert4rec` and `hstu` beside RecTools 0.19's SASRecModel, BERT4RecModel and HSTUModel on the same
sequences and layer sizes at the synthetic_50m scale; then NDCG@10 (test day) of each after the same epochs. Each
case runs in its own child process (its peak RSS is its own), ours and RecTools' back to back in one run.

    .venv/bin/python benchmarks/bench_sequential.py --root /tmp/bench50m --size 50m [--epochs 1] [--warmup 3]
    .venv/bin/python benchmarks/bench_sequential.py ... --limit-batches 12 --threads 2  # ~35 min on a busy 2 cores
    .venv/bin/python benchmarks/bench_sequential.py ... --models sasrec --threads 2      # rerun a part
    .venv/bin/python benchmarks/bench_sequential.py ... --accelerator gpu --precision bf16-mixed   # a lent GPU
    PEER_SITE=/tmp/rectools_site  # where `pip install --target /tmp/rectools_site --no-deps rectools==0.19
                                  # 'pandas<3' typeguard pytz` put RecTools (kept out of .venv)

Both sides: d 64, 2 layers, 2 heads, max_len 200, batch 256, dropout 0.1, Adam-family at 1e-3, id embeddings tied
between input and output, the last max_len + 1 Listen+ train events of every user (with their timestamps, which
HSTU's relative time bias reads). FFN width equal on both sides: SASRec 64 (RecTools' SASRec block has FFN = d, so
ours is set to 64 here; the paper's recipe is 256), BERT4Rec 256 (RecTools' pre-norm block: 4 d, our default).
Losses: SASRec with the paper's BCE (one negative per position) and with sampled softmax; BERT4Rec and HSTU with
sampled softmax only, because RecTools' full softmax materialises batch x length x items logits (256 x 200 x 792k
float32 = 162 GB at this scale). Sampled softmax negatives: ours shares `--negatives` per batch, RecTools draws
`--peer-negatives` per position (1,024 per position would gather ~13 GB of vectors per batch).
Tokens are real (non-padding) input events of the steps after `--warmup`: for next-item models every one has a
target; for BERT4Rec every real event is encoded (mask probability 0.15 on both sides picks the targets).
Item table init: RecTools re-initialises every matrix Xavier-normal when training starts, so its item table starts
at std sqrt(2 / (rows + d)) (0.0017 at 660k items), which Adam's 1e-3 steps dominate within a few steps; our
default, d^-1/2 (0.125), keeps the random init dominant for many more steps (after one epoch our BCE SASRec had
NDCG@10 0.0217 at d^-1/2 against 0.1692 at RecTools' std, RecTools 0.1280). Quality after a short run compares
inits more than models, so by default (`--item-init rectools`) ours starts at RecTools' std (model.item_repr.
init_std); `--item-init ours` keeps our default.
A 100-epoch run does not fit a CPU machine's time: throughput is measured over the epochs given (or the first
`--limit-batches` steps of each), and quality is NDCG@10 after those same steps, for both libraries.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

from _common import DEFAULT_ROOT, command_line, ensure_dataset, machine, peak_rss_mb, run_child

MODELS = ("sasrec", "bert4rec", "hstu")
# (model, library, loss) in the order they run: ours and RecTools' back to back, so each ratio is one period's
CASES = (
    ("sasrec", "ours", "bce"),
    ("sasrec", "rectools", "bce"),
    ("sasrec", "ours", "sampled_softmax"),
    ("sasrec", "rectools", "sampled_softmax"),
    ("bert4rec", "ours", "sampled_softmax"),
    ("bert4rec", "rectools", "sampled_softmax"),
    ("hstu", "ours", "sampled_softmax"),
    ("hstu", "rectools", "sampled_softmax"),
)
RECTOOLS_LOSS = {"bce": "BCE", "sampled_softmax": "sampled_softmax"}
D_MODEL, LAYERS, HEADS, MAX_LEN, BATCH, DROPOUT = 64, 2, 2, 200, 256, 0.1
MASK_PROB = 0.15  # BERT4Rec: RecTools' default, set on ours too
SASREC_FFN = 64  # RecTools' SASRec block: FFN as wide as d
BERT4REC_FFN = 4 * D_MODEL  # RecTools' BERT4Rec (pre-norm block, ff_factors_multiplier 4) and our default


def _case_name(case: tuple[str, str, str]) -> str:
    return ":".join(case)


def _split(args: argparse.Namespace):
    from yambda_dl.data.layout import DatasetLayout
    from yambda_dl.data.split import Protocol, make_split

    return make_split(DatasetLayout(Path(args.root), args.size), Protocol(), progress=False)


class _Throughput:
    """Wall time and real (non-padding) input events of every step after `warmup` steps, data loading included."""

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


def _trainer_kwargs(args: argparse.Namespace, callback) -> dict:
    limit = {"limit_train_batches": args.limit_batches} if args.limit_batches else {}
    return {
        **limit,
        "accelerator": args.accelerator,
        "devices": 1,
        "precision": args.precision,
        "max_epochs": args.epochs,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "callbacks": [callback],
    }


def _ours(model_name: str, loss: str, args: argparse.Namespace, split) -> tuple[_Throughput, object]:
    """Train our model at the shared sizes; returns the meter and the top-10 item indices (users, 10)."""
    import lightning

    from yambda_dl.api import build_model
    from yambda_dl.data.sequences import PAD
    from yambda_dl.eval.recommend import recommend_all

    overrides: dict = {"loss": loss, "epochs": args.epochs, "seed": 0, "batch_size": BATCH}
    overrides.update(d_model=D_MODEL, max_len=MAX_LEN)
    if args.item_init == "rectools":  # Xavier-normal over the table's rows (items, padding, mask) and d
        rows = split.num_items + (2 if model_name == "bert4rec" else 1)
        overrides["item_repr.init_std"] = math.sqrt(2 / (rows + D_MODEL))
    if loss != "bce":
        overrides["loss.num_negatives"] = args.negatives
    backbone = {"num_layers": LAYERS, "num_heads": HEADS, "dropout": DROPOUT}
    if model_name == "sasrec":
        backbone["ffn_dim"] = SASREC_FFN
    elif model_name == "bert4rec":
        backbone["ffn_dim"] = BERT4REC_FFN
        overrides["objective"] = {"mask_prob": MASK_PROB}
    overrides["backbone"] = backbone
    for key, value in args.ours_override:  # e.g. optimizer.fused=true: a setting tried before it becomes a default
        overrides[key] = value

    def real_inputs(batch) -> int:
        items = batch["items"]
        if model_name == "bert4rec":  # every real event of columns 1.. is encoded
            return (items[:, 1:] != PAD).sum()
        return ((items[:, :-1] != PAD) & (items[:, 1:] != PAD)).sum()  # real inputs with a real next event

    meter = _Throughput(args.warmup, real_inputs)
    trainer = lightning.Trainer(**_trainer_kwargs(args, _lightning_callback(lightning.Callback, meter)))
    model = build_model(model_name, **overrides)
    model.fit(split, trainer)
    items, _ = recommend_all(model, split.num_users, 10, batch_users=2048, user_tile=1024)
    return meter, items


def _rectools(model_name: str, loss: str, args: argparse.Namespace, split) -> tuple[_Throughput, object]:
    """Train RecTools' model on the same last max_len + 1 events per user, same sizes; top-10 (users, 10)."""
    sys.path.insert(0, os.environ.get("PEER_SITE", "/tmp/rectools_site"))
    import numpy as np
    import pandas as pd
    import pyarrow.parquet as pq
    import pytorch_lightning
    import torch
    from rectools import Columns
    from rectools.dataset import Dataset
    from rectools.models import BERT4RecModel, HSTUModel, SASRecModel
    from rectools.models.nn.item_net import IdEmbeddingsItemNet

    from yambda_dl.data.sequences import user_sequences

    table = pq.read_table(user_sequences(split, MAX_LEN + 1, timestamps=True))
    lists = table.column("item_idx").combine_chunks()
    lengths = np.diff(lists.offsets.to_numpy())
    seconds = table.column("timestamp").combine_chunks().values.to_numpy().astype(np.int64)
    # nanoseconds within the second keep each user's order through any sort, and RecTools' unix_ts (datetime
    # // 1e9) still reads the event's own second
    within = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    interactions = pd.DataFrame(
        {
            Columns.User: np.repeat(np.arange(len(lengths)), lengths),
            Columns.Item: lists.values.to_numpy(),
            Columns.Weight: 1.0,
            Columns.Datetime: pd.to_datetime(seconds * 10**9 + within, unit="ns"),
        }
    )
    meter = _Throughput(args.warmup, lambda batch: (batch["x"] != 0).sum())

    def trainer() -> pytorch_lightning.Trainer:
        return pytorch_lightning.Trainer(
            **_trainer_kwargs(args, _lightning_callback(pytorch_lightning.Callback, meter))
        )

    common = {
        "n_blocks": LAYERS,
        "n_heads": HEADS,
        "n_factors": D_MODEL,
        "dropout_rate": DROPOUT,
        "session_max_len": MAX_LEN,
        "loss": RECTOOLS_LOSS[loss],
        "n_negatives": 1 if loss == "bce" else args.peer_negatives,
        "lr": 1e-3,
        "batch_size": BATCH,
        "epochs": args.epochs,
        "item_net_block_types": (IdEmbeddingsItemNet,),
        "get_trainer_func": trainer,
        "recommend_torch_device": "cuda" if args.accelerator == "gpu" else "cpu",
    }
    if model_name == "sasrec":
        model = SASRecModel(**common)
    elif model_name == "bert4rec":
        model = BERT4RecModel(**common, mask_prob=MASK_PROB)
    else:
        model = HSTUModel(**common)
    torch.manual_seed(0)
    dataset = Dataset.construct(interactions)
    model.fit(dataset)
    users = np.arange(len(lengths))
    warm = users[lengths >= 2]  # users with one event: no training pair, no recommendations (left at -1)
    context = None
    if model.require_recommend_context:  # HSTU: the request time, here the user's last train event's
        last = np.cumsum(lengths) - 1
        request = interactions[Columns.Datetime].to_numpy()[last][warm]
        context = pd.DataFrame({Columns.User: warm, Columns.Datetime: request})
    recs = model.recommend(users=warm, dataset=dataset, k=10, filter_viewed=False, context=context)
    items = np.full((len(users), 10), -1, dtype=np.int64)
    items[recs[Columns.User].to_numpy(), recs[Columns.Rank].to_numpy() - 1] = recs[Columns.Item].to_numpy()
    return meter, torch.from_numpy(items)


def _run_case(case: tuple[str, str, str], args: argparse.Namespace) -> dict:
    """Train and score one case in this (child) process; peak RSS from getrusage, peak GPU memory from torch."""
    import torch

    from yambda_dl.eval.evaluator import evaluate

    if args.threads:
        torch.set_num_threads(args.threads)
    split = _split(args)
    model_name, library, loss = case
    start = time.perf_counter()
    meter, items = (_ours if library == "ours" else _rectools)(model_name, loss, args, split)
    total = time.perf_counter() - start
    metrics = evaluate(items, split.targets, split.num_items, [10])
    gpu_peak = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else 0.0
    return {
        "tokens_per_s": meter.tokens / meter.seconds if meter.seconds else float("nan"),
        "steps": meter.steps,
        "total_s": total,
        "ndcg@10": metrics["ndcg@10"],
        "paper_ndcg@10": metrics["paper_ndcg@10"],
        "peak_rss_mb": peak_rss_mb(),
        "peak_gpu_mb": gpu_peak,
        "threads": torch.get_num_threads(),
    }


def _child(case: tuple[str, str, str], args: argparse.Namespace) -> dict:
    """Run one case in a fresh interpreter; a failed case (RecTools missing, out of memory) is reported, not fatal."""
    arguments = ["--case", _case_name(case), "--root", args.root, "--size", args.size, "--epochs", str(args.epochs)]
    arguments += ["--warmup", str(args.warmup), "--accelerator", args.accelerator, "--precision", args.precision]
    arguments += ["--negatives", str(args.negatives), "--peer-negatives", str(args.peer_negatives)]
    arguments += ["--threads", str(args.threads), "--item-init", args.item_init]
    arguments += ["--limit-batches", str(args.limit_batches)]
    for key, value in args.ours_override:
        arguments += ["--ours-override", f"{key}={json.dumps(value)}"]
    try:
        return run_child(__file__, arguments)
    except RuntimeError as failure:
        return {"error": str(failure).strip().splitlines()[-1]}


def _report(args: argparse.Namespace) -> None:
    """Every selected case, then each (model, loss)'s throughput ratio ours / RecTools measured in this same run."""
    ensure_dataset(args.root, args.size)
    print(f"machine: {machine('torch', 'lightning')}")
    print(f"command: {command_line()}")
    split = _split(args)
    print(f"data: {split}")
    print(
        f"sizes: {LAYERS} layers, {HEADS} heads, d {D_MODEL}, max_len {MAX_LEN}, batch {BATCH}, dropout {DROPOUT}, "
        f"FFN sasrec {SASREC_FFN} / bert4rec {BERT4REC_FFN} on both sides, {args.epochs} epoch(s)"
        f"{f' of {args.limit_batches} steps' if args.limit_batches else ''}, our item init {args.item_init}, warm-up "
        f"{args.warmup} steps; sampled softmax negatives: ours {args.negatives} shared per batch, RecTools "
        f"{args.peer_negatives} per position; threads {args.threads or 'torch default'}"
    )
    if args.ours_override:
        print(f"ours overridden: {', '.join(f'{key}={value}' for key, value in args.ours_override)}")
    print(f"accelerator {args.accelerator}, precision {args.precision}")
    print("| case | tokens/s | x RecTools | steps | total s | NDCG@10 | paper NDCG@10 | peak RSS MB | peak GPU MB |")
    print("|---|---|---|---|---|---|---|---|---|")
    results: dict[tuple[str, str, str], dict] = {}
    for case in CASES:
        if case[0] not in args.models or case[1] not in args.libraries or case[2] not in args.losses:
            continue
        results[case] = result = _child(case, args)
        name = _case_name(case)
        if "error" in result:
            print(f"| {name} | failed: {result['error']} | | | | | | | |", flush=True)
            continue
        ratio = ""
        peer = results.get((case[0], "rectools", case[2]), {})
        if case[1] == "rectools" and "error" not in peer:
            ours = results.get((case[0], "ours", case[2]), {})
            if "tokens_per_s" in ours:
                ratio = f"ours {ours['tokens_per_s'] / peer['tokens_per_s']:.2f}x"
        print(
            f"| {name} | {result['tokens_per_s']:,.0f} | {ratio} | {result['steps']} | {result['total_s']:.0f} | "
            f"{result['ndcg@10']:.4f} | {result['paper_ndcg@10']:.4f} | {result['peak_rss_mb']:,.0f} | "
            f"{result['peak_gpu_mb']:,.0f} |",
            flush=True,
        )
    print(f"load average after: {', '.join(f'{v:.1f}' for v in os.getloadavg())}")


def _override(text: str) -> tuple[str, object]:
    """KEY=VALUE with a JSON value (true, 64, "relu"); a bare word is a string."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=DEFAULT_ROOT, help="generated there when missing")
    parser.add_argument("--size", default="50m")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=3, help="steps left out of the throughput")
    parser.add_argument(
        "--limit-batches", type=int, default=0, help="train only the first N steps of each epoch (0: every step)"
    )
    parser.add_argument(
        "--item-init",
        choices=("rectools", "ours"),
        default="rectools",
        help="our item table's init std: RecTools' Xavier-normal std, or our default d^-1/2",
    )
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated subset of {', '.join(MODELS)}")
    parser.add_argument("--libraries", default="ours,rectools", help="comma-separated subset of ours, rectools")
    parser.add_argument("--losses", default=",".join(RECTOOLS_LOSS), help="comma-separated subset of the losses")
    parser.add_argument("--threads", type=int, default=0, help="torch threads per case (0: torch's default)")
    parser.add_argument("--negatives", type=int, default=1024, help="ours, sampled softmax: negatives per batch")
    parser.add_argument("--peer-negatives", type=int, default=16, help="RecTools sampled softmax: per position")
    parser.add_argument(
        "--ours-override",
        type=_override,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="build_model override for our models (JSON value), e.g. optimizer.fused=true; repeatable",
    )
    parser.add_argument("--accelerator", default="cpu", help="gpu: where CUDA is present")
    parser.add_argument("--precision", default="32-true", help="bf16-mixed on a GPU")
    parser.add_argument("--case", help="internal: run one model:library:loss case in this process and print JSON")
    args = parser.parse_args()
    if args.case:
        case = tuple(args.case.split(":"))
        if case not in CASES:
            parser.error(f"unknown case {args.case!r}; valid choices: {', '.join(map(_case_name, CASES))}")
        print(json.dumps(_run_case(case, args)))
        return
    args.models = [name.strip() for name in args.models.split(",") if name.strip()]
    args.libraries = [name.strip() for name in args.libraries.split(",") if name.strip()]
    args.losses = [name.strip() for name in args.losses.split(",") if name.strip()]
    if args.limit_batches < 0:
        parser.error(f"--limit-batches must be >= 0 (0: every step), got {args.limit_batches}")
    bad = [name for name in args.models if name not in MODELS]
    bad += [name for name in args.losses if name not in RECTOOLS_LOSS]
    bad += [name for name in args.libraries if name not in ("ours", "rectools")]
    if bad:
        valid = f"{', '.join(MODELS)}; ours, rectools; {', '.join(RECTOOLS_LOSS)}"
        parser.error(f"unknown model/library/loss {bad}; valid choices: {valid}")
    _report(args)


if __name__ == "__main__":
    main()
