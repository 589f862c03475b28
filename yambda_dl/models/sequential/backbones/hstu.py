"""HSTU's encoder (Zhai et al., "Actions Speak Louder than Words: Trillion-Parameter Sequential Transducers for
Generative Recommendations", ICML 2024, arXiv 2402.17152), the sequential model of the MLPerf DLRMv3 benchmark.

Each layer (a Sequential Transduction Unit), with pointwise aggregated attention instead of a softmax:

    U, V, Q, K = split(SiLU(LayerNorm(x) W_uvqk))                       (per head: linear_dim, linear_dim, dqk, dqk)
    A = SiLU(Q K^T + rab^{p,t}) / max_len * M                          (M: causal and real keys)
    y = x + W_o Dropout(U * LayerNorm(A V))

as the reference implementation writes it (facebookresearch/generative-recommenders,
generative_recommenders/modeling/sequential/hstu.py: SequentialTransductionUnitJagged with normalization
"rel_bias", linear_config "uvqk", SiLU activation; the input preprocessor scales inputs by sqrt(d) and adds learned
positions, then dropout). Layer norms inside a unit have no affine weights (F.layer_norm, eps 1e-6); W_uvqk is
drawn from N(0, 0.02^2) and W_o Xavier-uniform, as there.

rab^{p,t} (RelativeBucketedTimeAndPositionBasedBias there), one per layer: a learned bias per position distance
i - j (max_len of them) plus a learned bias per time bucket floor(ln(max(|t_i - t_j|, 1)) / 0.301), clipped to
[0, num_time_buckets] (129 biases by default; 0.301 ~ ln 1.35, so buckets widen by 35% each).

Two deliberate differences from the reference, both to keep the Backbone contract:
- The reference pairs query i with the *next* event's timestamp t_{i+1} (the request time, known when serving in
  production). Here the query's own timestamp t_i is used: the next event's time is the training target's, so using
  it would leak target information and break causality (the output at column i would depend on column i + 1), and it
  does not exist at scoring time.
- The reference divides by n, the padded length, which there is the fixed maximum sequence length; here it is the
  backbone's max_len, so outputs do not depend on how many padding columns a batch carries.
Padded rows attend to nothing: their A V is zero and LayerNorm(0) = 0, so they stay finite without a diagonal.
The reference L2-normalises the output for its cosine-similarity loss; the item vectors here are the shared,
unnormalised table, so a LayerNorm on the output bounds the scale instead (`final_norm`, on by default).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from yambda_dl.models.sequential.backbones import Backbone, NewestFirstInput, check_positive, check_probability

FLOAT = 4  # bytes per float32 value
BUCKET_WIDTH = 0.301  # the reference's time buckets: floor(ln|dt| / 0.301)
EPS = 1e-6  # the reference's layer-norm epsilon


def time_buckets(timestamps: Tensor, num_buckets: int) -> Tensor:
    """(b, L, L) int64: bucket of |t_i - t_j| on the reference's log scale, clipped to [0, num_buckets]."""
    gaps = (timestamps[:, :, None] - timestamps[:, None, :]).abs().clamp(min=1).float()  # ~1e-7 relative: ample
    return (gaps.log() / BUCKET_WIDTH).long().clamp(max=num_buckets)


class STU(nn.Module):
    """One HSTU layer (see the module docstring); rab's tables are its own, the buckets are shared by the stack."""

    def __init__(
        self,
        d_model: int,
        max_len: int,
        num_heads: int,
        attention_dim: int,
        linear_dim: int,
        num_time_buckets: int,
        dropout: float,
        attention_dropout: float,
    ) -> None:
        super().__init__()
        self.d_model, self.max_len, self.heads = d_model, max_len, num_heads
        self.attention_dim, self.linear_dim, self.attention_dropout = attention_dim, linear_dim, attention_dropout
        width = num_heads * (2 * linear_dim + 2 * attention_dim)
        self.uvqk = nn.Parameter(torch.empty(d_model, width).normal_(0, 0.02))
        self.out = nn.Linear(num_heads * linear_dim, d_model)
        nn.init.xavier_uniform_(self.out.weight)
        self.position_bias = nn.Parameter(torch.empty(max_len).normal_(0, 0.02))  # by distance i - j
        self.time_bias = nn.Parameter(torch.empty(num_time_buckets + 1).normal_(0, 0.02))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, keep: Tensor, distance: Tensor, buckets: Tensor) -> Tensor:
        """x (b, L, d); keep (b, 1, L, L) float, 1 where query i may read key j; distance (L, L) int64 i - j clipped
        to [0, max_len); buckets (b, L, L) int64 time buckets."""
        b, length, _ = x.shape
        h, dv, dqk = self.heads, self.linear_dim, self.attention_dim
        uvqk = F.silu(F.layer_norm(x, (self.d_model,), eps=EPS) @ self.uvqk)
        u, v, q, k = uvqk.split([h * dv, h * dv, h * dqk, h * dqk], dim=-1)
        q = q.view(b, length, h, dqk).transpose(1, 2)  # (b, h, L, dqk)
        k = k.view(b, length, h, dqk).transpose(1, 2)
        bias = self.position_bias[distance] + self.time_bias[buckets]  # (b, L, L)
        scores = F.silu(q @ k.transpose(-1, -2) + bias[:, None]) * (keep / self.max_len)
        if self.training and self.attention_dropout > 0:
            scores = F.dropout(scores, self.attention_dropout)
        attended = (scores @ v.view(b, length, h, dv).transpose(1, 2)).transpose(1, 2).reshape(b, length, h * dv)
        return x + self.out(self.drop(u * F.layer_norm(attended, (h * dv,), eps=EPS)))


