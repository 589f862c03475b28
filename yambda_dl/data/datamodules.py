"""The Lightning DataModule of sequence models: user sequences streamed from sequential Parquet, shuffled, padded.

Each epoch, the users (rows of data/sequences.py's file) are put in a seeded random order of row groups with a random
rotation, and that order is cut into equal contiguous ranges, one per (DDP rank, dataloader worker) shard: every
user is read by exactly one shard, once per epoch, and shard sizes differ by at most one user. A shard reads only
the row groups of its range and mixes users through a shuffle buffer (a block of at least `shuffle_buffer` users is
shuffled and cut into batches; the partial last batch waits for the next block). Every shard yields the same number
of batches (a short one ends with empty batches) so that DDP ranks step together.
Memory per shard: the shuffle buffer, 4 * (max_len + 1) bytes per buffered user (twice that with timestamps), plus
one row group.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import lightning
import numpy as np
import pyarrow.parquet as pq
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from yambda_dl.data.sequences import PAD, right_aligned, user_sequences

if TYPE_CHECKING:
    from yambda_dl.data.split import Split


@dataclass(frozen=True)
class Shard:
    """This reader's place among all readers: DDP rank x dataloader worker."""

    rank: int = 0
    world_size: int = 1
    worker: int = 0
    num_workers: int = 1

    @property
    def index(self) -> int:
        return self.rank * self.num_workers + self.worker

    @property
    def count(self) -> int:
        return self.world_size * self.num_workers


def _epoch_rng(seed: int, epoch: int) -> np.random.Generator:
    return np.random.default_rng([seed, epoch])


