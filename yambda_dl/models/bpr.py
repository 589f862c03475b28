"""BPR (Rendle et al. 2009) as a LightningModule: SGD on (user, positive, negative) triples sampled on the device.

The update is implicit's per-sample SGD (x_uij = p_u.(q_i - q_j) + b_i - b_j; every factor moves by
lr * (sigmoid(-x_uij) * gradient - regularization * factor)), applied to a batch of triples at once with scatter-adds,
as implicit's Hogwild threads apply theirs without locks. An epoch draws as many triples as the matrix has nonzeros.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import lightning
import torch

from yambda_dl.data import views
from yambda_dl.models.base import NotFittedError
from yambda_dl.models.factors import (
    DeviceCSR,
    frozen_parameter,
    recommend_by_vectors,
    seeded_uniform,
    single_device_trainer,
    steps_loader,
)

if TYPE_CHECKING:
    from yambda_dl.data.split import Split
    from yambda_dl.eval.retrieval import CSR

# "popularity": the item of a uniformly drawn nonzero (implicit's sampler); "uniform": any train item alike
NEGATIVE_SAMPLERS = ("popularity", "uniform")


class BPR(lightning.LightningModule):
    """Bayesian Personalised Ranking on the binary user x item matrix; ranked through user/item vectors.

    With item_bias, the item vectors carry the bias as a last column and the user vectors a column of ones.
    Keys as implicit names them: factors, learning_rate, regularization, iterations (epochs),
    verify_negatives (skip a triple whose negative the user has); plus batch_size (triples per step) and negatives.
    """

    def __init__(
        self,
        factors: int = 64,
        iterations: int = 100,
        learning_rate: float = 0.01,
        regularization: float = 0.01,
        batch_size: int = 16_384,
        negatives: str = "popularity",
        verify_negatives: bool = True,
        item_bias: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if negatives not in NEGATIVE_SAMPLERS:
            raise ValueError(f"unknown negative sampler {negatives!r}; valid choices: {', '.join(NEGATIVE_SAMPLERS)}")
        for name, value in (("factors", factors), ("iterations", iterations), ("batch_size", batch_size)):
            if value < 1:
                raise ValueError(f"BPR {name} must be >= 1, got {value}")
        if learning_rate <= 0 or regularization < 0:
            raise ValueError(f"need learning_rate > 0 and regularization >= 0; got {learning_rate}, {regularization}")
        self.save_hyperparameters()
        self.factors, self.iterations, self.learning_rate = factors, iterations, learning_rate
        self.regularization, self.batch_size, self.negatives = regularization, batch_size, negatives
        self.verify_negatives, self.item_bias, self.seed = verify_negatives, item_bias, seed
        self.automatic_optimization = False  # implicit's SGD rule, applied in place: no autograd graph
        self.user_factors: torch.nn.Parameter | None = None
        self.item_factors: torch.nn.Parameter | None = None
        self.item_biases: torch.nn.Parameter | None = None
        self._matrix: views.SparseMatrix | None = None
        self._device_matrix: DeviceCSR | None = None
        self._keys: torch.Tensor | None = None  # user * num_items + item of every nonzero, ascending
        self._generator: torch.Generator | None = None

    @property
    def max_epochs(self) -> int:
        return self.iterations

    def fit(self, split: Split, trainer: lightning.Trainer | None = None) -> BPR:
        """Learn the factors from the split's binary train matrix with `trainer` (a quiet CPU one by default)."""
        trainer = single_device_trainer(trainer, self.max_epochs, "BPR")
        self._matrix = views.user_item_matrix(split, "binary")
        num_users, num_items = self._matrix.shape
        scale = 0.5 / self.factors  # implicit's start: uniform in [-0.5, 0.5) / factors, biases at 0
        self.user_factors = frozen_parameter(seeded_uniform((num_users, self.factors), -scale, scale, self.seed))
        self.item_factors = frozen_parameter(seeded_uniform((num_items, self.factors), -scale, scale, self.seed + 1))
        self.item_biases = frozen_parameter(torch.zeros(num_items))
        steps = -(-self._matrix.nnz // self.batch_size)  # ceil: one epoch draws nnz triples
        trainer.fit(self, train_dataloaders=steps_loader(steps))
        self._matrix = self._device_matrix = self._keys = self._generator = None  # only needed while fitting
        return self

    def on_fit_start(self) -> None:
        """The matrix on the device (12 bytes per nonzero, 8 more for the sorted keys that verify negatives)."""
        self._device_matrix = DeviceCSR.from_matrix(self._matrix, self.device)
        self._keys = pair_keys(self._matrix, self.device) if self.verify_negatives else None
        self._generator = torch.Generator(device=self.device).manual_seed(self.seed)

    def training_step(self, step: int, batch_idx: int) -> None:
        """Draw a batch of triples and apply one SGD update for each (the last batch of an epoch is smaller)."""
        matrix = self._device_matrix
        size = min(self.batch_size, matrix.nnz - step * self.batch_size)
        with torch.no_grad(), torch.autocast(self.device.type, enabled=False):
            users, positives, negatives, kept = sample_triples(
                self._device_matrix, size, self._generator, self.negatives, self._keys
            )
            loss = self._sgd_update(users, positives, negatives, kept)
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=size)

    def _sgd_update(
        self, users: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor, kept: torch.Tensor
    ) -> torch.Tensor:
        """implicit's per-triple step, all triples at once (scatter-adds sum the steps of a repeated row)."""
        p = self.user_factors.index_select(0, users)
        q_i, q_j = self.item_factors.index_select(0, positives), self.item_factors.index_select(0, negatives)
        b_i, b_j = self.item_biases.index_select(0, positives), self.item_biases.index_select(0, negatives)
        difference = q_i - q_j
        margin = (p * difference).sum(1) + (b_i - b_j if self.item_bias else 0.0)
        # d log sigmoid(x_uij) / d x_uij = sigmoid(-x_uij), times lr; skipped triples (kept 0) do not move
        pull = self.learning_rate * kept * torch.sigmoid(-margin)
        shrink = self.learning_rate * self.regularization * kept
        self.user_factors.index_add_(0, users, pull[:, None] * difference - shrink[:, None] * p)
        self.item_factors.index_add_(0, positives, pull[:, None] * p - shrink[:, None] * q_i)
        self.item_factors.index_add_(0, negatives, -pull[:, None] * p - shrink[:, None] * q_j)
        if self.item_bias:
            self.item_biases.index_add_(0, positives, pull - shrink * b_i)
            self.item_biases.index_add_(0, negatives, -pull - shrink * b_j)
        # the mean BPR loss of the kept triples, before this step
        return -(torch.nn.functional.logsigmoid(margin) * kept).sum() / kept.sum().clamp_min(1.0)

    def configure_optimizers(self) -> None:
        return None  # the SGD step is written out in _sgd_update

    def recommend(
        self, user_idx: torch.Tensor, k: int, exclude: CSR | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-k items by inner product of the factors (train.py ranks through the vectors directly)."""
        return recommend_by_vectors(self, user_idx, k, exclude)

    def user_vectors(self, user_idx: torch.Tensor) -> torch.Tensor:
        """(n, factors [+ 1]) user factors, with a column of ones that meets the item bias."""
        if self.user_factors is None:
            raise NotFittedError("BPR.user_vectors() called before fit()")
        vectors = self.user_factors.detach()[user_idx.to(self.user_factors.device)]
        if not self.item_bias:
            return vectors
        return torch.cat([vectors, vectors.new_ones(len(vectors), 1)], dim=1)

    def item_vectors(self) -> torch.Tensor:
        """(num_items, factors [+ 1]) item factors, with the item bias as the last column."""
        if self.item_factors is None:
            raise NotFittedError("BPR.item_vectors() called before fit()")
        if not self.item_bias:
            return self.item_factors.detach()
        return torch.cat([self.item_factors.detach(), self.item_biases.detach()[:, None]], dim=1)


def pair_keys(matrix: views.SparseMatrix, device: torch.device) -> torch.Tensor:
    """user * num_items + item of every nonzero (int64 on `device`), ascending because CSR order is key order."""
    rows = torch.from_numpy(matrix.row_ids()).to(device, torch.int64)
    return rows * matrix.shape[1] + torch.from_numpy(matrix.indices).to(device, torch.int64)


def sample_triples(
    matrix: DeviceCSR,
    size: int,
    generator: torch.Generator,
    negatives: str = "popularity",
    known_pairs: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(user, positive, negative, kept) for `size` draws on the matrix's device.

    A uniform nonzero gives the user and the positive; the negative is the item of another uniform nonzero
    ("popularity") or a uniform item. With `known_pairs` (pair_keys), kept is 0.0 where the negative is one of the
    user's items (implicit skips those triples), else 1.0.
    """
    device = matrix.indices.device
    nonzero = torch.randint(matrix.nnz, (size,), device=device, generator=generator)
    users = torch.searchsorted(matrix.indptr, nonzero, right=True) - 1
    positives = matrix.indices[nonzero]
    if negatives == "popularity":
        negative_items = matrix.indices[torch.randint(matrix.nnz, (size,), device=device, generator=generator)]
    else:
        negative_items = torch.randint(matrix.shape[1], (size,), device=device, generator=generator)
    kept = torch.ones(size, device=device)
    if known_pairs is not None:
        keys = users * matrix.shape[1] + negative_items
        where = torch.searchsorted(known_pairs, keys).clamp_max(matrix.nnz - 1)
        kept = (known_pairs[where] != keys).float()
    return users, positives, negative_items, kept
