"""The validation callback on a real Trainer with a small matrix-factorisation LightningModule."""

from __future__ import annotations

import lightning
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from yambda_dl.data.layout import DatasetLayout
from yambda_dl.data.split import Protocol, make_split
from yambda_dl.eval.callback import Pruned, RankingEvaluation
from yambda_dl.eval.settings import EvalSettings

from ..conftest import listen, quiet_trainer, write_flat


class TinyMF(lightning.LightningModule):
    """Dot-product factors trained with BCE on (user, item, label) triples: a VectorRecommender."""

    def __init__(self, num_users: int, num_items: int, dim: int = 4):
        super().__init__()
        self.users = torch.nn.Embedding(num_users, dim)
        self.items = torch.nn.Embedding(num_items, dim)

    def user_vectors(self, user_idx: torch.Tensor) -> torch.Tensor:
        return self.users(user_idx.to(self.device))

    def item_vectors(self) -> torch.Tensor:
        return self.items.weight

    def training_step(self, batch, _):
        u, i, y = batch
        logits = (self.users(u) * self.items(i)).sum(-1)
        return torch.nn.functional.binary_cross_entropy_with_logits(logits, y)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=0.1)


def board(tmp_path):
    """A checkerboard split and its (user, item, label) training data: even users play even items, odd users odd
    items; each user's tune-day target follows suit."""
    layout = DatasetLayout(tmp_path / "y", "board")
    rows = [listen(u, 1_000_000 + 5 * i, 100 + i) for u in range(12) for i in range(8) if (u + i) % 2 == 0]
    rows += [listen(u, 25_830_000, 100 + (u % 2)) for u in range(12)]  # inside the tune window
    write_flat(layout, "listens", rows)
    split = make_split(layout, Protocol(mode="tune"), cache_dir=tmp_path / "c", progress=False)
    users, items = [], []
    for batch in split.iter_train(columns=("user_idx", "item_idx")):
        users.append(torch.from_numpy(batch["user_idx"]))
        items.append(torch.from_numpy(batch["item_idx"]))
    u, i = torch.cat(users), torch.cat(items)
    neg_u = torch.arange(12).repeat_interleave(4)
    neg_i = torch.tensor([j for user in range(12) for j in range(8) if (user + j) % 2 == 1])
    data = TensorDataset(
        torch.cat([u, neg_u]), torch.cat([i, neg_i]), torch.cat([torch.ones(len(u)), torch.zeros(len(neg_u))])
    )
    return split, data


def test_callback_logs_validation_metrics_that_improve(tmp_path):
    split, data = board(tmp_path)
    torch.manual_seed(0)
    model = TinyMF(split.num_users, split.num_items)
    callback = RankingEvaluation(split, EvalSettings(ks=(1, 4)), every_n_epochs=5)
    trainer = quiet_trainer(max_epochs=30, accelerator="cpu", callbacks=[callback])
    trainer.fit(model, DataLoader(data, batch_size=32, shuffle=True))

    assert [h["epoch"] for h in callback.history] == [4, 9, 14, 19, 24, 29]
    assert callback.history[-1]["hitrate@4"] == 1.0  # the right parity's four items fill the top 4
    assert "val/ndcg@4" in trainer.callback_metrics
    assert callback.history[-1]["ndcg@4"] >= callback.history[0]["ndcg@4"]


def test_a_report_hook_sees_each_validation_and_can_stop_the_run(tmp_path):
    split, data = board(tmp_path)
    torch.manual_seed(0)
    seen = []

    def report(epoch, metrics):  # an Optuna trial's hook: stop at the second validation
        seen.append((epoch, metrics["ndcg@4"]))
        return "pruned at the second validation" if len(seen) == 2 else None

    callback = RankingEvaluation(split, EvalSettings(ks=(1, 4)), every_n_epochs=2, report=report)
    trainer = quiet_trainer(max_epochs=30, accelerator="cpu", callbacks=[callback])
    with pytest.raises(Pruned, match="second validation"):
        trainer.fit(TinyMF(split.num_users, split.num_items), DataLoader(data, batch_size=32, shuffle=True))
    assert [epoch for epoch, _ in seen] == [1, 3] and trainer.current_epoch == 3
    assert [value for _, value in seen] == [h["ndcg@4"] for h in callback.history]


def test_the_seen_item_mask_is_the_settings_and_built_once(tmp_path):
    split, _ = board(tmp_path)
    settings = EvalSettings(ks=(4,), filter_seen=True)
    assert settings.exclude(split) is settings.exclude(split)  # one mask per split, reused every validation
    assert EvalSettings(ks=(4,)).exclude(split) is None
    model = TinyMF(split.num_users, split.num_items)
    items, _ = settings.rank(model, split)
    exclude = settings.exclude(split)
    for user in range(split.num_users):  # no user is recommended an item they played
        played = set(exclude.indices[exclude.indptr[user] : exclude.indptr[user + 1]].tolist())
        assert not played & set(items[user].tolist())
