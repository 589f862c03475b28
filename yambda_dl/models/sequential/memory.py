"""How much memory training a sequential model needs, estimated from its parts before it starts, so that a
configuration that cannot fit is refused with the numbers instead of dying hours later. Upper-bound-minded, in
float32: mixed precision and fused attention kernels use less.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from yambda_dl.utils.memory import GIB

if TYPE_CHECKING:
    from torch import nn

FLOAT = 4  # bytes per float32 value
# the keys to turn when an estimate does not fit (utils/memory.check_fits refuses it, with the numbers)
HINT = (
    "lower model.batch_size, model.max_len or model.d_model, or use a lighter loss (model/loss=sampled_softmax; "
    "a smaller model.loss.chunk_items for full_ce)"
)


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes of each part of one training step."""

    parameters: int  # trainable weights
    optimizer: int  # gradients + Adam's two moments: 3x the weights
    tables: int  # frozen tables the parts hold as buffers (audio vectors, semantic-ID codes)
    activations: int  # what the backbone and the input lookups keep for backward, per batch
    loss: int  # logits, gathered vectors and their gradients, per batch

    @property
    def total(self) -> int:
        return self.parameters + self.optimizer + self.tables + self.activations + self.loss

    def describe(self) -> str:
        parts = ", ".join(
            f"{name} {getattr(self, name) / GIB:.2f} GiB"
            for name in ("parameters", "optimizer", "tables", "activations", "loss")
        )
        return f"{parts}; total {self.total / GIB:.2f} GiB"


def parameter_count(*modules: nn.Module) -> int:
    """Trainable values (frozen parameters count as tables)."""
    return sum(p.numel() for module in modules for p in module.parameters() if p.requires_grad)


def table_bytes(*modules: nn.Module) -> int:
    """Bytes of what the parts hold but do not train: buffers and frozen parameters, in their own dtypes."""
    frozen = [p for module in modules for p in module.parameters() if not p.requires_grad]
    return sum(t.numel() * t.element_size() for t in [*frozen, *(b for m in modules for b in m.buffers())])


def estimate(items: nn.Module, backbone: nn.Module, loss: nn.Module, batch_size: int, max_len: int) -> MemoryEstimate:
    """Memory of one step with batches of `batch_size` full-length sequences (every position a real event)."""
    params = parameter_count(items, backbone)
    tokens = batch_size * max_len
    d = items.d_model
    activations = backbone.activation_bytes(batch_size, max_len) + 2 * tokens * d * FLOAT  # input lookups + grads
    loss_bytes = loss.memory_bytes(tokens, items.num_items, d)
    tables = table_bytes(items, backbone)
    return MemoryEstimate(params * FLOAT, 3 * params * FLOAT, tables, activations, loss_bytes)
