"""What the matrix-factorisation models (iALS, BPR) share: their Recommender methods over the factor tables
(FactorVectors, ranking through retrieval.py), the CPU lanes that share a step's pieces between threads, a loader of
training steps, the step counter that lets Lightning checkpoint them and the one-device Trainer check. Their matrix
is the CSR type on the module's device (`CSR.to`, memory checked there); its row chunks and padded row batches are in
yambda_dl/sparse.py.

Both models sample or sweep on the device themselves, so the loader only counts steps: no data crosses the host.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, TypeVar

import lightning
import torch
from torch.utils.data import DataLoader

from yambda_dl.data.embeddings import EMBEDDING_COLUMNS
from yambda_dl.data.schema import EMBEDDING_DIM
from yambda_dl.models.audio import REDUCTIONS, load_audio, reduce_audio
from yambda_dl.models.base import NotFittedError, VectorRecommender
from yambda_dl.retrieval import topk
from yambda_dl.utils.memory import DEFAULT_FRACTION, check_fits

if TYPE_CHECKING:
    from yambda_dl.data.csr import CSR
    from yambda_dl.data.split import Split

T = TypeVar("T")
R = TypeVar("R")


class Lanes:
    """CPU threads that each run single-threaded tensor operations on their own share of the work.

    torch's intra-op threads meet at a barrier after every operation. When another process holds a core, each
    barrier waits for a descheduled thread, so a step made of many mid-sized operations runs many times slower on
    two threads than on one (measured before lanes: BPR at 50x implicit's time, iALS 17x). Lanes split the work
    instead, as implicit's OpenMP loops do: each lane takes whole pieces (row chunks of iALS, slices of a BPR batch)
    from a queue, so a lane that is descheduled delays only its piece, and the pieces meet at one wait. torch
    releases the GIL inside an operation. The work is split into pieces the same way on any number of lanes.
    """

    def __init__(self, lanes: int) -> None:
        self.lanes = lanes
        # each lane's own operations are single-threaded (torch.set_num_threads is per thread under OpenMP)
        self._pool = ThreadPoolExecutor(lanes, "factor-lane", initializer=torch.set_num_threads, initargs=(1,))

    def map(self, work: Callable[[T], R], pieces: Iterable[T]) -> list[R]:
        """work(piece) for every piece, on the lanes; the results in the pieces' order."""
        return list(self._pool.map(work, pieces))

    def run(self, tasks: list[Callable[[], None]]) -> None:
        """Every task on its own lane; returns when all are done (raises the first error)."""
        for future in [self._pool.submit(task) for task in tasks]:
            future.result()

    def shutdown(self) -> None:
        self._pool.shutdown()
        torch.set_num_threads(self.lanes)  # the lanes' setting also reached torch's default for new threads


def cpu_lanes(device: torch.device) -> Lanes | None:
    """Lanes for torch's CPU thread count on the CPU; None (plain whole-tensor operations) on CUDA or one thread."""
    threads = torch.get_num_threads()
    return Lanes(threads) if device.type == "cpu" and threads > 1 else None


def steps_loader(steps: int) -> DataLoader:
    """A loader of `steps` step numbers: one Lightning epoch of `steps` training steps whose work is on the device."""
    return DataLoader(range(steps), batch_size=None, shuffle=False)


def single_device_trainer(trainer: lightning.Trainer | None, max_epochs: int, model: str) -> lightning.Trainer:
    """`trainer`, checked to run on one device, or a quiet CPU Trainer when none is given (tests, notebooks).

    These models update their factors in place on one device, with no gradients for DDP to average: several
    processes would each train their own copy.
    """
    if trainer is None:
        return lightning.Trainer(
            max_epochs=max_epochs,
            accelerator="cpu",
            devices=1,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
    if trainer.world_size > 1:
        raise ValueError(
            f"{model} trains on one device; use trainer=cpu or trainer=gpu, not {trainer.world_size} "
            "processes (trainer=ddp)"
        )
    return trainer


def seeded_uniform(shape: tuple[int, int], low: float, high: float, seed: int) -> torch.Tensor:
    """Uniform [low, high) float32 values drawn on the CPU from `seed`: the same start on every device."""
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=generator) * (high - low) + low


# model.init: how the item factors start. random: the model's seeded draw; audio: the items that have an audio vector
# start from its projection to the factor count (models/audio.py), the others from the random draw
INITS = ("random", "audio")


def check_init(model: str, init: str, reduce: str, column: str, init_std: float | None) -> None:
    """The warm-start keys (init, reduce, column, init_std, as the sequential audio_init names them), checked where
    the model is configured: a one-line error naming the key, the value and the choices."""
    for key, value, choices in (
        ("init", init, INITS),
        ("reduce", reduce, REDUCTIONS),
        ("column", column, EMBEDDING_COLUMNS),
    ):
        if value not in choices:
            raise ValueError(f"{model}: model.{key}={value!r}; valid choices: {', '.join(choices)}")
    if init_std is not None and not init_std > 0:
        raise ValueError(f"{model}: model.init_std={init_std!r} must be > 0 (or null: the random start's scale)")


def audio_start(
    items: torch.Tensor,
    split: Split,
    model: str,
    reduce: str,
    column: str,
    rms: float,
    seed: int,
    memory_fraction: float = DEFAULT_FRACTION,
) -> torch.Tensor:
    """`items` (num_items, d), on the CPU, with the rows of the items that have an audio vector in the split's view
    replaced by the vector's projection to d (PCA or a random projection seeded by `seed`, fitted on the train items
    that have one), scaled so that its entries have root-mean-square `rms`; the other rows keep their values.

    Memory (host): the 128-d content table and the (num_items, d) projection, checked before either is read."""
    num_items, width = items.shape
    check_fits(
        4 * num_items * (EMBEDDING_DIM + 3 * width),
        f"{model}'s audio start (model.init=audio)",
        "cpu",
        memory_fraction,
        detail=f" (the {EMBEDDING_DIM}-d content table of {num_items:,} items and its {width}-d projection)",
        estimate=True,
    )
    vectors, present = load_audio(split, column, num_items, model, owner=f"{model} model.init=audio")
    generator = torch.Generator().manual_seed(seed)
    reduced = reduce_audio(
        vectors, present, width, reduce, rms, generator=generator, key="model.reduce", width="factors"
    )
    out = items.clone()
    out[present] = reduced[present]
    return out


def step_counter(module: torch.nn.Module) -> torch.optim.Optimizer:
    """An optimizer that changes nothing, for configure_optimizers: these models write their updates themselves, but
    Lightning counts global steps by optimizer steps, and ModelCheckpoint saves only when the global step has moved
    (without it a run writes no per-epoch checkpoint). training_step calls `self.optimizers().step()` once."""
    return torch.optim.SGD(module.parameters(), lr=0.0)  # no parameter has a gradient: step() skips them all


def frozen_parameter(values: torch.Tensor) -> torch.nn.Parameter:
    """A parameter that Lightning moves and checkpoints but autograd ignores: these models write their updates out."""
    return torch.nn.Parameter(values, requires_grad=False)


def recommend_by_vectors(
    model: VectorRecommender, user_idx: torch.Tensor, k: int, exclude: CSR | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The Recommender contract for a vector model: (item_idx (n, k), scores (n, k)) on the CPU, via retrieval.py."""
    scores, items = topk(model.user_vectors(torch.as_tensor(user_idx)), model.item_vectors(), k, exclude=exclude)
    return items.cpu(), scores.cpu()


class FactorVectors:
    """The Recommender contract of a model whose vectors are its `user_factors` and `item_factors` rows (iALS, BPR):
    ranked by inner product through retrieval.py (train.py ranks through the vectors directly)."""

    user_factors: torch.Tensor | None
    item_factors: torch.Tensor | None

    def recommend(
        self, user_idx: torch.Tensor, k: int, exclude: CSR | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-k items by inner product of the factors: (item_idx (n, k), scores (n, k)) on the CPU."""
        return recommend_by_vectors(self, user_idx, k, exclude)

    def user_vectors(self, user_idx: torch.Tensor) -> torch.Tensor:
        """(n, dim) factors of the dense users `user_idx`."""
        if self.user_factors is None:
            raise NotFittedError(f"{type(self).__name__}.user_vectors() called before fit()")
        return self.user_factors.detach()[user_idx.to(self.user_factors.device)]

    def item_vectors(self) -> torch.Tensor:
        """(num_items, dim) item factors."""
        if self.item_factors is None:
            raise NotFittedError(f"{type(self).__name__}.item_vectors() called before fit()")
        return self.item_factors.detach()
