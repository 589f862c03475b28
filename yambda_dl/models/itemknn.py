"""ItemKNN, the paper's item-item baseline (SPEC.md section 6), computed without the user x user matrix.

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
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from yambda_dl.data import views
from yambda_dl.data.views import SparseMatrix, check_memory
from yambda_dl.eval.recommend import csr_rows as mask_csr_rows
from yambda_dl.eval.retrieval import CSR, topk_over_score_tiles
from yambda_dl.models.base import NotFittedError, check_k

if TYPE_CHECKING:
    from yambda_dl.data.split import Split

# a torch CSR entry: int64 column index (what its sparse kernels take) + float64 value. float64 because the kernels'
# float32 rounding depends on the tile's shape, and a user's scores must not depend on how users are batched
BYTES_PER_TORCH_NONZERO = 16


def decayed_profiles(split: Split, hours: float, base: float = 0.9) -> SparseMatrix:
    """Users x items CSR of sum over the user's train events of base ** ((t_last(u) - t_e) / (3600 * hours)).

    t_last(u) is the user's last train timestamp; hours = 0 keeps only the events at that timestamp (weight 1 each,
    as 0 ** 0 = 1 upstream). Weights that underflow float32 to 0 are dropped. One streaming pass (batches hold
    whole users); memory: 8 bytes per nonzero, plus one batch.
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
        keep = sums > 0
        keys, sums = keys[keep], sums[keep]
        indptr[1:] += np.bincount(keys // split.num_items, minlength=split.num_users)
        indices.append((keys % split.num_items).astype(np.int32))
        values.append(sums)
    np.cumsum(indptr, out=indptr)
    indices_all = np.concatenate(indices) if indices else np.zeros(0, dtype=np.int32)
    values_all = np.concatenate(values) if values else np.zeros(0, dtype=np.float32)
    return SparseMatrix(indptr, indices_all, values_all, (split.num_users, split.num_items))


def csr_rows(matrix: Tensor, start: int, stop: int) -> Tensor:
    """Rows start..stop-1 of a torch CSR matrix; the column and value arrays are views, not copies."""
    crow = matrix.crow_indices()
    lo, hi = int(crow[start]), int(crow[stop])
    return torch.sparse_csr_tensor(
        crow[start : stop + 1] - lo,
        matrix.col_indices()[lo:hi],
        matrix.values()[lo:hi],
        size=(stop - start, matrix.shape[1]),
        device=matrix.device,
        check_invariants=False,  # a slice of a valid CSR is valid
    )


def sparse_matmul(a: Tensor, b: Tensor) -> Tensor:
    """CSR @ CSR -> CSR, on the operands' device.

    On the CPU the product goes through scipy: torch 2.13's CPU CSR @ CSR kernel keeps about 11 bytes per output
    nonzero after every call (RSS grew by 41 MB a call for a 3.6M-nonzero product), which ran the pruned neighbour
    search of 50m Listen+ out of 24 GB. On CUDA torch's own kernel is used. The arrays are shared, not copied.
    """
    if a.device.type != "cpu":
        return a @ b
    from scipy.sparse import csr_matrix

    def to_scipy(m: Tensor) -> csr_matrix:
        return csr_matrix((m.values().numpy(), m.col_indices().numpy(), m.crow_indices().numpy()), shape=m.shape)

    product = to_scipy(a) @ to_scipy(b)
    product.sort_indices()
    return torch.sparse_csr_tensor(
        torch.from_numpy(product.indptr.astype(np.int64)),
        torch.from_numpy(product.indices.astype(np.int64)),
        torch.from_numpy(product.data),
        size=product.shape,
        check_invariants=False,  # scipy's canonical CSR: sorted, in range
    )


def torch_csr(matrix: SparseMatrix, device: torch.device, values: np.ndarray | None = None) -> Tensor:
    """A SparseMatrix as a float64 torch CSR tensor on `device`, optionally with other values on the same pattern."""
    values = (matrix.values if values is None else values).astype(np.float64)
    return SparseMatrix(matrix.indptr, matrix.indices, values, matrix.shape).to_torch(device)


class ItemKNN:
    """The paper's ItemKNN: time-decayed user profiles scored by cosine against the item columns of C.

    hours: decay 0.9 per `hours` hours back from the user's last train event (0 = only the last timestamp's events;
    the paper tunes it). neighbors: None = the exact model; N = each item keeps its N best neighbours (pruned).
    user_tile / item_tile bound the scoring memory; neighbor_block_nonzeros bounds the item-item block that the
    pruned variant's neighbour search holds at once. device: where the sparse products run (cpu, cuda).
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
    ) -> None:
        if hours < 0:
            raise ValueError(f"ItemKNN hours must be >= 0 (0 = only the last timestamp's events), got {hours}")
        if neighbors is not None and neighbors < 1:
            raise ValueError(f"ItemKNN neighbors must be >= 1, or null for the exact model; got {neighbors}")
        if min(user_tile, item_tile, neighbor_block_nonzeros) < 1:
            raise ValueError(
                f"user_tile={user_tile}, item_tile={item_tile}, neighbor_block_nonzeros={neighbor_block_nonzeros} "
                "must all be >= 1"
            )
        self.hours, self.neighbors, self.base = hours, neighbors, base
        self.user_tile, self.item_tile, self.neighbor_block_nonzeros = user_tile, item_tile, neighbor_block_nonzeros
        self.device = torch.device(device)
        self.num_items: int | None = None
        self._profiles: Tensor | None = None  # exact: P D (users x items); pruned: P
        self._right: Tensor | None = None  # exact: Ĉ^T (items x users); pruned: M^T (items x items, N per column)

    def fit(self, split: Split, trainer: object | None = None) -> ItemKNN:
        counts = views.user_item_matrix(split, "count")
        profiles = decayed_profiles(split, self.hours, self.base)
        check_memory(BYTES_PER_TORCH_NONZERO * (counts.nnz + profiles.nnz), "ItemKNN's profiles and item matrix")
        items = counts.transpose()  # Ĉ^T's pattern: items x users
        del counts
        norms = np.sqrt(np.add.reduceat(items.values.astype(np.float64) ** 2, items.indptr[:-1]))  # every item > 0
        self.num_items = split.num_items
        if self.neighbors is None:
            unit_items = items.values / np.repeat(norms, np.diff(items.indptr))
            self._right = torch_csr(items, self.device, unit_items)
            scaled = profiles.values * norms[profiles.indices]  # P D: e_u = (P_u D) Ĉ^T
            self._profiles = torch_csr(profiles, self.device, scaled)
        else:
            self._right = self._pruned_neighbours(items, norms)
            self._profiles = torch_csr(profiles, self.device)
        return self

    def _pruned_neighbours(self, items: SparseMatrix, norms: np.ndarray) -> Tensor:
        """M^T as a torch CSR (target item i x source item j), each source j keeping its N best targets.

        Source items are taken in blocks whose item-item products are bounded by neighbor_block_nonzeros (row j
        forms the sum of its users' distinct item counts); each block's top N per row is kept. Memory: the result
        (num_items x N entries) plus one block. Time: the sum over users of their distinct items squared.
        """
        users = items.transpose()  # C's pattern: users x items
        distinct = np.diff(users.indptr).astype(np.float64)
        # the products the sparse matmul forms for row j before merging them (not capped at num_items: the
        # product, not its merged result, is what a block holds in memory; capping it let 50m Listen+ run out)
        row_bound = np.bincount(items.row_ids(), distinct[items.indices], len(norms))
        # a block starts where the running bound crosses a multiple of the budget: at most budget + one row each
        block_of_row = (np.cumsum(row_bound) - row_bound) // self.neighbor_block_nonzeros
        ends = np.r_[np.flatnonzero(np.diff(block_of_row)) + 1, len(norms)]
        check_memory(
            int(BYTES_PER_TORCH_NONZERO * (self.neighbors * len(norms) + 3 * self.neighbor_block_nonzeros)),
            "ItemKNN's neighbour lists and one block",
        )
        sources = torch_csr(items, self.device)  # raw counts, items x users
        targets = torch_csr(users, self.device, users.values / norms[users.indices])  # C D^-1: users x items
        rows, cols, vals = [], [], []
        start = 0
        for stop in ends.tolist():  # a loop over blocks of items, each a vectorized sparse product
            block = sparse_matmul(csr_rows(sources, start, stop), targets).to_sparse_coo().coalesce()
            (block_rows, block_cols), block_vals = block.indices(), block.values()
            keep = top_per_row(block_rows, block_cols, block_vals, self.neighbors)
            rows.append(block_rows[keep] + start)
            cols.append(block_cols[keep])
            vals.append(block_vals[keep])
            start = stop
        # transposed (target x source) so that an item tile of scores is a row slice
        pairs = torch.sparse_coo_tensor(
            torch.stack([torch.cat(cols), torch.cat(rows)]),
            torch.cat(vals),
            size=(len(norms), len(norms)),
            check_invariants=False,  # in range by construction
        )
        return pairs.coalesce().to_sparse_csr()

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
        user_idx = torch.as_tensor(user_idx, dtype=torch.int64)
        items, scores = [], []
        for start in range(0, len(user_idx), self.user_tile):
            stop = min(start + self.user_tile, len(user_idx))
            mask = mask_rows(exclude, start, stop)
            scorer = self._tile_scorer(self._user_profiles(user_idx[start:stop]))
            tile_items, tile_scores = topk_over_score_tiles(scorer, self.num_items, k, mask, self.item_tile)
            items.append(tile_items)
            scores.append(tile_scores)
        return torch.cat(items), torch.cat(scores)

    def _check_fitted(self) -> None:
        if self._profiles is None or self._right is None or self.num_items is None:
            raise NotFittedError("ItemKNN.recommend() called before fit()")

    def _user_profiles(self, user_idx: Tensor) -> Tensor:
        """Exact: the unit user-space profiles E_U (n, num_users), dense; pruned: the sparse rows P_U."""
        rows = select_rows(self._profiles, user_idx)
        if self.neighbors is not None:
            return rows
        profiles = sparse_matmul(
            rows, self._right
        ).to_dense()  # (P_U D) Ĉ^T: (n, num_users), the tile's dominant memory
        return torch.nn.functional.normalize(profiles, dim=1)  # the cosine's |e_u|; no-op on ranking

    def _tile_scorer(self, profiles: Tensor) -> Callable[[int, int], Tensor]:
        """score_items(start, stop) for these users: the (n, stop - start) dense block."""
        if self.neighbors is None:
            profiles_t = profiles.T.contiguous()  # (num_users, n): the dense operand of CSR @ dense

            def exact(start: int, stop: int) -> Tensor:
                return (csr_rows(self._right, start, stop) @ profiles_t).T  # (n, stop - start)

            return exact
        profiles_t = profiles.to_sparse_coo().transpose(0, 1).coalesce().to_sparse_csr()  # P_U^T: items x n

        def pruned(start: int, stop: int) -> Tensor:
            return sparse_matmul(csr_rows(self._right, start, stop), profiles_t).to_dense().T  # sum_j M_ji P_uj

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


def select_rows(matrix: Tensor, user_idx: Tensor) -> Tensor:
    """The CSR rows `user_idx` of a torch CSR matrix (any order), as a new CSR."""
    crow = matrix.crow_indices()
    user_idx = user_idx.to(crow.device)
    starts, lengths = crow[user_idx], crow[user_idx + 1] - crow[user_idx]
    new_crow = torch.zeros(len(user_idx) + 1, dtype=torch.int64, device=crow.device)
    torch.cumsum(lengths, 0, out=new_crow[1:])
    # positions of the selected rows' entries: the start of each row plus 0..length-1
    offsets = torch.arange(int(new_crow[-1]), device=crow.device) - torch.repeat_interleave(new_crow[:-1], lengths)
    positions = torch.repeat_interleave(starts, lengths) + offsets
    return torch.sparse_csr_tensor(
        new_crow,
        matrix.col_indices()[positions],
        matrix.values()[positions],
        size=(len(user_idx), matrix.shape[1]),
        check_invariants=False,  # whole rows of a valid CSR
    )


def mask_rows(exclude: CSR | None, start: int, stop: int) -> CSR | None:
    """Rows start..stop-1 of the mask, re-based to 0."""
    if exclude is None:
        return None
    offsets = torch.as_tensor(exclude.offsets, dtype=torch.int64)
    indices = torch.as_tensor(exclude.indices, dtype=torch.int64)
    return mask_csr_rows(CSR(offsets, indices), start, stop)
