"""BPR: the checkerboard's held-out items, a training AUC that rises with epochs, the sampler, against implicit."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import lightning
import numpy as np
import pytest
import torch

from yambda_dl.data import views
from yambda_dl.data.csr import CSR
from yambda_dl.data.split import Split
from yambda_dl.eval.recommend import recommend_all, seen_items
from yambda_dl.models import bpr
from yambda_dl.models.bpr import (
    BPR,
    COMPILE_MIN_TRIPLES,
    StepSettings,
    TripleSampler,
    compiler_present,
    pad_triples,
    sgd_step,
)

from ..conftest import gpu_trainer
from .test_ials import audio_board_split, check_audio_start, checkerboard_split, held_out_items, started_items


@pytest.fixture(scope="module")
def board(tmp_path_factory) -> Split:
    return checkerboard_split(tmp_path_factory.mktemp("board"))


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """torch's CPU threads at `threads` (BPR's lanes follow them), restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture
def one_thread():
    """One CPU thread for the test: BPR then runs without lanes, its compiled step in a single stream."""
    with torch_threads(1):
        yield


def train_auc(model: BPR, split: Split) -> float:
    """Mean over users of the share of (played, not played) item pairs the model orders right, in numpy."""
    played = views.user_item_matrix(split, "binary").to_scipy().toarray() > 0
    scores = model.user_vectors(torch.arange(split.num_users)).numpy() @ model.item_vectors().numpy().T
    right = (scores[:, :, None] > scores[:, None, :]) & played[:, :, None] & ~played[:, None, :]
    pairs = played.sum(1) * (~played).sum(1)
    return float((right.sum(axis=(1, 2)) / pairs).mean())


def test_checkerboard_recommends_the_held_out_item(board):
    model = BPR(factors=4, iterations=30, lr=0.1, batch_size=48).fit(board)
    items, _ = recommend_all(model, board.num_users, 1, exclude=seen_items(board))
    assert (items[:, 0].numpy() == held_out_items(board)).all()


def test_auc_rises_over_epochs(board):
    aucs = [
        train_auc(BPR(factors=4, iterations=epochs, lr=0.1, batch_size=48).fit(board), board) for epochs in (1, 10, 30)
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


def random_binary(shape: tuple[int, int], density: float, seed: int) -> tuple[np.ndarray, CSR]:
    """A random binary matrix, dense and as our CSR."""
    dense = np.random.default_rng(seed).random(shape) < density
    _, cols = np.nonzero(dense)
    indptr = np.concatenate([[0], np.cumsum(dense.sum(1))]).astype(np.int64)
    return dense, CSR(indptr, cols.astype(np.int32), np.ones(len(cols), np.float32), shape)


def test_verification_is_exact_in_a_hash_table_of_shared_buckets():
    """Random keys against a reference set; the sampler's table holds several keys per bucket (and padding)."""
    dense, matrix = random_binary((40, 3000), 0.002, seed=5)  # too sparse for the bitmap (1 / 256)
    sampler = TripleSampler.build(matrix, torch.device("cpu"), "uniform", verify=True)
    assert sampler.bitmap is None
    users, items, kept = sampler.sample(20_000, torch.Generator().manual_seed(1))
    assert (kept == 0).sum() > 10  # the check has hits to find
    np.testing.assert_array_equal(kept.numpy() == 0.0, dense[users.numpy(), items[20_000:].numpy()])
    filled = (sampler.table >= 0).sum(1)
    assert filled.sum() == matrix.nnz and filled.max() > 1 and (filled < sampler.table.shape[1]).any()


@pytest.mark.parametrize("negatives", ["uniform", "popularity"])
def test_verification_is_exact_in_a_bitmap(negatives):
    """A matrix dense enough (1 / 256 of its cells or more) is verified by one bit per cell, exactly."""
    dense, matrix = random_binary((37, 301), 0.2, seed=6)  # 37 x 301: cells not a multiple of 8
    sampler = TripleSampler.build(matrix, torch.device("cpu"), negatives, verify=True)
    assert sampler.table is None and sampler.bitmap.numel() == (37 * 301 + 7) // 8
    users, items, kept = sampler.sample(20_000, torch.Generator().manual_seed(1))
    np.testing.assert_array_equal(kept.numpy() == 0.0, dense[users.numpy(), items[20_000:].numpy()])
    assert 0 < kept.mean() < 1


def test_a_padded_batch_moves_what_the_batch_moves(board):
    """The compiled step's last batch is padded with skipped triples: they change no factor and add no loss."""
    sampler = TripleSampler.build(views.user_item_matrix(board, "binary"), torch.device("cpu"), "popularity", True)
    triples = sampler.sample(5, torch.Generator().manual_seed(3))
    start = torch.randn(board.num_users, 5), torch.randn(board.num_items, 5)
    plain = tuple(t.clone() for t in start)
    padded = tuple(t.clone() for t in start)
    settings = StepSettings(lr=0.1, regularization=0.01, item_bias=True)
    loss = sgd_step(plain, triples, settings)
    padded_loss = sgd_step(padded, pad_triples(triples, 8), settings)
    assert torch.equal(plain[0], padded[0]) and torch.equal(plain[1], padded[1]) and loss == padded_loss
    assert not torch.equal(plain[1], start[1])


def test_compile_auto_is_for_large_cpu_fits():
    """auto compiles where the fit's triples repay the compilation, on the CPU only; true/false decide alone."""
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    large, small = COMPILE_MIN_TRIPLES // 10, COMPILE_MIN_TRIPLES // 1000
    assert BPR(iterations=10).compiles(cpu, large) == compiler_present()
    assert not BPR(iterations=10).compiles(cpu, small) and not BPR(iterations=10).compiles(cuda, large)
    assert BPR(compile=True).compiles(cpu, 1) and not BPR(compile=False).compiles(cpu, large)


@pytest.mark.slow
@pytest.mark.skipif(not compiler_present(), reason="torch.compile on the CPU needs a C++ compiler")
def test_the_compiled_step_trains_as_the_eager_one(board, one_thread):
    """compile=True (one inductor kernel per batch) gives the eager factors to float rounding, and repeats itself
    bit for bit on one thread. ~10-30 s: the compilation."""
    settings = {"factors": 4, "iterations": 5, "lr": 0.1, "batch_size": 20}  # 48 nonzeros: a padded last batch
    eager = BPR(compile=False, **settings).fit(board).item_vectors()
    compiled = BPR(compile=True, **settings).fit(board).item_vectors()
    torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-6)
    assert torch.equal(BPR(compile=True, **settings).fit(board).item_vectors(), compiled)


