"""Training objectives of the sequential recommender: which positions are trained on which targets, and which
hidden state is a user's vector at scoring time.

- NextItem (SASRec, GRU4Rec, HSTU): every position predicts the next event; a causal backbone; the user vector is
  the last hidden state of the history.
- MaskedItem (BERT4Rec's cloze): random positions are replaced by the mask token and predicted from both sides; a
  bidirectional backbone; the user vector is the hidden state of a mask appended after the history.

Both read batches of each user's last max_len + 1 events, right-aligned with PAD (-1) on the left, as the
DataModule yields them, and return input tokens, targets (-1: no target) and the columns used, so that timestamps
can follow the items.
"""

from __future__ import annotations

import torch
from torch import Tensor

from yambda_dl.data.sequences import PAD


class Objective:
    """What a sequence trains on; `num_special` tokens it needs (padding, mask) and the backbone direction."""

    num_special: int = 1
    causal: bool = True

    def training_batch(self, items: Tensor, pad: int, mask: int | None) -> tuple[Tensor, Tensor, slice]:
        """items (b, W) int64 right-aligned, PAD on the left -> (input tokens (b, L), targets (b, L) with -1 where
        there is no target, the columns of `items` the inputs came from)."""
        raise NotImplementedError

    def scoring_inputs(self, rows: Tensor, pad: int, mask: int | None) -> tuple[Tensor, slice]:
        """rows (b, max_len) int64, a user's last events right-aligned -> (input tokens, the columns of `rows` used);
        the user vector is the backbone's output at the last column."""
        raise NotImplementedError


class NextItem(Objective):
    """Every event predicts the next one: inputs are columns 0..W-2, targets columns 1..W-1."""

    def training_batch(self, items: Tensor, pad: int, mask: int | None) -> tuple[Tensor, Tensor, slice]:
        columns = slice(0, items.shape[1] - 1)
        inputs, targets = items[:, columns], items[:, 1:]
        has_target = (inputs != PAD) & (targets != PAD)
        return inputs.masked_fill(inputs == PAD, pad), targets.masked_fill(~has_target, -1), columns

    def scoring_inputs(self, rows: Tensor, pad: int, mask: int | None) -> tuple[Tensor, slice]:
        return rows.masked_fill(rows == PAD, pad), slice(0, rows.shape[1])


class MaskedItem(Objective):
    """BERT4Rec's cloze task over a user's last max_len events (columns 1..W-1 of a batch).

    Each real event is masked with probability `mask_prob`; a history with no masked event gets its newest one
    masked, so every user trains and the last-position case (what scoring asks) is always seen. Masks are drawn
    from torch's RNG on the batch's device (the module seeds it per step).
    """

    num_special = 2
    causal = False

    def __init__(self, mask_prob: float = 0.2) -> None:
        if not 0.0 < mask_prob < 1.0:
            raise ValueError(f"objective mask_prob must be in (0, 1), got {mask_prob}")
        self.mask_prob = mask_prob

    def training_batch(self, items: Tensor, pad: int, mask: int | None) -> tuple[Tensor, Tensor, slice]:
        columns = slice(1, items.shape[1])
        inputs = items[:, columns]
        real = inputs != PAD
        chosen = real & (torch.rand(inputs.shape, device=inputs.device) < self.mask_prob)
        newest = torch.zeros_like(chosen)
        newest[:, -1] = real[:, -1]  # right-aligned: the newest event of every non-empty row is the last column
        chosen |= newest & ~chosen.any(dim=1, keepdim=True)
        targets = inputs.masked_fill(~chosen, -1)
        tokens = inputs.masked_fill(~real, pad).masked_fill(chosen, mask)
        return tokens, targets, columns

    def scoring_inputs(self, rows: Tensor, pad: int, mask: int | None) -> tuple[Tensor, slice]:
        """The last max_len - 1 events and a mask after them (its column takes the newest event's timestamp)."""
        columns = slice(1, rows.shape[1])
        history = rows[:, columns].masked_fill(rows[:, columns] == PAD, pad)
        appended = torch.full((rows.shape[0], 1), mask, dtype=rows.dtype, device=rows.device)
        return torch.cat([history, appended], dim=1), columns
