"""Exact top-k items by inner product, tiled over users and items, with per-user masking; torch or faiss.

Every vector model ranks through `topk`, so tiling, tie-breaking (higher score first, then the LOWER item
index) and seen-masking live in one place and both backends return identical indices.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from yambda_dl.data.csr import CSR

BACKENDS = ("torch", "faiss")
FAISS_GPU_MAX_K = 2048  # faiss GPU indexes refuse k (and nprobe) above this
# rows of a tie-heavy tile resolved at once: <= 16M elements, ~150 MB of int64 cumsum and bools
_TIE_ROWS_ELEMENTS = 1 << 24


def topk(
    user_vectors: Tensor,
    item_vectors: Tensor,
    k: int,
    *,
    exclude: CSR | None = None,
    backend: str = "torch",
    user_tile: int = 4096,
    item_tile: int = 262_144,
    device: str | torch.device | None = None,
) -> tuple[Tensor, Tensor]:
    """Exact top-k items per user by inner product: (scores float32 (n_users, k), indices int64 (n_users, k)).

    Sorted by score descending, ties by the lower item index. Tiled with a running top-k merge: memory is
    bounded by user_tile x item_tile scores (+1 byte each for the tie check) plus the n_users x k result,
    never users x items. `exclude` items get no rank; rows with fewer than k allowed items are padded with
    index -1, score -inf. torch computes on `device` (default: the user vectors'); results come back to the
    user vectors' device.
    """
    users, items = _validated_vectors(user_vectors, item_vectors, k, backend, user_tile, item_tile)
    compute = torch.device(device) if device is not None else users.device
    if backend == "faiss":
        compute = torch.device("cpu")  # faiss takes and returns host numpy arrays, also with its GPU index
    mask_users, mask_items = _mask_pairs(exclude, users.shape[0], items.shape[0])
    best_scores = torch.full((users.shape[0], k), -torch.inf, device=compute)  # the n_users x k result
    best_items = torch.full((users.shape[0], k), -1, dtype=torch.int64, device=compute)
    for start in range(0, items.shape[0], item_tile):
        stop = min(start + item_tile, items.shape[0])
        tile_users, tile_items = _mask_in_item_range(mask_users, mask_items, start, stop)
        scorer = _tile_scorer(backend, items[start:stop], compute)
        for u_start in range(0, users.shape[0], user_tile):
            u_stop = min(u_start + user_tile, users.shape[0])
            rows, cols = _mask_in_user_range(tile_users, tile_items, u_start, u_stop)
            scores, positions = scorer(users[u_start:u_stop], min(k, stop - start), rows, cols)
            found = torch.where(scores > -torch.inf, positions + start, -1)
            best = (best_scores[u_start:u_stop], best_items[u_start:u_stop])
            best_scores[u_start:u_stop], best_items[u_start:u_stop] = merge_topk(*best, scores, found, k)
    return best_scores.to(users.device), best_items.to(users.device)


def _validated_vectors(
    user_vectors: Tensor, item_vectors: Tensor, k: int, backend: str, user_tile: int, item_tile: int
) -> tuple[Tensor, Tensor]:
    """Check shapes, k, backend and tiles where they enter; return both matrices as float32."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown retrieval backend {backend!r}; valid choices: {', '.join(BACKENDS)}")
    users, items = torch.as_tensor(user_vectors), torch.as_tensor(item_vectors)
    if users.ndim != 2 or items.ndim != 2:
        raise ValueError(f"user_vectors and item_vectors must be 2-D; got {tuple(users.shape)}, {tuple(items.shape)}")
    if users.shape[1] != items.shape[1]:
        raise ValueError(f"user_vectors have d={users.shape[1]} but item_vectors have d={items.shape[1]}")
    if not 1 <= k <= items.shape[0]:
        raise ValueError(f"k={k} is out of range: valid k are 1..{items.shape[0]} (the candidate items)")
    if user_tile < 1 or item_tile < 1:
        raise ValueError(f"user_tile={user_tile} and item_tile={item_tile} must both be >= 1")
    # float32: what faiss computes in, and the documented score type of both backends
    return users.to(torch.float32), items.to(torch.float32)


