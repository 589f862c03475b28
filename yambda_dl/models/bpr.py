"""BPR (Rendle et al. 2009) as a LightningModule: SGD on (user, positive, negative) triples sampled on the device.

The update is implicit's per-sample SGD (x_uij = p_u.(q_i - q_j) + b_i - b_j; every factor moves by
lr * (sigmoid(-x_uij) * gradient - regularization * factor)), applied to a batch of triples at once with index-adds
(the steps of a row drawn twice in a batch add up), as implicit's Hogwild threads apply theirs without locks. An
epoch draws as many triples as the matrix has nonzeros, in one training step (Lightning's per-step work is paid once
an epoch): a loop over batches of batch_size triples, each one call of `sgd_step` (about 25 whole-batch tensor
operations). The random draws come from a generator seeded by (seed, epoch), so a run resumed from an epoch's
checkpoint repeats the uninterrupted one.

On the CPU the eager operations each stream the batch's (n, d) arrays through memory, ~25 times a batch. With
`compile` (auto: on a CPU with a C++ compiler, for fits large enough to repay it), sgd_step runs through
torch.compile, whose inductor fuses it into a few single-threaded loops over the batch (~2x faster per epoch on
synthetic small); the eager path is the same function, and is what runs on CUDA and in the tests' small fits.
Compiled on a CPU with several threads, the step runs Hogwild, as implicit's threads do: each lane (models/factors.py
Lanes) takes the epoch's next batch, draws it from (seed, epoch, batch) and runs the compiled kernel on it, which
holds no GIL (inductor's C++ wrapper), while the other lanes run theirs on the same factors, without locks: a row two
lanes update at once may lose one of the steps, so the factors then depend on the thread count and on the
scheduling, as implicit's do (one thread keeps its single-stream run, bit for bit).
Without compile, on a CPU with several threads, each batch is cut into one slice per lane (models/factors.py Lanes):
the lanes compute their slices' steps from the same factors with single-threaded operations, then apply them in
slice order, so the result does not depend on the thread count and no thread barrier is paid per operation (on a
shared CPU each one stalls).

As in implicit, the item bias is the item vectors' last column and the user vectors' last column is 1: one gather,
one dot product and one index-add per side carry both the factors and the bias.
"""

from __future__ import annotations

import contextvars
import itertools
import logging
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import lightning
import numpy as np
import torch

from yambda_dl.data import views
from yambda_dl.data.csr import CSR
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
COMPILE_CHOICES = (True, False, "auto")
# compile="auto" compiles the step on a CPU from this many triples per fit (nnz x iterations): compiling takes
# ~10-25 s (2-core machine; a few seconds once inductor's disk cache has it), the compiled step saves ~0.3-0.6 us
# of the eager ~0.6-1.2 us per triple (synthetic small, 1 thread): 100 iterations of small (6.8e7) and 10 of 50m
# (9e7) compile, 10 of small (6.8e6) do not
COMPILE_MIN_TRIPLES = 50_000_000
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
    """The step's constants (torch.compile specialises its kernel on them)."""

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


def sgd_step(factors: tuple[torch.Tensor, torch.Tensor], triples: Triples, settings: StepSettings) -> torch.Tensor:
    """batch_steps, added to the factors in place (index-adds sum a repeated row's steps); returns the summed loss.

    Written as one function so that torch.compile can fuse it: the gathers, ~20 elementwise operations and the two
    index-adds become a few loops over the batch, instead of ~25 passes over (n, d) arrays.
    """
    user_step, item_step, loss = batch_steps(factors, triples, settings)
    factors[0].index_add_(0, triples.users, user_step)
    factors[1].index_add_(0, triples.items, item_step)
    return loss


def compiler_present() -> bool:
    """Whether a C++ compiler is on the PATH (or in $CXX): torch.compile's CPU code generation needs one."""
    return any(shutil.which(name) for name in (os.environ.get("CXX", ""), "c++", "g++", "clang++") if name)


def compiled_sgd_step(release_gil: bool = False) -> Callable[..., torch.Tensor]:
    """sgd_step through torch.compile (inductor), its CPU loops single-threaded: no atomic adds racing between
    threads, so a run repeats itself bit for bit (and a resumed run the uninterrupted one). Compiled on first call,
    once per batch shape and settings; inductor caches the result on disk for later processes.

    release_gil: through inductor's C++ wrapper (cpp_wrapper), which runs the whole step without Python's GIL, so
    that lanes run it side by side (the default Python wrapper calls the kernel holding the GIL: two lanes then took
    3x one lane's time, measured); its first compilation takes a little longer (43 s against 36 s with an empty
    inductor cache, on a loaded 2-core machine)."""
    options: dict[str, object] = {"cpp.threads": 1}
    if release_gil:
        options["cpp_wrapper"] = True
    return torch.compile(sgd_step, dynamic=False, fullgraph=True, options=options)


