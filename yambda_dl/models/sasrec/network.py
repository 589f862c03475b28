"""The SASRec transformer (Kang & McAuley 2018) as the Yambda paper runs it: causal self-attention over a user's
last events, learned positions counted from the newest event, item embeddings tied between input and output.

Sequences come right-aligned (newest event in the last column) with the padding item in empty slots; the output
at position t is the user's state after event t, scored against item embeddings by inner product.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ACTIVATIONS = {"gelu": nn.GELU, "relu": nn.ReLU}


@dataclass(frozen=True)
class NetworkConfig:
    """Sizes of the transformer; the defaults are the paper's (docs/protocol.md#sasrec)."""

    d_model: int = 64
    num_layers: int = 2
    num_heads: int = 2
    ffn_dim: int = 256
    max_len: int = 200
    dropout: float = 0.1  # on embeddings, residual branches and the FFN
    # on attention probabilities: it makes every kernel materialise the b x heads x L x L probabilities (on CPU
    # that dropout was ~40% of a step), so it is off unless asked for
    attention_dropout: float = 0.0
    norm_first: bool = False  # False: post-norm, the paper's; True: pre-norm, steadier for deep stacks
    activation: str = "gelu"

    def __post_init__(self) -> None:
        if min(self.d_model, self.num_layers, self.num_heads, self.ffn_dim, self.max_len) < 1:
            raise ValueError(f"SASRec sizes must be >= 1: {self}")
        if self.d_model % self.num_heads:
            raise ValueError(f"d_model={self.d_model} is not divisible by num_heads={self.num_heads}")
        if not (0.0 <= self.dropout < 1.0 and 0.0 <= self.attention_dropout < 1.0):
            raise ValueError(
                f"dropout and attention_dropout must be in [0, 1), got {self.dropout}, {self.attention_dropout}"
            )
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {self.activation!r}; valid choices: {', '.join(ACTIVATIONS)}")


class Block(nn.Module):
    """One transformer layer: multi-head causal self-attention and a position-wise feed-forward, residual + norm."""

    def __init__(self, config: NetworkConfig) -> None:
        super().__init__()
        d, self.heads, self.norm_first = config.d_model, config.num_heads, config.norm_first
        self.attention_dropout = config.attention_dropout
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)
        self.ffn = nn.Sequential(
            nn.Linear(d, config.ffn_dim),
            ACTIVATIONS[config.activation](),
            nn.Dropout(config.dropout),
            nn.Linear(config.ffn_dim, d),
        )
        self.norm_attention, self.norm_ffn = nn.LayerNorm(d), nn.LayerNorm(d)
        self.drop = nn.Dropout(config.dropout)

    def attention(self, x: Tensor, mask: Tensor) -> Tensor:
        b, length, d = x.shape
        q, k, v = self.qkv(x).view(b, length, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)  # (b, h, L, dh)
        p = self.attention_dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        return self.out(out.transpose(1, 2).reshape(b, length, d))

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        if self.norm_first:
            x = x + self.drop(self.attention(self.norm_attention(x), mask))
            return x + self.drop(self.ffn(self.norm_ffn(x)))
        x = self.norm_attention(x + self.drop(self.attention(x, mask)))
        return self.norm_ffn(x + self.drop(self.ffn(x)))


class SASRecNetwork(nn.Module):
    """Item sequences (b, L) -> hidden states (b, L, d); item i's output vector is row i of the input embedding."""

    def __init__(self, num_items: int, config: NetworkConfig) -> None:
        super().__init__()
        self.config, self.num_items = config, num_items
        self.pad = num_items  # the padding item: the table's last row, kept at zero and never a candidate
        self.item_embedding = nn.Embedding(num_items + 1, config.d_model, padding_idx=self.pad)
        self.position_embedding = nn.Embedding(config.max_len, config.d_model)  # row 0: the newest event
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.num_layers))
        # pre-norm leaves the residual stream unnormalised: one norm at the end, as in GPT-2
        self.final_norm = nn.LayerNorm(config.d_model) if config.norm_first else nn.Identity()
        nn.init.normal_(self.item_embedding.weight, std=config.d_model**-0.5)
        with torch.no_grad():
            self.item_embedding.weight[self.pad].zero_()

    def item_vectors(self) -> Tensor:
        """(num_items, d): the tied output embeddings of the candidates (the padding row left out)."""
        return self.item_embedding.weight[: self.num_items]

    def forward(self, items: Tensor) -> Tensor:
        """items: (b, L) int64, right-aligned, `pad` in empty slots; returns (b, L, d)."""
        length = items.shape[1]
        if length > self.config.max_len:
            raise ValueError(f"sequences of length {length} exceed max_len={self.config.max_len}")
        positions = torch.arange(length - 1, -1, -1, device=items.device)  # counted from the newest event
        x = self.item_embedding(items) * math.sqrt(self.config.d_model) + self.position_embedding(positions)
        x = self.drop(x)
        mask = attention_mask(items != self.pad)
        for block in self.blocks:
            x = block(x, mask)
        return self.final_norm(x)


def attention_mask(valid: Tensor) -> Tensor:
    """(b, 1, L, L) bool, True = may attend: earlier-or-same real events, and every position to itself.

    The diagonal keeps padded rows from attending to nothing (a softmax over no keys is NaN); their outputs are
    never used. Memory: b * L * L bytes.
    """
    length = valid.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool, device=valid.device).tril()
    diagonal = torch.eye(length, dtype=torch.bool, device=valid.device)
    return ((causal & valid[:, None, :]) | diagonal)[:, None]
