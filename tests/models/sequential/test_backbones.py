"""The zoo's own backbones (LiGR for eSASRec, GRU4Rec's GRU, HSTU) against the Backbone contract: causal, blind to
left padding, finite everywhere, empty batches and single columns, gradients to every weight, one-line errors, an
activation estimate that bounds what autograd really keeps; and what is particular to each."""

from __future__ import annotations

import math

import pytest
import torch

from yambda_dl.models.sequential.backbones import Backbone
from yambda_dl.models.sequential.backbones.gru import GRU
from yambda_dl.models.sequential.backbones.hstu import HSTU, time_buckets
from yambda_dl.models.sequential.backbones.ligr import LiGR

D, MAX_LEN = 16, 12
# two layers each, so that the checks cross a layer boundary; dropout off unless a test turns it on
SIZES = {
    "ligr": (LiGR, {"num_layers": 2, "num_heads": 2, "ffn_dim": 32, "dropout": 0.0}),
    "gru": (GRU, {"num_layers": 2, "dropout": 0.0}),
    "hstu": (HSTU, {"num_layers": 2, "num_heads": 2, "dropout": 0.0}),
}
NAMES = list(SIZES)


def build(name: str, **keys) -> Backbone:
    torch.manual_seed(0)
    cls, sizes = SIZES[name]
    return cls(**{"d_model": D, "max_len": MAX_LEN, **sizes, **keys}).eval()


