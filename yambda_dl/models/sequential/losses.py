"""Training losses of the sequential recommender, over the P positions of a batch that have a target.

Each loss is an nn.Module without trainable parameters (a Hydra `_target_`, configs/model/loss/<name>.yaml) that the
module calls as `loss.setup(item_counts)` once before training and `loss(hidden, positives, items, rows)` each step;
underneath, each formula is a small pure function of logits, testable against a direct dense computation:

- BCE (`bce`): the SASRec paper's loss, `num_negatives` uniform or popularity negatives per position.
- SampledSoftmax (`sampled_softmax`): softmax cross-entropy of the positive against `num_negatives` negatives shared
  by the batch (uniform, popularity, in-batch or mixed), accidental hits masked, with no, the standard (Yi et al.,
  RecSys 2019) or the refined logQ correction (Khrylchenko et al., "Correcting the LogQ Correction", RecSys 2025,
  arXiv 2507.09331).
- GBCE (`gbce`): gSASRec's generalised BCE (Petrov & Macdonald, RecSys 2023) with shared negatives.
- FullCrossEntropy (`full_ce`): the softmax over the whole catalogue in item chunks (never P x items logits), or a
  fused linear-cross-entropy kernel on CUDA (cut-cross-entropy or liger-kernel, the `gpu` extra).

Means are over positions; an empty batch (P = 0: a padding step of a short DDP shard) gives a zero loss that still
reaches the parameters (DDP needs every parameter in the graph). Logits are computed in float32 whatever the
autocast dtype: logsumexp over thousands of bf16 logits loses the positive's share.
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from yambda_dl.models.sequential.negatives import (
    PER_POSITION_SAMPLERS,
    SAMPLERS,
    Draws,
    Sampler,
    make_sampler,
    sampler_needs_counts,
)

if TYPE_CHECKING:
    from yambda_dl.models.sequential.items import ItemRepresentation

FLOAT = 4  # bytes per float32 value
LOGQ = ("none", "standard", "refined")
IMPLEMENTATIONS = ("auto", "chunked", "fused")
FUSED_HINT = "pip install 'yambda-dl[gpu]' (or pip install cut-cross-entropy, or pip install liger-kernel)"


# --- the formulas ---------------------------------------------------------------------------------------------------


def mean_over_positions(values: Tensor) -> Tensor:
    """Mean that is 0 (not NaN) over no positions, still connected to the graph."""
    return values.sum() / max(values.numel(), 1)


def bce_loss(pos: Tensor, neg: Tensor) -> Tensor:
    """Per position: -log s(pos) - sum_j log(1 - s(neg_j)); pos (P,), neg (P, n), masked negatives at -inf."""
    return F.softplus(-pos) + F.softplus(neg).sum(-1)


def gbce_beta(num_negatives: int, num_items: int, t: float) -> float:
    """gSASRec's power on the positive probability: beta = alpha (t (1 - 1/alpha) + 1/alpha), alpha = n / (items - 1)
    the sampling rate; t = 0 gives beta = 1 (plain BCE), t = 1 gives beta = alpha (fully calibrated)."""
    alpha = num_negatives / max(num_items - 1, 1)
    return alpha * (t * (1 - 1 / alpha) + 1 / alpha)


def gbce_loss(pos: Tensor, neg: Tensor, beta: float) -> Tensor:
    """Per position: -log s(pos)^beta - sum_j log(1 - s(neg_j)) (masked negatives at -inf drop out)."""
    return beta * F.softplus(-pos) + F.softplus(neg).sum(-1)


def softmax_loss(pos: Tensor, neg: Tensor) -> Tensor:
    """Per position: -log softmax([pos, neg_1..n])[0]; pos (P,), neg (P, n) with masked negatives at -inf.

    Standard logQ is this function on corrected logits: pos - log q(pos), neg_j - log q(j) (see SampledSoftmax).
    Computed as cross_entropy with target 0, i.e. logsumexp([pos, neg]) - pos: its fused log-softmax kernels make
    fewer passes over the P x (n + 1) logits than logsumexp's composite ops (~20% less time, forward and backward,
    on CPU); the same value up to float rounding."""
    logits = torch.cat([pos[:, None], neg], dim=1)
    first = torch.zeros(len(pos), dtype=torch.long, device=pos.device)
    return F.cross_entropy(logits, first, reduction="none")


def refined_logq_loss(pos: Tensor, neg: Tensor, log_q_pos: Tensor, log_q_neg: Tensor) -> Tensor:
    """Per position: the refined logQ-corrected sampled softmax of arXiv 2507.09331.

    The positive is always in the full softmax's denominator, not Monte-Carlo sampled, so only the negatives' part
    Z- = sum_{i != pos} exp(s_i) is estimated, by importance sampling with the proposal conditioned on not drawing
    the positive, q'(j) = q(j) / (1 - q(pos)) (drawing and masking the positive is exactly that conditioning):
        loss = sg(1 - p) * (logsumexp_j(neg_j - log q'(j)) - pos),
        p = exp(pos) / (exp(pos) + (1/m) sum_j exp(neg_j - log q'(j)))   (m = unmasked negatives of the position),
    p being the model's estimated probability of the positive, so the weight 1 - p is its chance of misclassifying
    the position (sg: no gradient through it). Its gradient is an estimate of the full softmax's: -(1 - P+) grad
    pos + sum_{i != pos} P_i grad s_i = (1 - P+) (-grad pos + E_{softmax over negatives}[grad s]).
    A position whose negatives are all masked contributes 0. Masked negatives are -inf in `neg`.
    Source: the paper's abstract and its authors' reference code (github.com/NonameUntitled/logq,
    train_in_batch_logq_new.py: the same loss, weight and q'(j) = c_j / (C - c_pos)).
    """
    log_q_neg = log_q_neg.expand_as(neg)
    log_q_cond = log_q_neg - torch.log1p(-log_q_pos.exp().clamp(max=1 - 1e-6))[:, None]
    valid = torch.isfinite(neg)
    count = valid.sum(1)
    has_negatives = count > 0
    # rows without negatives get finite placeholders, so neither value nor gradient turns NaN
    corrected = torch.where(has_negatives[:, None], neg - log_q_cond, torch.zeros_like(neg))
    negatives_lse = torch.logsumexp(corrected, dim=1)
    weight = torch.sigmoid(negatives_lse - torch.log(count.clamp(min=1).to(pos.dtype)) - pos).detach()  # 1 - p
    return torch.where(has_negatives, weight * (negatives_lse - pos), torch.zeros_like(pos))


class _ChunkedCrossEntropy(torch.autograd.Function):
    """Full softmax cross-entropy over all items, forward and backward one item chunk at a time.

    Forward keeps a running log-sum-exp (P,); backward recomputes each chunk's softmax. Peak memory: P x chunk
    logits and the table's gradient, never P x items. Computed in float32 whatever the input dtype.
    """

    @staticmethod
    def forward(ctx, hidden: Tensor, table: Tensor, positives: Tensor, chunk: int) -> Tensor:
        h, vectors = hidden.float(), table.float()
        lse = torch.full((h.shape[0],), -torch.inf, device=h.device)
        for start in range(0, vectors.shape[0], chunk):  # item chunks: bounded memory
            lse = torch.logaddexp(lse, torch.logsumexp(h @ vectors[start : start + chunk].T, dim=1))
        pos = (h * vectors[positives]).sum(-1)
        ctx.save_for_backward(h, vectors, positives, lse)
        ctx.chunk, ctx.dtypes = chunk, (hidden.dtype, table.dtype)
        return mean_over_positions(lse - pos)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor, None, None]:
        h, vectors, positives, lse = ctx.saved_tensors
        scale = grad / max(h.shape[0], 1)
        grad_h = -vectors[positives]  # d(-pos)/dh
        grad_table = torch.zeros_like(vectors).index_add_(0, positives, -h)
        for start in range(0, vectors.shape[0], ctx.chunk):
            chunk = vectors[start : start + ctx.chunk]
            probs = (h @ chunk.T).sub_(lse[:, None]).exp_()  # (P, chunk) softmax, in place: one buffer
            grad_h += probs @ chunk
            grad_table[start : start + ctx.chunk] += probs.T @ h
        return (grad_h * scale).to(ctx.dtypes[0]), (grad_table * scale).to(ctx.dtypes[1]), None, None


def chunked_cross_entropy(hidden: Tensor, positives: Tensor, table: Tensor, chunk_items: int) -> Tensor:
    """Mean softmax cross-entropy over the whole table (num_items, d), `chunk_items` items at a time."""
    with torch.autocast(hidden.device.type, enabled=False):
        return _ChunkedCrossEntropy.apply(hidden, table, positives, chunk_items)


def fused_backend() -> str | None:
    """The installed fused linear-cross-entropy package: "cut_cross_entropy", "liger_kernel" or None."""
    for name in ("cut_cross_entropy", "liger_kernel"):
        if importlib.util.find_spec(name) is not None:
            return name
    return None


def fused_cross_entropy(hidden: Tensor, positives: Tensor, table: Tensor, backend: str) -> Tensor:
    """Mean softmax cross-entropy by a fused CUDA kernel that never materialises the logits either. Both operands
    are cast to one dtype: the autocast dtype under mixed precision (the kernels accumulate in float32), else
    float32."""
    device = hidden.device.type
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else torch.float32
    with torch.autocast(device, enabled=False):
        h, vectors = hidden.to(dtype).contiguous(), table.to(dtype)
        if backend == "cut_cross_entropy":
            from cut_cross_entropy import linear_cross_entropy

            return linear_cross_entropy(h, vectors, positives).float()
        from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss

        return LigerFusedLinearCrossEntropyLoss()(vectors, h, positives).float()


def joint_output(items: ItemRepresentation, positives: Tensor, negatives: Tensor, dim: int = 0) -> Tensor:
    """The output vectors of positives and negatives, concatenated along `dim`, in float32, from ONE lookup.

    Speed, not arithmetic: each lookup of an id table gives its backward a zero-filled gradient as large as the
    table (660k x 64 float32 = 169 MB at the 50m scale, most of its cost page faults), which autograd then sums;
    one lookup for both halves is one such buffer instead of two (the table's gradients went from 25% to 14% of a
    BCE SASRec step on CPU, BENCHMARKS.md). The values and
    the gradients are the two lookups' (the duplicates' gradient sums may round in another order).
    """
    return items.output(torch.cat([positives, negatives], dim=dim)).float()


# --- the losses -----------------------------------------------------------------------------------------------------


def _check_choice(key: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"model.loss.{key}={value!r} is not valid; valid choices: {', '.join(choices)}")


def _check_positive_int(key: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"model.loss.{key}={value!r} is not valid; it must be an integer >= 1")


class Loss(nn.Module):
    """Base class: the interface the sequential module calls (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self.num_items: int | None = None

    @property
    def needs_counts(self) -> bool:
        """Whether setup() needs the real train counts (the module passes ones otherwise and skips counting)."""
        return False

    def setup(self, item_counts: np.ndarray) -> None:
        """Called once before training, on every rank: train events per item (len num_items, every count >= 1)."""
        self.num_items = len(item_counts)

    def _require_setup(self) -> int:
        if self.num_items is None:
            raise RuntimeError(f"{type(self).__name__}.setup(item_counts) must be called before the first step")
        return self.num_items

    def forward(self, hidden: Tensor, positives: Tensor, items: ItemRepresentation, rows: Tensor) -> Tensor:
        raise NotImplementedError

    def memory_bytes(self, positions: int, num_items: int, d_model: int) -> int:
        raise NotImplementedError


class _SampledLoss(Loss):
    """Shared machinery of the losses that score sampled negatives."""

    samplers: tuple[str, ...] = SAMPLERS

    def __init__(self, num_negatives: int, negatives: str, popularity_alpha: float) -> None:
        super().__init__()
        _check_positive_int("num_negatives", num_negatives)
        _check_choice("negatives", negatives, self.samplers)
        if isinstance(popularity_alpha, bool) or not isinstance(popularity_alpha, int | float) or popularity_alpha < 0:
            raise ValueError(f"model.loss.popularity_alpha={popularity_alpha!r} is not valid; it must be a number >= 0")
        self.num_negatives, self.negatives, self.popularity_alpha = num_negatives, negatives, float(popularity_alpha)
        self.sampler: Sampler | None = None

    @property
    def needs_counts(self) -> bool:
        return sampler_needs_counts(self.negatives)

    def setup(self, item_counts: np.ndarray) -> None:
        super().setup(item_counts)
        self.sampler = self._make_sampler(item_counts)

    def _make_sampler(self, item_counts: np.ndarray) -> Sampler:
        return make_sampler(self.negatives, item_counts, self.popularity_alpha)

    def _sampler(self) -> Sampler:
        self._require_setup()
        assert self.sampler is not None
        return self.sampler

    def extra_repr(self) -> str:
        return f"num_negatives={self.num_negatives}, negatives={self.negatives}"


class BCE(_SampledLoss):
    """The SASRec paper's loss: -log s(h.e+) - sum_j log(1 - s(h.e-_j)) with `num_negatives` negatives drawn for
    each position (the paper: 1, uniform). A negative equal to the position's positive (an accidental hit) is
    dropped, as the paper's sampler never draws the user's own items."""

    samplers = PER_POSITION_SAMPLERS

    def __init__(self, num_negatives: int = 1, negatives: str = "uniform", popularity_alpha: float = 1.0) -> None:
        super().__init__(num_negatives, negatives, popularity_alpha)

    def forward(self, hidden: Tensor, positives: Tensor, items: ItemRepresentation, rows: Tensor) -> Tensor:
        negatives = self._sampler().draw_per_position((len(positives), self.num_negatives), hidden.device)
        with torch.autocast(hidden.device.type, enabled=False):
            h = hidden.float()
            vectors = joint_output(items, positives[:, None], negatives, dim=1)  # (P, 1 + n, d)
            pos = (h * vectors[:, 0]).sum(-1)
            neg = torch.einsum("pd,pnd->pn", h, vectors[:, 1:])
            neg = neg.masked_fill(negatives == positives[:, None], -torch.inf)
            return mean_over_positions(bce_loss(pos, neg))

    def memory_bytes(self, positions: int, num_items: int, d_model: int) -> int:
        per_position = self.num_negatives + 1
        # gathered vectors and their gradients (P x (n + 1) x d), logits, their mask and gradients
        return FLOAT * positions * per_position * (2 * d_model + 3)


class _SharedNegativesLoss(_SampledLoss):
    """Losses over negatives shared by the whole batch: logits (P, n) against one (n, d) gathered block."""

    def __init__(
        self, num_negatives: int, negatives: str, popularity_alpha: float, mask_same_user: bool = True
    ) -> None:
        super().__init__(num_negatives, negatives, popularity_alpha)
        if not isinstance(mask_same_user, bool):
            raise ValueError(f"model.loss.mask_same_user={mask_same_user!r} is not valid; valid choices: true, false")
        self.mask_same_user = mask_same_user

    def _logits(
        self, hidden: Tensor, positives: Tensor, items: ItemRepresentation, rows: Tensor
    ) -> tuple[Tensor, Tensor, Draws]:
        """Positive logits (P,), negative logits (P, n) with masked pairs at -inf, and the draws."""
        draws = self._sampler().draw(self.num_negatives, positives, rows)
        h = hidden.float()
        vectors = joint_output(items, positives, draws.items)  # (P + n, d)
        pos = (h * vectors[: len(positives)]).sum(-1)
        neg = h @ vectors[len(positives) :].T
        masked = draws.items[None, :] == positives[:, None]  # accidental hits
        if self.mask_same_user and draws.rows is not None:
            masked |= draws.rows[None, :] == rows[:, None]  # the user's own items, drawn from their own row
        # Uniform draws from a large catalogue rarely hit: on CPU a step without a hit skips the P x n masked copy
        # and its backward (the same values). On CUDA the check would stall the stream, so it always masks.
        if neg.device.type != "cpu" or bool(masked.any()):
            neg = neg.masked_fill(masked, -torch.inf)
        return pos, neg, draws

    def memory_bytes(self, positions: int, num_items: int, d_model: int) -> int:
        n = self.num_negatives
        # gathered negatives and positives with their gradients; logits, mask, corrected copy, softmax gradient
        return FLOAT * (2 * n * d_model + 2 * positions * d_model + 4 * positions * (n + 1))


class SampledSoftmax(_SharedNegativesLoss):
    """Softmax cross-entropy of each position's positive against `num_negatives` negatives shared by the batch.

    negatives: uniform | popularity (counts ** popularity_alpha) | in_batch (targets of other positions of the
    batch) | mixed (in-batch + uniform, `mixed_uniform_share` of the draws uniform); see negatives.py.
    logq: none | standard: subtract log q(i) from every logit, the positive's included (Yi et al. 2019; for uniform
    negatives a constant shift that changes nothing) | refined: arXiv 2507.09331 (refined_logq_loss).
    Accidental hits (a negative equal to the position's positive) are masked; with `mask_same_user` so are in-batch
    draws taken from the position's own row (the user's other targets, which the same step trains as positives).
    """

    def __init__(
        self,
        num_negatives: int = 256,
        negatives: str = "uniform",
        popularity_alpha: float = 1.0,
        logq: str = "standard",
        mask_same_user: bool = True,
        mixed_uniform_share: float = 0.5,
    ) -> None:
        super().__init__(num_negatives, negatives, popularity_alpha, mask_same_user)
        _check_choice("logq", logq, LOGQ)
        if isinstance(mixed_uniform_share, bool) or not isinstance(mixed_uniform_share, int | float):
            raise ValueError(f"model.loss.mixed_uniform_share={mixed_uniform_share!r} is not valid; a number in (0, 1]")
        if not 0 < mixed_uniform_share <= 1:
            raise ValueError(f"model.loss.mixed_uniform_share={mixed_uniform_share!r} is not valid; a number in (0, 1]")
        self.logq, self.mixed_uniform_share = logq, float(mixed_uniform_share)

    @property
    def needs_counts(self) -> bool:
        # in-batch and mixed negatives need the counts only for their q
        return self.negatives == "popularity" or (self.negatives != "uniform" and self.logq != "none")

    def _make_sampler(self, item_counts: np.ndarray) -> Sampler:
        if not self.needs_counts:
            item_counts = np.ones(len(item_counts))  # the module may pass ones: never read them as shares
        return make_sampler(self.negatives, item_counts, self.popularity_alpha, self.mixed_uniform_share)

    def forward(self, hidden: Tensor, positives: Tensor, items: ItemRepresentation, rows: Tensor) -> Tensor:
        with torch.autocast(hidden.device.type, enabled=False):
            pos, neg, draws = self._logits(hidden, positives, items, rows)
            if self.logq == "none":
                per_position = softmax_loss(pos, neg)
            elif self.logq == "standard" and self.negatives == "uniform":
                # every logit shifted by the same log(num_items): the softmax is unchanged, so skip the P x n pass
                per_position = softmax_loss(pos, neg)
            elif self.logq == "standard":
                per_position = softmax_loss(pos - draws.log_q_positive, neg - draws.log_q[None, :])
            else:
                per_position = refined_logq_loss(pos, neg, draws.log_q_positive, draws.log_q[None, :])
            return mean_over_positions(per_position)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, logq={self.logq}"


class GBCE(_SharedNegativesLoss):
    """gSASRec's generalised BCE: -log s(h.e+)^beta - sum_j log(1 - s(h.e-_j)) over `num_negatives` negatives shared
    by the batch, beta = gbce_beta(n, items, t). beta < 1 undoes the overconfidence that sampling few negatives out
    of many items teaches plain BCE; its derivation assumes uniform negatives (popularity ones are allowed).
    Accidental hits drop out. t = 0 is plain BCE with shared negatives."""

    samplers = PER_POSITION_SAMPLERS

    def __init__(
        self, num_negatives: int = 256, negatives: str = "uniform", popularity_alpha: float = 1.0, t: float = 0.75
    ) -> None:
        super().__init__(num_negatives, negatives, popularity_alpha, mask_same_user=False)
        if isinstance(t, bool) or not isinstance(t, int | float) or not 0 <= t <= 1:
            raise ValueError(f"model.loss.t={t!r} is not valid; it must be a number in [0, 1]")
        self.t = float(t)

    @property
    def beta(self) -> float:
        return gbce_beta(self.num_negatives, self._require_setup(), self.t)

    def forward(self, hidden: Tensor, positives: Tensor, items: ItemRepresentation, rows: Tensor) -> Tensor:
        with torch.autocast(hidden.device.type, enabled=False):
            pos, neg, _ = self._logits(hidden, positives, items, rows)
            return mean_over_positions(gbce_loss(pos, neg, self.beta))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, t={self.t}"


class FullCrossEntropy(Loss):
    """Softmax cross-entropy over the whole catalogue (what BERT4Rec and "SASRec with CE" train with).

    implementation: chunked: `chunk_items` items at a time in torch (forward keeps a running logsumexp, backward
    recomputes each chunk's softmax: P x chunk_items logits at most); fused: cut-cross-entropy's (else
    liger-kernel's) fused linear-cross-entropy kernel, CUDA only; auto: fused where the package is installed and
    the hidden states are on CUDA, else chunked (the fused kernel's CPU twin and reference).
    """

    def __init__(self, chunk_items: int = 8192, implementation: str = "auto") -> None:
        super().__init__()
        _check_positive_int("chunk_items", chunk_items)
        _check_choice("implementation", implementation, IMPLEMENTATIONS)
        self.chunk_items, self.implementation = chunk_items, implementation
        self.backend: str | None = None  # the fused package, once setup found one

    def setup(self, item_counts: np.ndarray) -> None:
        super().setup(item_counts)
        self.backend = fused_backend()
        if self.implementation == "fused" and self.backend is None:
            raise ValueError(
                "model.loss.implementation=fused needs cut-cross-entropy or liger-kernel, and neither is installed: "
                f"{FUSED_HINT}; or set model.loss.implementation=auto"
            )
        if self.implementation == "fused" and not torch.cuda.is_available():
            raise ValueError(
                "model.loss.implementation=fused runs on CUDA only and no CUDA device is visible; "
                "set model.loss.implementation=auto (chunked on CPU)"
            )

    def uses_fused(self, hidden: Tensor) -> bool:
        """Whether this step runs the fused kernel (an empty batch always takes the chunked path)."""
        if self.implementation == "chunked" or self.backend is None or len(hidden) == 0:
            return False
        if hidden.device.type != "cuda":
            if self.implementation == "fused":
                raise ValueError(
                    f"model.loss.implementation=fused runs on CUDA only, but the hidden states are on "
                    f"{hidden.device}; set model.loss.implementation=auto or chunked"
                )
            return False
        return True

    def forward(self, hidden: Tensor, positives: Tensor, items: ItemRepresentation, rows: Tensor) -> Tensor:
        self._require_setup()
        table = items.output_vectors()
        if self.uses_fused(hidden):
            assert self.backend is not None
            return fused_cross_entropy(hidden, positives, table, self.backend)
        return chunked_cross_entropy(hidden, positives, table, self.chunk_items)

    def memory_bytes(self, positions: int, num_items: int, d_model: int) -> int:
        """The chunked path's (the fused kernels need less): float32 copies of the table and of its gradient,
        the hidden states and their gradient, and one chunk's logits and softmax."""
        chunk = min(self.chunk_items, num_items)
        return FLOAT * (2 * num_items * d_model + 2 * positions * d_model + 2 * positions * chunk + positions)

    def extra_repr(self) -> str:
        return f"chunk_items={self.chunk_items}, implementation={self.implementation}"
