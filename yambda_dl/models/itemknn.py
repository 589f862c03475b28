"""ItemKNN, the paper's item-item baseline (docs/protocol.md, ItemKNN), computed without the user x user matrix.

The official code scores user u and item i by a cosine in user space, between the user's profile and the item:
    e_u = P_u C^T                      P: users x items, time-decayed event sums; C: users x items train counts
    score(u, i) = e_u . C[:, i] / (|e_u| |C[:, i]|)
so "cosine" normalises both the item columns of the count matrix and the profile (the profile's norm does not change
a user's ranking; we keep it so that our scores equal the official ones). The official code materialises E = P C^T
(users x users, dense), which is what kept it from running at 5B. Here, for a tile of users, E_U = (P_U D) Ĉ^T with
Ĉ^T = D^-1 C^T the item rows scaled to unit length (D = the item norms); E_U is then scored against item tiles of
Ĉ^T. Memory: the profile and Ĉ^T (16 bytes per nonzero each, int64 column + float64 value), plus user_tile x
num_users for E_U and user_tile x item_tile for one block of scores (float64, then float32).

The pruned variant (`neighbors=N`) is classic item-item CF: score(u, i) = sum_j P_uj M_ji with M_ji = C_j . C_i /
|C_i| = |C_j| cos(j, i), where each source item j keeps only its N best i (by cosine: |C_j| is constant along the
row, so the order is the same). With every neighbour kept it equals the exact score times |e_u|. Each item counts
itself among its neighbours, as the exact model does: re-listening is the main signal in music.

normalize="paper" reproduces the official scripts as they ran, which is not the cosine their README describes: they
normalise the transposed count matrix along its user axis (`sparse_normalize(user_item.T, dim=-1)`), so the item
vectors are R^T = C^T D_u^-1 (each user's counts scaled to unit length, D_u = the user norms, with the script's
1e-12 under the root) instead of unit item columns:
    score(u, i) = sum_v e_u[v] C[v, i] / (|e_u| |C_v|)         C_v: user v's row of C
and their profile entries whose decayed float32 sum is at most 1e-9 are dropped (`eliminate_zeros`; the cosine keeps
all that float32 can hold). Here E_U = (P_U R^T) D_u, scored against item tiles of R^T; the pruned variant keeps
M_ji = sum_v C_vj C_vi / |C_v|. The paper's ItemKNN figures come from that code; the cosine is the default.

Which to use: the exact model's scoring costs users x nonzeros of C (its time grows with the square of the dataset's
scale); the pruned one pays once for the neighbour search, the sum over users of their distinct items squared, then
scores in users x profile length x N (both linear in users). On synthetic 50m Listen+ the exact one takes 1-2x
less time and scores 0.4-2% more NDCG@10 than N = 100; extrapolated to 500M on the same 2 cores, ~5 hours exact
against ~1 hour pruned (BENCHMARKS.md).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import numpy as np
import torch
from scipy.sparse import csr_matrix
from torch import Tensor

from yambda_dl.data import views
from yambda_dl.data.csr import CSR
from yambda_dl.models.base import NotFittedError, UserEvents, check_k
from yambda_dl.retrieval import by_user_tiles, topk_over_score_tiles
from yambda_dl.sparse import matmul
from yambda_dl.utils.memory import DEFAULT_FRACTION, check_fits

if TYPE_CHECKING:
    from yambda_dl.data.split import Split

# a torch CSR entry: int64 column index (what its sparse kernels take) + float64 value. float64 because the kernels'
# float32 rounding depends on the tile's shape, and a user's scores must not depend on how users are batched
BYTES_PER_TORCH_NONZERO = 16

# cosine: the README's cosine (unit item columns); paper: the official scripts' per-user normalisation (module doc)
NORMALIZATIONS = ("cosine", "paper")
# the official scripts drop profile entries whose float32 sum is at most this (eliminate_zeros' threshold)
PAPER_MIN_WEIGHT = 1e-9
# the official scripts' sparse_normalize adds this under the square root of each user's sum of squared counts
PAPER_NORM_EPS = 1e-12


def decayed_profiles(split: Split, hours: float, base: float = 0.9, min_weight: float = 0.0) -> CSR:
    """Users x items CSR of sum over the user's train events of base ** ((t_last(u) - t_e) / (3600 * hours)).

    t_last(u) is the user's last train timestamp; hours = 0 keeps only the events at that timestamp (weight 1 each,
    as 0 ** 0 = 1 upstream). Entries whose float32 sum is at most min_weight are dropped (0: only those that
    underflow; the official scripts: PAPER_MIN_WEIGHT). One streaming pass (batches hold whole users); memory:
    8 bytes per nonzero, plus one batch.
    """
    if hours < 0:
        raise ValueError(f"ItemKNN hours must be >= 0 (0 = only the last timestamp's events), got {hours}")
    indptr = np.zeros(split.num_users + 1, dtype=np.int64)
    indices, values = [], []
    for batch in split.iter_train(columns=("user_idx", "item_idx", "timestamp")):
        users, timestamps = batch["user_idx"], batch["timestamp"]
        if not len(users):
            continue
        # events come sorted by (user, timestamp): each user's last event closes its run
        run_ends = np.flatnonzero(np.r_[users[1:] != users[:-1], True])
        run_of_event = np.repeat(np.arange(len(run_ends)), np.diff(np.r_[0, run_ends + 1]))
        age = (timestamps[run_ends][run_of_event] - timestamps).astype(np.float64)
        weights = (age == 0).astype(np.float64) if hours == 0 else np.power(base, age / (3600.0 * hours))
        keys, inverse = np.unique(users * split.num_items + batch["item_idx"], return_inverse=True)
        sums = np.bincount(inverse, weights=weights).astype(np.float32)
        keep = sums > np.float32(min_weight)  # compared in float32, as upstream compares its float32 tensor
        keys, sums = keys[keep], sums[keep]
        indptr[1:] += np.bincount(keys // split.num_items, minlength=split.num_users)
        indices.append((keys % split.num_items).astype(np.int32))
        values.append(sums)
    np.cumsum(indptr, out=indptr)
    indices_all = np.concatenate(indices) if indices else np.zeros(0, dtype=np.int32)
    values_all = np.concatenate(values) if values else np.zeros(0, dtype=np.float32)
    return CSR(indptr, indices_all, values_all, (split.num_users, split.num_items))


def last_train_times(split: Split) -> np.ndarray:
    """Each ranked user's last train timestamp (int64, (num_users,)): the fit's decay reference. One streaming pass
    over the train user and timestamp columns; memory: 8 bytes per user plus one batch."""
    last = np.zeros(split.num_users, dtype=np.int64)
    for batch in split.iter_train(columns=("user_idx", "timestamp")):
        users = batch["user_idx"]
        if len(users):  # sorted by (user, timestamp): each user's last event closes its run
            run_ends = np.flatnonzero(np.r_[users[1:] != users[:-1], True])
            last[users[run_ends]] = batch["timestamp"][run_ends]
    return last


def _decay(age: np.ndarray, hours: float, base: float) -> np.ndarray:
    """base ** (age / (3600 hours)) of ages in seconds; hours = 0 keeps age 0 only (weight 1), as decayed_profiles."""
    age = np.asarray(age, dtype=np.float64)
    return (age == 0).astype(np.float64) if hours == 0 else np.power(base, age / (3600.0 * hours))


def moved_profiles(
    profiles: CSR,
    last_train: np.ndarray,
    events: UserEvents,
    hours: float,
    base: float,
    item_scale: np.ndarray | None = None,
    min_weight: float = 0.0,
) -> CSR:
    """The decayed profiles (host CSR, float64) of events' users after their day's events (inside the train items).

    A user's reference time moves from their last train event to their latest event: their stored row (of
    `profiles`, the fit's decayed sums, times item_scale per item where the model stores them scaled) is multiplied
    by base ** (shift / hours), and each new event adds base ** ((t_latest - t_e) / hours) (times its item's scale),
    what decayed_profiles gives for the train events and the new ones together. A new user (user_idx -1) has no
    stored row. Entries at most min_weight are dropped, as the fit drops them. Memory: the rows and the events.
    """
    known = events.user_idx >= 0
    train_time = np.zeros(events.num_users, dtype=np.int64)
    train_time[known] = last_train[events.user_idx[known]]
    latest = events.last_time(train_time)
    rows = events.rows()
    weights = _decay(latest[rows] - events.timestamp, hours, base)
    if item_scale is not None:
        weights = weights * item_scale[events.item_idx]
    moved = events.matrix(profiles.shape[1], weights, profiles, _decay(latest - train_time, hours, base))
    keep = moved.values > min_weight
    if keep.all():
        return moved
    indptr = np.zeros(moved.shape[0] + 1, dtype=np.int64)
    np.cumsum(np.bincount(moved.row_ids()[keep], minlength=moved.shape[0]), out=indptr[1:])
    return CSR(indptr, moved.indices[keep], moved.values[keep], moved.shape)


def cpu_neighbours(
    items: CSR,
    users: CSR,
    target_values: np.ndarray,
    blocks: list[tuple[int, int]],
    n: int,
    workers: int,
) -> csr_matrix:
    """M (source item j x target item i) keeping each source's n best targets, the blocks run on `workers` threads.

    scipy's sparse product releases the GIL, so the blocks' products run side by side; the top n per row is a
    partition, not a sort (ad-hoc profiles of both are in BENCHMARKS.md).
    Memory: one block's product per worker (bounded by neighbor_block_nonzeros) plus the kept entries, 12 bytes
    each, twice while they are joined.
    """
    sources = items.with_values(items.values.astype(np.float64)).to_scipy()
    targets = users.with_values(target_values).to_scipy()

    def block_neighbours(bounds: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        start, stop = bounds
        product = sources[start:stop] @ targets  # row j: M_j. = C_j . C_i / |C_i|, columns unsorted
        keep = np.sort(top_per_csr_row(product.indptr, product.indices, product.data, n))  # grouped by row again
        return np.minimum(np.diff(product.indptr), n), product.indices[keep], product.data[keep]

    with ThreadPoolExecutor(max_workers=workers) as pool:  # map keeps at most `workers` products alive at once
        found = list(pool.map(block_neighbours, blocks))
    counts, indices, values = (np.concatenate(parts) for parts in zip(*found, strict=True))
    del found
    indptr = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    return csr_matrix((values, indices, indptr), shape=(items.shape[0], users.shape[1]))


def device_neighbours(
    items: CSR,
    users: CSR,
    target_values: np.ndarray,
    blocks: list[tuple[int, int]],
    n: int,
    device: torch.device,
) -> CSR:
    """cpu_neighbours on a torch device (CUDA), returned transposed: M^T (target x source), float64 values.

    One block at a time: torch's sparse product, then the top n per row by sorting (top_per_row), which a GPU does
    fast. Memory on the device: the kept entries plus about three copies of one block.
    """
    sources = items.to(device, torch.float64)  # raw counts, items x users
    targets = users.with_values(target_values).to(device, torch.float64)
    rows, cols, vals = [], [], []
    for start, stop in blocks:  # a loop over blocks of items, each a vectorized sparse product
        block = matmul(sources.rows(start, stop), targets).torch_sparse().to_sparse_coo().coalesce()
        (block_rows, block_cols), block_vals = block.indices(), block.values()
        keep = top_per_row(block_rows, block_cols, block_vals, n)
        rows.append(block_rows[keep] + start)
        cols.append(block_cols[keep])
        vals.append(block_vals[keep])
    pairs = torch.sparse_coo_tensor(
        torch.stack([torch.cat(cols), torch.cat(rows)]),  # transposed: target x source
        torch.cat(vals),
        size=(items.shape[0], users.shape[1]),
        check_invariants=False,  # in range by construction
    )
    return CSR.from_torch_sparse(pairs)


def top_per_csr_row(indptr: np.ndarray, indices: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    """Positions of each CSR row's n largest values, ties to the lower column; columns need not be sorted.

    Rows of at most n entries are kept whole, all at once; a longer row is partitioned at its n-th largest value,
    O(its length), in a loop over rows (each step vectorized): entries above that value are kept, and those equal
    to it fill the remaining places lowest column first.
    """
    lengths = np.diff(indptr)
    kept = [np.flatnonzero(np.repeat(lengths <= n, lengths))]
    for row in np.flatnonzero(lengths > n).tolist():
        lo, hi = int(indptr[row]), int(indptr[row + 1])
        row_values = values[lo:hi]
        nth = np.partition(row_values, hi - lo - n)[hi - lo - n]
        above = np.flatnonzero(row_values > nth)  # fewer than n, by the definition of nth
        tied = np.flatnonzero(row_values == nth)
        places = n - len(above)
        if len(tied) > places:
            tied = tied[np.argpartition(indices[lo:hi][tied], places - 1)[:places]]
        kept.append(lo + np.concatenate([above, tied]))
    return np.concatenate(kept)


class ItemKNN:
    """The paper's ItemKNN: time-decayed user profiles scored by cosine against the item columns of C.

    hours: decay 0.9 per `hours` hours back from the user's last train event (0 = only the last timestamp's events;
    the paper tunes it). neighbors: None = the exact model; N = each item keeps its N best neighbours (pruned).
    normalize: "cosine" (the default) or "paper", the official scripts' per-user normalisation (module doc).
    user_tile / item_tile bound the scoring memory; neighbor_block_nonzeros bounds the item-item products of one
    block of the pruned variant's neighbour search (on the CPU, one block per torch thread runs at once). device:
    where the sparse products run (cpu, cuda). memory_fraction: the share of the free memory (host, or the device's
    for the neighbour lists) that the fit may take.
    """

    def __init__(
        self,
        hours: float = 1.0,
        neighbors: int | None = None,
        base: float = 0.9,
        user_tile: int = 1024,
        item_tile: int = 262_144,
        neighbor_block_nonzeros: int = 1 << 25,
        device: str = "cpu",
        normalize: str = "cosine",
        memory_fraction: float = DEFAULT_FRACTION,
    ) -> None:
        if normalize not in NORMALIZATIONS:
            raise ValueError(f"ItemKNN normalize={normalize!r} is not one of {', '.join(NORMALIZATIONS)}")
        if hours < 0:
            raise ValueError(f"ItemKNN hours must be >= 0 (0 = only the last timestamp's events), got {hours}")
        if neighbors is not None and neighbors < 1:
            raise ValueError(f"ItemKNN neighbors must be >= 1, or null for the exact model; got {neighbors}")
        if min(user_tile, item_tile, neighbor_block_nonzeros) < 1:
            raise ValueError(
                f"user_tile={user_tile}, item_tile={item_tile}, neighbor_block_nonzeros={neighbor_block_nonzeros} "
                "must all be >= 1"
            )
        self.hours, self.neighbors, self.base, self.normalize = hours, neighbors, base, normalize
        self.user_tile, self.item_tile, self.neighbor_block_nonzeros = user_tile, item_tile, neighbor_block_nonzeros
        self.device, self.memory_fraction = torch.device(device), memory_fraction
        self.num_items: int | None = None
        # torch forms on `device`, float64 values
        self._profiles: CSR | None = None  # exact: P D (users x items); pruned: P
        self._right: CSR | None = None  # exact: Ĉ^T or R^T (items x users); pruned: M^T (items x items, N per col)
        self._user_scale: Tensor | None = None  # exact paper: D_u, so that (P_U R^T) D_u = P_U C^T
        self._item_scale: np.ndarray | None = None  # exact cosine: D, the stored profile's item scale (streaming)

    def fit(self, split: Split, trainer: object | None = None) -> ItemKNN:
        paper = self.normalize == "paper"
        counts = views.user_item_matrix(split, "count")
        profiles = decayed_profiles(split, self.hours, self.base, PAPER_MIN_WEIGHT if paper else 0.0)
        check_fits(
            BYTES_PER_TORCH_NONZERO * (counts.nnz + profiles.nnz),
            "ItemKNN's profiles and item matrix",
            fraction=self.memory_fraction,
        )
        user_norms = None
        if paper:  # each user's count vector length, as the scripts' sparse_normalize computes it
            squares = np.bincount(counts.row_ids(), counts.values.astype(np.float64) ** 2, counts.shape[0])
            user_norms = np.sqrt(squares + PAPER_NORM_EPS)
        items = counts.transpose()  # Ĉ^T's pattern: items x users
        del counts
        norms = np.sqrt(np.add.reduceat(items.values.astype(np.float64) ** 2, items.indptr[:-1]))  # every item > 0
        self.num_items = split.num_items
        if self.neighbors is not None:
            self._right = self._pruned_neighbours(items, norms, user_norms)
            self._profiles = profiles.to(self.device, torch.float64)
        elif paper:
            r_t = items.with_values(items.values / user_norms[items.indices])  # R^T = C^T D_u^-1
            self._right = r_t.to(self.device, torch.float64)
            self._profiles = profiles.to(self.device, torch.float64)
            self._user_scale = torch.from_numpy(user_norms).to(self.device)
        else:
            unit_items = items.with_values(items.values / np.repeat(norms, items.lengths()))
            self._right = unit_items.to(self.device, torch.float64)
            scaled = profiles.with_values(profiles.values * norms[profiles.indices])  # P D: e_u = (P_u D) Ĉ^T
            self._profiles = scaled.to(self.device, torch.float64)
            self._item_scale = norms
        return self

    def user_stream(self, split: Split) -> _ProfileStream:
        """The streaming state (eval/stream.py): each user's decayed profile with their day's events added, the decay
        counted back from their latest event; the item side (C, or the neighbours) stays the fit's."""
        self._check_fitted()
        return _ProfileStream(self, last_train_times(split))

    def _pruned_neighbours(self, items: CSR, norms: np.ndarray, user_norms: np.ndarray | None) -> CSR:
        """M^T (torch form, target item i x source item j), each source j keeping its N best targets.

        M_ji = C_j . C_i / |C_i| (cosine), or sum_v C_vj C_vi / |C_v| when user_norms are given (paper).

        Source items are taken in blocks whose item-item products are bounded by neighbor_block_nonzeros (row j
        forms the sum of its users' distinct item counts); each block's top N per row is kept. Memory: the result
        (num_items x N entries) plus one block per worker. Time: the sum over users of their distinct items squared
        (2.2e10 products on 50m Listen+), which is why the CPU path runs blocks on every thread torch may use.
        """
        users = items.transpose()  # C's pattern: users x items
        distinct = users.lengths().astype(np.float64)
        # the products the sparse matmul forms for row j before merging them (not capped at num_items: the
        # product, not its merged result, is what a block holds in memory; capping it let 50m Listen+ run out)
        row_bound = np.bincount(items.row_ids(), distinct[items.indices], len(norms))
        # a block starts where the running bound crosses a multiple of the budget: at most budget + one row each
        block_of_row = (np.cumsum(row_bound) - row_bound) // self.neighbor_block_nonzeros
        ends = np.r_[np.flatnonzero(np.diff(block_of_row)) + 1, len(norms)]
        blocks = list(zip(np.r_[0, ends[:-1]].tolist(), ends.tolist(), strict=True))
        workers = torch.get_num_threads() if self.device.type == "cpu" else 1
        # the kept entries twice (joined from the blocks, then transposed) and about three copies of each worker's block
        kept = min(self.neighbors, len(norms)) * len(norms)
        check_fits(
            BYTES_PER_TORCH_NONZERO * (2 * kept + 3 * workers * self.neighbor_block_nonzeros),
            f"ItemKNN's neighbour lists ({len(norms):,} items x {self.neighbors} neighbours) and one block per worker",
            self.device,
            self.memory_fraction,
        )
        # C D^-1 (cosine) or D_u^-1 C (paper): users x items
        target_values = users.values / (norms[users.indices] if user_norms is None else user_norms[users.row_ids()])
        if self.device.type == "cpu":
            neighbours = cpu_neighbours(items, users, target_values, blocks, self.neighbors, workers)
            # transposed (target x source) so that an item tile of scores is a row slice; scipy transposes in
            # O(entries) (a counting sort), where torch's coalesce would sort them
            return CSR.from_scipy(neighbours.T.tocsr(), np.float64).to(self.device)
        return device_neighbours(items, users, target_values, blocks, self.neighbors, self.device)

    def scores(self, user_idx: Tensor, start: int = 0, stop: int | None = None) -> Tensor:
        """Dense scores (n, stop - start) of the users for items start..stop-1 (all by default); for tests."""
        self._check_fitted()
        stop = self.num_items if stop is None else stop
        profiles = self._user_profiles(torch.as_tensor(user_idx, dtype=torch.int64))
        return self._tile_scorer(profiles)(start, stop)

    def recommend(self, user_idx: Tensor, k: int, exclude: CSR | None = None) -> tuple[Tensor, Tensor]:
        """Top-k train items per user, exact over all items in tiles of user_tile users and item_tile items."""
        self._check_fitted()
        check_k(k, self.num_items)

        def rank(users: Tensor, mask: CSR | None) -> tuple[Tensor, Tensor]:
            scorer = self._tile_scorer(self._user_profiles(users))
            return topk_over_score_tiles(scorer, self.num_items, k, mask, self.item_tile)

        return by_user_tiles(rank, torch.as_tensor(user_idx, dtype=torch.int64), exclude, self.user_tile)

    def _check_fitted(self) -> None:
        if self._profiles is None or self._right is None or self.num_items is None:
            raise NotFittedError("ItemKNN.recommend() called before fit()")

    def _user_profiles(self, user_idx: Tensor) -> Tensor | CSR:
        """Exact: the unit user-space profiles E_U (n, num_users), dense; pruned: the sparse rows P_U."""
        return self._profile_rows(self._profiles.select(user_idx))

    def _profile_rows(self, rows: CSR) -> Tensor | CSR:
        """_user_profiles of given rows of the stored profile (the fit's, or a streaming state's)."""
        if self.neighbors is not None:
            return rows
        # (P_U D) Ĉ^T, or P_U R^T for the paper's: (n, num_users), the tile's dominant memory
        profiles = matmul(rows, self._right).torch_sparse().to_dense()
        if self._user_scale is not None:
            profiles *= self._user_scale  # paper: (P_U R^T) D_u = P_U C^T
        return torch.nn.functional.normalize(profiles, dim=1)  # the cosine's |e_u|; no-op on ranking

    def _tile_scorer(self, profiles: Tensor | CSR) -> Callable[[int, int], Tensor]:
        """score_items(start, stop) for these users: the (n, stop - start) dense block."""
        if self.neighbors is None:
            profiles_t = profiles.T.contiguous()  # (num_users, n): the dense operand of CSR @ dense

            def exact(start: int, stop: int) -> Tensor:
                return (self._right.rows(start, stop).torch_sparse() @ profiles_t).T  # (n, stop - start)

            return exact
        profiles_t = profiles.transpose()  # P_U^T: items x n

        def pruned(start: int, stop: int) -> Tensor:
            return matmul(self._right.rows(start, stop), profiles_t).torch_sparse().to_dense().T  # sum_j M_ji P_uj

        return pruned