@contextmanager
def single_thread(device: torch.device) -> Iterator[None]:
    """torch's CPU threads at 1 while the compiled step runs: its kernel is single-threaded, and the sampler's small
    operations would otherwise meet at a thread barrier each (on a shared CPU each one stalls: 2.15x implicit's time
    at 2 threads against 0.83x at 1, measured beside other work)."""
    threads = torch.get_num_threads()
    if device.type != "cpu" or threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def pad_triples(triples: Triples, size: int) -> Triples:
    """Triples padded to `size` with skipped ones (user 0, items 0, kept 0: a zero step), so that the last, smaller
    batch of an epoch runs the kernel compiled for the others."""
    n = len(triples.users)
    if n == size:
        return triples
    pad = triples.users.new_zeros(size - n)
    return Triples(
        torch.cat([triples.users, pad]),
        torch.cat([triples.items[:n], pad, triples.items[n:], pad]),
        torch.cat([triples.kept, triples.kept.new_zeros(size - n)]),
    )


class BPR(FactorVectors, lightning.LightningModule):
    """Bayesian Personalised Ranking on the binary user x item matrix; ranked through user/item vectors.

    With item_bias, the item vectors carry the bias as a last column and the user vectors a column of ones.
    Keys as implicit names them: factors, regularization, iterations (epochs), verify_negatives (skip a triple whose
    negative the user has); lr is implicit's learning_rate, named as SASRec and torch's optimizers name it; plus
    batch_size (triples updated together), negatives, and init_scale: factors start uniform in
    [-init_scale / 2, init_scale / 2) / factors (implicit's start at 1.0), biases at 0. memory_fraction: the share
    of the device's free memory the sampler may take. compile: true, false or auto, whether the step runs through
    torch.compile (auto: on a CPU with a C++ compiler when nnz x iterations >= COMPILE_MIN_TRIPLES).
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
        compile: bool | str = "auto",
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
        if compile not in COMPILE_CHOICES:
            raise ValueError(f"BPR compile must be one of true, false, auto; got {compile!r}")
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
        self.ckpt_path, self.memory_fraction, self.compile_step = ckpt_path, memory_fraction, compile
        self.init, self.reduce, self.column, self.init_std = init, reduce, column, init_std
        self.automatic_optimization = False  # implicit's SGD rule, applied in place: no autograd graph
        # (users, factors [+ 1]) and (items, factors [+ 1]): with item_bias, a column of ones and the biases
        self.user_factors: torch.nn.Parameter | None = None
        self.item_factors: torch.nn.Parameter | None = None
        self._matrix: CSR | None = None
        self._sampler: TripleSampler | None = None
        self._lanes: Lanes | None = None
        self._step: Callable[..., torch.Tensor] | None = None  # the compiled sgd_step, while fitting with it

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
            self._matrix = self._sampler = self._lanes = self._step = None  # only needed while fitting
        return self

    def on_fit_start(self) -> None:
        """The sampler on the device (16 bytes per nonzero; up to ~38 more for what verifies negatives); on a CPU with
        several threads, the lanes; the compiled step where it compiles."""
        self._sampler = TripleSampler.build(
            self._matrix, self.device, self.negatives, self.verify_negatives, self.memory_fraction
        )
        self._lanes = cpu_lanes(self.device)
        if self.compiles(self.device, self._matrix.nnz):
            self._step = self._compiled_step()

    def _compiled_step(self) -> Callable[..., torch.Tensor] | None:
        """compiled_sgd_step, compiled here (before the first epoch) on a batch of skipped triples, a zero step; with
        lanes, the GIL-free variant, compiled on a lane in this thread's context (dynamo's guards check the calling
        thread's grad mode: the lanes then run what was compiled). Where compiling fails (no working compiler, an
        unsupported platform), compile=true raises and auto returns None, with a warning: the eager step trains
        instead."""
        step = compiled_sgd_step(release_gil=self._lanes is not None)
        size = min(self.batch_size, self._sampler.nnz)
        index = torch.zeros(2 * size, dtype=torch.int64, device=self.device)
        skipped = Triples(index[:size], index, torch.zeros(size, device=self.device))

        def compile_step() -> None:
            with torch.no_grad(), single_thread(self.device):
                step((self.user_factors, self.item_factors), skipped, self.step_settings)

        try:
            if self._lanes is None:
                compile_step()
            else:  # in this thread's context: inductor's config overrides (config.patch) are context variables
                context = contextvars.copy_context()
                self._lanes.run([lambda: context.run(compile_step)])
        except Exception as error:  # whatever inductor or the compiler raised: auto falls back to the eager step
            if self.compile_step is True:
                raise
            first = next((line for line in str(error).splitlines() if line.strip()), "")
            log.warning("BPR: torch.compile failed (%s: %s); training with the eager step", type(error).__name__, first)
            return None
        return step

    def compiles(self, device: torch.device, nnz: int) -> bool:
        """Whether this fit runs the compiled sgd_step: `compile` true, or auto on a CPU with a C++ compiler and
        enough triples (nnz x iterations) to repay the compilation."""
        if self.compile_step != "auto":
            return bool(self.compile_step)
        return device.type == "cpu" and nnz * self.iterations >= COMPILE_MIN_TRIPLES and compiler_present()

    def epoch_generator(self, epoch: int) -> torch.Generator:
        """The generator of one epoch's draws, from (seed, epoch) alone: a resumed run draws what the uninterrupted
        one drew, whatever ran before."""
        state = int(np.random.SeedSequence([self.seed, epoch]).generate_state(1, np.uint64)[0] >> 1)
        return torch.Generator(device=self.device).manual_seed(state)

    def batch_generator(self, epoch: int, batch: int) -> torch.Generator:
        """The generator of one batch's draws in a Hogwild epoch, from (seed, epoch, batch) alone: whichever lane
        takes the batch draws the same triples."""
        state = int(np.random.SeedSequence([self.seed, epoch, batch]).generate_state(1, np.uint64)[0] >> 1)
        return torch.Generator(device=self.device).manual_seed(state)

    def training_step(self, step: int, batch_idx: int) -> None:
        """One epoch: nnz triples in batches of batch_size (the last one smaller), one SGD update per batch."""
        with torch.no_grad(), torch.autocast(self.device.type, enabled=False):
            if self._step is not None and self._lanes is not None:
                loss_sum, kept_sum = self._hogwild_epoch(self.current_epoch)
            else:
                loss_sum, kept_sum = self._epoch(self.current_epoch)
        # the mean BPR loss of the epoch's kept triples, each before its batch's step
        loss = loss_sum / kept_sum.clamp_min(1.0)
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=1)
        self.optimizers().step()  # moves Lightning's global step (checkpoints key on it); changes no factor

    def _epoch(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One epoch in a single stream of batches (the summed loss and kept count): the compiled kernel, or the eager
        step (on a CPU with several threads, each batch's slices computed on the lanes, then applied)."""
        sampler, generator = self._sampler, self.epoch_generator(epoch)
        loss_sum = torch.zeros((), device=self.device)
        kept_sum = torch.zeros((), device=self.device)
        factors, settings = (self.user_factors, self.item_factors), self.step_settings
        with single_thread(self.device) if self._step is not None else nullcontext():
            for start in range(0, sampler.nnz, self.batch_size):
                drawn = sampler.draw(min(self.batch_size, sampler.nnz - start), generator)
                if self._step is not None:  # one compiled kernel; the last batch padded to the compiled shape
                    triples = pad_triples(sampler.resolve(*drawn), min(self.batch_size, sampler.nnz))
                    loss_sum += self._step(factors, triples, settings)
                    kept_sum += triples.kept.sum()
                    continue
                if self._lanes is None:
                    steps = [self._batch_steps(sampler.resolve(*drawn))]
                else:  # the batch's slices computed side by side from the same factors, then applied
                    slices = zip(*(part.tensor_split(self._lanes.lanes) for part in drawn), strict=True)
                    steps = self._lanes.map(lambda part: self._batch_steps(sampler.resolve(*part)), slices)
                self._apply_steps(steps)
                loss_sum += sum(step.loss for step in steps)
                kept_sum += sum(step.kept for step in steps)
        return loss_sum, kept_sum

    @property
    def step_settings(self) -> StepSettings:
        return StepSettings(self.lr, self.regularization, self.item_bias)

    def _hogwild_epoch(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One epoch of the compiled step on every lane at once (the summed loss and kept count): each lane takes
        the next batch number from a shared counter (next() on itertools.count is atomic under the GIL), draws it
        and runs the GIL-free kernel on it, in place on the shared factors without locks, as implicit's threads do.
        A lane that is descheduled delays its own batch only; the lanes meet once an epoch."""
        sampler, step, settings = self._sampler, self._step, self.step_settings
        size = min(self.batch_size, sampler.nnz)
        batches, counter = -(-sampler.nnz // size), itertools.count()
        factors = (self.user_factors, self.item_factors)

        def lane() -> tuple[torch.Tensor, torch.Tensor]:
            loss, kept = torch.zeros((), device=self.device), torch.zeros((), device=self.device)
            # grad mode and autocast are per thread: the lane's own, as when the kernel was compiled there
            with torch.no_grad(), torch.autocast(self.device.type, enabled=False):
                while (batch := next(counter)) < batches:
                    drawn = sampler.draw(min(size, sampler.nnz - batch * size), self.batch_generator(epoch, batch))
                    triples = pad_triples(sampler.resolve(*drawn), size)  # the compiled shape
                    loss += step(factors, triples, settings)
                    kept += triples.kept.sum()
            return loss, kept

        # each lane in a copy of this thread's context, as the kernel was compiled (inductor's config overrides)
        contexts = [contextvars.copy_context() for _ in range(self._lanes.lanes)]
        sums = self._lanes.map(lambda k: contexts[k].run(lane), range(self._lanes.lanes))
        return sum(loss for loss, _ in sums), sum(kept for _, kept in sums)

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
