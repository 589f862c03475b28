"""The sequential losses and negative samplers, each against a direct dense computation on a small case: the chunked
full cross-entropy against torch's on materialised logits, the sampled softmax with every sampler and logQ correction
against its formula row by row, the paper's BCE, gBCE at t = 0, the samplers' distributions, empty batches, config
errors and memory estimates."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from yambda_dl.models.sequential.items import IdEmbedding
from yambda_dl.models.sequential.losses import (
    BCE,
    GBCE,
    FullCrossEntropy,
    SampledSoftmax,
    bce_loss,
    chunked_cross_entropy,
    fused_backend,
    fused_cross_entropy,
    gbce_beta,
    gbce_loss,
    refined_logq_loss,
)
from yambda_dl.models.sequential.negatives import InBatchSampler, MixedSampler, PopularitySampler, UniformSampler

NUM_ITEMS, D = 13, 8
COUNTS = np.array([1, 2, 3, 5, 8, 13, 21, 34, 2, 1, 4, 6, 9])  # every count >= 1, far from uniform


def problem(positions: int = 10, seed: int = 0) -> tuple[IdEmbedding, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Item table, hidden states (a leaf with gradients), positives and batch rows; positives repeat across rows, so
    in-batch draws hit other positions' positives and some positions' own."""
    torch.manual_seed(seed)
    items = IdEmbedding(NUM_ITEMS, 1, D, init_std=0.7)
    hidden = torch.randn(positions, D, requires_grad=True)
    positives = torch.randint(NUM_ITEMS, (positions,))
    positives[: min(positions, 3)] = 4  # a popular repeat
    rows = torch.arange(positions) // 3  # three positions per user
    return items, hidden, positives, rows


def setup(loss, counts: np.ndarray = COUNTS):
    loss.setup(counts)
    return loss


def draws_of(loss, hidden, positives, rows, seed: int):
    """The draws the loss makes at `seed` (its only randomness), from its own sampler."""
    torch.manual_seed(seed)
    return loss.sampler.draw(loss.num_negatives, positives, rows)


def value_at(loss, items, hidden, positives, rows, seed: int) -> torch.Tensor:
    torch.manual_seed(seed)
    return loss(hidden, positives, items, rows)


def q_of(sampler: str, item: int, in_batch: int = 0, uniform: int = 0, alpha: float = 1.0) -> float:
    """One draw's probability of `item`, computed directly from COUNTS."""
    share = COUNTS[item] / COUNTS.sum()
    if sampler == "uniform":
        return 1 / NUM_ITEMS
    if sampler == "popularity":
        return COUNTS[item] ** alpha / (COUNTS**alpha).sum()
    if sampler == "in_batch":
        return share
    return (in_batch * share + uniform / NUM_ITEMS) / (in_batch + uniform)


