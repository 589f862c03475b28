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
from yambda_dl.models import bpr, kernels
from yambda_dl.models.bpr import BPR, NativeKernel, StepSettings, TripleSampler, batch_steps

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
    """One CPU thread for the test: BPR then runs without lanes, its batches in a single stream."""
    with torch_threads(1):
        yield


native_only = pytest.mark.skipif(kernels.compiler() is None, reason="the native kernel needs a C compiler")


def train_auc(model: BPR, split: Split) -> float:
    """Mean over users of the share of (played, not played) item pairs the model orders right, in numpy."""
    played = views.user_item_matrix(split, "binary").to_scipy().toarray() > 0
    scores = model.user_vectors(torch.arange(split.num_users)).numpy() @ model.item_vectors().numpy().T
    right = (scores[:, :, None] > scores[:, None, :]) & played[:, :, None] & ~played[:, None, :]
    pairs = played.sum(1) * (~played).sum(1)
    return float((right.sum(axis=(1, 2)) / pairs).mean())


@pytest.mark.parametrize("kernel", ["torch", pytest.param("native", marks=native_only)])
def test_checkerboard_recommends_the_held_out_item(board, kernel):
    model = BPR(factors=4, iterations=30, lr=0.1, batch_size=48, kernel=kernel).fit(board)
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


def start_factors(shape: Split | tuple[int, int], width: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random factors of `width` columns for a split's (or a (users, items) shape's) users and items, the users'
    last column 1 (the item-bias layout)."""
    num_users, num_items = (shape.num_users, shape.num_items) if isinstance(shape, Split) else shape
    generator = torch.Generator().manual_seed(seed)
    users = torch.randn(num_users, width, generator=generator).mul_(0.3)
    users[:, -1] = 1.0
    return users, torch.randn(num_items, width, generator=generator).mul_(0.3)


def replay(start, record: np.ndarray, settings: StepSettings) -> tuple[np.ndarray, np.ndarray, float]:
    """implicit's per-triple SGD over recorded draws (user, positive, negative, kept), in numpy, one triple at a time:
    the factors after them and the summed loss of the kept triples before each step."""
    p_all, q_all = (t.numpy().copy() for t in start)
    lr, reg, item_bias = settings
    loss = 0.0
    for user, positive, negative, kept in record.T:
        if not kept:
            continue
        p, qi, qj = p_all[user].copy(), q_all[positive].copy(), q_all[negative].copy()
        x = float(p @ (qi - qj))
        loss += float(np.logaddexp(0.0, -x))
        pull = lr / (1.0 + np.exp(x))
        p_all[user] += pull * (qi - qj) - lr * reg * p
        if item_bias:
            p_all[user, -1] = 1.0
        q_all[positive] += pull * p - lr * reg * qi
        q_all[negative] += -pull * p - lr * reg * qj
    return p_all, q_all, loss


@native_only
@pytest.mark.parametrize("negatives", ["uniform", "popularity"])
@pytest.mark.parametrize("structure", ["bitmap", "hash table"])
def test_native_kernel_draws_verifies_and_steps_as_implicit(negatives, structure):
    """The C kernel's recorded draws: a uniform nonzero's user and item, a negative skipped exactly where the user
    has it (bitmap or hash table); its factors: implicit's step applied triple after triple (a numpy replay)."""
    shape, density = ((37, 301), 0.2) if structure == "bitmap" else ((40, 3000), 0.002)
    dense, matrix = random_binary(shape, density, seed=6)
    sampler = TripleSampler.build(matrix, torch.device("cpu"), negatives, verify=True)
    assert (sampler.bitmap is not None) == (structure == "bitmap")
    settings = StepSettings(lr=0.05, regularization=0.01, item_bias=True)
    start = start_factors(shape, 5, seed=0)
    factors = tuple(t.clone() for t in start)
    count = 20_000
    record = torch.empty(4, count, dtype=torch.int64)
    loss, kept = NativeKernel(factors, sampler, settings).run(7, count, record)
    users, positives, drawn, keep = record.numpy()
    assert dense[users, positives].all() and kept == keep.sum()
    np.testing.assert_array_equal(keep == 0, dense[users, drawn])
    assert (keep == 0).any()
    # a uniform nonzero: each user drawn in proportion to its row's nonzeros
    shares = np.bincount(users, minlength=shape[0]) / count
    np.testing.assert_allclose(shares, dense.sum(1) / dense.sum(), atol=0.015)
    expected_users, expected_items, expected_loss = replay(start, record.numpy(), settings)
    np.testing.assert_allclose(factors[0].numpy(), expected_users, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(factors[1].numpy(), expected_items, rtol=1e-4, atol=1e-5)
    assert loss == pytest.approx(expected_loss, rel=1e-5)


@native_only
def test_one_native_triple_is_the_torch_kernels_step(board):
    """For a single triple the two kernels are one formula: the C kernel's step equals batch_steps' (torch, the
    CUDA path), applied with index-adds, from the same factors."""
    sampler = TripleSampler.build(views.user_item_matrix(board, "binary"), torch.device("cpu"), "uniform", True)
    settings = StepSettings(lr=0.1, regularization=0.05, item_bias=True)
    moved = 0
    for seed in range(20):
        start = start_factors(board, 5, seed)
        native = tuple(t.clone() for t in start)
        record = torch.empty(4, 1, dtype=torch.int64)
        loss, kept = NativeKernel(native, sampler, settings).run(seed, 1, record)
        user, positive, negative, keep = record[:, 0]
        triples = bpr.Triples(user[None], torch.stack([positive, negative]), keep[None].float())
        user_step, item_step, torch_loss = batch_steps(start, triples, settings)
        expected = start[0].index_add(0, triples.users, user_step), start[1].index_add(0, triples.items, item_step)
        torch.testing.assert_close(native[0], expected[0], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(native[1], expected[1], rtol=1e-5, atol=1e-6)
        assert loss == pytest.approx(float(torch_loss), rel=1e-5, abs=1e-7)
        moved += kept
    assert 0 < moved < 20  # kept and skipped triples both met (4 of a checkerboard user's 10 items are its own)


@native_only
def test_native_kernel_repeats_itself_from_a_seed(board):
    sampler = TripleSampler.build(views.user_item_matrix(board, "binary"), torch.device("cpu"), "popularity", True)
    settings = StepSettings(lr=0.1, regularization=0.01, item_bias=True)
    runs = []
    for seed in (3, 3, 4):
        factors = start_factors(board, 5, seed=0)
        NativeKernel(factors, sampler, settings).run(seed, 500)
        runs.append(factors[1])
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])


