"""SASRec: the network's causal and positional structure, each loss against an independent computation, the memory
check, a known answer on cyclic histories, and resuming from a checkpoint."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from yambda_dl.data.layout import DatasetLayout
from yambda_dl.data.split import Protocol, make_split
from yambda_dl.eval.evaluator import evaluate
from yambda_dl.eval.recommend import recommend_all
from yambda_dl.models.sasrec import losses, memory
from yambda_dl.models.sasrec.module import build_sasrec
from yambda_dl.models.sasrec.negatives import PopularitySampler
from yambda_dl.models.sasrec.network import NetworkConfig, SASRecNetwork

from ..conftest import listen, write_flat

CYCLE = [10, 20, 30, 40, 50]
TINY = {"d_model": 16, "num_layers": 1, "num_heads": 2, "ffn_dim": 32, "max_len": 12, "dropout": 0.0, "batch_size": 8}


def cyclic_split(root, mode: str = "final"):
    """24 users who listen to items 10..50 in a cycle from different starts; each one's target is the next item."""
    protocol = Protocol(mode=mode)
    layout = DatasetLayout(root / "yambda", "hand")
    rows = []
    for uid in range(1, 25):
        history = [CYCLE[(uid + i) % 5] for i in range(6 + uid % 7)]
        rows += [listen(uid, 1_000_000 + 5 * i, item) for i, item in enumerate(history)]
        target = CYCLE[(uid + len(history)) % 5]
        rows.append(listen(uid, protocol.windows().target_start + 5, target))
    write_flat(layout, "listens", rows)
    return make_split(layout, protocol, cache_dir=root / "cache", progress=False)


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    return cyclic_split(tmp_path_factory.mktemp("cyclic"))


def network(num_items=7, **sizes) -> SASRecNetwork:
    torch.manual_seed(0)
    return SASRecNetwork(num_items, NetworkConfig(**{**TINY_NET, **sizes})).eval()


TINY_NET = {k: v for k, v in TINY.items() if k != "batch_size"}


# --- network ------------------------------------------------------------------------------------------------------


def test_outputs_never_see_later_events():
    net = network()
    seq = torch.tensor([[1, 2, 3, 4, 5]])
    changed = seq.clone()
    changed[0, 3] = 6
    a, b = net(seq), net(changed)
    torch.testing.assert_close(a[:, :3], b[:, :3])  # positions before the change are untouched
    assert not torch.allclose(a[:, 3:], b[:, 3:])


def test_positions_count_from_the_newest_event_so_left_padding_changes_nothing():
    net = network()
    pad = net.pad
    short = net(torch.tensor([[1, 2, 3]]))[:, -1]
    padded = net(torch.tensor([[pad, pad, pad, 1, 2, 3]]))[:, -1]
    torch.testing.assert_close(short, padded)
    assert torch.isfinite(net(torch.tensor([[pad, pad, 4]]))).all()  # padded rows attend to themselves: no NaN


@pytest.mark.parametrize("norm_first", [False, True])
def test_item_vectors_are_the_tied_input_embeddings(norm_first):
    net = network(norm_first=norm_first)
    assert net.item_vectors().shape == (7, 16)
    assert net.item_vectors().data_ptr() == net.item_embedding.weight.data_ptr()
    assert (net.item_embedding.weight[net.pad] == 0).all()


def test_network_config_names_the_bad_value():
    with pytest.raises(ValueError, match="not divisible by num_heads=3"):
        NetworkConfig(d_model=16, num_heads=3)
    with pytest.raises(ValueError, match="unknown activation 'tanh'; valid choices: gelu, relu"):
        NetworkConfig(activation="tanh")


# --- losses -------------------------------------------------------------------------------------------------------


@pytest.fixture
def problem():
    gen = torch.Generator().manual_seed(1)
    hidden = torch.randn(6, 4, generator=gen, requires_grad=True)
    items = torch.randn(11, 4, generator=gen, requires_grad=True)
    positives = torch.tensor([0, 3, 3, 10, 5, 7])
    return hidden, items, positives


def test_full_cross_entropy_in_chunks_equals_the_dense_softmax(problem):
    hidden, items, positives = problem
    chunked = losses.full_cross_entropy(hidden, positives, items, chunk_items=3)  # 11 items: 4 chunks
    grads = torch.autograd.grad(chunked, (hidden, items))
    dense = F.cross_entropy(hidden @ items.T, positives)
    expected = torch.autograd.grad(dense, (hidden, items))
    torch.testing.assert_close(chunked, dense)
    for got, want in zip(grads, expected, strict=True):
        torch.testing.assert_close(got, want)


