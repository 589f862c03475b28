"""The sequential recommender's own parts: the transformer backbone, the id item representation, the objectives,
the optimizer groups and schedule, and the memory estimate (losses and the other backbones have their own files)."""

from __future__ import annotations

import pytest
import torch

from yambda_dl.data.sequences import PAD
from yambda_dl.models.sequential import memory
from yambda_dl.models.sequential.backbones.transformer import Transformer
from yambda_dl.models.sequential.items import IdEmbedding
from yambda_dl.models.sequential.objectives import MaskedItem, NextItem
from yambda_dl.models.sequential.optim import parameter_groups, warmup_cosine

SIZES = {"d_model": 16, "max_len": 12, "num_layers": 1, "num_heads": 2, "ffn_dim": 32, "dropout": 0.0}


def encoder(**keys) -> tuple[IdEmbedding, Transformer]:
    torch.manual_seed(0)
    return IdEmbedding(7, 2, 16), Transformer(**{**SIZES, **keys}).eval()


def run(items: IdEmbedding, backbone: Transformer, tokens: list[list[int]]) -> torch.Tensor:
    tokens = torch.tensor(tokens)
    return backbone(items(tokens), tokens != items.pad)


# --- transformer ----------------------------------------------------------------------------------------------------


def test_causal_outputs_never_see_later_events():
    items, backbone = encoder()
    a, b = run(items, backbone, [[1, 2, 3, 4, 5]]), run(items, backbone, [[1, 2, 3, 6, 5]])
    torch.testing.assert_close(a[:, :3], b[:, :3])  # columns before the change are untouched
    assert not torch.allclose(a[:, 3:], b[:, 3:])


def test_bidirectional_outputs_see_the_whole_sequence():
    items, backbone = encoder(causal=False)
    a, b = run(items, backbone, [[1, 2, 3, 4, 5]]), run(items, backbone, [[1, 2, 3, 6, 5]])
    assert not torch.allclose(a[:, :3], b[:, :3])


@pytest.mark.parametrize("causal", [True, False])
def test_positions_count_from_the_newest_event_so_left_padding_changes_nothing(causal):
    items, backbone = encoder(causal=causal)
    pad = items.pad
    short = run(items, backbone, [[1, 2, 3]])
    padded = run(items, backbone, [[pad, pad, pad, 1, 2, 3]])
    torch.testing.assert_close(short, padded[:, 3:])
    assert torch.isfinite(run(items, backbone, [[pad, pad, 4]])).all()  # padded rows attend to themselves: no NaN


def test_transformer_names_the_bad_value():
    with pytest.raises(ValueError, match="d_model=16 is not divisible by num_heads=3"):
        Transformer(d_model=16, num_heads=3)
    with pytest.raises(ValueError, match="unknown backbone activation 'tanh'; valid choices: gelu, relu"):
        Transformer(activation="tanh")
    with pytest.raises(ValueError, match="num_layers must be >= 1, got 0"):
        Transformer(num_layers=0)
    with pytest.raises(ValueError, match="exceed the backbone's max_len=12"):
        run(*encoder(), [[1] * 13])


# --- item representation --------------------------------------------------------------------------------------------


def test_id_embedding_is_tied_and_the_padding_token_is_zero():
    items = IdEmbedding(num_items=7, num_special=2, d_model=16)
    assert items.output_vectors().shape == (7, 16) and items.pad == 7 and items.mask == 8
    assert items.output_vectors().data_ptr() == items.embedding.weight.data_ptr()
    assert (items(torch.tensor([items.pad])) == 0).all()
    torch.testing.assert_close(items.output(torch.tensor([3, 1])), items(torch.tensor([3, 1])))
    with pytest.raises(ValueError, match="no mask token"):
        _ = IdEmbedding(7, 1, 16).mask


# --- objectives -----------------------------------------------------------------------------------------------------

BATCH = torch.tensor([[PAD, PAD, 1, 2, 3], [4, 5, 6, 0, 1], [PAD, PAD, PAD, PAD, 2]])