class HSTU(Backbone):
    """HSTU: pointwise aggregated attention with relative position and time biases; reads the events' timestamps."""

    causal = True
    uses_timestamps = True

    def __init__(
        self,
        *,
        d_model: int = 64,
        max_len: int = 200,
        num_layers: int = 2,
        num_heads: int = 2,
        attention_dim: int | None = None,  # per head, Q and K; null: d_model / num_heads
        linear_dim: int | None = None,  # per head, U and V; null: d_model / num_heads
        num_time_buckets: int = 128,  # the reference's: log buckets up to e^(128 * 0.301) s, far beyond any gap
        dropout: float = 0.1,  # on inputs and on each unit's U * norm(AV) (the reference's linear dropout)
        attention_dropout: float = 0.0,  # on the attention weights
        final_norm: bool = True,  # a LayerNorm on the output (the reference L2-normalises it instead)
    ) -> None:
        super().__init__()
        check_positive(d_model=d_model, max_len=max_len, num_layers=num_layers, num_heads=num_heads)
        if (attention_dim is None or linear_dim is None) and d_model % num_heads:
            raise ValueError(
                f"backbone d_model={d_model} is not divisible by num_heads={num_heads}: set attention_dim and "
                "linear_dim (per head) explicitly"
            )
        attention_dim = d_model // num_heads if attention_dim is None else attention_dim
        linear_dim = d_model // num_heads if linear_dim is None else linear_dim
        check_positive(attention_dim=attention_dim, linear_dim=linear_dim, num_time_buckets=num_time_buckets)
        check_probability(dropout=dropout, attention_dropout=attention_dropout)
        self.d_model, self.max_len, self.num_layers, self.num_heads = d_model, max_len, num_layers, num_heads
        self.attention_dim, self.linear_dim, self.num_time_buckets = attention_dim, linear_dim, num_time_buckets
        self.inputs = NewestFirstInput(d_model, max_len, dropout)
        self.layers = nn.ModuleList(
            STU(d_model, max_len, num_heads, attention_dim, linear_dim, num_time_buckets, dropout, attention_dropout)
            for _ in range(num_layers)
        )
        self.final_norm = nn.LayerNorm(d_model) if final_norm else nn.Identity()

    def forward(self, x: Tensor, valid: Tensor, timestamps: Tensor | None = None) -> Tensor:
        length = x.shape[1]
        if timestamps is None:
            raise ValueError("HSTU reads the events' timestamps (uses_timestamps): forward got timestamps=None")
        columns = torch.arange(length, device=x.device)
        distance = columns[:, None] - columns[None, :]  # i - j: >= 0 where the causal mask keeps it
        keep = (distance >= 0) & valid[:, None, :]  # causal, real keys; padded queries read them but are unused
        keep = keep[:, None].to(x.dtype)  # (b, 1, L, L)
        distance = distance.clamp(0, self.max_len - 1)
        buckets = time_buckets(timestamps, self.num_time_buckets)
        x = self.inputs(x)  # refuses length > max_len
        for layer in self.layers:
            x = layer(x, keep, distance, buckets)
        return self.final_norm(x)

    def activation_bytes(self, batch: int, length: int) -> int:
        """Per layer: input, its norm, UVQK before and after SiLU, A V, its norm and U * norm, dropout mask and the
        output (~4 d + 2 uvqk + 4 h dv); the (b, h, L, L) scores before and after SiLU, masked and dropped (4), and
        the (b, L, L) bias; plus the inputs, the keep mask and the int64 buckets."""
        tokens, d, h = batch * length, self.d_model, self.num_heads
        uvqk = h * (2 * self.linear_dim + 2 * self.attention_dim)
        square = batch * length * length
        per_layer = tokens * (4 * d + 2 * uvqk + 4 * h * self.linear_dim) * FLOAT + square * (4 * h + 1) * FLOAT
        return self.num_layers * per_layer + 3 * tokens * d * FLOAT + square * (FLOAT + 8)
