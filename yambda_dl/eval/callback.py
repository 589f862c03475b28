"""A Lightning callback that ranks every ranked user with the model being trained and logs the evaluator's metrics.

In tune mode the split's targets are the validation day, so `val/ndcg@100` is the sweep objective and can drive
early stopping and an Optuna trial's pruning. It ranks with the run's EvalSettings, the same object the final pass
uses (seen-item mask, backend, tiles), and the same evaluate() computes the numbers: no sampled shortcuts.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import lightning
import torch

from yambda_dl.eval.settings import EvalSettings

if TYPE_CHECKING:
    from yambda_dl.data.split import Split

# (epoch, metrics) -> a reason to stop training now (an Optuna trial pruned from its validation curve), or None
ReportHook = Callable[[int, dict[str, float]], "str | None"]


class Pruned(Exception):  # a decision, not an error: the sweeper records the trial as pruned
    """Raised by RankingEvaluation on every rank when its report hook says the run's validation curve should stop."""


class RankingEvaluation(lightning.Callback):
    """Every `every_n_epochs` training epochs: full-catalogue top-k for all ranked users -> metrics -> log -> report."""

    def __init__(
        self,
        split: Split,
        settings: EvalSettings | None = None,
        every_n_epochs: int = 1,
        prefix: str = "val/",
        report: ReportHook | None = None,
    ) -> None:
        if every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be >= 1, got {every_n_epochs}")
        self.split, self.settings, self.every_n_epochs = split, settings or EvalSettings(), every_n_epochs
        self.prefix, self.report = prefix, report
        self.history: list[dict[str, float]] = []

    @property
    def ks(self) -> list[int]:
        return list(self.settings.ks)

    def on_train_epoch_end(self, trainer: lightning.Trainer, pl_module: lightning.LightningModule) -> None:
        if trainer.sanity_checking or (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        was_training = pl_module.training
        pl_module.eval()
        with torch.no_grad():
            items, _ = self.settings.rank(pl_module, self.split, device=pl_module.device)
        pl_module.train(was_training)
        metrics = self.settings.score(items, self.split)
        self.history.append({"epoch": trainer.current_epoch, **metrics})
        # every rank ranks all users (identical results), so no cross-rank reduction is needed
        pl_module.log_dict(
            {f"{self.prefix}{name}": float(value) for name, value in metrics.items()},
            on_epoch=True,
            sync_dist=False,
            rank_zero_only=False,
        )
        if self.report is None:
            return
        # rank 0 reports (one writer to the study); every rank gets its decision, so all of them stop together
        reason = self.report(trainer.current_epoch, metrics) if trainer.is_global_zero else None
        reason = trainer.strategy.broadcast(reason, src=0)
        if reason is not None:
            raise Pruned(reason)
