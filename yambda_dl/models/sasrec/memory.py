"""How much memory SASRec training needs, estimated before it starts, so that a configuration that cannot fit is
refused with the numbers instead of dying hours later. An upper-bound-minded estimate in float32: mixed precision
and fused attention kernels use less.
"""

from __future__ import annotations

from dataclasses import dataclass

from yambda_dl.models.sasrec.losses import LossConfig
from yambda_dl.models.sasrec.network import NetworkConfig
from yambda_dl.utils.memory import GIB

FLOAT = 4  # bytes per float32 value
# the keys to turn when an estimate does not fit (utils/memory.check_fits refuses it, with the numbers)
HINT = (
    "lower model.batch_size, model.max_len or model.d_model, or use a lighter model.loss (sampled_softmax; smaller "
    "model.ce_chunk_items for full_ce)"
)


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes of each part of one training step."""

    parameters: int  # weights
    optimizer: int  # gradients + Adam's two moments: 3x the weights
    activations: int  # what the transformer keeps for backward, per batch
    loss: int  # logits, gathered embeddings and their gradients, per batch

    @property
    def total(self) -> int:
        return self.parameters + self.optimizer + self.activations + self.loss

    def describe(self) -> str:
        parts = ", ".join(
            f"{name} {getattr(self, name) / GIB:.2f} GiB" for name in ("parameters", "optimizer", "activations", "loss")
        )
        return f"{parts}; total {self.total / GIB:.2f} GiB"


def parameter_count(num_items: int, net: NetworkConfig) -> int:
    """Weights of SASRecNetwork: embeddings, then per layer attention (4 d^2 + 4 d), FFN and two norms."""
    d, f = net.d_model, net.ffn_dim
    per_layer = (4 * d * d + 4 * d) + (2 * d * f + f + d) + 4 * d
    return (num_items + 1 + net.max_len) * d + net.num_layers * per_layer + (2 * d if net.norm_first else 0)


def estimate(num_items: int, net: NetworkConfig, loss: LossConfig, batch_size: int) -> MemoryEstimate:
    """Memory of one step with batches of `batch_size` full-length sequences (every position a real event)."""
    d, length = net.d_model, net.max_len
    tokens = batch_size * length
    params = parameter_count(num_items, net)
    # per layer: input, qkv, attention output, projection, two norms, dropout masks (~10 d) and the FFN's two
    # (tokens, ffn) tensors; attention probabilities and mask when the kernel materialises them (CPU, masked GPU)
    per_layer = tokens * (10 * d + 3 * net.ffn_dim) * FLOAT + batch_size * net.num_heads * length * length * 2 * FLOAT
    activations = net.num_layers * per_layer + 3 * tokens * d * FLOAT + batch_size * length * length
    n = loss.num_negatives
    if loss.loss == "bce":  # per-position negatives: (P, n, d) gathered embeddings and their gradient
        loss_bytes = 2 * tokens * (n + 1) * d * FLOAT
    elif loss.loss == "full_ce":  # one chunk's logits and softmax, plus the float32 table gradient copy
        loss_bytes = 3 * tokens * loss.ce_chunk_items * FLOAT + 2 * num_items * d * FLOAT
    else:  # shared negatives: (P, n) logits, their softmax and gradient
        loss_bytes = 3 * tokens * n * FLOAT + 2 * n * d * FLOAT
    return MemoryEstimate(params * FLOAT, 3 * params * FLOAT, activations, loss_bytes)