def top_per_row(rows: Tensor, cols: Tensor, values: Tensor, n: int) -> Tensor:
    """Positions of each row's n largest values (ties to the lower column) in COO arrays sorted by (row, col).

    exact_topk wants dense rows; neighbour rows are sparse and of very uneven length, so this ranks within rows by
    two stable sorts (value descending, then row) over the entries. Memory: three int64 arrays of the entries.
    """
    by_value = torch.argsort(values, descending=True, stable=True)  # cols ascend inside rows: ties keep that order
    order = by_value[torch.argsort(rows[by_value], stable=True)]
    sorted_rows = rows[order]
    row_start = torch.searchsorted(sorted_rows, sorted_rows, right=False)
    rank = torch.arange(len(order), device=rows.device) - row_start
    return order[rank < n]


class _ProfileStream:
    """ItemKNN's streaming state: the moved profiles of the users who acted (moved_profiles)."""

    shared = False

    def __init__(self, model: ItemKNN, last_train: np.ndarray) -> None:
        self.model, self.last_train = model, last_train
        self.state = "decayed profile updated with the day's events (decay from the latest event)"

    def updated(self, events: UserEvents) -> _MovedProfiles:
        model = self.model
        paper = model.normalize == "paper"
        profiles = moved_profiles(
            model._profiles,
            self.last_train,
            events.within(model.num_items),
            model.hours,
            model.base,
            model._item_scale,
            PAPER_MIN_WEIGHT if paper else 0.0,
        )
        return _MovedProfiles(model, profiles.to(model.device, torch.float64))


class _MovedProfiles:
    """Ranks with moved profile rows (row i: the state's user i) through the model's own scoring."""

    def __init__(self, model: ItemKNN, profiles: CSR) -> None:
        self.model, self.profiles = model, profiles

    def recommend(self, user_idx: Tensor, k: int, exclude: CSR | None = None) -> tuple[Tensor, Tensor]:
        model = self.model
        check_k(k, model.num_items)

        def rank(rows: Tensor, mask: CSR | None) -> tuple[Tensor, Tensor]:
            scorer = model._tile_scorer(model._profile_rows(self.profiles.select(rows)))
            return topk_over_score_tiles(scorer, model.num_items, k, mask, model.item_tile)

        return by_user_tiles(rank, torch.as_tensor(user_idx, dtype=torch.int64), exclude, model.user_tile)