def _mask_pairs(exclude: CSR | None, n_users: int, n_items: int) -> tuple[Tensor, Tensor]:
    """The masked (user, item) pairs as two int64 vectors sorted by item, validated against the matrices."""
    if exclude is None:
        empty = torch.zeros(0, dtype=torch.int64)
        return empty, empty
    exclude = exclude.to("cpu")  # int64 tensors; shared when they are already
    indptr, indices = exclude.indptr, exclude.indices
    counts = exclude.lengths()
    if indptr.numel() != n_users + 1 or int(indptr[0]) != 0 or int(indptr[-1]) != indices.numel():
        raise ValueError(
            f"exclude.indptr must have n_users + 1 = {n_users + 1} entries running from 0 to "
            f"len(exclude.indices)={indices.numel()}; got {indptr.numel()} entries"
        )
    if bool((counts < 0).any()):
        raise ValueError("exclude.indptr must be non-decreasing")
    if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= n_items):
        raise ValueError(f"exclude.indices hold {int(indices.min())}..{int(indices.max())}; valid are 0..{n_items - 1}")
    # memory: two int64 copies of the mask (it is small: seen items of the ranked users)
    users = exclude.row_ids()
    order = torch.argsort(indices, stable=True)
    return users[order], indices[order]


def _mask_in_item_range(users: Tensor, items: Tensor, start: int, stop: int) -> tuple[Tensor, Tensor]:
    """The mask pairs whose item lies in [start, stop), re-sorted by user, items made tile-relative."""
    lo, hi = torch.searchsorted(items, torch.tensor([start, stop])).tolist()
    tile_users, tile_items = users[lo:hi], items[lo:hi] - start
    order = torch.argsort(tile_users, stable=True)
    return tile_users[order], tile_items[order]


def _mask_in_user_range(users: Tensor, items: Tensor, start: int, stop: int) -> tuple[Tensor, Tensor]:
    """The pairs of one user tile as (row in the tile, column in the item tile)."""
    lo, hi = torch.searchsorted(users, torch.tensor([start, stop])).tolist()
    return users[lo:hi] - start, items[lo:hi]


