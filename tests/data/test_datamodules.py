"""The streaming sequence dataset: every user exactly once per epoch over workers and ranks, seeded order, padding.

The 2-process DDP check runs the real Trainer in tests/models/sequential/test_ddp.py.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from yambda_dl.data.datamodules import SequenceDataModule, SequenceDataset
from yambda_dl.data.layout import DatasetLayout
from yambda_dl.data.sequences import PAD, ROW_GROUP_USERS, scoring_matrix, user_sequences
from yambda_dl.data.split import Protocol, make_split

from ..conftest import TEST_START, listen, write_flat

NUM_USERS = 2 * ROW_GROUP_USERS + 37  # three row groups, the last one short


def many_users_split(root, num_users: int = NUM_USERS):
    """Users 1..n with 1..9 events each over items 1..50; every user has a test-day target."""
    rng = np.random.default_rng(3)
    layout = DatasetLayout(root / "yambda", "hand")
    rows = []
    for uid in range(1, num_users + 1):  # test data, written once
        items = rng.integers(1, 51, size=uid % 9 + 1)
        rows += [listen(uid, 1_000_000 + 5 * i, int(item)) for i, item in enumerate(items)]
        rows.append(listen(uid, TEST_START, int(items[-1])))
    write_flat(layout, "listens", rows)
    return make_split(layout, Protocol(), cache_dir=root / "cache", progress=False)


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    return many_users_split(tmp_path_factory.mktemp("sequences"))


def dataset(split, width=4, batch_size=64, shuffle_buffer=300, **kwargs) -> SequenceDataset:
    return SequenceDataset(user_sequences(split, width), width, batch_size, shuffle_buffer, seed=5, **kwargs)


def epoch_batches(data: SequenceDataset, epoch: int, num_workers: int) -> list[dict[str, torch.Tensor]]:
    data.epoch = epoch
    return list(DataLoader(data, batch_size=None, num_workers=num_workers))


def seen(batches) -> Counter:
    return Counter(u for b in batches for u in b["user_idx"].tolist())


@pytest.mark.parametrize("num_workers", [0, 2])
def test_every_user_exactly_once_per_epoch(split, num_workers):
    data = dataset(split, num_workers=num_workers)
    for epoch in (0, 1):
        batches = epoch_batches(data, epoch, num_workers)
        assert seen(batches) == Counter(range(split.num_users))
        assert len(batches) == len(data)


def test_two_ranks_with_two_workers_split_the_users_and_step_together(split):
    ranks = [dataset(split, rank=r, world_size=2, num_workers=2) for r in (0, 1)]
    batches = [epoch_batches(data, 3, 2) for data in ranks]
    assert seen(batches[0]) + seen(batches[1]) == Counter(range(split.num_users))
    assert not set(seen(batches[0])) & set(seen(batches[1]))
    assert len(batches[0]) == len(batches[1]) == len(ranks[0])  # DDP needs the same number of steps
    assert abs(sum(seen(batches[0]).values()) - split.num_users / 2) <= 1  # four shards of n // 4 or n // 4 + 1


def test_order_is_a_function_of_seed_and_epoch(split):
    data = dataset(split)
    order = [[b["user_idx"].tolist() for b in epoch_batches(data, epoch, 0)] for epoch in (0, 0, 1)]
    assert order[0] == order[1]
    assert order[0] != order[2]
    assert order[0][0] != sorted(order[0][0])  # shuffled inside batches too


def test_rows_are_the_last_events_right_aligned_and_trimmed(split):
    width = 4
    expected = scoring_matrix(split, width)  # each user's last `width` events, computed by another path
    for batch in epoch_batches(dataset(split, width=width, batch_size=7), 0, 0):
        items, users = batch["items"].numpy(), batch["user_idx"].numpy()
        if not len(users):
            continue
        assert items.dtype == np.int64 and (items != PAD).any(axis=0)[0]  # no all-PAD leading column
        np.testing.assert_array_equal(items, expected[users][:, width - items.shape[1] :])
        assert (expected[users][:, : width - items.shape[1]] == PAD).all()


def test_a_short_shard_pads_with_empty_batches(tmp_path):
    split = many_users_split(tmp_path, num_users=5)
    data = [dataset(split, batch_size=2, rank=r, world_size=2) for r in (0, 1)]  # 2 and 3 users
    sizes = [[len(b["user_idx"]) for b in epoch_batches(d, 0, 0)] for d in data]
    assert sizes == [[2, 0], [2, 1]]  # rank 0 ends with an empty batch to step with rank 1


def test_datamodule_reads_max_len_plus_one_events(split):
    module = SequenceDataModule(split, max_len=3, batch_size=16, shuffle_buffer=0, num_workers=0, seed=1)
    module.prepare_data()
    module.setup("fit")
    batch = next(iter(module.train_set))
    assert batch["items"].shape[1] <= 4 and len(module.train_set) == -(-split.num_users // 16)


def test_bad_arguments_are_refused(split):
    with pytest.raises(ValueError, match="batch_size >= 1"):
        dataset(split, batch_size=0)
    with pytest.raises(ValueError, match="rank 2 is outside"):
        dataset(split, rank=2, world_size=2)
