"""The SASRec / BERT4Rec encoder: multi-head self-attention over a user's last events with learned positions
counted from the newest event, as the Yambda paper runs SASRec (Kang & McAuley 2018), or bidirectional for BERT4Rec
(Sun et al. 2019).

Inputs are scaled by sqrt(d) before the position embedding is added (the paper's recipe). The attention mask lets a
real event attend to real events (earlier or same ones when causal) and every position to itself, so padded rows
stay finite; their outputs are never used.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from yambda_dl.models.sequential.backbones import Backbone, NewestFirstInput, check_positive, check_probability

ACTIVATIONS = {"gelu": nn.GELU, "relu": nn.ReLU}
FLOAT = 4  # bytes per float32 value


class SelfAttention(nn.Module):
    """Multi-head self-attention through F.scaled_dot_product_attention, with one fused q/k/v projection."""

    def __init__(self, d_model: int, num_heads: int, attention_dropout: float) -> None:
        super().__init__()
        self.heads, self.attention_dropout = num_heads, attention_dropout
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        b, length, d = x.shape
        q, k, v = self.qkv(x).view(b, length, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)  # (b, h, L, dh)
        p = self.attention_dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        return self.out(out.transpose(1, 2).reshape(b, length, d))


class Block(nn.Module):
    """One transformer layer: multi-head self-attention and a position-wise feed-forward, residual + norm."""

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        ffn_dim: int,
        dropout: float,
        attention_dropout: float,
        norm_first: bool,
        activation: str,
    ) -> None:
        super().__init__()
        self.norm_first = norm_first
        self.attention = SelfAttention(d_model, num_heads, attention_dropout)
        self.ffn = nn.Sequential(
            nn.Linear(d_model, ffn_dim), ACTIVATIONS[activation](), nn.Dropout(dropout), nn.Linear(ffn_dim, d_model)
        )
        self.norm_attention, self.norm_ffn = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        if self.norm_first:
            x = x + self.drop(self.attention(self.norm_attention(x), mask))
            return x + self.drop(self.ffn(self.norm_ffn(x)))
        x = self.norm_attention(x + self.drop(self.attention(x, mask)))
        return self.norm_ffn(x + self.drop(self.ffn(x)))


class Transformer(Backbone):
    """SASRec's encoder (causal=True, the default) or BERT4Rec's (causal=False); defaults are the paper's SASRec."""

    def __init__(
        self,
        *,
        d_model: int = 64,
        max_len: int = 200,
        num_layers: int = 2,
        num_heads: int = 2,
        ffn_dim: int = 256,
        dropout: float = 0.1,  # on inputs, residual branches and the FFN
        # on attention probabilities: it makes every kernel materialise the b x heads x L x L probabilities (on CPU
        # that dropout was ~40% of a step), so it is off unless asked for
        attention_dropout: float = 0.0,
        norm_first: bool = False,  # False: post-norm, the paper's; True: pre-norm, steadier for deep stacks
        activation: str = "gelu",
        causal: bool = True,
    ) -> None:
        super().__init__()
        check_positive(d_model=d_model, max_len=max_len, num_layers=num_layers, num_heads=num_heads, ffn_dim=ffn_dim)
        check_probability(dropout=dropout, attention_dropout=attention_dropout)
        if d_model % num_heads:
            raise ValueError(f"backbone d_model={d_model} is not divisible by num_heads={num_heads}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown backbone activation {activation!r}; valid choices: {', '.join(ACTIVATIONS)}")
        self.d_model, self.max_len, self.causal = d_model, max_len, causal
        self.num_layers, self.num_heads, self.ffn_dim = num_layers, num_heads, ffn_dim
        self.inputs = NewestFirstInput(d_model, max_len, dropout)
        self.blocks = nn.ModuleList(
            Block(d_model, num_heads, ffn_dim, dropout, attention_dropout, norm_first, activation)
            for _ in range(num_layers)
        )
        # pre-norm leaves the residual stream unnormalised: one norm at the end, as in GPT-2
        self.final_norm = nn.LayerNorm(d_model) if norm_first else nn.Identity()

    def forward(self, x: Tensor, valid: Tensor, timestamps: Tensor | None = None) -> Tensor:
        x = self.inputs(x)
        # built once as the additive float mask SDPA wants: a bool mask is converted by every layer's kernel call
        # (and kept for its backward), ~10% of a layer's attention time on CPU
        mask = attention_bias(valid, self.causal, _compute_dtype(x))
        for block in self.blocks:
            x = block(x, mask)
        return self.final_norm(x)

    def activation_bytes(self, batch: int, length: int) -> int:
        """Per layer: input, qkv, attention output, projection, two norms, dropout masks (~10 d) and the FFN's two
        (tokens, ffn) tensors; attention probabilities and mask where the kernel materialises them (CPU, masked
        GPU); plus the inputs and the additive mask."""
        d, tokens = self.d_model, batch * length
        per_layer = tokens * (10 * d + 3 * self.ffn_dim) * FLOAT + batch * self.num_heads * length * length * 2 * FLOAT
        return self.num_layers * per_layer + 3 * tokens * d * FLOAT + batch * length * length * FLOAT


def attention_mask(valid: Tensor, causal: bool = True) -> Tensor:
    """(b, 1, L, L) bool, True = may attend: real events (earlier-or-same ones when causal), and every position to
    itself. The diagonal keeps padded rows from attending to nothing (a softmax over no keys is NaN). Memory:
    b * L * L bytes.
    """
    length = valid.shape[1]
    diagonal = torch.eye(length, dtype=torch.bool, device=valid.device)
    allowed = valid[:, None, :]
    if causal:
        allowed = allowed & torch.ones(length, length, dtype=torch.bool, device=valid.device).tril()
    return (allowed | diagonal)[:, None]


def attention_bias(valid: Tensor, causal: bool = True, dtype: torch.dtype = torch.float32) -> Tensor:
    """attention_mask as SDPA's additive float mask: 0 where a query may attend, -inf elsewhere (every row keeps its
    diagonal, so no row is all -inf). The same attention as the bool mask, converted once instead of per layer.
    Memory: b * L * L * 4 bytes (float32)."""
    allowed = attention_mask(valid, causal)
    return torch.zeros(allowed.shape, dtype=dtype, device=valid.device).masked_fill_(~allowed, float("-inf"))


def _compute_dtype(x: Tensor) -> torch.dtype:
    """The dtype SDPA will see q in: autocast's (bf16-mixed) when it is on, else x's; the float mask must match it."""
    if torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return x.dtype