def merge_topk(best_scores: Tensor, best_items: Tensor, scores: Tensor, items: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Running top-k merge of the best so far with a new tile's top, both sorted by (score desc, item asc).

    Earlier tiles hold lower item indices, so position in [best, new] orders ties as the item index does.
    """
    both_scores = torch.cat([best_scores, scores.to(best_scores.device)], dim=1)
    both_items = torch.cat([best_items, items.to(best_items.device)], dim=1)
    top_scores, positions = exact_topk(both_scores, k)
    return top_scores, both_items.gather(1, positions)


def exact_topk(scores: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Top-k per row sorted by (score desc, column asc), exact on ties: (values, columns) of shape (rows, k).

    torch.topk picks an arbitrary subset of the values tied at the k-th. Asking it for k + 1 tells, without another
    pass over the tile, which rows have more columns tied at the k-th than were taken (the (k+1)-th best equals the
    k-th); only those rows (rare with real-valued scores) are resolved column by column. Ties at -inf are left
    arbitrary: those are masked items, which the caller turns into -1 padding.
    """
    if k >= scores.shape[1]:  # every column is taken: there is no choice among ties to make
        values, columns = torch.topk(scores, k, dim=1, sorted=False)
        return _sort_by_score_then_column(values, columns)
    values, columns = torch.topk(scores, k + 1, dim=1, sorted=True)
    ambiguous = ((values[:, k] == values[:, k - 1]) & (values[:, k - 1] > -torch.inf)).nonzero().squeeze(1)
    values, columns = values[:, :k].contiguous(), columns[:, :k].contiguous()
    if ambiguous.numel():
        kth = values[ambiguous, k - 1 :]
        columns[ambiguous] = _lowest_columns_of_ties(scores[ambiguous], kth, k)
        values[ambiguous] = scores[ambiguous].gather(1, columns[ambiguous])
    return _sort_by_score_then_column(values, columns)


def _lowest_columns_of_ties(scores: Tensor, kth: Tensor, k: int) -> Tensor:
    """Columns above the k-th value plus the lowest columns equal to it: (rows, k), ascending in each row."""
    rows_per_chunk = max(1, _TIE_ROWS_ELEMENTS // max(1, scores.shape[1]))
    chunks = []
    # chunked so the int64 cumsum below stays bounded even when every row of a big tile is tie-heavy
    for start in range(0, scores.shape[0], rows_per_chunk):
        part, part_kth = scores[start : start + rows_per_chunk], kth[start : start + rows_per_chunk]
        above = part > part_kth
        ties = part == part_kth
        wanted = k - above.sum(dim=1, keepdim=True)
        taken = above | (ties & (ties.cumsum(dim=1) <= wanted))
        chunks.append(taken.nonzero()[:, 1].view(-1, k))  # nonzero is row-major: columns ascend in each row
    return torch.cat(chunks)


def _sort_by_score_then_column(values: Tensor, columns: Tensor) -> tuple[Tensor, Tensor]:
    """Order each row by score descending, ties by column ascending (column sort, then stable score sort)."""
    columns, by_column = columns.sort(dim=1)
    values = values.gather(1, by_column)
    values, by_score = values.sort(dim=1, descending=True, stable=True)
    return values, columns.gather(1, by_score)


def _tile_scorer(backend: str, items: Tensor, compute: torch.device):
    """A function (user vectors, k, mask rows, mask cols) -> (scores, columns) for one item tile."""
    if backend == "torch":
        return functools.partial(_torch_tile_topk, items.to(compute))
    return _FaissTile(items, faiss_search_cap())


def _torch_tile_topk(items: Tensor, users: Tensor, k: int, rows: Tensor, cols: Tensor) -> tuple[Tensor, Tensor]:
    """Exact top-k of one (user tile x item tile) block by a dense matmul; masked pairs set to -inf first."""
    scores = users.to(items.device) @ items.T  # (user_tile, item_tile) float32: the dominant memory of topk
    scores[rows.to(items.device), cols.to(items.device)] = -torch.inf
    return exact_topk(scores, k)


@functools.lru_cache(maxsize=1)
def _faiss_gpu_resources() -> Any | None:
    """faiss GPU resources if faiss has GPU support and CUDA is present, else None: the one check."""
    import faiss  # imported lazily: only the faiss backend needs it

    if not hasattr(faiss, "StandardGpuResources") or not torch.cuda.is_available() or faiss.get_num_gpus() < 1:
        return None
    return faiss.StandardGpuResources()


def faiss_search_cap() -> int | None:
    """The largest k a faiss search may ask for: FAISS_GPU_MAX_K on the GPU index, unlimited (None) on CPU."""
    return FAISS_GPU_MAX_K if _faiss_gpu_resources() is not None else None


class _FaissTile:
    """One item tile in a faiss IndexFlatIP (on the GPU where available); exact top-k with masking and ties.

    Fetches k + 1 + the most masked items of any user, drops the masked ones, and resolves ties at the k-th by
    rescoring only the rows whose tied items may lie beyond what was fetched. Where that fetch exceeds `cap`,
    the tile is split into sub-tiles of at most `cap` items, each fetched whole, so k and masks are unlimited.
    """

    def __init__(self, items: Tensor, cap: int | None):
        self.items = items.cpu().contiguous()  # (tile, d) float32, kept for rescoring tie-heavy rows
        self.cap = cap
        self.index = _faiss_index(self.items)
        self._sub_tiles: list[_FaissTile] | None = None  # built on first need, then reused by every user tile

    def __call__(self, users: Tensor, k: int, rows: Tensor, cols: Tensor) -> tuple[Tensor, Tensor]:
        n_items = self.items.shape[0]
        most_masked = int(torch.bincount(rows, minlength=1).max()) if rows.numel() else 0
        # one more than needed: a tie between the k-th and the next item shows as an equal last fetched score
        fetch = min(n_items, k + most_masked + 1)
        if self.cap is not None and fetch > self.cap:
            return self._by_sub_tiles(users, k, rows, cols)
        raw_scores, found = (torch.from_numpy(a) for a in self.index.search(_host_array(users), fetch))
        scores = _drop_masked(raw_scores.clone(), found, rows, cols, n_items)
        # candidates in column order, so that exact_topk's position ties are item-index ties
        found, by_column = found.sort(dim=1)
        values, picked = exact_topk(scores.gather(1, by_column), k)
        columns = found.gather(1, picked)
        if fetch == n_items:
            return values, columns
        # items tied with the k-th value may lie past the fetch only if the last fetched score still equals it
        unsure = ((raw_scores[:, -1] >= values[:, -1]) & (values[:, -1] > -torch.inf)).nonzero().squeeze(1)
        if unsure.numel():
            exact = _torch_tile_topk(self.items, users[unsure].cpu(), k, *_rows_subset(rows, cols, unsure))
            values[unsure], columns[unsure] = exact
        return values, columns

    def _by_sub_tiles(self, users: Tensor, k: int, rows: Tensor, cols: Tensor) -> tuple[Tensor, Tensor]:
        """Merge the exact top-k of sub-tiles of at most `cap` items (each fits one capped faiss search)."""
        cap = int(self.cap)
        if self._sub_tiles is None:
            starts = range(0, self.items.shape[0], cap)
            self._sub_tiles = [_FaissTile(self.items[s : s + cap], cap) for s in starts]
        best = (torch.full((users.shape[0], k), -torch.inf), torch.full((users.shape[0], k), -1))
        for number, sub_tile in enumerate(self._sub_tiles):
            start = number * cap
            inside = (cols >= start) & (cols < start + cap)
            sub_k = min(k, sub_tile.items.shape[0])
            values, columns = sub_tile(users, sub_k, rows[inside], cols[inside] - start)
            best = merge_topk(*best, values, torch.where(values > -torch.inf, columns + start, -1), k)
        return best


def _faiss_index(items: Tensor) -> Any:
    """An exact inner-product faiss index over the tile's items, moved to the GPU when faiss can."""
    import faiss  # imported lazily: only the faiss backend needs it

    index = faiss.IndexFlatIP(items.shape[1])
    resources = _faiss_gpu_resources()
    if resources is not None:
        index = faiss.index_cpu_to_gpu(resources, 0, index)
    index.add(_host_array(items))
    return index


def _host_array(vectors: Tensor) -> np.ndarray:
    """A C-contiguous float32 numpy view (or copy) of the vectors, as faiss requires."""
    return np.ascontiguousarray(vectors.detach().cpu().numpy(), dtype=np.float32)


def _drop_masked(scores: Tensor, found: Tensor, rows: Tensor, cols: Tensor, n_items: int) -> Tensor:
    """Set to -inf the fetched (row, item) pairs that are masked, by int64 key membership."""
    if rows.numel() == 0:
        return scores
    row_ids = torch.arange(found.shape[0]).unsqueeze(1)
    masked = torch.isin(row_ids * n_items + found, rows * n_items + cols)
    return scores.masked_fill_(masked, -torch.inf)


def _rows_subset(rows: Tensor, cols: Tensor, subset: Tensor) -> tuple[Tensor, Tensor]:
    """The mask pairs of the tile rows in `subset` (ascending), renumbered 0..len(subset)-1."""
    keep = torch.isin(rows, subset)
    return torch.searchsorted(subset, rows[keep]), cols[keep]


def by_user_tiles(
    rank_tile: Callable[[Tensor, CSR | None], tuple[Tensor, Tensor]],
    user_idx: Tensor,
    exclude: CSR | None,
    user_tile: int,
) -> tuple[Tensor, Tensor]:
    """rank_tile(users, their rows of the mask) for the users in tiles of user_tile, joined: (items, scores).

    For the models that score a tile of users at once (ItemKNN, SANSA); memory is one tile's.
    """
    items, scores = [], []
    for start in range(0, len(user_idx), user_tile):
        users = user_idx[start : start + user_tile]
        tile_items, tile_scores = rank_tile(users, None if exclude is None else exclude.rows(start, start + len(users)))
        items.append(tile_items)
        scores.append(tile_scores)
    return torch.cat(items), torch.cat(scores)


def topk_over_score_tiles(
    score_items: Callable[[int, int], Tensor], num_items: int, k: int, mask: CSR | None, item_tile: int
) -> tuple[Tensor, Tensor]:
    """Exact top-k of users whose dense scores a model computes item tile by item tile: (items int64, scores float32).

    For models that are not inner products of vectors (ItemKNN, SANSA): the same running top-k, tie-breaking and
    masking as topk() above, so ranking lives in one place.

    `score_items(start, stop)` returns the tile's (n, stop - start) scores. The running top-k is the shared
    retrieval's (exact_topk and its merge: ties to the lower item index); `mask` items get no rank and rows with
    fewer than k allowed items are padded with -1 / -inf. Memory: one (n, item_tile) block plus the (n, k) result.
    """
    best_scores = best_items = None
    rows = cols = None
    if mask is not None:
        mask = mask.to("cpu")
        rows, cols = mask.row_ids(), mask.indices
    for start in range(0, num_items, item_tile):
        stop = min(start + item_tile, num_items)
        scores = score_items(start, stop)
        if rows is not None:
            inside = (cols >= start) & (cols < stop)
            scores[rows[inside].to(scores.device), (cols[inside] - start).to(scores.device)] = -torch.inf
        values, columns = exact_topk(scores.float(), min(k, stop - start))  # rounded once, whatever the tiles
        found = torch.where(values > -torch.inf, columns + start, -1)
        if best_scores is None:
            n = scores.shape[0]
            best_scores = torch.full((n, k), -torch.inf, device=scores.device)
            best_items = torch.full((n, k), -1, dtype=torch.int64, device=scores.device)
        best_scores, best_items = merge_topk(best_scores, best_items, values, found, k)
    return best_items.cpu(), best_scores.float().cpu()
