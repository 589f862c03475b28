"""iALS (Hu, Koren, Volinsky 2008) as a LightningModule: one training step is one alternating sweep on the device.

Each half-sweep solves, for every row u of one side with the other side's factors Y fixed,
    (Y^T C_u Y + lambda I) x_u = Y^T C_u p_u,      c_ui = 1 + alpha * r_ui,  p_ui = 1 where r_ui > 0,
either approximately by a few conjugate-gradient steps from the current x_u (Takacs et al. 2011, as the implicit
library does; the default) or exactly by batched Cholesky. Y^T C_u Y = Y^T Y + Y_u^T (C_u - I) Y_u: the dense part
is one Gram matrix per half-sweep; the sparse part, for CG, is two sparse kernels per step over a chunk of rows: the
sampled products y_l.v of the row's nonzeros (sampled_addmm) and their weighted sum of y_l (CSR x dense), the same
calls on the CPU (MKL) and on CUDA (cuSPARSE). When every c is 1 (alpha = 0, the default) the sparse part vanishes:
all rows share Y^T Y + lambda I and a half-sweep is one CSR x dense product plus dense algebra. Cholesky gathers the
rows' items into padded blocks of rows of similar length (models/factors.py) and forms each row's system with batched
products. No loop over users or items. On a CPU with several torch threads the chunks (at most 4096 rows, which stay
in cache) are shared out to Lanes (models/factors.py): threads of single-threaded operations, so that a busy core
delays one chunk instead of every operation's barrier.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import lightning
import torch

from yambda_dl.data import views
from yambda_dl.data.csr import CSR
from yambda_dl.models.base import NotFittedError, StateVectors, UserEvents
from yambda_dl.models.factors import (
    FactorVectors,
    Lanes,
    audio_start,
    check_init,
    cpu_lanes,
    frozen_parameter,
    seeded_uniform,
    single_device_trainer,
    step_counter,
    steps_loader,
)
from yambda_dl.sparse import gather_rows, length_order, length_sorted_batches, padded_rows, row_chunks
from yambda_dl.utils.memory import DEFAULT_FRACTION

if TYPE_CHECKING:
    from yambda_dl.data.split import Split

SOLVERS = ("cg", "cholesky")
# On the CPU, CG solves chunks of at most this many rows, so that a chunk's work tensors (1 MiB each at 64 factors)
# stay in a core's cache: a sweep ran 2.4x (synthetic small) to 2.9x (50m) faster than with whole-side tensors.
CPU_CHUNK_ROWS = 4096
T = TypeVar("T")
# added to CG's denominators: a converged row (residual 0, so curvature 0) takes a step of 0, not 0 / 0. Far below any
# live row's curvature, which is at least lambda * |direction|^2
_TINY = 1e-30


@dataclass(frozen=True)
class _Side:
    """One orientation of the confidence matrix on the device, cut into the solver's units of work.

    CG: contiguous row chunks (start, confidence rows, their weights c - 1 or None when every c is 1). Cholesky:
    rows in length-sorted padded batches (yambda_dl/sparse.py), since it forms one d x d system per row.
    """

    matrix: CSR
    weighted: bool  # some c differs from 1 (alpha > 0); else every row's system is the Gram matrix
    chunks: list[tuple[int, CSR, torch.Tensor | None]]
    order: torch.Tensor  # int64 (rows,): rows by ascending length (Cholesky's batches)
    batches: list[tuple[int, int, int]]  # (start, stop, padded length) into `order`

    @classmethod
    def build(
        cls,
        matrix: CSR,
        device: torch.device,
        solver: str,
        batch_rows: int,
        batch_nonzeros: int,
        pieces: int = 1,
        memory_fraction: float = DEFAULT_FRACTION,
    ) -> _Side:
        """CG: chunks of batch_rows rows (its extra memory per nonzero, 8 bytes, is less than the matrix's own).
        Cholesky: about batch_nonzeros gathered nonzeros and at most batch_nonzeros // factors rows per batch, set by
        the caller, so that the systems take no more memory than the gathered factors; when every c is 1, one shared
        system and CG's chunks instead. pieces > 1 (CPU lanes): at least that many chunks, of similar rows and
        nonzeros, so that the lanes share the work."""
        on_device = matrix.to(device, fraction=memory_fraction)
        weighted = bool((matrix.values != 1.0).any())  # alpha > 0: rows have systems of their own
        chunks, order, batches = [], torch.empty(0, dtype=torch.int64), []
        if solver == "cg" or not weighted:
            rows_bound = min(batch_rows, -(-matrix.shape[0] // pieces))
            for start, stop in row_chunks(matrix.indptr, max(rows_bound, 1), -(-(matrix.nnz + 1) // pieces)):
                rows = on_device.rows(start, stop)
                chunks.append((start, rows, rows.values - 1.0 if weighted else None))
        else:
            order = torch.from_numpy(length_order(matrix.indptr)).to(device)
            batches = length_sorted_batches(matrix.indptr, batch_rows, batch_nonzeros)
        return cls(on_device, weighted, chunks, order, batches)


class IALS(FactorVectors, lightning.LightningModule):
    """Implicit-feedback ALS on the binary or count user x item matrix; ranked through user/item vectors.

    Keys as implicit names them: factors, iterations (sweeps), regularization (lambda), alpha; plus solver
    ("cg" or "cholesky"), cg_steps, and the work memory bounds: CG solves chunks of at most batch_rows rows (about
    6 * batch_rows * factors floats of work, plus 8 bytes per nonzero; on the CPU at most CPU_CHUNK_ROWS, for its
    cache, shared out to Lanes when torch has several threads); Cholesky gathers about batch_nonzeros
    nonzeros' factors at once (at most 2 * batch_nonzeros * factors floats, padding included) and solves at most
    min(batch_rows, batch_nonzeros // factors) rows together (as many floats again for their systems).
    memory_fraction: the share of the device's free memory the matrix may take there. ckpt_path resumes fitting
    from a Lightning checkpoint (the factors are the module's state). init: random (uniform [0, init_scale)) or
    audio: the items with an audio vector start from its projection (reduce: pca | random, of the view's `column`),
    scaled to init_std (null: the random start's root-mean-square); models/factors.py audio_start.
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
        init: str = "random",
        reduce: str = "pca",
        column: str = "normalized_embed",
        init_std: float | None = None,
        seed: int = 0,
        batch_rows: int = 262_144,
        batch_nonzeros: int = 262_144,
        log_objective: bool = False,
        memory_fraction: float = DEFAULT_FRACTION,
        ckpt_path: str | None = None,
    ) -> None:
        super().__init__()
        if solver not in SOLVERS:
            raise ValueError(f"unknown iALS solver {solver!r}; valid choices: {', '.join(SOLVERS)}")
        check_init("iALS", init, reduce, column, init_std)
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
        # where to resume from, and the memory check's share, are not part of the model
        self.save_hyperparameters(ignore=["ckpt_path", "memory_fraction"])
        self.factors, self.iterations, self.regularization, self.alpha = factors, iterations, regularization, alpha
        self.solver, self.cg_steps, self.values, self.init_scale, self.seed = solver, cg_steps, values, init_scale, seed
        self.batch_rows, self.batch_nonzeros, self.log_objective = batch_rows, batch_nonzeros, log_objective
        self.ckpt_path, self.memory_fraction = ckpt_path, memory_fraction
        self.init, self.reduce, self.column, self.init_std = init, reduce, column, init_std
        self.automatic_optimization = False  # a sweep is a closed-form update, not a gradient step
        self.user_factors: torch.nn.Parameter | None = None
        self.item_factors: torch.nn.Parameter | None = None
        self.objectives: list[float] = []  # the weighted objective after each sweep (when log_objective)
        self._confidence: CSR | None = None
        self._sides: tuple[_Side, _Side] | None = None
        self._lanes: Lanes | None = None

    @property
    def max_epochs(self) -> int:
        """One epoch is one sweep: the Trainer runs `iterations` of them."""
        return self.iterations

    # --- fitting ----------------------------------------------------------------------------------------------

    def fit(self, split: Split, trainer: lightning.Trainer | None = None) -> IALS:
        """Learn user and item factors of the split's train matrix with `trainer` (a quiet CPU one by default);
        from the checkpoint at ckpt_path when one is set (its factors replace the seeded start)."""
        trainer = single_device_trainer(trainer, self.max_epochs, "iALS")
        self._confidence = self.confidence_matrix(views.user_item_matrix(split, self.values))
        num_users, num_items = self._confidence.shape
        low, high = 0.0, self.init_scale  # implicit's start: uniform [0, init_scale), users and items from two seeds
        self.user_factors = frozen_parameter(seeded_uniform((num_users, self.factors), low, high, self.seed))
        items = seeded_uniform((num_items, self.factors), low, high, self.seed + 1)
        if self.init == "audio" and self.ckpt_path is None:  # a resumed fit's factors come from the checkpoint
            rms = self.init_std if self.init_std is not None else self.init_scale / 3**0.5  # uniform [0, s)'s
            items = audio_start(items, split, "iALS", self.reduce, self.column, rms, self.seed, self.memory_fraction)
        self.item_factors = frozen_parameter(items)
        self.objectives = []
        try:
            trainer.fit(self, train_dataloaders=steps_loader(1), ckpt_path=self.ckpt_path)
        finally:  # also when fitting stops with an error: the lanes' threads end with it
            if self._lanes is not None:
                self._lanes.shutdown()
            self._sides = self._lanes = None  # the matrix is only needed while fitting
        return self

    def confidence_matrix(self, matrix: CSR) -> CSR:
        """The same nonzeros with values c = 1 + alpha * r (the entries left out have c = 1, p = 0)."""
        return matrix.with_values(1.0 + self.alpha * matrix.values)

    def on_fit_start(self) -> None:
        """Put both orientations of the confidence matrix on the module's device (12 bytes per nonzero each, 4 more
        for CG's weights when alpha > 0). The host matrix and its transpose (as much again, for a moment) are dropped
        after."""
        users, self._confidence = self._confidence, None
        items = users.transpose()
        # Cholesky's systems (rows x factors^2 floats) take no more than its gathered factors (nonzeros x factors)
        rows = self.batch_rows
        if self.solver == "cholesky":
            rows = max(1, min(rows, self.batch_nonzeros // self.factors))
        if self.device.type == "cpu":
            rows = min(rows, CPU_CHUNK_ROWS)
        self._lanes = cpu_lanes(self.device)
        # with lanes, 4 pieces per lane: a lane that the OS deschedules holds up a quarter of its share, not all
        pieces = 4 * self._lanes.lanes if self._lanes is not None else 1
        self._sides = tuple(
            _Side.build(m, self.device, self.solver, rows, self.batch_nonzeros, pieces, self.memory_fraction)
            for m in (users, items)
        )

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
        self.optimizers().step()  # moves Lightning's global step (checkpoints key on it); changes no factor

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return step_counter(self)  # counts the steps for Lightning; the updates are written out in training_step

    def _solve_side(self, side: _Side, solved: torch.Tensor, fixed: torch.Tensor) -> None:
        """Overwrite the rows of `solved` with their least-squares solution against `fixed`, chunk by chunk."""
        gram = fixed.T @ fixed + self.regularization * torch.eye(self.factors, device=fixed.device)
        if self.solver == "cg":

            def solve(chunk: tuple[int, CSR, torch.Tensor | None]) -> None:
                start, rows, weights = chunk
                stop = start + rows.shape[0]
                solved[start:stop] = sparse_conjugate_gradient(
                    solved[start:stop], rows, weights, fixed, gram, self.cg_steps
                )

            self._each(solve, side.chunks)
            return
        if not side.weighted:  # every row's system is gram: one factorisation, x = (sum_l y_l) gram^-1
            factor = torch.linalg.cholesky(gram)

            def solve_shared(chunk: tuple[int, CSR, torch.Tensor | None]) -> None:
                start, rows, _ = chunk
                rhs = torch.sparse.mm(rows.torch_sparse(), fixed)  # (r, d): sum_l c_l y_l with every c_l = 1
                solved[start : start + rows.shape[0]] = torch.cholesky_solve(rhs.T, factor).T

            self._each(solve_shared, side.chunks)
            return
        fixed_padded = torch.cat([fixed, fixed.new_zeros(1, self.factors)])  # padding's column: a zero row

        def solve_batch(batch_bounds: tuple[int, int, int]) -> None:
            start, stop, length = batch_bounds
            batch = padded_rows(side.matrix, side.order[start:stop], length, pad_column=fixed.shape[0])
            block = gather_rows(fixed_padded, batch.columns)  # (r, length, factors): grows with the padded size
            solved.index_copy_(0, batch.rows, cholesky_solve(block, batch.values, gram))

        self._each(solve_batch, side.batches)

    def _each(self, solve: Callable[[T], None], pieces: list[T]) -> None:
        """solve(piece) for every piece (they write disjoint rows): on the CPU lanes when there are any."""
        if self._lanes is None:
            for piece in pieces:
                solve(piece)
        else:
            self._lanes.map(solve, pieces)

    def objective(self) -> float:
        """sum over all (u, i) of c_ui (p_ui - x_u.y_i)^2 + lambda (|X|^2 + |Y|^2), without a users x items array.

        The entries outside the matrix (c = 1, p = 0) add sum of (x_u.y_i)^2 = <X^T X, Y^T Y>; each nonzero then
        replaces its (x_u.y_i)^2 by c (1 - x_u.y_i)^2, with x_u.y_i from one sampled product per chunk of rows.
        Accumulated in float64: the two parts nearly cancel.
        """
        if self._sides is None:
            raise NotFittedError("IALS.objective() is available while fitting (it needs the matrix on the device)")
        users, x, y = self._sides[0].matrix, self.user_factors, self.item_factors
        x64, y64 = x.double(), y.double()
        total = ((x64.T @ x64) * (y64.T @ y64)).sum() + self.regularization * (x64.square().sum() + y64.square().sum())
        for start, stop in row_chunks(users.indptr.cpu().numpy(), self.batch_rows, users.nnz + 1):
            rows = users.rows(start, stop)
            scores = sampled_products(rows, x[start:stop], y)
            total += (rows.values * (1.0 - scores).square() - scores.square()).double().sum()
        return float(total)

    # --- scoring ----------------------------------------------------------------------------------------------

    cheap_refit = True  # eval.stream.retrain_every may refit it during the day (eval/stream.py)

    def user_stream(self, split: Split) -> FoldIn:
        """The streaming state (eval/stream.py): a user who acted gets the closed-form factor of their train and day
        items with the item factors fixed (this model's values, regularization and alpha); the others keep theirs.
        Reads the train matrix once more (8 bytes per nonzero, on the host)."""
        if self.item_factors is None:
            raise NotFittedError("IALS.user_stream() called before fit()")
        return FoldIn(self, views.user_item_matrix(split, self.values))


def sampled_products(rows: CSR, x: torch.Tensor, fixed: torch.Tensor) -> torch.Tensor:
    """x_r.y_c for every nonzero (r, c) of `rows` (nnz,), in CSR order: one sampled_addmm, no (nnz, d) array."""
    return torch.sparse.sampled_addmm(rows.torch_sparse(), x, fixed.T, beta=0.0).values()


def sparse_conjugate_gradient(
    x: torch.Tensor, rows: CSR, weights: torch.Tensor | None, fixed: torch.Tensor, gram: torch.Tensor, steps: int
) -> torch.Tensor:
    """`steps` CG steps from x (r, d) on each row's system A x = b, batched; implicit's least_squares_cg per row.

    A v = gram v + sum_l w_l (y_l.v) y_l and b = sum_l c_l y_l over the row's nonzeros l (confidence c_l in
    rows.values, w_l = c_l - 1 in `weights`; None when every w is 0, and then A is gram for every row). A is never
    formed: each step is one dense product with gram plus, when weighted, a sampled product and a CSR x dense one.
    """

    def times_a(v: torch.Tensor) -> torch.Tensor:
        product = v @ gram
        if weights is None:
            return product
        return product + torch.sparse.mm(rows.torch_sparse(weights * sampled_products(rows, v, fixed)), fixed)

    if weights is None:
        residual = torch.sparse.mm(rows.torch_sparse(), fixed) - x @ gram  # b - A x
    else:  # b - (A - gram) x in one product: sum_l (c_l - w_l (y_l.x)) y_l
        confidence = rows.values - weights * sampled_products(rows, x, fixed)
        residual = torch.sparse.mm(rows.torch_sparse(confidence), fixed) - x @ gram
    direction = residual
    squared = torch.linalg.vecdot(residual, residual)
    for _ in range(steps):
        # implicit stops a row once its squared residual is below 1e-20; here such a row's steps are that small:
        # they move x by ~1e-10, under float32's resolution of the factors. _TINY keeps 0 / 0 at 0, without masks
        # (each mask is one more pass, and on a loaded CPU every pass waits at a thread barrier)
        a_direction = times_a(direction)
        step = (squared / torch.linalg.vecdot(direction, a_direction).add_(_TINY))[:, None]
        x = torch.addcmul(x, step, direction)
        residual = torch.addcmul(residual, step, a_direction, value=-1.0)
        new_squared = torch.linalg.vecdot(residual, residual)
        direction = torch.addcmul(residual, (new_squared / squared.add_(_TINY))[:, None], direction)
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


class FoldIn:
    """iALS's streaming state: the users' factors solved exactly against the fixed item factors (implicit's
    recalculate_user), from the train matrix's rows plus the day's events (binary: 1 per item; count: summed)."""

    shared = False
    state = "user factor folded in (closed-form solve, item factors fixed)"

    def __init__(self, model: IALS, matrix: CSR) -> None:
        self.model, self.matrix = model, matrix

    def updated(self, events: UserEvents) -> StateVectors:
        """Factors of events' users, batched: one shared factorisation when every c is 1 (alpha = 0), else the
        padded batches of the Cholesky solver (at most batch_nonzeros gathered factors at once)."""
        model = self.model
        items = model.item_factors.detach()
        num_items, device = items.shape[0], items.device
        rows = events.within(num_items).matrix(num_items, base=self.matrix)  # host: its indptr sets the batches
        counts = rows.to(device, torch.float32)
        values = torch.ones_like(counts.values) if model.values == "binary" else counts.values
        confidence = counts.with_values(1.0 + model.alpha * values)
        with torch.no_grad(), torch.autocast(device.type, enabled=False):
            gram = items.T @ items + model.regularization * torch.eye(model.factors, device=device)
            if model.alpha == 0:  # every row's system is gram: x = (sum of the row's y) gram^-1
                rhs = torch.sparse.mm(confidence.torch_sparse(), items)
                users = torch.cholesky_solve(rhs.T, torch.linalg.cholesky(gram)).T
            else:
                users = torch.zeros((rows.shape[0], model.factors), device=device)
                padded = torch.cat([items, items.new_zeros(1, model.factors)])  # padding's column: a zero row
                order = torch.from_numpy(length_order(rows.indptr)).to(device)
                batch_rows = max(1, min(model.batch_rows, model.batch_nonzeros // model.factors))
                for start, stop, length in length_sorted_batches(rows.indptr, batch_rows, model.batch_nonzeros):
                    batch = padded_rows(confidence, order[start:stop], length, pad_column=num_items)
                    block = gather_rows(padded, batch.columns)
                    users.index_copy_(0, batch.rows, cholesky_solve(block, batch.values, gram))
        return StateVectors(users, items)
