"""iALS against its closed form (numpy), against implicit's CPU ALS, and on a checkerboard with a known answer."""

from __future__ import annotations

import itertools

import lightning
import numpy as np
import pytest
import torch

from yambda_dl.data import views
from yambda_dl.data.layout import DatasetLayout
from yambda_dl.data.split import Protocol, Split, make_split
from yambda_dl.eval.recommend import recommend_all, seen_items
from yambda_dl.models.factors import seeded_uniform
from yambda_dl.models.ials import IALS
from yambda_dl.sparse import length_order, length_sorted_batches

from ..conftest import TEST_START, audio_vectors, gpu_trainer, listen, quiet_trainer, write_audio, write_flat


def checkerboard_split(root) -> Split:
    """12 users, 10 items (raw 100..109): even users play even items, odd users odd items, 4 of their 5 in train;
    the fifth (a different one for each pair of users) is the user's only test-day target."""
    layout = DatasetLayout(root, "board")
    rows = []
    for uid in range(12):
        parity = uid % 2
        held_out = 100 + parity + 2 * (uid // 2 % 5)
        liked = [100 + parity + 2 * j for j in range(5)]
        rows += [listen(uid, 1_000_000 + 5 * i, item) for i, item in enumerate(liked) if item != held_out]
        rows.append(listen(uid, TEST_START + 10, held_out))
    write_flat(layout, "listens", rows)
    return make_split(layout, Protocol(), cache_dir=root / "cache", progress=False)


def audio_board_split(root) -> Split:
    """The checkerboard with an embeddings file: every item but 109 has a vector (conftest's audio_vectors)."""
    write_audio(DatasetLayout(root, "board").embeddings_path, range(100, 109))
    return checkerboard_split(root)


class StartCapture(lightning.Callback):
    """The item factors as training starts: the model's init, before its first sweep or epoch."""

    def on_train_start(self, trainer: lightning.Trainer, module: lightning.LightningModule) -> None:
        self.items = module.item_factors.detach().clone()


def started_items(model: lightning.LightningModule, split: Split, epochs: int) -> torch.Tensor:
    """Fit `model` through a real Trainer of `epochs`; the item factors it started from."""
    capture = StartCapture()
    model.fit(split, trainer=quiet_trainer(max_epochs=epochs, accelerator="cpu", devices=1, callbacks=[capture]))
    return capture.items


def check_audio_start(build, split: Split, factors: int, rms: float) -> None:
    """init=audio starts the items that have a vector at the PCA of their audio (numpy's SVD here, up to each
    direction's sign) scaled to root-mean-square `rms`, and the one without (109) where init=random starts it."""
    raw = np.asarray(split.items)
    present = raw != 109
    audio = started_items(build(init="audio"), split, 1)[:, :factors]
    random = started_items(build(), split, 1)[:, :factors]
    centred = audio_vectors(raw[present]).astype(np.float64)
    centred -= centred.mean(0)
    projected = centred @ np.linalg.svd(centred, full_matrices=False)[2][:factors].T
    expected = torch.from_numpy(projected * rms / np.sqrt((projected**2).mean())).float()
    signs = torch.sign((audio[present] * expected).sum(0))
    torch.testing.assert_close(audio[present], expected * signs, rtol=1e-4, atol=1e-5)
    assert torch.equal(audio[~present], random[~present])
    assert not torch.allclose(audio[present], random[present])


def held_out_items(split: Split) -> np.ndarray:
    """Each user's one target as a dense item index."""
    return np.asarray(split.targets.item_idx)[np.asarray(split.targets.offsets)[:-1]]


@pytest.fixture(scope="module")
def counts_split(tmp_path_factory) -> Split:
    """7 users x 6 items with repeated plays, so that count values and alpha matter."""
    root = tmp_path_factory.mktemp("ials")
    layout = DatasetLayout(root, "counts")
    rng = np.random.default_rng(3)
    rows = []
    for uid in range(7):
        items = rng.choice(6, size=rng.integers(2, 5), replace=False)
        plays = [item for item in items for _ in range(int(rng.integers(1, 4)))]
        rows += [listen(uid, 1_000_000 + 5 * i, 10 + item) for i, item in enumerate(plays)]
    rows.append(listen(0, TEST_START, 10))  # the protocol needs a test day
    write_flat(layout, "listens", rows)
    return make_split(layout, Protocol(), cache_dir=root / "cache", progress=False)


def dense_confidence(split: Split, values: str, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """(C, P) as dense users x items arrays: c = 1 + alpha * r on nonzeros, 1 elsewhere; p = [r > 0]."""
    r = views.user_item_matrix(split, values).to_scipy().toarray().astype(np.float64)
    return 1.0 + alpha * r, (r > 0).astype(np.float64)


def closed_form(fixed: np.ndarray, confidence: np.ndarray, preference: np.ndarray, reg: float) -> np.ndarray:
    """Hu et al.'s per-row solution (Y^T C_u Y + lambda I)^{-1} Y^T C_u p_u, one row at a time (the reference)."""
    d = fixed.shape[1]
    rows = []
    for c_u, p_u in zip(confidence, preference, strict=True):
        a = fixed.T @ (c_u[:, None] * fixed) + reg * np.eye(d)
        rows.append(np.linalg.solve(a, fixed.T @ (c_u * p_u)))
    return np.array(rows)


def dense_objective(x: np.ndarray, y: np.ndarray, confidence: np.ndarray, preference: np.ndarray, reg: float) -> float:
    return float((confidence * (preference - x @ y.T) ** 2).sum() + reg * ((x**2).sum() + (y**2).sum()))


def fitted(split: Split, **kwargs) -> IALS:
    return IALS(**kwargs).fit(split)


@pytest.mark.parametrize("alpha", [0.0, 2.0])  # 0: every row's system is the Gram matrix, solved once
def test_cholesky_solver_matches_the_closed_form(counts_split, alpha):
    reg, d = 0.3, 3
    model = fitted(
        counts_split,
        factors=d,
        iterations=1,
        regularization=reg,
        alpha=alpha,
        solver="cholesky",
        values="count",
        batch_rows=2,
        batch_nonzeros=3,
    )
    c, p = dense_confidence(counts_split, "count", alpha)
    items_start = seeded_uniform((counts_split.num_items, d), 0.0, 0.01, 1).double().numpy()
    users = closed_form(items_start, c, p, reg)  # the first half-sweep, from the seeded items
    items = closed_form(users, c.T, p.T, reg)  # then the items, from those users
    np.testing.assert_allclose(model.user_factors.numpy(), users, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(model.item_factors.numpy(), items, rtol=1e-4, atol=1e-5)


def test_conjugate_gradient_approaches_the_closed_form_as_steps_grow(counts_split):
    reg, alpha, d = 0.1, 3.0, 4
    c, p = dense_confidence(counts_split, "binary", alpha)
    items_start = seeded_uniform((counts_split.num_items, d), 0.0, 0.01, 1).double().numpy()
    exact = closed_form(items_start, c, p, reg)
    errors = []
    for steps in (1, 2, 3, d):  # in exact arithmetic CG solves a d x d system in d steps
        model = fitted(counts_split, factors=d, iterations=1, regularization=reg, alpha=alpha, cg_steps=steps)
        errors.append(np.abs(model.user_factors.numpy() - exact).max())
    assert all(later <= earlier for earlier, later in itertools.pairwise(errors)), errors
    assert errors[0] > 100 * errors[-1], errors  # one step is far off; d steps reach float32's precision
    assert errors[-1] < 1e-4 * np.abs(exact).max()


@pytest.mark.parametrize("solver", ["cg", "cholesky"])
def test_objective_never_increases_and_is_the_weighted_loss(counts_split, solver):
    reg, alpha = 0.05, 1.5
    model = fitted(
        counts_split, factors=3, iterations=8, regularization=reg, alpha=alpha, solver=solver, log_objective=True
    )
    objectives = np.array(model.objectives)
    assert len(objectives) == 8
    assert (np.diff(objectives) <= 1e-6 * objectives[:-1]).all(), objectives
    assert objectives[-1] < objectives[0]
    c, p = dense_confidence(counts_split, "binary", alpha)
    x, y = model.user_factors.double().numpy(), model.item_factors.double().numpy()
    assert objectives[-1] == pytest.approx(dense_objective(x, y, c, p, reg), rel=1e-5)


@pytest.mark.parametrize("alpha", [0.0, 2.0])  # 0: the shared-system path (no sampled products)
def test_close_to_implicit_als_from_the_same_start(counts_split, alpha):
    """implicit (an independent peer) with the same start, CG steps and confidence reaches the same factors."""
    import threadpoolctl
    from implicit.cpu.als import AlternatingLeastSquares

    d, reg, iterations = 3, 0.1, 5
    ours = fitted(counts_split, factors=d, iterations=iterations, regularization=reg, alpha=alpha)
    # implicit's confidence is alpha * r: on a binary matrix, its alpha 1 + a is our 1 + a * 1
    with threadpoolctl.threadpool_limits(1, "blas"):  # implicit warns about (and is slowed by) threaded BLAS
        peer = AlternatingLeastSquares(
            factors=d, regularization=reg, alpha=1.0 + alpha, iterations=iterations, num_threads=1, random_state=0
        )
        peer.user_factors = seeded_uniform((counts_split.num_users, d), 0.0, 0.01, 0).numpy()
        peer.item_factors = seeded_uniform((counts_split.num_items, d), 0.0, 0.01, 1).numpy()
        peer.fit(views.user_item_matrix(counts_split, "binary").to_scipy(), show_progress=False)
    np.testing.assert_allclose(ours.user_factors.numpy(), peer.user_factors, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(ours.item_factors.numpy(), peer.item_factors, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("solver", ["cg", "cholesky"])
def test_checkerboard_recommends_the_held_out_item(tmp_path, solver):
    split = checkerboard_split(tmp_path)
    model = fitted(split, factors=4, iterations=10, regularization=0.1, alpha=5.0, solver=solver)
    items, _ = recommend_all(model, split.num_users, 1, exclude=seen_items(split))
    assert (items[:, 0].numpy() == held_out_items(split)).all()


def test_runs_under_a_trainer_that_logs_the_objective(counts_split, tmp_path):
    trainer = lightning.Trainer(
        max_epochs=3,
        accelerator="cpu",
        default_root_dir=tmp_path,
        enable_progress_bar=False,
        enable_model_summary=False,
        logger=lightning.pytorch.loggers.CSVLogger(tmp_path),
    )
    model = IALS(factors=2, iterations=3, log_objective=True).fit(counts_split, trainer=trainer)
    assert trainer.current_epoch == 3 and "train/objective" in trainer.callback_metrics
    assert float(trainer.callback_metrics["train/objective"]) == pytest.approx(model.objectives[-1], rel=1e-6)
    assert model.user_vectors(torch.tensor([0, 2])).shape == (2, 2)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_the_same_sweeps_on_cuda(counts_split):
    on_cpu = fitted(counts_split, factors=3, iterations=4)
    trainer = gpu_trainer(max_epochs=4)
    on_gpu = IALS(factors=3, iterations=4).fit(counts_split, trainer=trainer)
    np.testing.assert_allclose(on_gpu.item_vectors().cpu().numpy(), on_cpu.item_vectors().numpy(), rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"solver": "lu"}, "valid choices: cg, cholesky"),
        ({"values": "tfidf"}, "valid choices: binary, count"),
        ({"factors": 0}, "factors must be >= 1"),
        ({"alpha": -1.0}, "alpha >= 0"),
        ({"init": "pretrained"}, r"iALS: model.init='pretrained'; valid choices: random, audio"),
        ({"init": "audio", "reduce": "svd"}, r"model.reduce='svd'; valid choices: pca, random"),
        ({"init": "audio", "column": "audio"}, r"model.column='audio'; valid choices: embed, normalized_embed"),
        ({"init": "audio", "init_std": 0.0}, r"model.init_std=0.0 must be > 0"),
    ],
)
def test_bad_configuration_is_refused_where_it_enters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        IALS(**kwargs)


def test_audio_init_starts_items_at_their_audio_projection_then_trains(tmp_path):
    split = audio_board_split(tmp_path)
    settings = {"factors": 4, "iterations": 10, "regularization": 0.1, "alpha": 5.0}
    check_audio_start(lambda **init: IALS(**settings, **init), split, 4, rms=0.01 / 3**0.5)  # uniform [0, 0.01)'s
    model = IALS(**settings, init="audio", init_std=0.3)
    start = started_items(model, split, 10)
    assert abs(float(start[np.asarray(split.items) != 109].pow(2).mean().sqrt()) - 0.3) < 1e-5  # init_std
    items, _ = recommend_all(model, split.num_users, 1, exclude=seen_items(split))
    assert (items[:, 0].numpy() == held_out_items(split)).all()  # trained through the Trainer's 10 sweeps


def test_audio_init_names_the_content_table_when_it_does_not_fit(tmp_path):
    split = audio_board_split(tmp_path)
    with pytest.raises(MemoryError, match=r"iALS's audio start .*128-d content table of 10 items and its 4-d"):
        IALS(factors=4, iterations=1, init="audio", memory_fraction=1e-12).fit(split)


def test_length_sorted_batches_cover_every_row_once_within_their_bounds():
    lengths = np.random.default_rng(0).integers(0, 300, size=500)
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    order = length_order(indptr)
    batches = length_sorted_batches(indptr, batch_rows=16, batch_nonzeros=1000)
    assert [b[0] for b in batches] == [0] + [b[1] for b in batches[:-1]] and batches[-1][1] == len(lengths)
    for start, stop, padded in batches:
        rows = lengths[order[start:stop]]
        assert stop - start <= 16 and padded == max(rows.max(), 1)
        assert rows.sum() <= 1000 + rows.max()  # about batch_nonzeros: one row may carry a batch past it
        assert padded < 2 * max(rows.min(), 1)  # similar lengths: padding at most doubles the batch


@pytest.mark.parametrize("solver", ["cg", "cholesky"])
def test_cpu_lanes_give_the_factors_of_one_thread(counts_split, solver):
    """With several CPU threads the rows are solved in pieces on lanes (threads of single-threaded operations): the
    same systems, so the same factors as one thread's whole-matrix operations, to rounding."""
    threads = torch.get_num_threads()
    kwargs = {"factors": 3, "iterations": 4, "alpha": 1.5, "solver": solver}
    try:
        torch.set_num_threads(1)
        alone = fitted(counts_split, **kwargs)
        torch.set_num_threads(3)
        lanes = fitted(counts_split, **kwargs)
    finally:
        torch.set_num_threads(threads)
    torch.testing.assert_close(lanes.item_vectors(), alone.item_vectors(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(lanes.user_factors, alone.user_factors, rtol=1e-5, atol=1e-6)
