"""The validation callback on a real Trainer with a small matrix-factorisation LightningModule."""

from __future__ import annotations

import lightning
import torch
from torch.utils.data import DataLoader, TensorDataset

from yambda_dl.data.layout import DatasetLayout
from yambda_dl.data.split import Protocol, make_split
from yambda_dl.eval.callback import RankingEvaluation

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


def test_callback_logs_validation_metrics_that_improve(tmp_path):
    # checkerboard: even users play even items, odd users odd items; each user's tune-day target follows suit
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
    torch.manual_seed(0)
    model = TinyMF(split.num_users, split.num_items)
    callback = RankingEvaluation(split, ks=(1, 4), every_n_epochs=5)
    trainer = quiet_trainer(max_epochs=30, accelerator="cpu", callbacks=[callback])
    trainer.fit(model, DataLoader(data, batch_size=32, shuffle=True))

    assert [h["epoch"] for h in callback.history] == [4, 9, 14, 19, 24, 29]
    assert callback.history[-1]["hitrate@4"] == 1.0  # the right parity's four items fill the top 4
    assert "val/ndcg@4" in trainer.callback_metrics
    assert callback.history[-1]["ndcg@4"] >= callback.history[0]["ndcg@4"]
