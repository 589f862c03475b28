"""Item representations: how an item index becomes the vector a backbone reads and the vector a hidden state is
scored against. The sequential recommender asks only this small interface of them, so that content-based
representations (audio vectors, semantic IDs) plug in without touching backbones, objectives or losses.

Token layout: items are 0..num_items-1; then `num_special` special tokens: num_items is the padding token (its
input vector is zero), num_items + 1 the mask token of masked-item objectives.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor, nn

from yambda_dl.models.audio import REDUCTIONS, load_audio, reduce_audio

if TYPE_CHECKING:
    from yambda_dl.data.split import Split


class ItemRepresentation(nn.Module):
    """Input vectors of tokens and output vectors of candidate items (see the module docstring for token layout)."""

    def __init__(self, num_items: int, num_special: int, d_model: int) -> None:
        super().__init__()
        if num_items < 1 or num_special < 1 or d_model < 1:
            raise ValueError(f"need num_items, num_special, d_model >= 1; got {num_items}, {num_special}, {d_model}")
        self.num_items, self.num_special, self.d_model = num_items, num_special, d_model

    @property
    def pad(self) -> int:
        """The padding token."""
        return self.num_items

    @property
    def mask(self) -> int:
        """The mask token of masked-item objectives (needs num_special >= 2)."""
        if self.num_special < 2:
            raise ValueError("this item representation has no mask token (num_special < 2)")
        return self.num_items + 1

    def forward(self, tokens: Tensor) -> Tensor:
        """(...,) int64 tokens in [0, num_items + num_special) -> (..., d) input vectors; the padding token -> 0."""
        raise NotImplementedError

    def output(self, items: Tensor) -> Tensor:
        """(...,) int64 item indices in [0, num_items) -> (..., d) output vectors (what hidden states score)."""
        raise NotImplementedError

    def output_vectors(self) -> Tensor:
        """(num_items, d): every candidate's output vector (scoring and full-catalogue losses)."""
        raise NotImplementedError


def id_table(num_items: int, num_special: int, d_model: int, init_std: float | None = None) -> nn.Embedding:
    """One learned row per token, normal with std init_std (default d^-1/2, which keeps initial logits h.e near unit
    scale whatever d is); the padding row (num_items) is zero and gets no gradient."""
    table = nn.Embedding(num_items + num_special, d_model, padding_idx=num_items)
    nn.init.normal_(table.weight, std=d_model**-0.5 if init_std is None else init_std)
    with torch.no_grad():
        table.weight[num_items].zero_()
    return table


class IdEmbedding(ItemRepresentation):
    """One learned vector per token, tied between input and output: the paper's SASRec.

    Memory: (num_items + num_special) x d parameters, the bulk of a sequential model at Yambda's scale (9.39M items
    x 64 dims = 2.4 GB with Adam's state in float32).
    """

    def __init__(
        self, num_items: int, num_special: int, d_model: int, init_std: float | None = None, split: Split | None = None
    ) -> None:
        super().__init__(num_items, num_special, d_model)
        self.embedding = id_table(num_items, num_special, d_model, init_std)

    def forward(self, tokens: Tensor) -> Tensor:
        return self.embedding(tokens)

    def output(self, items: Tensor) -> Tensor:
        return self.embedding.weight[items]

    def output_vectors(self) -> Tensor:
        return self.embedding.weight[: self.num_items]


# --- audio-based representations (issue 12) -----------------------------------------------------------------------
#
# Each reads the split's audio view (data/embeddings.item_embeddings: the data config's side_files.embeddings aligned
# to the train items); frozen content tables are non-persistent buffers, rebuilt from the split when a checkpoint is
# loaded, so checkpoints hold only what trains. memory.py counts buffers as "tables" in the memory estimate.

TABLE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
AUDIO_DIM = 128  # Yambda's audio vectors


def _choice(repr_name: str, key: str, value: object, valid: tuple[str, ...] | dict) -> None:
    if value not in valid:
        raise ValueError(f"model.item_repr.{key}={value!r} ({repr_name}): valid choices: {', '.join(valid)}")


def _positive(repr_name: str, key: str, value: float | None, allow_none: bool = False) -> None:
    if (value is None and not allow_none) or (value is not None and not value > 0):
        raise ValueError(f"model.item_repr.{key}={value!r} ({repr_name}) must be > 0")


def _check_audio_keys(repr_name: str, column: str) -> None:
    from yambda_dl.data.embeddings import EMBEDDING_COLUMNS

    _choice(repr_name, "column", column, EMBEDDING_COLUMNS)