def test_bce_is_the_papers_formula(problem):
    hidden, items, positives = problem
    negatives = torch.tensor([[1], [2], [4], [6], [8], [9]])
    pos = (hidden * items[positives]).sum(1)
    neg = (hidden * items[negatives[:, 0]]).sum(1)
    expected = -(torch.log(torch.sigmoid(pos)) + torch.log(1 - torch.sigmoid(neg))).mean()
    torch.testing.assert_close(losses.bce(hidden, positives, items, negatives), expected)


def test_sampled_softmax_with_logq_and_accidental_hits(problem):
    hidden, items, positives = problem
    negatives = torch.tensor([1, 3, 9])  # item 3 is the positive of rows 1 and 2: masked there
    log_q = torch.log(torch.linspace(0.01, 0.2, 11))
    got = losses.sampled_softmax(hidden, positives, items, negatives, log_q[positives], log_q[negatives])
    rows = []
    for p in range(6):  # the definition, row by row
        logits = [hidden[p] @ items[positives[p]] - log_q[positives[p]]]
        logits += [hidden[p] @ items[n] - log_q[n] for n in negatives.tolist() if n != positives[p]]
        rows.append(torch.logsumexp(torch.stack(logits), 0) - logits[0])
    torch.testing.assert_close(got, torch.stack(rows).mean())


def test_gbce_reduces_to_bce_at_t_zero_and_calibrates_beta(problem):
    hidden, items, positives = problem
    negatives = torch.tensor([1, 2])
    beta_zero = losses.gbce_beta(2, 11, t=0.0)
    assert beta_zero == pytest.approx(1.0)
    assert losses.gbce_beta(2, 11, t=1.0) == pytest.approx(2 / 10)  # alpha = n / (items - 1)
    pos = (hidden * items[positives]).sum(1)
    neg = hidden @ items[negatives].T
    expected = (F.softplus(-pos) + F.softplus(neg).sum(1)).mean()
    torch.testing.assert_close(losses.gbce(hidden, positives, items, negatives, beta_zero), expected)


def test_empty_batch_gives_zero_loss_with_gradients():
    items = torch.randn(5, 4, requires_grad=True)
    hidden = torch.zeros(0, 4, requires_grad=True)
    empty = torch.zeros(0, dtype=torch.int64)
    for loss in (
        losses.bce(hidden, empty, items, torch.zeros(0, 1, dtype=torch.int64)),
        losses.sampled_softmax(hidden, empty, items, torch.tensor([1, 2])),
        losses.full_cross_entropy(hidden, empty, items, 2),
    ):
        assert loss.item() == 0.0
        loss.backward()


def test_popularity_sampler_draws_by_count():
    counts = np.array([1, 2, 3, 4])
    sampler = PopularitySampler(counts, alpha=1.0)
    torch.manual_seed(0)
    draws = sampler.sample((200_000,), torch.device("cpu"))
    np.testing.assert_allclose(np.bincount(draws.numpy(), minlength=4) / 200_000, counts / 10, atol=0.005)
    torch.testing.assert_close(sampler.log_q(torch.tensor([3])), torch.tensor([math.log(0.4)]))


def test_loss_config_names_the_choices():
    with pytest.raises(ValueError, match="unknown SASRec loss 'mse'; valid choices: bce, sampled_softmax"):
        losses.LossConfig(loss="mse")


# --- memory -------------------------------------------------------------------------------------------------------


def test_parameter_count_matches_the_network():
    for norm_first in (False, True):
        net = network(num_items=13, norm_first=norm_first)
        config = NetworkConfig(**{**TINY_NET, "norm_first": norm_first})
        assert memory.parameter_count(13, config) == sum(p.numel() for p in net.parameters())


def test_a_configuration_that_cannot_fit_is_refused_with_numbers(split):
    model = build_sasrec(**TINY, epochs=1, memory_fraction=1e-9)
    with pytest.raises(MemoryError, match=r"needs about .* GiB \(parameters .* GiB is free .*model.batch_size"):
        model.fit(split)