class SequenceDataset(IterableDataset):
    """Batches {"user_idx": int64 (b,), "items": int64 (b, L)} of each user's last `width` events, right-aligned,
    and "timestamps" int64 (b, L) aligned with the items when `timestamps` (the file must have the column).

    L is the batch's longest sequence (at most `width`), PAD (-1) fills the left. Set `epoch` before iterating: the
    order is a function of (seed, epoch) only, so a resumed run sees the same batches as one that ran through.
    """

    def __init__(
        self,
        path: Path,
        width: int,
        batch_size: int,
        shuffle_buffer: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        num_workers: int = 0,
        timestamps: bool = False,
    ) -> None:
        if batch_size < 1 or shuffle_buffer < 0 or width < 1:
            raise ValueError(
                f"need batch_size >= 1, shuffle_buffer >= 0 and width >= 1; got {batch_size}, {shuffle_buffer}, {width}"
            )
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside 0..{world_size - 1}")
        self.path, self.width, self.batch_size, self.shuffle_buffer = Path(path), width, batch_size, shuffle_buffer
        self.seed, self.rank, self.world_size, self.num_workers = seed, rank, world_size, num_workers
        self.timestamps = timestamps
        source = pq.ParquetFile(self.path)
        if timestamps and "timestamp" not in source.schema_arrow.names:
            raise ValueError(f"{self.path}: no 'timestamp' column (write it with user_sequences(..., timestamps=True))")
        metadata = source.metadata
        self.group_sizes = np.array([metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)])
        self.num_users = int(self.group_sizes.sum())
        self.epoch = 0

    @property
    def batches_per_shard(self) -> int:
        """Batches every shard yields: enough for the largest shard, ceil(num_users / shards) users."""
        shards = self.world_size * max(self.num_workers, 1)
        largest = math.ceil(self.num_users / shards)
        return math.ceil(largest / self.batch_size)

    def __len__(self) -> int:
        """Batches per rank (what Lightning counts as an epoch's steps)."""
        return max(self.num_workers, 1) * self.batches_per_shard

    def _shard(self) -> Shard:
        info = get_worker_info()
        if info is None:
            return Shard(self.rank, self.world_size)
        return Shard(self.rank, self.world_size, info.id, info.num_workers)

    def _pieces(self, shard: Shard, rng: np.random.Generator) -> list[tuple[int, int, int]]:
        """(row group, first row, stop row) pieces of this shard's range of the epoch's user order."""
        order = rng.permutation(len(self.group_sizes))
        starts = np.concatenate([[0], np.cumsum(self.group_sizes[order])])
        rotation = int(rng.integers(self.num_users)) if self.num_users else 0
        first = shard.index * self.num_users // shard.count + rotation
        stop = (shard.index + 1) * self.num_users // shard.count + rotation
        pieces = []
        # the range is [first, stop) of the order rotated by `rotation`: at most two unrotated runs
        for lo, hi in (
            (first, min(stop, self.num_users)),
            (max(first, self.num_users) - self.num_users, stop - self.num_users),
        ):
            for pos in range(len(order)):  # row groups, not users: a few thousand at 5B
                a, b = max(lo, starts[pos]), min(hi, starts[pos + 1])
                if a < b:
                    pieces.append((int(order[pos]), int(a - starts[pos]), int(b - starts[pos])))
        return pieces

    def _rows(self, pieces: list[tuple[int, int, int]]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(user_idx, right-aligned values) of each piece, reading one row group at a time; values are (n, width)
        items, or (n, 2, width) items and timestamps."""
        source = pq.ParquetFile(self.path)
        columns = ["user_idx", "item_idx", *(["timestamp"] if self.timestamps else [])]
        for group, a, b in pieces:
            table = source.read_row_group(group, columns=columns).slice(a, b - a)
            values = right_aligned(table["item_idx"], self.width)
            if self.timestamps:
                values = np.stack([values, right_aligned(table["timestamp"], self.width)], axis=1)
            yield table.column("user_idx").to_numpy().astype(np.int64), values

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        shard = self._shard()
        rng = _epoch_rng(self.seed, self.epoch)  # the same on every shard: they must agree on the order
        local = np.random.default_rng([self.seed, self.epoch, shard.index + 1])  # this shard's buffer shuffle
        users, items = np.zeros(0, np.int64), self._empty()
        yielded = 0
        for piece_users, piece_items in self._rows(self._pieces(shard, rng)):
            users, items = np.concatenate([users, piece_users]), np.concatenate([items, piece_items])
            if len(users) >= max(self.shuffle_buffer, self.batch_size):
                users, items, batches = self._drain(users, items, local, keep_partial=True)
                yield from batches
                yielded += len(batches)
        users, items, batches = self._drain(users, items, local, keep_partial=False)
        yield from batches
        yielded += len(batches)
        for _ in range(self.batches_per_shard - yielded):  # a short shard keeps the ranks in step
            yield self._batch(np.zeros(0, np.int64), self._empty())

    def _drain(
        self, users: np.ndarray, items: np.ndarray, rng: np.random.Generator, keep_partial: bool
    ) -> tuple[np.ndarray, np.ndarray, list[dict[str, torch.Tensor]]]:
        """Shuffle the buffer and cut it into batches; a partial last batch stays buffered when `keep_partial`."""
        perm = rng.permutation(len(users))
        users, items = users[perm], items[perm]
        full = len(users) // self.batch_size * self.batch_size
        cut = full if keep_partial else len(users)
        batches = [
            self._batch(users[i : i + self.batch_size], items[i : i + self.batch_size])
            for i in range(0, cut, self.batch_size)  # batches, not users
        ]
        return users[cut:], items[cut:], batches

    def _empty(self) -> np.ndarray:
        return np.zeros((0, 2, self.width) if self.timestamps else (0, self.width), np.int32)

    def _batch(self, users: np.ndarray, values: np.ndarray) -> dict[str, torch.Tensor]:
        """Drop the columns that are PAD in every row: a batch of short histories costs its own length."""
        items = values[:, 0] if self.timestamps else values
        filled = (items != PAD).any(axis=0)
        first = int(np.argmax(filled)) if filled.any() else self.width - 2  # an empty batch: one input column
        batch = {"user_idx": torch.from_numpy(users), "items": torch.from_numpy(items[:, first:].astype(np.int64))}
        if self.timestamps:
            batch["timestamps"] = torch.from_numpy(values[:, 1, first:].astype(np.int64))
        return batch


class SequenceDataModule(lightning.LightningDataModule):
    """Training batches of the split's user sequences: the last `max_len` + 1 train events (inputs and targets)."""

    def __init__(
        self,
        split: Split,
        max_len: int,
        batch_size: int,
        shuffle_buffer: int,
        num_workers: int = 0,
        seed: int = 0,
        timestamps: bool = False,
    ) -> None:
        super().__init__()
        if max_len < 1 or num_workers < 0:
            raise ValueError(f"need max_len >= 1 and num_workers >= 0; got {max_len}, {num_workers}")
        self.split, self.max_len, self.batch_size = split, max_len, batch_size
        self.shuffle_buffer, self.num_workers, self.seed, self.timestamps = (
            shuffle_buffer,
            num_workers,
            seed,
            timestamps,
        )
        self.train_set: SequenceDataset | None = None

    def prepare_data(self) -> None:
        """Write the sequence file once (Lightning calls this on one process per node)."""
        user_sequences(self.split, self.max_len + 1, self.timestamps)

    def setup(self, stage: str | None = None) -> None:
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)
        self.train_set = SequenceDataset(
            user_sequences(self.split, self.max_len + 1, self.timestamps),
            width=self.max_len + 1,  # max_len inputs, each followed by its target
            batch_size=self.batch_size,
            shuffle_buffer=self.shuffle_buffer,
            seed=self.seed,
            rank=rank,
            world_size=world,
            num_workers=self.num_workers,
            timestamps=self.timestamps,
        )

    def set_epoch(self, epoch: int) -> None:
        """The epoch whose order the next iteration yields (workers copy the dataset when an epoch starts)."""
        if self.train_set is not None:
            self.train_set.epoch = epoch

    def train_dataloader(self) -> DataLoader:
        if self.train_set is None:
            self.setup("fit")
        # Lightning asks for the loader once and iterates it before the first epoch's hooks: a resumed run
        # must start from the restored epoch's order
        self.set_epoch(self.trainer.current_epoch if self.trainer else 0)
        return DataLoader(
            self.train_set,
            batch_size=None,  # the dataset batches: whole padded batches per shard
            num_workers=self.num_workers,
            persistent_workers=False,  # workers must copy the dataset, with its new epoch, every epoch
            pin_memory=bool(self.trainer) and self.trainer.strategy.root_device.type == "cuda",
            generator=torch.Generator().manual_seed(self.seed),  # leave the global RNG untouched
        )