class AudioInit(IdEmbedding):
    """Id embeddings initialised from the audio vectors reduced to d (PCA or a random projection fitted on the train
    items, scaled to the id table's init_std); items without a vector keep the usual random init. Then trained like
    IdEmbedding: the audio only decides where each item starts. Memory: IdEmbedding's."""

    def __init__(
        self,
        num_items: int,
        num_special: int,
        d_model: int,
        split: Split | None = None,
        reduce: str = "pca",
        column: str = "normalized_embed",
        init_std: float | None = None,
    ) -> None:
        _choice("audio_init", "reduce", reduce, REDUCTIONS)
        _check_audio_keys("audio_init", column)
        _positive("audio_init", "init_std", init_std, allow_none=True)
        super().__init__(num_items, num_special, d_model, init_std=init_std)
        vectors, present = load_audio(split, column, num_items, "audio_init")
        std = d_model**-0.5 if init_std is None else init_std
        reduced = reduce_audio(vectors, present, d_model, reduce, rms=std)
        with torch.no_grad():
            self.embedding.weight[:num_items][present] = reduced[present]


class Hybrid(ItemRepresentation):
    """Id embedding + a learned linear projection of the frozen audio vector, summed; items without a vector get a
    learned vector in place of the projection (the design with the largest published gain on Yambda). Tied
    between input and output. Cold candidates (protocol.candidates=train_and_cold) have no id row: they are scored
    by their projected audio alone. Memory: the id table and a 128 x d projection train; the audio table
    (num_candidates x 128, float32 or bfloat16) is a frozen buffer."""

    def __init__(
        self,
        num_items: int,
        num_special: int,
        d_model: int,
        split: Split | None = None,
        column: str = "normalized_embed",
        init_std: float | None = None,
        dtype: str = "float32",
    ) -> None:
        _check_audio_keys("hybrid", column)
        _choice("hybrid", "dtype", dtype, TABLE_DTYPES)
        _positive("hybrid", "init_std", init_std, allow_none=True)
        super().__init__(num_items, num_special, d_model)
        std = d_model**-0.5 if init_std is None else init_std
        self.embedding = id_table(num_items, num_special, d_model, std)
        self.projection = nn.Linear(AUDIO_DIM, d_model, bias=False)
        self.missing = nn.Parameter(torch.randn(d_model) * std)  # the content part of items without a vector
        vectors, present = load_audio(split, column, num_items, "hybrid")
        vectors, present = _with_cold_rows(vectors, present, cold_audio(split, column))
        self.register_buffer("audio", vectors.to(TABLE_DTYPES[dtype]), persistent=False)
        self.register_buffer("present", present, persistent=False)

    def content(self, items: Tensor | None = None) -> Tensor:
        """The content part of candidates ((..., d)), or of every candidate (train, then cold) when `items` is None."""
        audio, present = (self.audio, self.present) if items is None else (self.audio[items], self.present[items])
        projected = self.projection(audio.to(self.projection.weight.dtype))
        return torch.where(present[..., None], projected, self.missing)

    def forward(self, tokens: Tensor) -> Tensor:
        is_item = tokens < self.num_items
        content = self.content(tokens.clamp(max=self.num_items - 1)) * is_item[..., None]
        return self.embedding(tokens) + content  # special tokens: their id row alone (the pad row is zero)

    def output(self, items: Tensor) -> Tensor:
        return self.embedding.weight[items] + self.content(items)

    def output_vectors(self) -> Tensor:
        content = self.content()
        warm = self.embedding.weight[: self.num_items] + content[: self.num_items]
        return torch.cat([warm, content[self.num_items :]])  # cold candidates: their content alone


