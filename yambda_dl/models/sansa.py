"""SANSA (docs/protocol.md, SANSA): the reference `sansa` package's sparse approximate EASE behind our contract.

Paper settings: l2 = 10, weight density 5e-5, on the train user x item count matrix, with the upstream ICF
factorizer and UMR inverter. The package computes the item x item Gram matrix X^T X, which is what kept upstream
from running 50M listens in 100 GB; before fitting we estimate that matrix's memory for the split at hand and refuse,
with the numbers, when it cannot fit. Scores X_u W^T W_r are ranked by the shared retrieval's running top-k (ties to
the lower item index), so every user gets k items even where the weights are sparse; the user's input items are
masked only when `mask_input` is set. `sansa` is an optional extra (it needs scikit-sparse and SuiteSparse): without
it, fit() raises OptionalDependencyError before any work, which a sweep records as a refusal.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import importlib.util
from collections.abc import Iterator
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import torch
from torch import Tensor

from yambda_dl.data import views
from yambda_dl.data.csr import CSR
from yambda_dl.models.base import NotFittedError, OptionalDependencyError, check_k
from yambda_dl.retrieval import by_user_tiles, topk_over_score_tiles
from yambda_dl.sparse import matmul
from yambda_dl.utils.memory import DEFAULT_FRACTION, available_bytes

if TYPE_CHECKING:
    from sansa import SANSAConfig

    from yambda_dl.data.split import Split

# Peak bytes per Gram nonzero inside sansa's ICF path: scipy's product (int32 index + float32 value), a float32 copy
# of the values for the column norms, then the int64 index copy ICF makes while the int32 one is still alive.
GRAM_BYTES_PER_NONZERO = 16

# the optional extra's import names: the package, and scikit-sparse (CHOLMOD, for the ICF factorizer) that it needs
EXTRA_MODULES = ("sansa", "sksparse")
INSTALL_HINT = (
    "run `make setup-sansa` (SuiteSparse from apt, then scikit-sparse 0.4.16 and sansa), "
    'or pip install ".[sansa]" after installing libsuitesparse-dev'
)


def check_extra_installed() -> None:
    """Refuse with OptionalDependencyError when the `sansa` extra's packages cannot be found (nothing is imported)."""
    missing = [name for name in EXTRA_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        raise OptionalDependencyError(
            f"model=sansa needs the optional `sansa` extra ({', '.join(missing)} not installed): {INSTALL_HINT}"
        )


class GramEstimate(NamedTuple):
    """Nonzeros of X^T X: an estimate (exact when every item was counted) and a cheap upper bound; bytes at peak."""

    nonzeros: float
    upper_bound: float
    exact: bool

    @property
    def bytes(self) -> float:
        return self.nonzeros * GRAM_BYTES_PER_NONZERO


def estimate_gram_nonzeros(matrix: CSR, samples: int = 64, seed: int = 0) -> GramEstimate:
    """Nonzeros of X^T X for a users x items CSR X, without forming it.

    Row i of X^T X holds c_i = the distinct items of i's users, at most b_i = min(num_items, sum of their distinct
    item counts). With more items than `samples`, items are drawn with probability proportional to b_i and the
    total is estimated as sum(b) * mean(c_i / b_i) (an unbiased importance-sampling estimate whose ratio lies in
    (0, 1], hence low variance); otherwise every row is counted exactly. Memory: one bool per item plus the
    largest sampled row's gathered entries.
    """
    num_items = matrix.shape[1]
    items = matrix.transpose()
    distinct = matrix.lengths().astype(np.float64)
    bound = np.minimum(np.bincount(items.row_ids(), distinct[items.indices], num_items), num_items)
    exact = num_items <= samples
    rng = np.random.default_rng(seed)
    chosen = np.arange(num_items) if exact else rng.choice(num_items, samples, p=bound / bound.sum())
    pattern = matrix.with_values(None)  # selecting rows then copies no values
    seen = np.zeros(num_items, dtype=bool)
    co_items = np.zeros(len(chosen))
    for n, item in enumerate(chosen):  # a loop over at most `samples` items, each a vectorized gather
        seen[pattern.select(items.rows(item, item + 1).indices).indices] = True
        co_items[n] = np.count_nonzero(seen)
        seen[:] = False
    total = co_items.sum() if exact else bound.sum() * np.mean(co_items / bound[chosen])
    return GramEstimate(float(total), float(bound.sum()), exact)


@contextlib.contextmanager
def frozen_heap() -> Iterator[None]:
    """The objects alive now set aside from Python's garbage collector while the block runs (gc.freeze).

    The sansa package calls gc.collect() about 36 times per fit, and each call walks every live object: 0.6 s each in
    a process that has torch and polars loaded, 22 s of a 22 s fit on an 8-user split (profiled). Frozen, the
    collections walk only what the fit itself creates; the frozen objects return to the collector after it.
    """
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


class SANSA:
    """The sparse approximate EASE of the `sansa` package (paper: l2 10, weight density 5e-5, count matrix).

    mask_input: give the user's own train items no rank (upstream's option; off in the paper's protocol).
    scans / finetune_steps: the UMR inverter's settings (upstream's script: 1 and 15). factorization_shift_step /
    factorization_shift_multiplier: when the incomplete Cholesky factorisation of the Gram matrix fails, it is retried
    with l2 + step * multiplier ** attempt on the diagonal (upstream's script: 1e-3 and 2). memory_limit_gb: the most
    the Gram matrix may take (null = memory_fraction, 80%, of the memory available when fitting). estimate_samples:
    items sampled for the Gram estimate. user_tile / item_tile / device: the scoring tiles and where they run.
    """

    def __init__(
        self,
        l2: float = 10.0,
        weight_density: float = 5e-5,
        mask_input: bool = False,
        scans: int = 1,
        finetune_steps: int = 15,
        factorization_shift_step: float = 1e-3,
        factorization_shift_multiplier: float = 2.0,
        memory_limit_gb: float | None = None,
        memory_fraction: float = DEFAULT_FRACTION,
        estimate_samples: int = 64,
        user_tile: int = 1024,
        item_tile: int = 262_144,
        device: str = "cpu",
    ) -> None:
        if l2 <= 0 or not 0 < weight_density <= 1:
            raise ValueError(f"SANSA needs l2 > 0 and 0 < weight_density <= 1; got l2={l2}, {weight_density}")
        if factorization_shift_step <= 0 or factorization_shift_multiplier <= 1:  # else a failing ICF retries forever
            raise ValueError(
                "SANSA needs factorization_shift_step > 0 and factorization_shift_multiplier > 1; got "
                f"factorization_shift_step={factorization_shift_step}, "
                f"factorization_shift_multiplier={factorization_shift_multiplier}"
            )
        if min(user_tile, item_tile, estimate_samples) < 1:
            raise ValueError(
                f"user_tile={user_tile}, item_tile={item_tile}, estimate_samples={estimate_samples} must be >= 1"
            )
        self.l2, self.weight_density, self.mask_input = l2, weight_density, mask_input
        self.scans, self.finetune_steps = scans, finetune_steps
        self.factorization_shift_step = factorization_shift_step
        self.factorization_shift_multiplier = factorization_shift_multiplier
        self.memory_limit_gb, self.estimate_samples = memory_limit_gb, estimate_samples
        self.memory_fraction = memory_fraction
        self.user_tile, self.item_tile, self.device = user_tile, item_tile, torch.device(device)
        self.gram: GramEstimate | None = None
        self.num_items: int | None = None
        # torch forms on `device`, float32 values
        self._inputs: CSR | None = None  # X: users x items counts
        self._encoder: CSR | None = None  # W^T: items x items
        self._decoder_t: CSR | None = None  # W_r^T: items x items, so that an item tile is a row slice

    def check_gram_fits(self, counts: CSR) -> GramEstimate:
        """Estimate the Gram matrix's memory and refuse, with the numbers, when it exceeds the limit."""
        gram = estimate_gram_nonzeros(counts, self.estimate_samples)
        if self.memory_limit_gb is None:
            limit = self.memory_fraction * available_bytes()
            source = f"{self.memory_fraction:.0%} of the memory available now"
        else:
            limit, source = self.memory_limit_gb * 2**30, f"memory_limit_gb={self.memory_limit_gb}"
        if gram.bytes > limit:
            raise MemoryError(
                f"SANSA's Gram matrix X^T X for {counts.shape[1]:,} items would hold ~{gram.nonzeros:.3g} nonzeros "
                f"({'exact' if gram.exact else 'estimated'}; upper bound {gram.upper_bound:.3g}), "
                f"{gram.bytes / 2**30:.1f} GiB at {GRAM_BYTES_PER_NONZERO} bytes each, over the limit of "
                f"{limit / 2**30:.1f} GiB ({source}); use a smaller setup (likes), "
                "a machine with more memory, or ItemKNN"
            )
        return gram

    def reference_config(self) -> SANSAConfig:
        """The `sansa` package's SANSAConfig for these settings (imports the optional extra)."""
        try:  # the optional extra, imported only when SANSA is fitted (it also configures logging on import)
            from sansa import ICFGramianFactorizerConfig, SANSAConfig, UMRUnitLowerTriangleInverterConfig
        except ImportError as err:  # found but broken, e.g. scikit-sparse built against another SuiteSparse
            raise OptionalDependencyError(
                f"model=sansa cannot import its optional `sansa` extra ({err}): {INSTALL_HINT}"
            ) from err
        return SANSAConfig(
            l2=self.l2,
            weight_matrix_density=self.weight_density,
            gramian_factorizer_config=ICFGramianFactorizerConfig(
                factorization_shift_step=self.factorization_shift_step,
                factorization_shift_multiplier=self.factorization_shift_multiplier,
            ),
            lower_triangle_inverter_config=UMRUnitLowerTriangleInverterConfig(
                scans=self.scans, finetune_steps=self.finetune_steps
            ),
        )

    def fit(self, split: Split, trainer: object | None = None) -> SANSA:
        check_extra_installed()  # a missing extra is refused before any work
        counts = views.user_item_matrix(split, "count")
        self.gram = self.check_gram_fits(counts)  # refuse before importing or fitting anything heavy
        config = self.reference_config()
        from sansa import SANSA as Reference  # importable: reference_config imported the package

        with frozen_heap():
            encoder, decoder = Reference(config).fit(counts.to_scipy()).weights  # W^T, W_r: CSR items x items
        self.num_items = split.num_items
        self._inputs = counts.to(self.device)
        self._encoder = CSR.from_scipy(encoder, np.float32).to(self.device)
        self._decoder_t = CSR.from_scipy(decoder.T.tocsr(), np.float32).to(self.device)
        return self

    def scores(self, user_idx: Tensor, start: int = 0, stop: int | None = None) -> Tensor:
        """Dense scores (n, stop - start) of the users for items start..stop-1 (all by default): X_u W^T W_r."""
        self._check_fitted()
        stop = self.num_items if stop is None else stop
        latent = matmul(self._inputs.select(user_idx), self._encoder)
        latent_t = latent.transpose()  # items x n
        return matmul(self._decoder_t.rows(start, stop), latent_t).torch_sparse().to_dense().T

    def recommend(self, user_idx: Tensor, k: int, exclude: CSR | None = None) -> tuple[Tensor, Tensor]:
        """Top-k train items per user, exact over all items (zeros included) in user and item tiles."""
        self._check_fitted()
        check_k(k, self.num_items)

        def rank(users: Tensor, mask: CSR | None) -> tuple[Tensor, Tensor]:
            scorer = functools.partial(self.scores, users)  # (start, stop) -> the tile's scores
            return topk_over_score_tiles(scorer, self.num_items, k, self._mask(users, mask), self.item_tile)

        return by_user_tiles(rank, torch.as_tensor(user_idx, dtype=torch.int64), exclude, self.user_tile)

    def _mask(self, users: Tensor, exclude: CSR | None) -> CSR | None:
        """The caller's mask, joined with the users' own train items when mask_input is set."""
        if not self.mask_input:
            return exclude
        own = self._inputs.select(users).with_values(None).to("cpu")
        if exclude is None:
            return own
        exclude = exclude.to("cpu")
        rows = torch.cat([own.row_ids(), exclude.row_ids()])
        order = torch.argsort(rows, stable=True)
        indptr = torch.zeros(len(users) + 1, dtype=torch.int64)
        torch.cumsum(torch.bincount(rows, minlength=len(users)), 0, out=indptr[1:])
        return CSR(indptr, torch.cat([own.indices, exclude.indices])[order], None, own.shape)

    def _check_fitted(self) -> None:
        if self._inputs is None or self._encoder is None or self._decoder_t is None or self.num_items is None:
            raise NotFittedError("SANSA.recommend() called before fit()")