def test_next_item_pairs_each_event_with_the_next_one():
    tokens, targets, columns = NextItem().training_batch(BATCH, pad=9, mask=None)
    assert columns == slice(0, 4)
    assert tokens.tolist() == [[9, 9, 1, 2], [4, 5, 6, 0], [9, 9, 9, 9]]
    assert targets.tolist() == [[-1, -1, 2, 3], [5, 6, 0, 1], [-1, -1, -1, -1]]  # a one-event user has no pair
    rows, _ = NextItem().scoring_inputs(BATCH[:, 1:], pad=9, mask=None)
    assert rows.tolist() == [[9, 1, 2, 3], [5, 6, 0, 1], [9, 9, 9, 2]]


def test_masked_item_masks_real_events_and_always_at_least_one():
    torch.manual_seed(0)
    objective = MaskedItem(mask_prob=0.3)
    tokens, targets, columns = objective.training_batch(BATCH, pad=9, mask=10)
    assert columns == slice(1, 5)
    inputs = BATCH[:, 1:]
    masked = tokens == 10
    assert torch.equal(masked, targets >= 0)  # targets exactly at the masks
    assert torch.equal(targets[masked], inputs[masked])  # the hidden events are the targets
    assert masked.any(dim=1).all()  # every user with an event trains on one
    assert not (masked & (inputs == PAD)).any()  # padding is never masked
    assert torch.equal(tokens[~masked], inputs.masked_fill(inputs == PAD, 9)[~masked])
    draws = torch.cat([objective.training_batch(BATCH.repeat(500, 1), 9, 10)[0][1::3] for _ in range(4)])
    # the full row of 4 events: each masked with p, plus the newest when none was drawn ((1 - p)^4 of the rows)
    assert (draws == 10).float().mean().item() == pytest.approx(0.3 + 0.7**4 / 4, abs=0.02)


def test_masked_item_scores_from_a_mask_after_the_history():
    tokens, columns = MaskedItem().scoring_inputs(BATCH, pad=9, mask=10)
    assert columns == slice(1, 5)
    assert tokens.tolist() == [[9, 1, 2, 3, 10], [5, 6, 0, 1, 10], [9, 9, 9, 2, 10]]
    with pytest.raises(ValueError, match="mask_prob must be in"):
        MaskedItem(mask_prob=1.0)


# --- optimizer and memory ---------------------------------------------------------------------------------------------


def test_weight_decay_only_on_the_backbones_matrices():
    items, backbone = encoder()
    decay, keep = parameter_groups([items, backbone], 0.1)
    assert decay["weight_decay"] == 0.1 and keep["weight_decay"] == 0.0
    assert all(p.ndim == 2 for p in decay["params"])
    assert any(p is items.embedding.weight for p in keep["params"])  # embeddings are not decayed
    count = sum(p.numel() for p in [*decay["params"], *keep["params"]])
    assert count == memory.parameter_count(items, backbone)
    assert len(parameter_groups([items, backbone], None)) == 1


def test_warmup_then_cosine_to_the_floor():
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    schedule = warmup_cosine(optimizer, total_steps=10, warmup_steps=2, min_ratio=0.1)
    rates = []
    for _ in range(10):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert rates[:3] == pytest.approx([0.5, 1.0, 1.0])
    assert rates == sorted(rates[:2]) + sorted(rates[2:], reverse=True)  # up, then down
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1)


def test_memory_estimate_counts_the_real_parameters():
    items, backbone = encoder()

    class Loss(torch.nn.Module):
        def memory_bytes(self, positions: int, num_items: int, d_model: int) -> int:
            return positions * 10

    estimate = memory.estimate(items, backbone, Loss(), batch_size=4, max_len=12)
    assert estimate.parameters == 4 * sum(p.numel() for p in [*items.parameters(), *backbone.parameters()])
    assert estimate.optimizer == 3 * estimate.parameters and estimate.loss == 480
    assert estimate.activations >= backbone.activation_bytes(4, 12) > backbone.activation_bytes(2, 12)