@pytest.mark.slow
@pytest.mark.skipif(not compiler_present(), reason="torch.compile on the CPU needs a C++ compiler")
def test_the_compiled_step_trains_hogwild_on_lanes(board):
    """compile=True on 2 threads: the lanes take the epoch's batches (each drawn from (seed, epoch, batch)) and run
    the GIL-free kernel on them in place on shared factors, Hogwild; the fit learns the checkerboard as one thread
    does, from other draws. ~20-40 s: the compilation (inductor's C++ wrapper)."""
    settings = {"factors": 4, "iterations": 30, "lr": 0.1, "batch_size": 8, "compile": True}  # 6 batches an epoch
    with torch_threads(2):
        model = BPR(**settings).fit(board)
    with torch_threads(1):  # one stream of batches drawn from (seed, epoch): other triples, other factors
        assert not torch.equal(BPR(**settings).fit(board).item_vectors(), model.item_vectors())
    items, _ = recommend_all(model, board.num_users, 1, exclude=seen_items(board))
    assert (items[:, 0].numpy() == held_out_items(board)).all()
    assert train_auc(model, board) > 0.9
    # a batch's draws depend on (seed, epoch, batch) only, not on the lane that takes it
    first, again = (model.batch_generator(4, 2).initial_seed() for _ in range(2))
    assert first == again != model.batch_generator(4, 3).initial_seed()


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

    ours = train_auc(BPR(factors=4, iterations=30, lr=0.1, batch_size=48).fit(board), board)
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
    model = BPR(factors=4, iterations=30, lr=0.1, batch_size=48).fit(board, trainer=trainer)
    assert model.item_vectors().device.type == "cuda"
    assert train_auc(model.cpu(), board) > 0.9


@pytest.mark.slow
def test_auto_trains_eagerly_where_compiling_fails(board, monkeypatch, caplog):
    """With a compiler inductor cannot run, compile=auto warns and trains with the eager step; compile=true raises."""
    import torch._inductor.config

    monkeypatch.setattr(bpr, "COMPILE_MIN_TRIPLES", 1)  # auto compiles this small fit
    settings = {"factors": 3, "iterations": 2, "batch_size": 20}
    broken = {"fx_graph_cache": False, "cpp.cxx": (None, "/nonexistent/c++")}  # no cached kernel either
    with torch._inductor.config.patch(broken), caplog.at_level(logging.WARNING):
        model = BPR(compile="auto", **settings).fit(board)
        assert "torch.compile failed" in caplog.text and "training with the eager step" in caplog.text
        torch.testing.assert_close(model.item_vectors(), BPR(compile=False, **settings).fit(board).item_vectors())
        torch._dynamo.reset()
        with pytest.raises(Exception, match=r"(?i)compil"):
            BPR(compile=True, **settings).fit(board)
    torch._dynamo.reset()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"negatives": "hard"}, "valid choices: popularity, uniform"),
        ({"batch_size": 0}, "batch_size must be >= 1"),
        ({"lr": 0.0}, "lr > 0"),
        ({"compile": "yes"}, "compile must be one of true, false, auto"),
        ({"init": "pretrained"}, r"BPR: model.init='pretrained'; valid choices: random, audio"),
        ({"init": "audio", "reduce": "svd"}, r"model.reduce='svd'; valid choices: pca, random"),
    ],
)
def test_bad_configuration_is_refused_where_it_enters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        BPR(**kwargs)


def test_audio_init_starts_items_at_their_audio_projection_then_trains(tmp_path):
    split = audio_board_split(tmp_path)
    settings = {"factors": 4, "iterations": 30, "lr": 0.1, "batch_size": 48}
    check_audio_start(lambda **init: BPR(**settings, **init), split, 4, rms=0.125 / 3**0.5)  # uniform [-h, h)'s
    model = BPR(**settings, init="audio")
    start = started_items(model, split, 30)
    assert (start[:, -1] == 0).all()  # the bias column starts at 0 as with init=random
    items, _ = recommend_all(model, split.num_users, 1, exclude=seen_items(split))
    assert (items[:, 0].numpy() == held_out_items(split)).all()  # trained through the Trainer's 30 epochs
    with pytest.raises(MemoryError, match=r"BPR's audio start .*128-d content table of 10 items and its 4-d"):
        BPR(**settings, init="audio", memory_fraction=1e-12).fit(split)
