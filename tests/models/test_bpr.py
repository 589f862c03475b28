"""BPR: the checkerboard's held-out items, a training AUC that rises with epochs, the sampler, against implicit."""

from __future__ import annotations

import lightning
import numpy as np
import pytest
import torch

from yambda_dl.data import views
from yambda_dl.data.split import Split
from yambda_dl.eval.recommend import recommend_all, seen_items
from yambda_dl.models.bpr import BPR, TripleSampler

from ..conftest import gpu_trainer
from .test_ials import checkerboard_split, held_out_items


@pytest.fixture(scope="module")
def board(tmp_path_factory) -> Split:
    return checkerboard_split(tmp_path_factory.mktemp("board"))


def train_auc(model: BPR, split: Split) -> float:
    """Mean over users of the share of (played, not played) item pairs the model orders right, in numpy."""
    played = views.user_item_matrix(split, "binary").to_scipy().toarray() > 0
    scores = model.user_vectors(torch.arange(split.num_users)).numpy() @ model.item_vectors().numpy().T
    right = (scores[:, :, None] > scores[:, None, :]) & played[:, :, None] & ~played[:, None, :]
    pairs = played.sum(1) * (~played).sum(1)
    return float((right.sum(axis=(1, 2)) / pairs).mean())


def test_checkerboard_recommends_the_held_out_item(board):
    model = BPR(factors=4, iterations=30, learning_rate=0.1, batch_size=48).fit(board)
    items, _ = recommend_all(model, board.num_users, 1, exclude=seen_items(board))
    assert (items[:, 0].numpy() == held_out_items(board)).all()


def test_auc_rises_over_epochs(board):
    aucs = [
        train_auc(BPR(factors=4, iterations=epochs, learning_rate=0.1, batch_size=48).fit(board), board)
        for epochs in (1, 10, 30)
    ]
    assert aucs[0] < aucs[1] < aucs[2], aucs
    assert aucs[2] > 0.9  # not 1: each user's unplayed held-out item rightly ranks among its played ones


@pytest.mark.parametrize("negatives", ["uniform", "popularity"])
def test_verified_negatives_are_never_the_users_items(board, negatives):
    matrix = views.user_item_matrix(board, "binary")
    sampler = TripleSampler.build(matrix, torch.device("cpu"), negatives, verify=True)
    users, items, kept = sampler.sample(4096, torch.Generator().manual_seed(0))
    positives, negatives = items[:4096], items[4096:]
    played = matrix.to_scipy().toarray() > 0
    assert played[users.numpy(), positives.numpy()].all()
    np.testing.assert_array_equal(kept.numpy() == 0.0, played[users.numpy(), negatives.numpy()])
    assert 0 < kept.mean() < 1  # a negative of a checkerboard is the user's own 4 of 10 items at times


def test_verification_is_exact_in_a_hash_table_of_shared_buckets():
    """Random keys against a reference set; the sampler's table holds several keys per bucket (and padding)."""
    rng = np.random.default_rng(5)
    dense = rng.random((40, 300)) < 0.2
    rows, cols = np.nonzero(dense)
    indptr = np.concatenate([[0], np.cumsum(dense.sum(1))]).astype(np.int64)
    matrix = views.SparseMatrix(indptr, cols.astype(np.int32), np.ones(len(cols), np.float32), dense.shape)
    sampler = TripleSampler.build(matrix, torch.device("cpu"), "uniform", verify=True)
    users, items, kept = sampler.sample(20_000, torch.Generator().manual_seed(1))
    np.testing.assert_array_equal(kept.numpy() == 0.0, dense[users.numpy(), items[20_000:].numpy()])
    filled = (sampler.table >= 0).sum(1)
    assert filled.sum() == len(rows) and filled.max() > 1 and (filled < sampler.table.shape[1]).any()


def test_bias_column_meets_the_ones_column(board):
    model = BPR(factors=3, iterations=2).fit(board)
    users, items = model.user_vectors(torch.tensor([0, 5])), model.item_vectors()
    assert users.shape == (2, 4) and items.shape == (board.num_items, 4)
    assert (users[:, -1] == 1).all()
    torch.testing.assert_close(items[:, -1], model.item_biases)
    assert model.item_biases.abs().sum() > 0  # learnt, from a start at 0
    assert BPR(factors=3, iterations=2, item_bias=False).fit(board).item_vectors().shape == (board.num_items, 3)


def test_quality_close_to_implicit_bpr(board):
    """implicit's CPU BPR (an independent peer) with the same settings orders the training pairs about as well."""
    from implicit.cpu.bpr import BayesianPersonalizedRanking

    ours = train_auc(BPR(factors=4, iterations=30, learning_rate=0.1, batch_size=48).fit(board), board)
    peer = BayesianPersonalizedRanking(factors=4, iterations=30, learning_rate=0.1, num_threads=1, random_state=0)
    peer.fit(views.user_item_matrix(board, "binary").to_scipy(), show_progress=False)

    class Peer:
        def user_vectors(self, user_idx):
            return torch.from_numpy(peer.user_factors[user_idx.numpy()])

        def item_vectors(self):
            return torch.from_numpy(peer.item_factors)

    assert ours >= train_auc(Peer(), board) - 0.05


def test_runs_under_a_trainer_that_logs_the_loss(board, tmp_path):
    trainer = lightning.Trainer(
        max_epochs=3,
        accelerator="cpu",
        default_root_dir=tmp_path,
        enable_progress_bar=False,
        enable_model_summary=False,
        logger=False,
    )
    BPR(factors=2, iterations=3, batch_size=16).fit(board, trainer=trainer)
    assert trainer.current_epoch == 3 and trainer.num_training_batches == 1  # an epoch is one step: 3 batches of 16
    assert float(trainer.callback_metrics["train/loss"]) > 0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_trains_on_cuda(board):
    trainer = gpu_trainer(max_epochs=30)
    model = BPR(factors=4, iterations=30, learning_rate=0.1, batch_size=48).fit(board, trainer=trainer)
    assert model.item_vectors().device.type == "cuda"
    assert train_auc(model.cpu(), board) > 0.9


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"negatives": "hard"}, "valid choices: popularity, uniform"),
        ({"batch_size": 0}, "batch_size must be >= 1"),
        ({"learning_rate": 0.0}, "learning_rate > 0"),
    ],
)
def test_bad_configuration_is_refused_where_it_enters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        BPR(**kwargs)
