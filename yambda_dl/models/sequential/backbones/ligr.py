"""eSASRec's encoder (Tikhonovich et al., "eSASRec: Enhancing Transformer-based Recommendations in a Modular
Fashion", RecSys 2025, arXiv 2508.06450): SASRec's causal transformer with LiGR layers (Borisyuk et al., "From
Features to Transformers: Redefining Ranking for Scalable Impact", arXiv 2502.03417).

A LiGR layer is pre-norm with a gated residual on each sublayer and a SwiGLU feed-forward:

    h = x + sigmoid(W_a x + b_a) * Dropout(MHA(LayerNorm(x)))
    y = h + sigmoid(W_f h + b_f) * Dropout(SwiGLU(LayerNorm(h)))
    SwiGLU(z) = W_down(Dropout(SiLU(W_gate z) * W_up z))          (no biases)

The gate is computed from the un-normalised residual stream, as in RecTools' LiGRLayer (the implementation eSASRec's
benchmark ran; rectools/models/nn/transformers/ligr.py). Everything else follows the SASRec encoder of
transformer.py: inputs scaled by sqrt(d), learned positions counted from the newest event, the same attention mask
(real earlier-or-same events, plus the diagonal so that padded rows stay finite). Like RecTools' LiGR stack there is
no final norm by default (`final_norm: true` adds one).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from yambda_dl.models.sequential.backbones import Backbone, NewestFirstInput, check_positive, check_probability
from yambda_dl.models.sequential.backbones.transformer import SelfAttention, attention_mask

FLOAT = 4  # bytes per float32 value


class LiGRBlock(nn.Module):
    """One LiGR layer: gated pre-norm self-attention, then a gated pre-norm SwiGLU feed-forward."""

    def __init__(self, d_model: int, num_heads: int, ffn_dim: int, dropout: float, attention_dropout: float) -> None:
        super().__init__()
        self.attention = SelfAttention(d_model, num_heads, attention_dropout)
        self.norm_attention, self.norm_ffn = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.gate_attention, self.gate_ffn = nn.Linear(d_model, d_model), nn.Linear(d_model, d_model)
        self.gate_up = nn.Linear(d_model, 2 * ffn_dim, bias=False)  # SwiGLU's gate and up projections in one matmul
        self.down = nn.Linear(ffn_dim, d_model, bias=False)
        self.drop = nn.Dropout(dropout)

    def ffn(self, x: Tensor) -> Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(self.drop(F.silu(gate) * up))

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        x = x + torch.sigmoid(self.gate_attention(x)) * self.drop(self.attention(self.norm_attention(x), mask))
        return x + torch.sigmoid(self.gate_ffn(x)) * self.drop(self.ffn(self.norm_ffn(x)))


class LiGR(Backbone):
    """eSASRec's causal encoder: a stack of LiGR layers over learned positions counted from the newest event."""

    causal = True

    def __init__(
        self,
        *,
        d_model: int = 64,
        max_len: int = 200,
        num_layers: int = 2,
        num_heads: int = 2,
        ffn_dim: int = 256,  # SwiGLU width: 3 d x ffn_dim weights per layer (GELU's 2 d x ffn_dim at equal width)
        dropout: float = 0.1,  # on inputs, residual branches and the FFN
        attention_dropout: float = 0.0,  # on attention probabilities (forces the materialised-attention kernel)
        final_norm: bool = False,  # a LayerNorm on the output (RecTools' LiGR stack has none)
    ) -> None:
        super().__init__()
        check_positive(d_model=d_model, max_len=max_len, num_layers=num_layers, num_heads=num_heads, ffn_dim=ffn_dim)
        check_probability(dropout=dropout, attention_dropout=attention_dropout)
        if d_model % num_heads:
            raise ValueError(f"backbone d_model={d_model} is not divisible by num_heads={num_heads}")
        self.d_model, self.max_len = d_model, max_len
        self.num_layers, self.num_heads, self.ffn_dim = num_layers, num_heads, ffn_dim
        self.inputs = NewestFirstInput(d_model, max_len, dropout)
        self.blocks = nn.ModuleList(
            LiGRBlock(d_model, num_heads, ffn_dim, dropout, attention_dropout) for _ in range(num_layers)
        )
        self.final_norm = nn.LayerNorm(d_model) if final_norm else nn.Identity()

    def forward(self, x: Tensor, valid: Tensor, timestamps: Tensor | None = None) -> Tensor:
        x = self.inputs(x)
        mask = attention_mask(valid, causal=True)
        for block in self.blocks:
            x = block(x, mask)
        return self.final_norm(x)

    def activation_bytes(self, batch: int, length: int) -> int:
        """Per layer: input, norms, qkv, attention output and projection, two gates (linear + sigmoid), gated
        products and dropout masks (~18 d), and the SwiGLU's gate/up, SiLU, product and dropout (~6 ffn);
        attention probabilities and mask where the kernel materialises them; plus the inputs and the mask."""
        d, tokens = self.d_model, batch * length
        per_layer = tokens * (18 * d + 6 * self.ffn_dim) * FLOAT + batch * self.num_heads * length * length * 2 * FLOAT
        return self.num_layers * per_layer + 4 * tokens * d * FLOAT + batch * length * length
