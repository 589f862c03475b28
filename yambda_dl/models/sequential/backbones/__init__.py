"""Sequence encoders of the sequential recommender: item representations in, hidden states out.

A backbone sees right-aligned sequences (the newest event in the last column, padding as a left prefix) and says
whether it is causal (the output at a column depends only on that column and earlier ones: next-item training) or
bidirectional (masked-item training), and whether it needs the events' timestamps. A new sequence model is one
file here and one YAML in configs/model/ (docs/architecture.md#sequential-models).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class Backbone(nn.Module):
    """The interface every sequence encoder implements."""

    causal: bool = True  # the output at column t depends only on columns <= t
    uses_timestamps: bool = False  # forward needs the events' timestamps (the DataModule then streams them)

    def forward(self, x: Tensor, valid: Tensor, timestamps: Tensor | None = None) -> Tensor:
        """x (b, L, d) input vectors, zero at padding; valid (b, L) bool, True at real events; timestamps (b, L)
        int64 seconds when uses_timestamps. Returns (b, L, d) hidden states, finite everywhere (padding included)."""
        raise NotImplementedError

    def activation_bytes(self, batch: int, length: int) -> int:
        """Upper-bound-minded float32 bytes one batch keeps for backward (the memory check adds the parts)."""
        raise NotImplementedError


def check_positive(**values: int | float) -> None:
    """One-line error naming the first size that is not >= 1."""
    for key, value in values.items():
        if value < 1:
            raise ValueError(f"backbone {key} must be >= 1, got {value}")


def check_probability(**values: float) -> None:
    """One-line error naming the first rate outside [0, 1)."""
    for key, value in values.items():
        if not 0.0 <= value < 1.0:
            raise ValueError(f"backbone {key} must be in [0, 1), got {value}")


class NewestFirstInput(nn.Module):
    """What the attention backbones do to their inputs: scale by sqrt(d) (the paper's SASRec recipe), add a learned
    position counted from the newest event (right-aligned rows: column L-1 is position 0, so left padding changes
    nothing), dropout; a sequence longer than max_len is an error."""

    def __init__(self, d_model: int, max_len: int, dropout: float) -> None:
        super().__init__()
        self.d_model, self.max_len = d_model, max_len
        self.position_embedding = nn.Embedding(max_len, d_model)  # row 0: the newest event
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        length = x.shape[1]
        if length > self.max_len:
            raise ValueError(f"sequences of length {length} exceed the backbone's max_len={self.max_len}")
        positions = torch.arange(length - 1, -1, -1, device=x.device)
        return self.drop(x * math.sqrt(self.d_model) + self.position_embedding(positions))
