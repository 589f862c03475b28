"""A Lightning callback that ranks every ranked user with the model being trained and logs the evaluator's metrics.

In tune mode the split's targets are the validation day, so `val/ndcg@100` is the sweep objective and can drive
early stopping; the same evaluate() as the final report computes it, with no sampled shortcuts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import lightning
import torch

from yambda_dl.eval.evaluator import evaluate
from yambda_dl.eval.recommend import recommend_all

if TYPE_CHECKING:
    from yambda_dl.data.split import Split
    from yambda_dl.retrieval import CSR


class RankingEvaluation(lightning.Callback):
    """Every `every_n_epochs` training epochs: full-catalogue top-k for all ranked users -> metrics -> log."""

    def __init__(
        self,
        split: Split,
        ks: Sequence[int] = (10, 100),
        every_n_epochs: int = 1,
        exclude: CSR | None = None,
        batch_users: int = 8192,
        backend: str = "torch",
        prefix: str = "val/",
    ) -> None:
        if every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be >= 1, got {every_n_epochs}")
        self.split, self.ks, self.every_n_epochs = split, sorted(ks), every_n_epochs
        self.exclude, self.batch_users, self.backend, self.prefix = exclude, batch_users, backend, prefix
        self.history: list[dict[str, float]] = []

    def on_train_epoch_end(self, trainer: lightning.Trainer, pl_module: lightning.LightningModule) -> None:
        if trainer.sanity_checking or (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        was_training = pl_module.training
        pl_module.eval()
        with torch.no_grad():
            items, _ = recommend_all(
                pl_module,
                self.split.num_users,
                self.ks[-1],
                exclude=self.exclude,
                batch_users=self.batch_users,
                backend=self.backend,
                device=pl_module.device,
            )
        pl_module.train(was_training)
        metrics = evaluate(items, self.split.targets, self.split.num_items, self.ks)
        self.history.append({"epoch": trainer.current_epoch, **metrics})
        # every rank ranks all users (identical results), so no cross-rank reduction is needed
        pl_module.log_dict(
            {f"{self.prefix}{name}": float(value) for name, value in metrics.items()},
            on_epoch=True,
            sync_dist=False,
            rank_zero_only=False,
        )
