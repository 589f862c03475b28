"""BPR (Rendle et al. 2009) as a LightningModule: SGD on (user, positive, negative) triples sampled on the device.

The update is implicit's per-sample SGD (x_uij = p_u.(q_i - q_j) + b_i - b_j; every factor moves by
lr * (sigmoid(-x_uij) * gradient - regularization * factor)). An epoch draws as many triples as the matrix has
nonzeros, in one training step (Lightning's per-step work is paid once an epoch), in batches of batch_size triples.
Two kernels run it (`kernel`):

- native, on the CPU (auto picks it where a C compiler builds it): models/kernels/bpr.c draws, verifies and applies
  each triple in one pass, as implicit's loop does, touching the three rows once while they are in cache. With
  several CPU threads the batches run Hogwild: each lane (models/factors.py Lanes) takes the epoch's next batch and
  runs the kernel on it, which holds no GIL, on the shared factors without locks; a row two lanes update at once may
  lose one of the steps, so the factors then depend on the scheduling, as implicit's do. A batch's draws come from
  (seed, epoch, batch) alone, so one thread repeats itself bit for bit and a resumed run the uninterrupted one.
- torch, on CUDA and where no compiler works: the same formula for a whole batch at once (`batch_steps`, about 25
  tensor operations), from the batch's starting factors, applied with index-adds (a row drawn twice in a batch gets
  the sum of its steps), as a GPU wants it. Its draws come from a generator seeded by (seed, epoch). On a CPU with
  several threads, each batch is cut into one slice per lane: the lanes compute their slices' steps from the same
  factors with single-threaded operations, then apply them in slice order, so the result does not depend on the
  thread count and no thread barrier is paid per operation (on a shared CPU each one stalls).

As in implicit, the item bias is the item vectors' last column and the user vectors' last column is 1: one gather,
one dot product and one update per side carry both the factors and the bias.
"""

from __future__ import annotations

import ctypes
import itertools
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import lightning
import numpy as np
import torch

from yambda_dl.data import views
from yambda_dl.data.csr import CSR
from yambda_dl.models import kernels
from yambda_dl.models.base import NotFittedError
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
from yambda_dl.utils.memory import DEFAULT_FRACTION, check_fits

if TYPE_CHECKING:
    from yambda_dl.data.split import Split

log = logging.getLogger(__name__)

# "popularity": the item of a uniformly drawn nonzero (implicit's sampler); "uniform": any train item alike
NEGATIVE_SAMPLERS = ("popularity", "uniform")
# native: models/kernels/bpr.c on the CPU; torch: batched tensor operations (CUDA's path); auto: native where it
# runs (a CPU with a C compiler that builds it), else torch
KERNELS = ("auto", "native", "torch")
# Negatives are verified exactly, by one of two structures built once per fit:
# - a bitmap of the user x item matrix (one bit per cell: a lookup is one random byte read and a shift), when it
#   takes at most _BITMAP_BYTES_PER_NONZERO bytes per nonzero (density >= 1 / 256: synthetic small's 0.9%; 50m's
#   0.15% would need 85 bytes per nonzero);
# - else a hash table of the (user, item) keys: row h(key) of a (buckets, width) table holds every key that hashes
#   there, so a lookup is three integer operations, one contiguous read of `width` keys and a compare, where a
#   binary search over all keys (~20 dependent scattered reads) took a fifth of the epoch. About this many keys per
#   bucket on average; the width is the fullest bucket's count (about 3x the average at this load). 4, not 16:
#   the compare reads 12 keys instead of 28 per triple (3x faster lookups on synthetic small) for ~38 bytes per
#   nonzero instead of ~22.
_BITMAP_BYTES_PER_NONZERO = 32
_KEYS_PER_BUCKET = 4
# Fibonacci hashing: the top bits of key * 2^64 / golden ratio (as a signed int64) spread any run of keys evenly
_GOLDEN = -7046029254386353131
# sampler memory on the device per nonzero: item and user as int64 (what torch's index kernels take); the structure
# that verifies negatives adds at most 32 (the bitmap) or ~38 (8 per key, padded to the fullest bucket: 37 on
# synthetic small), and ~40 more while the table is built (keys, buckets, order, slots)
SAMPLER_BYTES_PER_NONZERO = 16
KEY_BYTES_PER_NONZERO = 80


