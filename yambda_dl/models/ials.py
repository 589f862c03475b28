"""iALS (Hu, Koren, Volinsky 2008) as a LightningModule: one training step is one alternating sweep on the device.

Each half-sweep solves, for every row u of one side with the other side's factors Y fixed,
    (Y^T C_u Y + lambda I) x_u = Y^T C_u p_u,      c_ui = 1 + alpha * r_ui,  p_ui = 1 where r_ui > 0,
either approximately by a few conjugate-gradient steps from the current x_u (Takacs et al. 2011, as the implicit
library does; the default) or exactly by batched Cholesky. Y^T C_u Y = Y^T Y + Y_u^T (C_u - I) Y_u: the dense part
is one Gram matrix per half-sweep, the sparse part comes from the row's own items, gathered into padded blocks of
rows of similar length (models/factors.py) and reduced with batched matrix products. No loop over users or items.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import lightning
import torch

from yambda_dl.data import views
from yambda_dl.models.base import NotFittedError
from yambda_dl.models.factors import (
    DeviceCSR,
    frozen_parameter,
    gather_rows,
    length_order,
    length_sorted_batches,
    padded_rows,
    recommend_by_vectors,
    seeded_uniform,
    single_device_trainer,
    steps_loader,
)

if TYPE_CHECKING:
    from yambda_dl.data.split import Split
    from yambda_dl.eval.retrieval import CSR

SOLVERS = ("cg", "cholesky")
# a row whose squared residual is below this has converged: CG stops moving it (implicit's threshold)
_CONVERGED = 1e-20


@dataclass(frozen=True)
class _Side:
    """One orientation of the confidence matrix on the device, with its rows in length-sorted padded batches."""

    matrix: DeviceCSR
    order: torch.Tensor  # int64 (rows,): rows by ascending length
    batches: list[tuple[int, int, int]]  # (start, stop, padded length) into `order`

    @classmethod
    def build(cls, matrix: views.SparseMatrix, device: torch.device, batch_rows: int, batch_nonzeros: int) -> _Side:
        order = torch.from_numpy(length_order(matrix.indptr)).to(device)
        batches = length_sorted_batches(matrix.indptr, batch_rows, batch_nonzeros)
        return cls(DeviceCSR.from_matrix(matrix, device), order, batches)


class IALS(lightning.LightningModule):
    """Implicit-feedback ALS on the binary or count user x item matrix; ranked through user/item vectors.

    Keys as implicit names them: factors, iterations (sweeps), regularization (lambda), alpha; plus solver
    ("cg" or "cholesky"), cg_steps, and batch_rows / batch_nonzeros, which bound the work memory of one batch:
    about 2 * batch_nonzeros * factors * 4 bytes of gathered factors, and batch_rows * factors^2 * 4 for Cholesky.
    """

    def __init__(
        self,
        factors: int = 64,
        iterations: int = 15,
        regularization: float = 0.01,
        alpha: float = 0.0,
        solver: str = "cg",
        cg_steps: int = 3,
        values: str = "binary",
        init_scale: float = 0.01,
        seed: int = 0,
        batch_rows: int = 4096,
        batch_nonzeros: int = 262_144,
        log_objective: bool = True,
    ) -> None:
        super().__init__()
        if solver not in SOLVERS:
            raise ValueError(f"unknown iALS solver {solver!r}; valid choices: {', '.join(SOLVERS)}")
        if values not in views.MATRIX_VALUES:
            raise ValueError(f"unknown matrix values {values!r}; valid choices: {', '.join(views.MATRIX_VALUES)}")
        for name, value in (("factors", factors), ("iterations", iterations), ("cg_steps", cg_steps)):
            if value < 1:
                raise ValueError(f"iALS {name} must be >= 1, got {value}")
        if batch_rows < 1 or batch_nonzeros < 1:
            raise ValueError(f"batch_rows={batch_rows} and batch_nonzeros={batch_nonzeros} must both be >= 1")
        if regularization < 0 or alpha < 0 or init_scale <= 0:
            raise ValueError(
                f"need regularization >= 0, alpha >= 0 and init_scale > 0; got {regularization}, {alpha}, {init_scale}"
            )
        self.save_hyperparameters()
        self.factors, self.iterations, self.regularization, self.alpha = factors, iterations, regularization, alpha
        self.solver, self.cg_steps, self.values, self.init_scale, self.seed = solver, cg_steps, values, init_scale, seed
        self.batch_rows, self.batch_nonzeros, self.log_objective = batch_rows, batch_nonzeros, log_objective
        self.automatic_optimization = False  # a sweep is a closed-form update, not a gradient step
        self.user_factors: torch.nn.Parameter | None = None
        self.item_factors: torch.nn.Parameter | None = None
        self.objectives: list[float] = []  # the weighted objective after each sweep (when log_objective)
        self._confidence: views.SparseMatrix | None = None
        self._sides: tuple[_Side, _Side] | None = None

    @property
    def max_epochs(self) -> int:
        """One epoch is one sweep: the Trainer runs `iterations` of them."""
        return self.iterations

    # --- fitting ----------------------------------------------------------------------------------------------

    def fit(self, split: Split, trainer: lightning.Trainer | None = None) -> IALS:
        """Learn user and item factors of the split's train matrix with `trainer` (a quiet CPU one by default)."""
        trainer = single_device_trainer(trainer, self.max_epochs, "iALS")
        self._confidence = self.confidence_matrix(views.user_item_matrix(split, self.values))
        num_users, num_items = self._confidence.shape
        low, high = 0.0, self.init_scale  # implicit's start: uniform [0, init_scale), users and items from two seeds
        self.user_factors = frozen_parameter(seeded_uniform((num_users, self.factors), low, high, self.seed))
        self.item_factors = frozen_parameter(seeded_uniform((num_items, self.factors), low, high, self.seed + 1))
        self.objectives = []
        trainer.fit(self, train_dataloaders=steps_loader(1))
        self._sides = None  # the matrix is only needed while fitting
        return self

    def confidence_matrix(self, matrix: views.SparseMatrix) -> views.SparseMatrix:
        """The same nonzeros with values c = 1 + alpha * r (the entries left out have c = 1, p = 0)."""
        return views.SparseMatrix(matrix.indptr, matrix.indices, 1.0 + self.alpha * matrix.values, matrix.shape)

    def on_fit_start(self) -> None:
        """Put both orientations of the confidence matrix on the module's device (12 bytes per nonzero each).

        The host matrix (8 bytes per nonzero) and its transpose (as much again, for a moment) are dropped after.
        """
        users, self._confidence = self._confidence, None
        items = users.transpose()
        self._sides = tuple(_Side.build(m, self.device, self.batch_rows, self.batch_nonzeros) for m in (users, items))

    def training_step(self, batch: int, batch_idx: int) -> None:
        """One sweep: every user's factors from the items', then every item's from the users'."""
        # float32 solves: a bf16-mixed Trainer's autocast would spoil the Gram matrices and CG's residuals
        with torch.no_grad(), torch.autocast(self.device.type, enabled=False):
            users, items = self._sides
            self._solve_side(users, self.user_factors, self.item_factors)
            self._solve_side(items, self.item_factors, self.user_factors)
            if self.log_objective:
                objective = self.objective()
                self.objectives.append(objective)
                self.log("train/objective", objective, on_step=False, on_epoch=True, prog_bar=True, batch_size=1)

    def configure_optimizers(self) -> None:
        return None  # closed-form updates: no optimizer

    def _solve_side(self, side: _Side, solved: torch.Tensor, fixed: torch.Tensor) -> None:
        """Overwrite the rows of `solved` with their least-squares solution against `fixed`, batch by batch."""
        gram = fixed.T @ fixed + self.regularization * torch.eye(self.factors, device=fixed.device)
        fixed_padded = torch.cat([fixed, fixed.new_zeros(1, self.factors)])  # padding's column: a zero row
        for start, stop, length in side.batches:
            batch = padded_rows(side.matrix, side.order[start:stop], length, pad_column=fixed.shape[0])
            block = gather_rows(fixed_padded, batch.columns)  # (r, length, factors): grows with the padded size
            if self.solver == "cg":
                new = conjugate_gradient(solved.index_select(0, batch.rows), block, batch.values, gram, self.cg_steps)
            else:
                new = cholesky_solve(block, batch.values, gram)
            solved.index_copy_(0, batch.rows, new)

    def objective(self) -> float:
        """sum over all (u, i) of c_ui (p_ui - x_u.y_i)^2 + lambda (|X|^2 + |Y|^2), without a users x items array.

        The entries outside the matrix (c = 1, p = 0) add sum of (x_u.y_i)^2 = <X^T X, Y^T Y>; each nonzero then
        replaces its (x_u.y_i)^2 by c (1 - x_u.y_i)^2. Accumulated in float64: the two parts nearly cancel.
        """
        if self._sides is None:
            raise NotFittedError("IALS.objective() is available while fitting (it needs the matrix on the device)")
        users, x, y = self._sides[0], self.user_factors, self.item_factors
        x64, y64 = x.double(), y.double()
        total = ((x64.T @ x64) * (y64.T @ y64)).sum() + self.regularization * (x64.square().sum() + y64.square().sum())
        y_padded = torch.cat([y, y.new_zeros(1, self.factors)])
        for start, stop, length in users.batches:
            batch = padded_rows(users.matrix, users.order[start:stop], length, pad_column=y.shape[0])
            block = gather_rows(y_padded, batch.columns)
            scores = torch.bmm(block, x.index_select(0, batch.rows).unsqueeze(2)).squeeze(2)  # (r, length)
            total += (batch.values * (1.0 - scores).square() - scores.square()).double().sum()  # padding adds 0
        return float(total)

    # --- scoring ----------------------------------------------------------------------------------------------

    def recommend(
        self, user_idx: torch.Tensor, k: int, exclude: CSR | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-k items by inner product of the factors (train.py ranks through the vectors directly)."""
        return recommend_by_vectors(self, user_idx, k, exclude)

    def user_vectors(self, user_idx: torch.Tensor) -> torch.Tensor:
        """(n, factors) user factors of the dense users `user_idx`."""
        if self.user_factors is None:
            raise NotFittedError("IALS.user_vectors() called before fit()")
        return self.user_factors.detach()[user_idx.to(self.user_factors.device)]

    def item_vectors(self) -> torch.Tensor:
        """(num_items, factors) item factors."""
        if self.item_factors is None:
            raise NotFittedError("IALS.item_vectors() called before fit()")
        return self.item_factors.detach()


def conjugate_gradient(
    x: torch.Tensor, block: torch.Tensor, confidence: torch.Tensor, gram: torch.Tensor, steps: int
) -> torch.Tensor:
    """`steps` CG steps from x (r, d) on each row's system A x = b, batched; implicit's least_squares_cg per row.

    A v = gram v + sum_l (c_l - 1) (y_l.v) y_l and b = sum_l c_l y_l over the row's items y_l = block[row, l]
    (r, length, d); padding has y = 0 and c = 0, so it adds nothing. A is never formed.
    """
    weight = confidence - 1.0

    def times_a(v: torch.Tensor) -> torch.Tensor:
        dots = torch.bmm(block, v.unsqueeze(2)).squeeze(2)  # (r, length)
        return v @ gram + torch.bmm((weight * dots).unsqueeze(1), block).squeeze(1)

    dots = torch.bmm(block, x.unsqueeze(2)).squeeze(2)
    residual = torch.bmm((confidence - weight * dots).unsqueeze(1), block).squeeze(1) - x @ gram  # b - A x
    direction = residual
    squared = residual.square().sum(1)
    for _ in range(steps):
        active = squared > _CONVERGED
        a_direction = times_a(direction)
        curvature = (direction * a_direction).sum(1)
        step = torch.where(active, squared / torch.where(active, curvature, 1.0), 0.0)
        x = x + step[:, None] * direction
        residual = residual - step[:, None] * a_direction
        new_squared = residual.square().sum(1)
        ratio = torch.where(active, new_squared / torch.where(active, squared, 1.0), 0.0)
        direction = residual + ratio[:, None] * direction
        squared = new_squared
    return x


def cholesky_solve(block: torch.Tensor, confidence: torch.Tensor, gram: torch.Tensor) -> torch.Tensor:
    """The exact solutions (r, d) of the rows' systems, through one batched Cholesky factorisation.

    Memory: r x d x d for the systems (batch_rows bounds r).
    """
    weighted = block * (confidence - 1.0).unsqueeze(2)  # padding: y = 0, so weight -1 there adds nothing
    systems = gram + torch.bmm(weighted.transpose(1, 2), block)  # (r, d, d)
    rhs = torch.bmm(confidence.unsqueeze(1), block).transpose(1, 2)  # (r, d, 1): sum_l c_l y_l
    return torch.cholesky_solve(rhs, torch.linalg.cholesky(systems)).squeeze(2)
