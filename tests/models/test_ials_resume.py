"""iALS resumes: a fit stopped after a checkpoint and resumed from last.ckpt by a fresh model ends with the factors
and recommendations of a fit that ran through (the factors are the module's state; the sweeps are deterministic)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import lightning
import pytest
import torch

from yambda_dl.eval.recommend import recommend_all
from yambda_dl.models.ials import IALS

from .test_ials import checkerboard_split


class Interrupted(RuntimeError):
    """The stand-in for a killed run."""


class StopAfter(lightning.Callback):
    """Raises at the end of epoch `epoch` (0-based); the checkpoint callback, which Lightning runs after the others,
    has saved the epochs before it."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_end(self, trainer: lightning.Trainer, module: lightning.LightningModule) -> None:
        if trainer.current_epoch == self.epoch:
            raise Interrupted(f"stopped at the end of epoch {self.epoch}")


def checkpointing_trainer(folder: Path, epochs: int, *callbacks: lightning.Callback) -> lightning.Trainer:
    return lightning.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[
            lightning.pytorch.callbacks.ModelCheckpoint(dirpath=folder, save_last=True, every_n_epochs=1),
            *callbacks,
        ],
    )


def check_resume_repeats_the_run(
    build: Callable[..., lightning.LightningModule], split, tmp_path: Path, epochs: int, stop: int
) -> None:
    """Fit through; fit again but stop at the end of epoch `stop`; resume a fresh model from last.ckpt: the resumed
    model's vectors and top-3 lists equal the uninterrupted ones', bit for bit."""
    through = build().fit(split, trainer=checkpointing_trainer(tmp_path / "through", epochs))
    stopped = tmp_path / "stopped"
    with pytest.raises(Interrupted):
        build().fit(split, trainer=checkpointing_trainer(stopped, epochs, StopAfter(stop)))
    checkpoint = torch.load(stopped / "last.ckpt", weights_only=False)
    assert checkpoint["epoch"] == stop - 1  # the last epoch completed before the stop
    resumed = build(ckpt_path=str(stopped / "last.ckpt")).fit(split, trainer=checkpointing_trainer(stopped, epochs))
    users = torch.arange(split.num_users)
    assert torch.equal(resumed.item_vectors(), through.item_vectors())
    assert torch.equal(resumed.user_vectors(users), through.user_vectors(users))
    first, again = recommend_all(through, split.num_users, 3), recommend_all(resumed, split.num_users, 3)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    # and the resumed fit did resume: a model that trains only the remaining epochs from scratch ends elsewhere
    assert not torch.equal(build(iterations=epochs - stop).fit(split).item_vectors(), through.item_vectors())


@pytest.mark.parametrize("solver", ["cg", "cholesky"])
def test_a_resumed_fit_ends_where_an_uninterrupted_one_does(tmp_path, solver):
    split = checkerboard_split(tmp_path / "data")

    def build(**overrides) -> IALS:
        return IALS(**{"factors": 4, "iterations": 5, "alpha": 2.0, "solver": solver, **overrides})

    check_resume_repeats_the_run(build, split, tmp_path, epochs=5, stop=2)
