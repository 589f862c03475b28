"""Trains a zoo model with 2 CPU processes (DDP, gloo) on a split folder and records, per rank, the users of every
batch and the metrics of scoring all users. Run by test_ddp.py as a script: Lightning re-launches it per rank.

usage: python ddp_run.py MODEL SPLIT_FOLDER OUT_FOLDER [ITEM_REPR]
(ITEM_REPR: a configs/model/item_repr/ choice, e.g. hybrid; the model's default when absent)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # the checkout: `tests` importable in every rank

import lightning
import numpy as np
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.strategies import DDPStrategy

from tests.models.sequential.zoo import tiny
from yambda_dl.data.split import load_split
from yambda_dl.eval.evaluator import evaluate
from yambda_dl.eval.recommend import recommend_all

KEYS = {"max_len": 8, "batch_size": 16, "epochs": 2, "num_workers": 2}


class BatchUsers(lightning.Callback):
    """The user_idx of every training batch this rank sees, per epoch."""

    def __init__(self) -> None:
        self.users: dict[int, list[int]] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.users.setdefault(trainer.current_epoch, []).extend(batch["user_idx"].tolist())


def main(name: str, split_folder: Path, out: Path, item_repr: str | None = None) -> None:
    split = load_split(split_folder)
    users = BatchUsers()
    trainer = lightning.Trainer(
        accelerator="cpu",
        devices=2,
        strategy=DDPStrategy(process_group_backend="gloo"),
        max_epochs=KEYS["epochs"],
        logger=False,
        default_root_dir=out,
        # checkpoints as configs/callbacks/model_checkpoint.yaml writes them (last.ckpt is restored by the test)
        callbacks=[users, ModelCheckpoint(dirpath=out / "checkpoints", save_last=True, every_n_epochs=1)],
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    parts = {"item_repr": item_repr} if item_repr else {}
    model = tiny(name, **KEYS, **parts).fit(split, trainer)
    items, _ = recommend_all(model, split.num_users, 5, batch_users=7)
    metrics = evaluate(items, split.targets, split.num_items, [1, 5])
    record = {"users": users.users, "metrics": metrics, "item_vectors_sum": float(np.abs(model.item_vectors()).sum())}
    (out / f"rank{trainer.global_rank}.json").write_text(json.dumps(record))


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), *sys.argv[4:5])