# --- full cross-entropy ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk", [1, 3, 7, NUM_ITEMS, 100])
def test_chunked_full_cross_entropy_equals_torchs_on_the_materialised_logits(chunk):
    items, hidden, positives, rows = problem()
    table = items.output_vectors()
    dense = F.cross_entropy(hidden @ table.T, positives)
    dense_grads = torch.autograd.grad(dense, [hidden, items.embedding.weight])
    loss = setup(FullCrossEntropy(chunk_items=chunk, implementation="chunked"))
    chunked = loss(hidden, positives, items, rows)
    grads = torch.autograd.grad(chunked, [hidden, items.embedding.weight])
    assert chunked.item() == pytest.approx(dense.item(), abs=1e-5)
    for got, want in zip(grads, dense_grads, strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert torch.all(grads[1][NUM_ITEMS] == 0)  # the padding token is no candidate


def test_full_cross_entropy_is_float32_under_autocast():
    items, hidden, positives, rows = problem()
    loss = setup(FullCrossEntropy(chunk_items=4))
    plain = loss(hidden, positives, items, rows)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = loss(hidden, positives, items, rows)
    assert mixed.dtype == torch.float32 and mixed.item() == pytest.approx(plain.item(), abs=1e-6)


def test_fused_where_it_cannot_run_is_a_one_line_error_and_auto_falls_back():
    items, hidden, positives, rows = problem()
    with pytest.raises(ValueError, match=r"implementation=fused (needs|runs on CUDA).*(pip install|auto)"):
        setup(FullCrossEntropy(implementation="fused"))
    auto = setup(FullCrossEntropy(chunk_items=5, implementation="auto"))
    assert not auto.uses_fused(hidden)  # CPU hidden states: the chunked twin
    dense = F.cross_entropy(hidden @ items.output_vectors().T, positives)
    assert auto(hidden, positives, items, rows).item() == pytest.approx(dense.item(), abs=1e-5)


@pytest.mark.gpu
@pytest.mark.parametrize(("autocast", "tolerance"), [(False, 1e-3), (True, 2e-2)])  # float32 (TF32 matmuls); bf16
def test_fused_kernel_matches_the_chunked_path_on_cuda(autocast, tolerance):
    backend = fused_backend()
    if backend is None:
        pytest.skip("neither cut-cross-entropy nor liger-kernel is installed (pip install 'yambda-dl[gpu]')")
    torch.manual_seed(0)
    table = (torch.randn(50_000, 64, device="cuda") / 8).requires_grad_()  # std d^-1/2: logits near unit scale
    hidden = torch.randn(4096, 64, device="cuda", requires_grad=True)
    positives = torch.randint(50_000, (4096,), device="cuda")
    chunked = chunked_cross_entropy(hidden, positives, table, 8192)
    chunked_grads = torch.autograd.grad(chunked, [hidden, table])
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
        fused = fused_cross_entropy(hidden, positives, table, backend)
    fused_grads = torch.autograd.grad(fused, [hidden, table])
    assert fused.dtype == torch.float32 and fused.item() == pytest.approx(chunked.item(), rel=tolerance)
    for got, want in zip(fused_grads, chunked_grads, strict=True):
        assert ((got.float() - want).norm() / want.norm()).item() < tolerance * 10  # the kernel skips tiny softmax


# --- BCE and gBCE -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("negatives", ["uniform", "popularity"])
def test_bce_is_the_papers_formula(negatives):
    items, hidden, positives, rows = problem()
    loss = setup(BCE(num_negatives=3, negatives=negatives))
    torch.manual_seed(5)
    drawn = loss.sampler.draw_per_position((len(positives), 3), hidden.device)
    scores = (hidden @ items.output_vectors().T).detach().double()  # (P, items): dense
    expected = 0.0
    for p in range(len(positives)):
        expected -= math.log(torch.sigmoid(scores[p, positives[p]]).item())
        for j in drawn[p]:
            if j != positives[p]:  # accidental hits drop out
                expected -= math.log(1 - torch.sigmoid(scores[p, j]).item())
    assert value_at(loss, items, hidden, positives, rows, 5).item() == pytest.approx(expected / len(positives), 1e-5)


def test_gbce_reduces_to_bce_at_t_zero_and_calibrates_beta():
    pos, neg = torch.randn(6), torch.randn(6, 4)
    torch.testing.assert_close(gbce_loss(pos, neg, gbce_beta(4, NUM_ITEMS, 0.0)), bce_loss(pos, neg))
    alpha = 4 / (NUM_ITEMS - 1)
    assert gbce_beta(4, NUM_ITEMS, 1.0) == pytest.approx(alpha)  # fully calibrated: beta = sampling rate
    beta = gbce_beta(4, NUM_ITEMS, 0.75)
    # gSASRec's own form: BCE-with-logits of the transformed logit log(1 / (s(pos) ** -beta - 1))
    transformed = torch.log(1 / (torch.sigmoid(pos.double()) ** -beta - 1))
    torch.testing.assert_close(F.softplus(-transformed).float(), gbce_loss(pos, torch.full((6, 0), 0.0), beta))

    items, hidden, positives, rows = problem()
    loss = setup(GBCE(num_negatives=5, t=0.0))
    drawn = draws_of(loss, hidden, positives, rows, seed=2).items
    table = items.output_vectors()
    pos_logits = (hidden * table[positives]).sum(-1)
    neg_logits = (hidden @ table[drawn].T).masked_fill(drawn[None] == positives[:, None], -torch.inf)
    expected = bce_loss(pos_logits, neg_logits).mean()
    assert value_at(loss, items, hidden, positives, rows, 2).item() == pytest.approx(expected.item(), 1e-5)


# --- sampled softmax --------------------------------------------------------------------------------------------------


def masked(sampler: str, draws, positives, rows, p: int, j: int) -> bool:
    hit = draws.items[j] == positives[p]
    own = sampler in ("in_batch", "mixed") and draws.rows[j] == rows[p]
    return bool(hit or own)


@pytest.mark.parametrize("sampler", ["uniform", "popularity", "in_batch", "mixed"])
@pytest.mark.parametrize("logq", ["none", "standard", "refined"])
def test_sampled_softmax_equals_its_formula_row_by_row(sampler, logq):
    items, hidden, positives, rows = problem(positions=12)
    loss = setup(SampledSoftmax(num_negatives=6, negatives=sampler, logq=logq, popularity_alpha=0.5))
    draws = draws_of(loss, hidden, positives, rows, seed=7)
    from_batch = int((draws.rows >= 0).sum()) if draws.rows is not None else 0
    q = lambda i: q_of(sampler, int(i), from_batch, 6 - from_batch, alpha=0.5)  # noqa: E731
    table = items.output_vectors().detach().double()
    h = hidden.detach().double()
    expected = []
    for p in range(len(positives)):
        pos = (h[p] @ table[positives[p]]).item()
        kept = [j for j in range(len(draws.items)) if not masked(sampler, draws, positives, rows, p, j)]
        neg = [(h[p] @ table[draws.items[j]]).item() for j in kept]
        q_neg = [q(draws.items[j]) for j in kept]
        if logq == "none":
            logits = [pos, *neg]
        elif logq == "standard":
            logits = [pos - math.log(q(positives[p])), *(s - math.log(qj) for s, qj in zip(neg, q_neg, strict=True))]
        if logq != "refined":
            expected.append(np.logaddexp.reduce(logits) - logits[0])
            continue
        q_cond = [qj / (1 - q(positives[p])) for qj in q_neg]  # the proposal without the positive
        if not kept:
            expected.append(0.0)
            continue
        total = sum(math.exp(s) / qj for s, qj in zip(neg, q_cond, strict=True))
        p_positive = math.exp(pos) / (math.exp(pos) + total / len(kept))
        expected.append((1 - p_positive) * (math.log(total) - pos))
    got = value_at(loss, items, hidden, positives, rows, 7)
    assert got.item() == pytest.approx(float(np.mean(expected)), rel=1e-5)
    got.backward()
    assert torch.isfinite(hidden.grad).all() and hidden.grad.abs().sum() > 0


def test_standard_logq_with_uniform_negatives_changes_nothing():
    items, hidden, positives, rows = problem()
    values = [
        value_at(setup(SampledSoftmax(num_negatives=5, logq=logq)), items, hidden, positives, rows, 3).item()
        for logq in ("none", "standard")
    ]
    assert values[0] == pytest.approx(values[1], rel=1e-6)


def test_refined_logq_weight_carries_no_gradient():
    """The refined loss's gradient is (1 - p) times the gradient of its log-ratio, p held fixed."""
    torch.manual_seed(0)
    pos = torch.randn(5, requires_grad=True)
    neg = torch.randn(5, 4, requires_grad=True)
    log_q_pos, log_q_neg = torch.log(torch.rand(5) * 0.2), torch.log(torch.rand(1, 4) * 0.2)
    refined_logq_loss(pos, neg, log_q_pos, log_q_neg).sum().backward()
    corrected = neg.detach() - (log_q_neg - torch.log1p(-log_q_pos.exp())[:, None])
    lse = torch.logsumexp(corrected, 1)
    weight = 1 - torch.sigmoid(pos.detach() - (lse - math.log(4)))
    torch.testing.assert_close(pos.grad, -weight)
    torch.testing.assert_close(neg.grad, weight[:, None] * torch.softmax(corrected, 1))


def test_refined_logq_gives_zero_where_every_negative_is_masked():
    pos = torch.randn(2, requires_grad=True)
    neg = torch.tensor([[-torch.inf, -torch.inf], [0.5, -torch.inf]], requires_grad=True)
    value = refined_logq_loss(pos, neg, torch.full((2,), -2.0), torch.full((1, 2), -2.0))
    assert value[0].item() == 0.0 and value[1].item() != 0.0
    value.sum().backward()
    assert torch.isfinite(pos.grad).all() and torch.isfinite(neg.grad).all() and pos.grad[0] == 0


def test_sampled_losses_are_float32_under_autocast():
    items, hidden, positives, rows = problem()
    for loss in (SampledSoftmax(num_negatives=5, negatives="mixed", logq="refined"), GBCE(num_negatives=5), BCE()):
        setup(loss)
        plain = value_at(loss, items, hidden, positives, rows, 1)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = value_at(loss, items, hidden, positives, rows, 1)
        assert mixed.dtype == torch.float32 and mixed.item() == pytest.approx(plain.item(), rel=1e-6)


# --- samplers ---------------------------------------------------------------------------------------------------------


def chi_square(drawn: torch.Tensor, probs: np.ndarray) -> float:
    observed = np.bincount(drawn.numpy(), minlength=len(probs))
    expected = probs * len(drawn)
    return float(((observed - expected) ** 2 / expected).sum())


@pytest.mark.parametrize("alpha", [1.0, 0.5, 0.0])
def test_popularity_sampler_draws_by_count_to_the_alpha(alpha):
    torch.manual_seed(0)
    sampler = PopularitySampler(COUNTS, alpha)
    probs = COUNTS**alpha / (COUNTS**alpha).sum()
    # 12 degrees of freedom: the 99.9% quantile of chi-square is 32.9; a wrong alpha gives thousands
    assert chi_square(sampler.draw_per_position((200_000,), torch.device("cpu")), probs) < 32.9
    torch.testing.assert_close(sampler.log_q(torch.arange(NUM_ITEMS)), torch.tensor(np.log(probs)).float())


def test_uniform_sampler_draws_every_item_alike():
    torch.manual_seed(0)
    drawn = UniformSampler(COUNTS).draw_per_position((130_000,), torch.device("cpu"))
    assert chi_square(drawn, np.full(NUM_ITEMS, 1 / NUM_ITEMS)) < 32.9


def test_in_batch_draws_are_other_positions_targets_with_their_rows():
    torch.manual_seed(0)
    positives = torch.tensor([4, 4, 4, 7, 1, 9, 2, 4])
    rows = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    sampler = InBatchSampler(COUNTS)
    draws = sampler.draw(5, positives, rows)
    assert len(draws.items) == 5
    for item, row in zip(draws.items, draws.rows, strict=True):  # each draw is a real (target, row) pair
        assert any((positives == item) & (rows == row))
    everything = sampler.draw(100, positives, rows)  # fewer positions than asked: all of them, once
    assert sorted(everything.items.tolist()) == sorted(positives.tolist())
    torch.testing.assert_close(everything.log_q, torch.tensor(np.log(COUNTS / COUNTS.sum())).float()[everything.items])
    # over many steps, the draws follow the batch's own distribution of targets
    torch.manual_seed(1)
    drawn = torch.cat([sampler.draw(1, positives, rows).items for _ in range(8000)])
    assert (drawn == 4).float().mean().item() == pytest.approx(0.5, abs=0.03)


def test_mixed_sampler_splits_the_draws_and_its_q_is_the_mixture():
    torch.manual_seed(0)
    positives, rows = torch.tensor([3, 5, 5, 8, 0, 2]), torch.tensor([0, 0, 1, 1, 2, 2])
    sampler = MixedSampler(COUNTS, uniform_share=0.25)
    draws = sampler.draw(8, positives, rows)
    assert int((draws.rows >= 0).sum()) == 6 and int((draws.rows < 0).sum()) == 2  # 6 in-batch (the batch), 2 uniform
    every = torch.arange(NUM_ITEMS)
    q = sampler.mixture_log_q(every, 6, 2).exp()
    assert q.sum().item() == pytest.approx(1.0, abs=1e-6)
    torch.testing.assert_close(q, torch.tensor([q_of("mixed", i, 6, 2) for i in range(NUM_ITEMS)]).float())
    assert sampler.split(8, 100) == (6, 2) and sampler.split(1, 100) == (0, 1)


# --- the contract: empty batches, setup, config errors, memory -------------------------------------------------------


LOSSES = [
    lambda: BCE(),
    lambda: BCE(num_negatives=2, negatives="popularity"),
    lambda: SampledSoftmax(num_negatives=4, negatives="popularity"),
    lambda: SampledSoftmax(num_negatives=4, negatives="in_batch", logq="refined"),
    lambda: SampledSoftmax(num_negatives=4, negatives="mixed"),
    lambda: GBCE(num_negatives=4),
    lambda: FullCrossEntropy(chunk_items=4),
]


@pytest.mark.parametrize("make", LOSSES, ids=lambda make: repr(make()))
def test_empty_batch_gives_zero_loss_with_gradients(make):
    torch.manual_seed(0)
    items = IdEmbedding(NUM_ITEMS, 1, D)
    encoder = torch.nn.Linear(D, D)
    hidden = encoder(torch.zeros(0, D))
    empty = torch.zeros(0, dtype=torch.long)
    value = setup(make())(hidden, empty, items, empty)
    value.backward()
    assert value.item() == 0.0
    for parameter in [*items.parameters(), *encoder.parameters()]:  # DDP needs every parameter in the graph
        assert parameter.grad is not None and torch.all(parameter.grad == 0)


def test_a_loss_needs_setup_before_its_first_step():
    items, hidden, positives, rows = problem()
    with pytest.raises(RuntimeError, match=r"setup\(item_counts\)"):
        SampledSoftmax()(hidden, positives, items, rows)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: BCE(negatives="in_batch"), r"negatives='in_batch' .*valid choices: uniform, popularity$"),
        (lambda: SampledSoftmax(negatives="hard"), r"negatives='hard' .*uniform, popularity, in_batch, mixed$"),
        (lambda: SampledSoftmax(logq="yes"), r"logq='yes' .*valid choices: none, standard, refined$"),
        (lambda: SampledSoftmax(num_negatives=0), r"num_negatives=0 .*integer >= 1"),
        (lambda: SampledSoftmax(mixed_uniform_share=0), r"mixed_uniform_share=0 .*\(0, 1\]"),
        (lambda: SampledSoftmax(mask_same_user="no"), r"mask_same_user='no' .*true, false"),
        (lambda: BCE(popularity_alpha=-1), r"popularity_alpha=-1 .*>= 0"),
        (lambda: GBCE(t=1.5), r"model\.loss\.t=1\.5 .*\[0, 1\]"),
        (lambda: GBCE(negatives="mixed"), r"negatives='mixed' .*uniform, popularity$"),
        (lambda: FullCrossEntropy(chunk_items=0), r"chunk_items=0 .*integer >= 1"),
        (lambda: FullCrossEntropy(implementation="triton"), r"implementation='triton' .*auto, chunked, fused$"),
    ],
)
def test_bad_keys_name_the_value_and_the_choices(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_counts_are_needed_only_where_they_change_something():
    assert not BCE().needs_counts and BCE(negatives="popularity").needs_counts
    assert not SampledSoftmax(negatives="in_batch", logq="none").needs_counts
    assert SampledSoftmax(negatives="in_batch").needs_counts and SampledSoftmax(negatives="mixed").needs_counts
    assert not FullCrossEntropy().needs_counts and not GBCE().needs_counts


def test_memory_grows_with_positions_negatives_and_catalogue():
    sizes = {"positions": 256 * 200, "num_items": 1_000_000, "d_model": 64}
    full = FullCrossEntropy().memory_bytes(**sizes)
    sampled = SampledSoftmax(num_negatives=256).memory_bytes(**sizes)
    assert full > sampled > BCE().memory_bytes(**sizes)
    assert SampledSoftmax(num_negatives=1024).memory_bytes(**sizes) > sampled
    assert FullCrossEntropy().memory_bytes(**{**sizes, "num_items": 2_000_000}) > full
    for loss in (BCE(), GBCE(), SampledSoftmax(), FullCrossEntropy()):
        assert loss.memory_bytes(**{**sizes, "positions": 2 * sizes["positions"]}) > loss.memory_bytes(**sizes)