def batch(lengths: list[int], length: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-aligned rows of the given real lengths: inputs (zero at padding), valid, timestamps (seconds, rising by
    gaps from a second to a day; arbitrary at padding)."""
    g = torch.Generator().manual_seed(seed)
    valid = torch.arange(length)[None, :] >= length - torch.tensor(lengths)[:, None]
    x = torch.randn(len(lengths), length, D, generator=g) * valid[..., None]
    gaps = torch.randint(1, 86_400, (len(lengths), length), generator=g)
    times = 1_700_000_000 + gaps.cumsum(dim=1)
    times = torch.where(valid, times, torch.randint(0, 2**31, times.shape, generator=g))  # padding: arbitrary
    return x, valid, times


def run(backbone: Backbone, x: torch.Tensor, valid: torch.Tensor, times: torch.Tensor) -> torch.Tensor:
    return backbone(x, valid, times if backbone.uses_timestamps else None)


# --- the contract, for every backbone -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_outputs_never_see_later_events(name):
    backbone = build(name)
    x, valid, times = batch([8, 5, 2], 8)
    out = run(backbone, x, valid, times)
    for t in range(7):
        later = valid & (torch.arange(8) > t)
        x2 = torch.where(later[..., None], torch.randn_like(x), x)
        times2 = torch.where(later, times + 10_000 * torch.arange(8), times)  # later gaps change too
        out2 = run(backbone, x2, valid, times2)
        before = valid & (torch.arange(8) <= t)
        torch.testing.assert_close(out2[before], out[before])
        assert not torch.allclose(out2[later], out[later])  # the change did reach the later columns


@pytest.mark.parametrize("name", NAMES)
def test_left_padding_changes_nothing_at_real_events(name):
    backbone = build(name)
    x, valid, times = batch([6, 4, 1], 6)
    fills = pad_columns(3, 4)
    padded = run(backbone, *(torch.cat(pair, dim=1) for pair in zip(fills, (x, valid, times), strict=True)))
    out = run(backbone, x, valid, times)
    torch.testing.assert_close(padded[:, 4:][valid], out[valid])
    for row, n in enumerate([6, 4, 1]):  # and each row alone, unpadded, as a batch of one
        alone = run(backbone, x[row : row + 1, -n:], valid[row : row + 1, -n:], times[row : row + 1, -n:])
        torch.testing.assert_close(out[row, -n:], alone[0])


def pad_columns(rows: int, columns: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Padding to prepend: zero inputs, invalid, arbitrary timestamps."""
    return torch.zeros(rows, columns, D), torch.zeros(rows, columns, dtype=torch.bool), torch.full((rows, columns), 7)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("training", [False, True])
def test_outputs_are_finite_everywhere_even_for_an_all_padding_row(name, training):
    backbone = build(name, dropout=0.2).train(training)
    out = run(backbone, *batch([5, 2, 0], 5))
    assert out.shape == (3, 5, D) and torch.isfinite(out).all()


@pytest.mark.parametrize("name", NAMES)
def test_an_empty_batch_still_reaches_every_parameter(name):
    backbone = build(name).train()
    out = run(backbone, *batch([], 4))
    assert out.shape == (0, 4, D)
    out.sum().backward()  # an empty DDP padding batch: every weight takes part (with a zero gradient)
    assert all(p.grad is not None for p in backbone.parameters())


@pytest.mark.parametrize("name", NAMES)
def test_a_single_column_works(name):
    backbone = build(name)
    out = run(backbone, *batch([1, 0], 1))
    assert out.shape == (2, 1, D) and torch.isfinite(out).all()
    x, valid, times = batch([1, 1, 1], 3, seed=1)  # one real event after two padding columns
    alone = run(backbone, x[:, -1:], valid[:, -1:], times[:, -1:])
    torch.testing.assert_close(alone, run(backbone, x, valid, times)[:, -1:])


@pytest.mark.parametrize("name", NAMES)
def test_gradient_reaches_every_parameter(name):
    backbone = build(name).train()
    x, valid, times = batch([7, 4, 2], 7)
    out = run(backbone, x, valid, times)
    (out[valid] * torch.randn_like(out[valid])).sum().backward()
    dead = [key for key, p in backbone.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not dead


@pytest.mark.parametrize("name", NAMES)
def test_weights_follow_the_seed(name):
    a, b = build(name).state_dict(), build(name).state_dict()
    assert all(torch.equal(a[key], b[key]) for key in a)


@pytest.mark.parametrize("name", NAMES)
def test_activation_estimate_bounds_what_autograd_keeps(name):
    """Bytes of the tensors autograd saves for backward in one training step (parameters aside), against the
    backbone's own estimate: an upper bound, and not a wild one."""
    backbone = build(name, dropout=0.1).train()
    params = {p.untyped_storage().data_ptr() for p in backbone.parameters()}
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    x, valid, times = batch([MAX_LEN] * 6, MAX_LEN)
    x.requires_grad_(True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        run(backbone, x, valid, times).sum().backward()
    kept, estimate = sum(saved.values()), backbone.activation_bytes(6, MAX_LEN)
    assert kept <= estimate <= 6 * kept, (kept, estimate)


BAD_KEYS = [
    ("ligr", {"num_layers": 0}, "num_layers must be >= 1, got 0"),
    ("ligr", {"ffn_dim": 0}, "ffn_dim must be >= 1, got 0"),
    ("ligr", {"num_heads": 3}, "d_model=16 is not divisible by num_heads=3"),
    ("ligr", {"attention_dropout": 1.0}, r"attention_dropout must be in \[0, 1\), got 1.0"),
    ("gru", {"num_layers": 0}, "num_layers must be >= 1, got 0"),
    ("gru", {"hidden_dim": 0}, "hidden_dim must be >= 1, got 0"),
    ("gru", {"hidden_dim": 8, "projection": False}, "hidden_dim=8 differs from d_model=16: set projection=true"),
    ("gru", {"dropout": -0.1}, r"dropout must be in \[0, 1\), got -0.1"),
    ("hstu", {"num_heads": 3}, "d_model=16 is not divisible by num_heads=3: set attention_dim and linear_dim"),
    ("hstu", {"attention_dim": 0}, "attention_dim must be >= 1, got 0"),
    ("hstu", {"linear_dim": 0}, "linear_dim must be >= 1, got 0"),
    ("hstu", {"num_time_buckets": 0}, "num_time_buckets must be >= 1, got 0"),
    ("hstu", {"max_len": 0}, "max_len must be >= 1, got 0"),
]


@pytest.mark.parametrize(("name", "keys", "message"), BAD_KEYS)
def test_a_bad_key_is_a_one_line_error_naming_it(name, keys, message):
    with pytest.raises(ValueError, match=message):
        build(name, **keys)


@pytest.mark.parametrize("name", NAMES)
def test_sequences_longer_than_max_len_are_refused(name):
    with pytest.raises(ValueError, match=f"length 13 exceed the backbone's max_len={MAX_LEN}"):
        run(build(name), *batch([13], 13))


# --- LiGR -----------------------------------------------------------------------------------------------------------


def test_ligr_closed_gates_make_every_layer_the_identity():
    """The residual gates are really there: with every gate shut, the stack passes its (scaled, positioned) input."""
    backbone = build("ligr")
    with torch.no_grad():
        for block in backbone.blocks:
            for gate in (block.gate_attention, block.gate_ffn):
                gate.weight.zero_()
                gate.bias.fill_(-1e4)  # sigmoid(-1e4) == 0 in float32
    x, valid, times = batch([5, 3], 5)
    expected = x * math.sqrt(D) + backbone.inputs.position_embedding(torch.arange(4, -1, -1))
    torch.testing.assert_close(run(backbone, x, valid, times), expected)


# --- GRU ------------------------------------------------------------------------------------------------------------


def test_gru_equals_a_plain_gru_run_on_each_unpadded_sequence():
    backbone = build("gru")
    lengths = [7, 5, 3, 1]
    x, valid, times = batch(lengths, 7)
    out = run(backbone, x, valid, times)
    for row, n in enumerate(lengths):
        states, _ = backbone.gru(x[row : row + 1, -n:] * math.sqrt(D))  # from a zero state, the real events only
        torch.testing.assert_close(out[row, -n:], backbone.projection(states[0]))


def test_gru_hidden_size_may_differ_from_d_model():
    backbone = build("gru", hidden_dim=24)
    out = run(backbone, *batch([4, 2], 4))
    assert out.shape == (2, 4, D) and backbone.gru.hidden_size == 24


# --- HSTU -----------------------------------------------------------------------------------------------------------


def test_hstu_time_bias_sees_gaps_not_absolute_times():
    backbone = build("hstu")
    x, valid, times = batch([6, 4], 6)
    out = run(backbone, x, valid, times)
    torch.testing.assert_close(run(backbone, x, valid, times + 3_600_000), out)  # every event 1000 h later
    stretched = times[:, :1] + (times - times[:, :1]) * 100  # the same order, gaps 100x longer
    assert not torch.allclose(run(backbone, x, valid, stretched)[valid], out[valid])


def test_hstu_without_timestamps_is_a_one_line_error():
    x, valid, _ = batch([3], 3)
    with pytest.raises(ValueError, match="HSTU reads the events' timestamps"):
        build("hstu")(x, valid, None)


def test_hstu_time_buckets_follow_the_reference_log_scale():
    """floor(ln(max(|gap|, 1)) / 0.301), clipped: 0 s and 1 s share bucket 0, then 2 s, a minute, an hour, a day."""
    gaps = torch.tensor([0, 1, 2, 60, 3_600, 86_400, -86_400, 10**12])
    buckets = time_buckets(torch.stack([gaps, torch.zeros_like(gaps)], dim=1), 64)
    assert buckets[:, 0, 1].tolist() == [0, 0, 2, 13, 27, 37, 37, 64]  # the last one clipped to num_buckets