@native_only
def test_native_fits_repeat_bit_for_bit_on_one_thread(board, one_thread):
    settings = {"factors": 4, "iterations": 5, "lr": 0.1, "batch_size": 20, "kernel": "native"}
    first = BPR(**settings).fit(board).item_vectors()
    assert torch.equal(BPR(**settings).fit(board).item_vectors(), first)
    assert not torch.equal(BPR(**settings, seed=1).fit(board).item_vectors(), first)


@native_only
def test_native_kernel_trains_hogwild_on_lanes(board):
    """kernel=native on 2 threads: the lanes take the epoch's batches (each drawn from (seed, epoch, batch)) and run
    the kernel, which holds no GIL, in place on shared factors; the fit learns the checkerboard as one thread does."""
    settings = {"factors": 4, "iterations": 30, "lr": 0.1, "batch_size": 8, "kernel": "native"}  # 6 batches an epoch
    with torch_threads(2):
        model = BPR(**settings).fit(board)
    items, _ = recommend_all(model, board.num_users, 1, exclude=seen_items(board))
    assert (items[:, 0].numpy() == held_out_items(board)).all()
    assert train_auc(model, board) > 0.9
    # a batch's draws depend on (seed, epoch, batch) only, not on the lane that takes it
    assert model.batch_seed(4, 2) == model.batch_seed(4, 2) != model.batch_seed(4, 3)
    assert model.batch_seed(4, 2) != BPR(seed=1).batch_seed(4, 2)


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


def test_auto_trains_with_the_torch_kernel_where_no_compiler_builds(board, monkeypatch, caplog):
    """No C compiler: kernel=auto warns and trains with the torch kernel; kernel=native raises."""
    monkeypatch.setenv("CC", "/nonexistent/cc")
    kernels.load.cache_clear()  # the process's loaded library: looked for again
    try:
        settings = {"factors": 3, "iterations": 2, "batch_size": 20}
        with caplog.at_level(logging.WARNING):
            model = BPR(kernel="auto", **settings).fit(board)
        assert "/nonexistent/cc" in caplog.text and "training with the torch kernel" in caplog.text
        assert torch.equal(model.item_vectors(), BPR(kernel="torch", **settings).fit(board).item_vectors())
        with pytest.raises(kernels.KernelUnavailable, match="/nonexistent/cc"):
            BPR(kernel="native", **settings).fit(board)
    finally:
        kernels.load.cache_clear()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"negatives": "hard"}, "valid choices: popularity, uniform"),
        ({"batch_size": 0}, "batch_size must be >= 1"),
        ({"lr": 0.0}, "lr > 0"),
        ({"kernel": "cuda"}, "unknown BPR kernel 'cuda'; valid choices: auto, native, torch"),
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
