"""SASRec's training losses, one small function each, over the P real positions of a batch.

Every function takes the hidden states `hidden` (P, d) and the target items `positives` (P,) of those positions and
the item embedding table (num_items, d); none ever builds batch x length x items logits. Means are over positions,
and an empty batch (a padding step of a short DDP shard) gives a zero loss that still reaches every parameter.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from yambda_dl.models.sasrec.negatives import SAMPLERS

LOSSES = ("bce", "sampled_softmax", "gbce", "full_ce")


@dataclass(frozen=True)
class LossConfig:
    """Which loss and its negatives; the defaults are the paper's BCE with one uniform negative per position."""

    loss: str = "bce"
    num_negatives: int = 1  # bce: per position (the paper: 1); sampled_softmax and gbce: shared by the batch
    negative_sampler: str = "uniform"  # uniform | popularity (counts ** popularity_alpha)
    popularity_alpha: float = 1.0
    logq_correction: bool = True  # sampled_softmax: subtract log q(item) from every logit
    gbce_t: float = 0.75  # gBCE calibration: 0 = plain BCE, 1 = fully calibrated to the sampling rate
    ce_chunk_items: int = 8192  # full_ce: items per chunk; memory grows with P x this

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"unknown SASRec loss {self.loss!r}; valid choices: {', '.join(LOSSES)}")
        if self.negative_sampler not in SAMPLERS:
            raise ValueError(
                f"unknown negative_sampler {self.negative_sampler!r}; valid choices: {', '.join(SAMPLERS)}"
            )
        if self.num_negatives < 1 or self.ce_chunk_items < 1:
            raise ValueError(f"num_negatives and ce_chunk_items must be >= 1: {self}")
        if not 0.0 <= self.gbce_t <= 1.0:
            raise ValueError(f"gbce_t must be in [0, 1], got {self.gbce_t}")


def _mean(values: Tensor) -> Tensor:
    """Mean that is 0 (not NaN) over no elements."""
    return values.sum() / max(values.numel(), 1)


def bce(hidden: Tensor, positives: Tensor, items: Tensor, negatives: Tensor) -> Tensor:
    """The paper's loss: -log s(h.e+) - sum_j log(1 - s(h.e-_j)); negatives (P, n) drawn per position."""
    pos = (hidden * items[positives]).sum(-1)  # (P,)
    neg = torch.einsum("pd,pnd->pn", hidden, items[negatives])  # (P, n)
    return _mean(F.softplus(-pos) + F.softplus(neg).sum(-1))


def _shared_logits(hidden: Tensor, positives: Tensor, items: Tensor, negatives: Tensor) -> tuple[Tensor, Tensor]:
    """Positive logits (P,) and logits against shared negatives (P, n), accidental hits (neg == pos) at -inf."""
    pos = (hidden * items[positives]).sum(-1)
    neg = hidden @ items[negatives].T
    return pos, neg.masked_fill(negatives[None, :] == positives[:, None], -torch.inf)


def sampled_softmax(
    hidden: Tensor,
    positives: Tensor,
    items: Tensor,
    negatives: Tensor,
    log_q_pos: Tensor | None = None,
    log_q_neg: Tensor | None = None,
) -> Tensor:
    """Softmax cross-entropy of the positive against n shared negatives (n,), logQ-corrected when log q is given.

    Subtracting log q(i) from each logit makes the sampled softmax an unbiased estimate of the full one under a
    non-uniform sampler (Yi et al. 2019); for uniform negatives it changes nothing.
    """
    pos, neg = _shared_logits(hidden, positives, items, negatives)
    if log_q_pos is not None and log_q_neg is not None:
        pos, neg = pos - log_q_pos, neg - log_q_neg[None, :]
    logits = torch.cat([pos[:, None], neg], dim=1)
    return _mean(torch.logsumexp(logits, dim=1) - pos)


def gbce_beta(num_negatives: int, num_items: int, t: float) -> float:
    """gSASRec's positive-logit power: beta = alpha (t (1 - 1/alpha) + 1/alpha), alpha = n / (items - 1)."""
    alpha = num_negatives / max(num_items - 1, 1)
    return alpha * (t * (1 - 1 / alpha) + 1 / alpha)


def gbce(hidden: Tensor, positives: Tensor, items: Tensor, negatives: Tensor, beta: float) -> Tensor:
    """Generalised BCE (Petrov & Macdonald 2023): -log s(h.e+)^beta - sum_j log(1 - s(h.e-_j)), shared negatives.

    beta < 1 undoes the overconfidence that sampling few negatives out of many items teaches plain BCE.
    """
    pos, neg = _shared_logits(hidden, positives, items, negatives)
    return _mean(beta * F.softplus(-pos) + F.softplus(neg).sum(-1))  # softplus(-inf) = 0: hits drop out


class _ChunkedCrossEntropy(torch.autograd.Function):
    """Full softmax cross-entropy over all items, forward and backward one item chunk at a time.

    Forward keeps a running log-sum-exp (P,); backward recomputes each chunk's softmax. Peak memory: P x chunk
    logits and the table's gradient, never P x items. Computed in float32 whatever the autocast dtype.
    """

    @staticmethod
    def forward(ctx, hidden: Tensor, items: Tensor, positives: Tensor, chunk: int) -> Tensor:
        h, table = hidden.float(), items.float()
        lse = torch.full((h.shape[0],), -torch.inf, device=h.device)
        for start in range(0, table.shape[0], chunk):  # item chunks, bounded memory
            lse = torch.logaddexp(lse, torch.logsumexp(h @ table[start : start + chunk].T, dim=1))
        pos = (h * table[positives]).sum(-1)
        ctx.save_for_backward(h, table, positives, lse)
        ctx.chunk, ctx.dtypes = chunk, (hidden.dtype, items.dtype)
        return _mean(lse - pos)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor, None, None]:
        h, table, positives, lse = ctx.saved_tensors
        scale = grad / max(h.shape[0], 1)
        grad_h = -table[positives]  # d(-pos)/dh
        grad_table = torch.zeros_like(table).index_add_(0, positives, -h)
        for start in range(0, table.shape[0], ctx.chunk):
            chunk = table[start : start + ctx.chunk]
            probs = torch.exp(h @ chunk.T - lse[:, None])  # (P, chunk) softmax
            grad_h += probs @ chunk
            grad_table[start : start + ctx.chunk] += probs.T @ h
        return (grad_h * scale).to(ctx.dtypes[0]), (grad_table * scale).to(ctx.dtypes[1]), None, None


def full_cross_entropy(hidden: Tensor, positives: Tensor, items: Tensor, chunk_items: int) -> Tensor:
    """Softmax cross-entropy over the whole catalogue, in chunks of `chunk_items` items (see _ChunkedCrossEntropy)."""
    with torch.autocast(hidden.device.type, enabled=False):
        return _ChunkedCrossEntropy.apply(hidden, items, positives, chunk_items)