def test_full_ce_costs_more_than_sampled_losses():
    net = NetworkConfig()
    sampled = memory.estimate(1_000_000, net, losses.LossConfig(loss="sampled_softmax", num_negatives=1024), 256)
    full = memory.estimate(1_000_000, net, losses.LossConfig(loss="full_ce", ce_chunk_items=65536), 256)
    assert full.loss > sampled.loss > 0 and full.parameters == sampled.parameters


# --- the module ---------------------------------------------------------------------------------------------------


def test_unknown_key_lists_the_valid_ones():
    with pytest.raises(TypeError, match=r"unknown SASRec key\(s\) \['layers'\]; valid choices: .*num_layers"):
        build_sasrec(layers=2)


def test_early_stopping_needs_tune_mode(split):
    with pytest.raises(ValueError, match=r"protocol\.mode=tune"):
        build_sasrec(**TINY, early_stopping_patience=2).fit(split)


@pytest.mark.parametrize(
    "loss",
    [
        {"loss": "bce"},
        {"loss": "sampled_softmax", "num_negatives": 4, "negative_sampler": "popularity"},
        {"loss": "gbce", "num_negatives": 4},
        {"loss": "full_ce", "ce_chunk_items": 2},
    ],
    ids=lambda loss: loss["loss"],
)
def test_learns_the_cycle(split, loss):
    model = build_sasrec(**TINY, **loss, epochs=40, lr=0.01, seed=3).fit(split)
    items, _ = recommend_all(model, split.num_users, 1)
    metrics = evaluate(items, split.targets, split.num_items, [1])
    assert metrics["hitrate@1"] == 1.0  # every user's next item is the successor of their last one


@pytest.mark.slow
def test_resumed_run_ends_like_one_that_ran_through(split, tmp_path):
    import lightning

    def trainer(folder, epochs):
        # checkpoints as configs/callbacks/model_checkpoint.yaml writes them: every epoch plus last.ckpt
        checkpoint = lightning.pytorch.callbacks.ModelCheckpoint(
            dirpath=tmp_path / folder / "checkpoints", every_n_epochs=1, save_last=True, save_top_k=1
        )
        return lightning.Trainer(
            accelerator="cpu",
            max_epochs=epochs,
            logger=False,
            default_root_dir=tmp_path / folder,
            callbacks=[checkpoint],
            enable_progress_bar=False,
            enable_model_summary=False,
        )

    keys = {**TINY, "dropout": 0.2, "epochs": 4, "seed": 9}  # dropout and negatives: randomness to reproduce
    straight = build_sasrec(**keys).fit(split, trainer("straight", 4))
    build_sasrec(**keys).fit(split, trainer("stopped", 2))  # stopped after two epochs
    last = tmp_path / "stopped" / "checkpoints" / "last.ckpt"
    assert last.is_file() and len(list(last.parent.glob("epoch=1-*.ckpt"))) == 1  # every epoch, the newest kept
    resumed = build_sasrec(**keys, ckpt_path=str(last)).fit(split, trainer("stopped", 4))
    assert resumed.trainer.current_epoch == straight.trainer.current_epoch == 4
    assert torch.equal(resumed.item_vectors(), straight.item_vectors())
    users = torch.arange(split.num_users)
    assert torch.equal(resumed.user_vectors(users), straight.user_vectors(users))


@pytest.mark.slow
def test_early_stopping_in_tune_mode(tmp_path):
    import lightning

    from yambda_dl.eval.callback import RankingEvaluation

    split = cyclic_split(tmp_path, mode="tune")
    evaluation = RankingEvaluation(split, ks=[1, 5])
    trainer = lightning.Trainer(
        accelerator="cpu", max_epochs=30, logger=False, enable_checkpointing=False, callbacks=[evaluation]
    )
    # lr so small nothing changes: the metric cannot improve, so patience 2 stops after 3 validations
    keys = {**TINY, "lr": 1e-12, "early_stopping_patience": 2, "early_stopping_monitor": "val/ndcg@5"}
    build_sasrec(**keys).fit(split, trainer)
    assert trainer.current_epoch == 3 and len(evaluation.history) == 3


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_bf16_and_compile_on_gpu(split):
    import lightning

    trainer = lightning.Trainer(accelerator="gpu", devices=1, precision="bf16-mixed", max_epochs=40, logger=False)
    model = build_sasrec(**TINY, epochs=40, lr=0.01, seed=3, compile=True).fit(split, trainer)
    items, _ = recommend_all(model, split.num_users, 1)
    assert evaluate(items, split.targets, split.num_items, [1])["hitrate@1"] == 1.0