@dataclass(frozen=True)
class TripleSampler:
    """Draws (user, positive, negative) triples from the binary matrix's nonzeros on its device.

    A uniform nonzero gives the user and the positive; the negative is the item of another uniform nonzero
    ("popularity") or a uniform item. With verify, `kept` is 0 where the negative is one of the user's items
    (implicit skips those triples), else 1.
    """

    users: torch.Tensor  # int64 (nnz,): the row of every nonzero
    items: torch.Tensor  # int64 (nnz,): its column
    num_items: int
    negatives: str
    table: torch.Tensor | None  # int64 (buckets, width): the keys user * num_items + item by bucket, padded with -1
    hash_shift: int  # a key's bucket: (key * _GOLDEN) >> hash_shift, masked to the bucket count
    bitmap: torch.Tensor | None = None  # uint8 (ceil(users * items / 8),): bit key % 8 of byte key // 8 is set

    @classmethod
    def build(
        cls,
        matrix: CSR,
        device: torch.device,
        negatives: str,
        verify: bool,
        memory_fraction: float = DEFAULT_FRACTION,
    ) -> TripleSampler:
        """The sampler of a binary CSR matrix (no repeated (row, column)), with the bitmap or the hash table that
        verifies negatives when `verify` (the bitmap where it is no larger than _BITMAP_BYTES_PER_NONZERO)."""
        cells = matrix.shape[0] * matrix.shape[1]
        use_bitmap = verify and (cells + 7) // 8 <= _BITMAP_BYTES_PER_NONZERO * max(matrix.nnz, 1)
        per_nonzero = SAMPLER_BYTES_PER_NONZERO + (KEY_BYTES_PER_NONZERO if verify else 0)
        check_fits(matrix.nnz * per_nonzero, "BPR's triple sampler", device, memory_fraction)
        users = torch.from_numpy(matrix.row_ids()).to(device, torch.int64)
        items = torch.from_numpy(matrix.indices).to(device, torch.int64)
        table, shift, bitmap = None, 0, None
        if use_bitmap:
            keys = users * matrix.shape[1] + items
            bitmap = torch.zeros((cells + 7) // 8, dtype=torch.uint8, device=device)
            bit = torch.bitwise_left_shift(torch.ones_like(keys, dtype=torch.uint8), (keys & 7).to(torch.uint8))
            # the keys are distinct, so the bits added into one byte never carry: their sum is their union
            bitmap.index_put_((keys >> 3,), bit, accumulate=True)
        elif verify:
            bits = max(1, (max(matrix.nnz // _KEYS_PER_BUCKET, 1) - 1).bit_length())
            shift = 64 - bits
            keys = users * matrix.shape[1] + items
            bucket = bucket_of(keys, shift)
            counts = torch.bincount(bucket, minlength=1 << bits)
            order = torch.argsort(bucket, stable=True)
            starts = torch.cumsum(counts, 0) - counts
            sorted_bucket = bucket[order]
            slot = torch.arange(len(keys), device=device) - starts[sorted_bucket]
            table = keys.new_full((1 << bits, max(int(counts.max()), 1)), -1)  # -1: no key (keys are >= 0)
            table[sorted_bucket, slot] = keys[order]
        return cls(users, items, matrix.shape[1], negatives, table, shift, bitmap)

    @property
    def nnz(self) -> int:
        return self.items.numel()

    def draw(self, size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """The random part of `size` triples: (nonzeros (size,) that give user and positive, negatives (size,): a
        nonzero whose item is the negative ("popularity") or an item ("uniform"))."""
        device = self.items.device
        if self.negatives == "popularity":
            drawn = torch.randint(self.nnz, (2 * size,), device=device, generator=generator)
            return drawn[:size], drawn[size:]
        drawn = torch.randint(self.nnz, (size,), device=device, generator=generator)
        return drawn, torch.randint(self.num_items, (size,), device=device, generator=generator)

    def resolve(self, nonzeros: torch.Tensor, negatives: torch.Tensor) -> Triples:
        """The Triples of drawn (nonzeros, negatives)."""
        # index_select: several times faster than advanced indexing on the CPU
        users = self.users.index_select(0, nonzeros)
        if self.negatives == "popularity":
            items = self.items.index_select(0, torch.cat([nonzeros, negatives]))
        else:
            items = torch.cat([self.items.index_select(0, nonzeros), negatives])
        if self.table is None and self.bitmap is None:
            return Triples(users, items, torch.ones(len(users), device=users.device))
        keys = torch.add(items[len(users) :], users, alpha=self.num_items)
        if self.bitmap is not None:
            known = self.bitmap.index_select(0, keys >> 3).bitwise_right_shift(keys & 7).bitwise_and_(1)
            return Triples(users, items, known.eq_(0).float())
        known = (self.table.index_select(0, bucket_of(keys, self.hash_shift)) == keys[:, None]).any(1)
        return Triples(users, items, known.logical_not().float())

    def sample(self, size: int, generator: torch.Generator) -> Triples:
        """`size` Triples."""
        return self.resolve(*self.draw(size, generator))


def bucket_of(keys: torch.Tensor, shift: int) -> torch.Tensor:
    """The hash-table bucket of int64 keys: the top 64 - shift bits of key * _GOLDEN (wrapping, as int64 does)."""
    return (keys * _GOLDEN >> shift) & ((1 << (64 - shift)) - 1)


class _Steps(NamedTuple):
    """A slice of a batch: its rows and the steps they take, with its summed loss and kept count."""

    users: torch.Tensor
    user_step: torch.Tensor
    items: torch.Tensor
    item_step: torch.Tensor
    loss: torch.Tensor
    kept: torch.Tensor


class Triples(NamedTuple):
    """A batch of triples: users (n,), items (2n,): the positives then the negatives, kept (n,) float 0/1 (0: a
    triple skipped, whose negative the user has)."""

    users: torch.Tensor
    items: torch.Tensor
    kept: torch.Tensor


class StepSettings(NamedTuple):
    """The step's constants."""

    lr: float
    regularization: float
    item_bias: bool  # the last factor column is the item bias, and 1 in the user factors


def batch_steps(
    factors: tuple[torch.Tensor, torch.Tensor], triples: Triples, settings: StepSettings
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """implicit's per-triple step for a batch of triples at once, from the current (user, item) factors (not
    applied): (user_step (n, d [+ 1]), item_step (2n, d [+ 1]), summed loss of the kept triples before the step).
    Skipped triples (kept 0) do not move.
    """
    (user_factors, item_factors), (users, items, kept), (lr, regularization, item_bias) = factors, triples, settings
    size = users.shape[0]
    p = user_factors.index_select(0, users)  # (n, d [+ 1]): the last column is 1 with item_bias
    q = item_factors.index_select(0, items)  # (2n, d [+ 1]): positives, then negatives
    difference = q[:size] - q[size:]
    minus_margin = torch.linalg.vecdot(p, difference).neg_()  # -x_uij, bias included through the ones column
    loss = torch.dot(torch.nn.functional.softplus(minus_margin), kept)  # -log sigmoid(x_uij), before the step
    # d log sigmoid(x_uij) / d x_uij = sigmoid(-x_uij), times lr
    pull = torch.sigmoid(minus_margin).mul_(kept).mul_(lr)[:, None]
    shrink = kept.mul(lr * regularization)[:, None]
    user_step = torch.addcmul(p.mul(shrink).neg_(), pull, difference)
    if item_bias:
        user_step[:, -1] = 0.0  # the ones column stays 1
    # positives move by pull * p - shrink * q_i, negatives by -pull * p - shrink * q_j: p broadcast over both
    item_step = q.mul(torch.cat([shrink, shrink])).neg_()
    item_step.view(2, size, -1).addcmul_(torch.stack([pull, pull.neg()]), p.unsqueeze(0))
    return user_step, item_step, loss


class NativeKernel:
    """models/kernels/bpr.c bound to one fit's factors and sampler: `run(seed, count)` draws and applies `count`
    triples in place. The factors stay where they are (float32, contiguous, on the CPU); the kernel reads the
    sampler's arrays, bitmap or hash table (no copy). ctypes releases the GIL for the call: lanes run it side by
    side."""

    def __init__(self, factors: tuple[torch.Tensor, torch.Tensor], sampler: TripleSampler, settings: StepSettings):
        function = kernels.load("bpr").bpr_batch
        pointer, i64 = ctypes.c_void_p, ctypes.c_int64
        function.argtypes = [pointer, pointer, i64, ctypes.c_int, pointer, pointer, i64, i64, ctypes.c_int]
        function.argtypes += [pointer, pointer, i64, ctypes.c_int, ctypes.c_uint64, i64, ctypes.c_float]
        function.argtypes += [ctypes.c_float, ctypes.POINTER(ctypes.c_double), pointer]
        function.restype = i64
        for name, tensor in (("user factors", factors[0]), ("item factors", factors[1])):
            if tensor.device.type != "cpu" or tensor.dtype != torch.float32 or not tensor.is_contiguous():
                raise ValueError(
                    f"BPR's native kernel needs contiguous float32 {name} on the CPU; got {tensor.dtype} "
                    f"on {tensor.device}"
                )
        self._function, self._factors, self._sampler = function, factors, sampler  # references keep them alive
        table = sampler.table
        self._arguments = (
            factors[0].data_ptr(),
            factors[1].data_ptr(),
            factors[1].shape[1],
            int(settings.item_bias),
            sampler.users.data_ptr(),
            sampler.items.data_ptr(),
            sampler.nnz,
            sampler.num_items,
            int(sampler.negatives == "popularity"),
            None if sampler.bitmap is None else sampler.bitmap.data_ptr(),
            None if table is None else table.data_ptr(),
            0 if table is None else table.shape[1],
            sampler.hash_shift,
        )
        self._settings = settings

    def run(self, seed: int, count: int, record: torch.Tensor | None = None) -> tuple[float, int]:
        """Draw `count` triples from `seed` and apply the kept ones: (their summed loss before each step, how many
        were kept). record: an int64 (4, count) tensor to receive every draw's user, positive, negative and kept."""
        loss = ctypes.c_double(0.0)
        kept = self._function(
            *self._arguments,
            seed,
            count,
            self._settings.lr,
            self._settings.regularization,
            ctypes.byref(loss),
            None if record is None else record.data_ptr(),
        )
        return loss.value, int(kept)


class BPR(FactorVectors, lightning.LightningModule):
    """Bayesian Personalised Ranking on the binary user x item matrix; ranked through user/item vectors.

    With item_bias, the item vectors carry the bias as a last column and the user vectors a column of ones.
    Keys as implicit names them: factors, regularization, iterations (epochs), verify_negatives (skip a triple whose
    negative the user has); lr is implicit's learning_rate, named as SASRec and torch's optimizers name it; plus
    batch_size (triples per batch: one native kernel call, or one torch update), negatives, and init_scale: factors
    start uniform in [-init_scale / 2, init_scale / 2) / factors (implicit's start at 1.0), biases at 0.
    memory_fraction: the share of the device's free memory the sampler may take. kernel: native (the C kernel, CPU
    only), torch (batched tensor operations, any device) or auto (native where it builds, else torch; see the
    module's docstring).
    init: random (the uniform start above) or audio: the items with an audio vector start from its projection
    (reduce: pca | random, of the view's `column`), scaled to init_std (null: the random start's root-mean-square);
    models/factors.py audio_start. ckpt_path resumes fitting from a Lightning checkpoint.
    """

    def __init__(
        self,
        factors: int = 64,
        iterations: int = 100,
        lr: float = 0.01,
        regularization: float = 0.01,
        batch_size: int = 8192,
        negatives: str = "popularity",
        verify_negatives: bool = True,
        item_bias: bool = True,
        init_scale: float = 1.0,
        init: str = "random",
        reduce: str = "pca",
        column: str = "normalized_embed",
        init_std: float | None = None,
        kernel: str = "auto",
        seed: int = 0,
        memory_fraction: float = DEFAULT_FRACTION,
        ckpt_path: str | None = None,
    ) -> None:
        super().__init__()
        if negatives not in NEGATIVE_SAMPLERS:
            raise ValueError(f"unknown negative sampler {negatives!r}; valid choices: {', '.join(NEGATIVE_SAMPLERS)}")
        for name, value in (("factors", factors), ("iterations", iterations), ("batch_size", batch_size)):
            if value < 1:
                raise ValueError(f"BPR {name} must be >= 1, got {value}")
        check_init("BPR", init, reduce, column, init_std)
        if kernel not in KERNELS:
            raise ValueError(f"unknown BPR kernel {kernel!r}; valid choices: {', '.join(KERNELS)}")
        if lr <= 0 or regularization < 0 or init_scale <= 0:
            raise ValueError(
                f"BPR needs lr > 0, regularization >= 0 and init_scale > 0; got lr={lr}, "
                f"regularization={regularization}, init_scale={init_scale}"
            )
        # where to resume from, and the memory check's share, are not part of the model
        self.save_hyperparameters(ignore=["ckpt_path", "memory_fraction"])
        self.factors, self.iterations, self.lr = factors, iterations, lr
        self.regularization, self.batch_size, self.negatives = regularization, batch_size, negatives
        self.verify_negatives, self.item_bias, self.init_scale, self.seed = (
            verify_negatives,
            item_bias,
            init_scale,
            seed,
        )
        self.ckpt_path, self.memory_fraction, self.kernel = ckpt_path, memory_fraction, kernel
        self.init, self.reduce, self.column, self.init_std = init, reduce, column, init_std
        self.automatic_optimization = False  # implicit's SGD rule, applied in place: no autograd graph
        # (users, factors [+ 1]) and (items, factors [+ 1]): with item_bias, a column of ones and the biases
        self.user_factors: torch.nn.Parameter | None = None
        self.item_factors: torch.nn.Parameter | None = None
        self._matrix: CSR | None = None
        self._sampler: TripleSampler | None = None
        self._lanes: Lanes | None = None
        self._native: NativeKernel | None = None  # the C kernel, while fitting with it

    @property
    def max_epochs(self) -> int:
        return self.iterations

    @property
    def item_biases(self) -> torch.Tensor:
        """(num_items,) the learnt item biases (zeros without item_bias)."""
        if self.item_factors is None:
            raise NotFittedError("BPR.item_biases read before fit()")
        if not self.item_bias:
            return self.item_factors.detach().new_zeros(len(self.item_factors))
        return self.item_factors.detach()[:, -1]

    def fit(self, split: Split, trainer: lightning.Trainer | None = None) -> BPR:
        """Learn the factors from the split's binary train matrix with `trainer` (a quiet CPU one by default);
        from the checkpoint at ckpt_path when one is set (its factors replace the seeded start)."""
        trainer = single_device_trainer(trainer, self.max_epochs, "BPR")
        self._matrix = views.user_item_matrix(split, "binary")
        num_users, num_items = self._matrix.shape
        half = 0.5 * self.init_scale / self.factors
        users = seeded_uniform((num_users, self.factors), -half, half, self.seed)
        items = seeded_uniform((num_items, self.factors), -half, half, self.seed + 1)
        if self.init == "audio" and self.ckpt_path is None:  # a resumed fit's factors come from the checkpoint
            rms = self.init_std if self.init_std is not None else half / 3**0.5  # uniform [-h, h)'s
            items = audio_start(items, split, "BPR", self.reduce, self.column, rms, self.seed, self.memory_fraction)
        if self.item_bias:
            users = torch.cat([users, torch.ones(num_users, 1)], dim=1)
            items = torch.cat([items, torch.zeros(num_items, 1)], dim=1)
        self.user_factors, self.item_factors = frozen_parameter(users), frozen_parameter(items)
        try:
            trainer.fit(self, train_dataloaders=steps_loader(1), ckpt_path=self.ckpt_path)
        finally:  # also when fitting stops with an error: the lanes' threads end with it
            if self._lanes is not None:
                self._lanes.shutdown()
            self._matrix = self._sampler = self._lanes = self._native = None  # only needed while fitting
        return self

    def on_fit_start(self) -> None:
        """The sampler on the device (16 bytes per nonzero; up to ~38 more for what verifies negatives); on a CPU with
        several threads, the lanes; the native kernel where it runs."""
        if self.kernel == "native" and self.device.type != "cpu":  # before building anything
            raise ValueError(f"BPR kernel=native runs on the CPU, not {self.device}; valid choices there: torch, auto")
        self._sampler = TripleSampler.build(
            self._matrix, self.device, self.negatives, self.verify_negatives, self.memory_fraction
        )
        self._lanes = cpu_lanes(self.device)
        self._native = self._native_kernel()

    def _native_kernel(self) -> NativeKernel | None:
        """The C kernel for kernel=native, or auto on the CPU; None for torch. Where it cannot be built (no working
        compiler), native raises and auto warns and trains with the torch kernel."""
        if self.kernel == "torch" or self.device.type != "cpu":
            return None
        try:
            return NativeKernel((self.user_factors, self.item_factors), self._sampler, self.step_settings)
        except kernels.KernelUnavailable as error:
            if self.kernel == "native":
                raise
            log.warning("BPR: %s; training with the torch kernel", error)
            return None

    def epoch_generator(self, epoch: int) -> torch.Generator:
        """The generator of one epoch's draws, from (seed, epoch) alone: a resumed run draws what the uninterrupted
        one drew, whatever ran before."""
        state = int(np.random.SeedSequence([self.seed, epoch]).generate_state(1, np.uint64)[0] >> 1)
        return torch.Generator(device=self.device).manual_seed(state)

    def batch_seed(self, epoch: int, batch: int) -> int:
        """The native kernel's seed for one batch, from (seed, epoch, batch) alone: whichever lane takes the batch
        draws the same triples."""
        return int(np.random.SeedSequence([self.seed, epoch, batch]).generate_state(1, np.uint64)[0])

    def training_step(self, step: int, batch_idx: int) -> None:
        """One epoch: nnz triples in batches of batch_size (the last one smaller)."""
        with torch.no_grad(), torch.autocast(self.device.type, enabled=False):
            if self._native is not None:
                loss_sum, kept_sum = self._native_epoch(self.current_epoch)
            else:
                loss_sum, kept_sum = self._epoch(self.current_epoch)
        # the mean BPR loss of the epoch's kept triples, each before its batch's step
        loss = loss_sum / kept_sum.clamp_min(1.0)
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=1)
        self.optimizers().step()  # moves Lightning's global step (checkpoints key on it); changes no factor

    def _epoch(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One epoch of the torch kernel (the summed loss and kept count): a stream of batches, each step computed
        from the batch's starting factors, then applied (on a CPU with several threads, the batch's slices computed
        side by side on the lanes)."""
        sampler, generator = self._sampler, self.epoch_generator(epoch)
        loss_sum = torch.zeros((), device=self.device)
        kept_sum = torch.zeros((), device=self.device)
        for start in range(0, sampler.nnz, self.batch_size):
            drawn = sampler.draw(min(self.batch_size, sampler.nnz - start), generator)
            if self._lanes is None:
                steps = [self._batch_steps(sampler.resolve(*drawn))]
            else:
                slices = zip(*(part.tensor_split(self._lanes.lanes) for part in drawn), strict=True)
                steps = self._lanes.map(lambda part: self._batch_steps(sampler.resolve(*part)), slices)
            self._apply_steps(steps)
            loss_sum += sum(step.loss for step in steps)
            kept_sum += sum(step.kept for step in steps)
        return loss_sum, kept_sum

    @property
    def step_settings(self) -> StepSettings:
        return StepSettings(self.lr, self.regularization, self.item_bias)

    def _native_epoch(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One epoch of the native kernel (the summed loss and kept count). One thread runs the batches in order; with
        lanes, each lane takes the next batch number from a shared counter (next() on itertools.count is atomic
        under the GIL) and runs the kernel on it, in place on the shared factors without locks (Hogwild). A lane
        that is descheduled delays its own batch only; the lanes meet once an epoch."""
        nnz, native = self._sampler.nnz, self._native
        if nnz == 0:  # nothing to draw from (the torch kernel's loop is empty then too)
            return torch.zeros(()), torch.zeros(())
        size = min(self.batch_size, nnz)
        batches, counter = -(-nnz // size), itertools.count()

        def lane() -> tuple[float, int]:
            loss, kept = 0.0, 0
            while (batch := next(counter)) < batches:
                batch_loss, batch_kept = native.run(self.batch_seed(epoch, batch), min(size, nnz - batch * size))
                loss, kept = loss + batch_loss, kept + batch_kept
            return loss, kept

        sums = [lane()] if self._lanes is None else self._lanes.map(lambda _: lane(), range(self._lanes.lanes))
        return torch.tensor(sum(loss for loss, _ in sums)), torch.tensor(float(sum(kept for _, kept in sums)))

    def _batch_steps(self, triples: Triples) -> _Steps:
        """batch_steps from the current factors, as a slice's _Steps (not applied)."""
        user_step, item_step, loss = batch_steps((self.user_factors, self.item_factors), triples, self.step_settings)
        return _Steps(triples.users, user_step, triples.items, item_step, loss, triples.kept.sum())

    def _apply_steps(self, steps: list[_Steps]) -> None:
        """Add a batch's steps to the factors, slice by slice in order (index-adds sum a repeated row's steps);
        with lanes, users on one thread and items on another: they touch different tensors."""

        def users() -> None:
            for step in steps:
                self.user_factors.index_add_(0, step.users, step.user_step)

        def items() -> None:
            for step in steps:
                self.item_factors.index_add_(0, step.items, step.item_step)

        if self._lanes is None:
            users()
            items()
        else:
            self._lanes.run([users, items])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return step_counter(self)  # counts the steps for Lightning; the updates are written out in training_step

    # eval.stream.retrain_every may refit it during the day (eval/stream.py); between refits its users stay frozen
    cheap_refit = True