class Delta(ItemRepresentation):
    """Frozen audio projected to d (PCA or a random projection fitted on the train items, rows of mean norm about
    1) plus a small trainable delta per item whose norm is bounded by `max_delta_norm` ("Let It Go? Not Quite",
    RecSys'25): the item stays near its content vector while the sequence data adjusts it. Items without a vector,
    and the special tokens, learn a free vector (their delta, not bounded) from the usual random init.
    Memory: the delta table trains (num_items x d); the projected audio (num_items x d) is a frozen buffer."""

    def __init__(
        self,
        num_items: int,
        num_special: int,
        d_model: int,
        split: Split | None = None,
        reduce: str = "pca",
        column: str = "normalized_embed",
        max_delta_norm: float = 0.1,
        init_std: float | None = None,
    ) -> None:
        _choice("delta", "reduce", reduce, REDUCTIONS)
        _check_audio_keys("delta", column)
        _positive("delta", "max_delta_norm", max_delta_norm)
        _positive("delta", "init_std", init_std, allow_none=True)
        super().__init__(num_items, num_special, d_model)
        self.max_delta_norm = max_delta_norm
        std = d_model**-0.5 if init_std is None else init_std
        vectors, present = load_audio(split, column, num_items, "delta")
        bounded = torch.cat([present, torch.zeros(num_special, dtype=torch.bool)])
        delta = torch.randn(num_items + num_special, d_model) * std
        delta[bounded] = 0.0  # an item with a vector starts exactly at its content vector
        delta[self.pad] = 0.0
        self.delta = nn.Parameter(delta)
        base = reduce_audio(vectors, present, d_model, reduce, rms=d_model**-0.5)  # rows of norm ~1
        self.register_buffer("base", torch.cat([base, torch.zeros(num_special, d_model)]), persistent=False)
        self.register_buffer("bounded", bounded, persistent=False)

    def _rows(self, tokens: Tensor) -> Tensor:
        delta = self.delta[tokens]
        norm = delta.norm(dim=-1, keepdim=True)
        # a differentiable bound: rows longer than max_delta_norm are scaled back onto the ball
        shrink = (self.max_delta_norm / norm.clamp_min(1e-12)).clamp(max=1.0)
        delta = torch.where(self.bounded[tokens][..., None], delta * shrink, delta)
        return self.base[tokens] + delta

    def forward(self, tokens: Tensor) -> Tensor:
        return self._rows(tokens) * (tokens != self.pad)[..., None]

    def output(self, items: Tensor) -> Tensor:
        return self._rows(items)

    def output_vectors(self) -> Tensor:
        return self._rows(torch.arange(self.num_items, device=self.delta.device))


class Content(ItemRepresentation):
    """Content only: an adaptor MLP over the frozen audio vector, no id table (UniSRec-like), so any item with a
    vector is scored, train events or not (with protocol.candidates=train_and_cold, the cold candidates too). Items
    without a vector share one learned vector; special tokens have their own. output_vectors() computes the
    candidates in chunks of `chunk_items`. Memory: the adaptor's weights; the audio table (num_candidates x 128,
    float32 or bfloat16) is a frozen buffer."""

    def __init__(
        self,
        num_items: int,
        num_special: int,
        d_model: int,
        split: Split | None = None,
        column: str = "normalized_embed",
        hidden_dim: int | None = 256,
        dropout: float = 0.0,
        chunk_items: int = 65_536,
        dtype: str = "float32",
    ) -> None:
        _check_audio_keys("content", column)
        _choice("content", "dtype", dtype, TABLE_DTYPES)
        _positive("content", "hidden_dim", hidden_dim, allow_none=True)
        _positive("content", "chunk_items", chunk_items)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"model.item_repr.dropout={dropout!r} (content) must be in [0, 1)")
        super().__init__(num_items, num_special, d_model)
        self.chunk_items = int(chunk_items)
        if hidden_dim is None:
            self.adaptor: nn.Module = nn.Linear(AUDIO_DIM, d_model)
        else:
            self.adaptor = nn.Sequential(
                nn.Linear(AUDIO_DIM, hidden_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden_dim, d_model)
            )
        std = d_model**-0.5
        self.missing = nn.Parameter(torch.randn(d_model) * std)
        self.special = nn.Embedding(num_special, d_model, padding_idx=0)  # row 0: the padding token
        nn.init.normal_(self.special.weight, std=std)
        with torch.no_grad():
            self.special.weight[0].zero_()
        vectors, present = load_audio(split, column, num_items, "content")
        vectors, present = _with_cold_rows(vectors, present, cold_audio(split, column))
        self.register_buffer("audio", vectors.to(TABLE_DTYPES[dtype]), persistent=False)
        self.register_buffer("present", present, persistent=False)

    def _items(self, items: Tensor) -> Tensor:
        audio = self.audio[items].to(self.missing.dtype)
        return torch.where(self.present[items][..., None], self.adaptor(audio), self.missing)

    def forward(self, tokens: Tensor) -> Tensor:
        is_item = tokens < self.num_items
        items = self._items(tokens.clamp(max=self.num_items - 1))
        special = self.special((tokens - self.num_items).clamp(min=0))
        return torch.where(is_item[..., None], items, special)

    def output(self, items: Tensor) -> Tensor:
        return self._items(items)

    def output_vectors(self) -> Tensor:
        device, candidates = self.missing.device, len(self.audio)
        chunks = [
            self._items(torch.arange(start, min(start + self.chunk_items, candidates), device=device))
            for start in range(0, candidates, self.chunk_items)
        ]
        return torch.cat(chunks)


