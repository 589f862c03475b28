"""What the matrix-factorisation models (iALS, BPR) share: the user x item matrix on the module's device (memory
checked there, host or CUDA) with its row chunks as torch CSR tensors, batches of its rows that bound memory, the CPU
lanes that share a step's pieces between threads, a loader of training steps, the step counter that lets Lightning
checkpoint them, the one-device Trainer check, and ranking through retrieval.py.

Both models sample or sweep on the device themselves, so the loader only counts steps: no data crosses the host.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import lightning
import numpy as np
import torch
from torch.utils.data import DataLoader

from yambda_dl.data.views import SparseMatrix
from yambda_dl.models.base import VectorRecommender
from yambda_dl.retrieval import CSR, topk
from yambda_dl.utils.memory import DEFAULT_FRACTION, check_fits

T = TypeVar("T")
R = TypeVar("R")

# indptr, indices (int64: what torch's index kernels take) and float32 values on the device
DEVICE_BYTES_PER_NONZERO = 12


@dataclass(frozen=True)
class DeviceCSR:
    """A CSR matrix as torch tensors on one device; row r's columns are indices[indptr[r]:indptr[r + 1]], ascending."""

    indptr: torch.Tensor  # int64 (rows + 1,)
    indices: torch.Tensor  # int64 (nnz,)
    values: torch.Tensor  # float32 (nnz,)
    shape: tuple[int, int]

    @classmethod
    def from_matrix(cls, matrix: SparseMatrix, device: torch.device, fraction: float = DEFAULT_FRACTION) -> DeviceCSR:
        """Copy a SparseMatrix to `device`, refused over `fraction` of its free memory. Memory there: 12 bytes per
        nonzero plus 8 per row."""
        check_fits(matrix.nnz * DEVICE_BYTES_PER_NONZERO, "the matrix on the device", device, fraction)
        return cls(
            torch.from_numpy(matrix.indptr).to(device),
            torch.from_numpy(matrix.indices).to(device, torch.int64),
            torch.from_numpy(matrix.values).to(device),
            matrix.shape,
        )

    @property
    def nnz(self) -> int:
        return self.indices.numel()

    def rows(self, start: int, stop: int) -> DeviceCSR:
        """Rows [start, stop) as a CSR of their own: views of the columns and values, a new (small) indptr."""
        first, last = int(self.indptr[start]), int(self.indptr[stop])
        return DeviceCSR(
            self.indptr[start : stop + 1] - first,
            self.indices[first:last],
            self.values[first:last],
            (stop - start, self.shape[1]),
        )

    def sparse(self, values: torch.Tensor | None = None) -> torch.Tensor:
        """This matrix as a torch sparse CSR tensor (for sparse.mm / sampled_addmm), with `values` in place of
        its own when given: the same structure, no copy of the indices."""
        return torch.sparse_csr_tensor(
            self.indptr,
            self.indices,
            self.values if values is None else values,
            self.shape,
            check_invariants=False,  # built from a valid CSR; checking would cost a pass over the matrix each call
        )


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


@dataclass(frozen=True)
class RowBatch:
    """Rows of similar length, padded to one length: the unit a solver works on.

    Rows are padded with column `pad_column` (a zero row the caller appends to the factors) and value 0, so that
    padding adds nothing to any sum.
    """

    rows: torch.Tensor  # int64 (r,)
    columns: torch.Tensor  # int64 (r, length)
    values: torch.Tensor  # float32 (r, length); 0 on padding


def length_sorted_batches(indptr: np.ndarray, batch_rows: int, batch_nonzeros: int) -> list[tuple[int, int, int]]:
    """Batches over the rows ordered by length: (start, stop, padded length) in `length_order(indptr)` positions.

    A new batch starts where the row count reaches batch_rows, the nonzeros pass a multiple of batch_nonzeros, or the
    row length crosses a power of two: rows of one batch differ in length by less than 2x, so padding at most
    doubles a batch, which holds about batch_nonzeros nonzeros (at least one row). Vectorized: no loop over rows.
    """
    lengths = np.sort(np.diff(indptr))
    if len(lengths) == 0:
        return []
    length_class = np.floor(np.log2(np.maximum(lengths, 1))).astype(np.int64)
    nonzeros_before = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    position = np.arange(len(lengths))
    keys = np.stack([position // batch_rows, nonzeros_before // batch_nonzeros, length_class])
    starts = np.flatnonzero(np.concatenate([[True], (keys[:, 1:] != keys[:, :-1]).any(axis=0)]))
    stops = np.append(starts[1:], len(lengths))
    return [(int(a), int(b), max(int(lengths[b - 1]), 1)) for a, b in zip(starts, stops, strict=True)]


def row_chunks(indptr: np.ndarray, batch_rows: int, batch_nonzeros: int) -> list[tuple[int, int]]:
    """Contiguous row ranges (start, stop) of at most batch_rows rows and about batch_nonzeros nonzeros (at least
    one row each), in row order: the unit of the sparse-kernel CG, whose work memory grows with the rows' count."""
    lengths = np.diff(indptr)
    if len(lengths) == 0:
        return []
    nonzeros_before = indptr[:-1] - indptr[0]
    position = np.arange(len(lengths))
    keys = np.stack([position // batch_rows, nonzeros_before // batch_nonzeros])
    starts = np.flatnonzero(np.concatenate([[True], (keys[:, 1:] != keys[:, :-1]).any(axis=0)]))
    stops = np.append(starts[1:], len(lengths))
    return [(int(a), int(b)) for a, b in zip(starts, stops, strict=True)]


def length_order(indptr: np.ndarray) -> np.ndarray:
    """The rows by ascending length (stable), the order `length_sorted_batches` counts in."""
    return np.argsort(np.diff(indptr), kind="stable")


def padded_rows(matrix: DeviceCSR, rows: torch.Tensor, length: int, pad_column: int) -> RowBatch:
    """The rows' columns and values as (r, length) blocks; entries past a row's end get pad_column and 0.

    Memory: 12 bytes per padded entry (columns and values), on the matrix's device.
    """
    starts = matrix.indptr[rows]
    lengths = matrix.indptr[rows + 1] - starts
    offsets = torch.arange(length, device=rows.device)
    inside = offsets[None, :] < lengths[:, None]
    positions = torch.where(inside, starts[:, None] + offsets[None, :], 0)  # 0: any valid position, masked below
    columns = torch.where(inside, gather_rows(matrix.indices, positions), pad_column)
    values = torch.where(inside, gather_rows(matrix.values, positions), 0.0)
    return RowBatch(rows, columns, values)


def gather_rows(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """table[index] for a 2-D index (shape index.shape + table.shape[1:]) through index_select, which runs
    several times faster than advanced indexing on the CPU."""
    return table.index_select(0, index.reshape(-1)).view(*index.shape, *table.shape[1:])


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