def cold_audio(split: Split | None, column: str) -> Tensor:
    """The audio vectors (num_cold, 128) float32 of the split's cold candidates (protocol.candidates=train_and_cold:
    items with a vector and no train event, candidate index num_items + row); (0, 128) otherwise. The content
    representations score them; the rest rank train items only."""
    if split is None or split.num_candidates == split.num_items:
        return torch.zeros(0, AUDIO_DIM)
    from yambda_dl.data.embeddings import candidate_embeddings

    view = candidate_embeddings(split, column=column)
    return torch.from_numpy(np.array(view.vectors[split.num_items : split.num_candidates], dtype=np.float32))


def _with_cold_rows(vectors: Tensor, present: Tensor, cold: Tensor) -> tuple[Tensor, Tensor]:
    """The train items' audio table and mask extended by the cold candidates' rows (each has a vector)."""
    if not len(cold):
        return vectors, present
    return torch.cat([vectors, cold]), torch.cat([present, torch.ones(len(cold), dtype=torch.bool)])


SEMANTIC_MODES = ("sum", "replace")


class SemanticIds(ItemRepresentation):
    """Embeddings of an item's semantic ID, its residual k-means codes of the audio (data/semantic_ids.py, a cached
    artefact of the catalogue), one table per level, summed; `mode`: sum (+ the item's id embedding) or replace (no
    id table). Items without a vector get a reserved code at every level and a unique code at the collision level,
    so every item's tuple is its own. Tied between input and output. Memory: the level tables ((codebook_size + 1)
    x levels + the collision level's rows, x d) train; the codes (num_items x (levels + 1) int32) are a buffer."""

    def __init__(
        self,
        num_items: int,
        num_special: int,
        d_model: int,
        split: Split | None = None,
        levels: int = 3,
        codebook_size: int = 256,
        column: str = "normalized_embed",
        codebook_seed: int = 0,
        iterations: int = 20,
        mode: str = "sum",
        init_std: float | None = None,
    ) -> None:
        from yambda_dl.data.semantic_ids import CodebookConfig, split_semantic_ids

        _choice("semantic_ids", "mode", mode, SEMANTIC_MODES)
        _check_audio_keys("semantic_ids", column)
        _positive("semantic_ids", "init_std", init_std, allow_none=True)
        try:
            cfg = CodebookConfig(levels, codebook_size, column, codebook_seed, iterations)
        except ValueError as error:
            raise ValueError(f"model.item_repr ({error})") from None
        if split is None:
            raise ValueError("model.item_repr semantic_ids needs the split (its items' audio vectors); got split=None")
        super().__init__(num_items, num_special, d_model)
        self.mode = mode
        codes, present = split_semantic_ids(split, cfg).for_items(split.items)
        missing = np.flatnonzero(~present)
        codes[missing, :levels] = codebook_size  # the reserved "no vector" code of each level
        codes[missing, levels] = np.arange(len(missing))  # ... made unique by the collision level
        sizes = [codebook_size + 1] * levels + [max(int(codes[:, levels].max()) + 1 if num_items else 1, 1)]
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        self.register_buffer("codes", torch.from_numpy((codes + offsets).astype(np.int32)), persistent=False)
        std = d_model**-0.5 if init_std is None else init_std
        self.code_embedding = nn.Embedding(int(sum(sizes)), d_model)
        nn.init.normal_(self.code_embedding.weight, std=std / (levels + 1) ** 0.5)  # the sum has std `std`
        pad = num_items if mode == "sum" else 0  # replace: a table of the special tokens only
        self.embedding = nn.Embedding(pad + num_special, d_model, padding_idx=pad)
        nn.init.normal_(self.embedding.weight, std=std)
        with torch.no_grad():
            self.embedding.weight[pad].zero_()

    def _items(self, items: Tensor) -> Tensor:
        vectors = self.code_embedding(self.codes[items]).sum(-2)
        return vectors + self.embedding(items) if self.mode == "sum" else vectors

    def forward(self, tokens: Tensor) -> Tensor:
        is_item = tokens < self.num_items
        items = self._items(tokens.clamp(max=self.num_items - 1))
        special = self.embedding(tokens if self.mode == "sum" else (tokens - self.num_items).clamp(min=0))
        return torch.where(is_item[..., None], items, special)

    def output(self, items: Tensor) -> Tensor:
        return self._items(items)

    def output_vectors(self) -> Tensor:
        return self._items(torch.arange(self.num_items, device=self.codes.device))
