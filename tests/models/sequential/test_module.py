"""The sequential recommender's shared glue on a cyclic toy problem: every zoo model and every loss learns it,
resumes bit-exactly, refuses what cannot fit and names bad keys."""

from __future__ import annotations

import lightning
import pytest
import torch

from yambda_dl.data.layout import DatasetLayout
from yambda_dl.data.split import Protocol, make_split
from yambda_dl.eval.evaluator import evaluate
from yambda_dl.eval.recommend import recommend_all
from yambda_dl.models.sequential.module import SequentialRecommender, build_sequential

from ...conftest import listen, write_flat
from .zoo import tiny, zoo

CYCLE = [10, 20, 30, 40, 50]


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


def hitrate_at_1(model, split) -> float:
    items, _ = recommend_all(model, split.num_users, 1)
    return evaluate(items, split.targets, split.num_items, [1])["hitrate@1"]


def quiet_trainer(tmp_path, folder: str, epochs: int, **keys) -> lightning.Trainer:
    """A CPU Trainer writing checkpoints as configs/callbacks/model_checkpoint.yaml does: every epoch + last.ckpt."""
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
        **keys,
    )


# --- configuration errors, before any work --------------------------------------------------------------------------


def test_unknown_key_lists_the_valid_ones():
    with pytest.raises(TypeError, match=r"unknown sequential-model key\(s\) \['layers'\]; valid choices: .*max_len"):
        build_sequential(layers=2)


def test_a_part_may_not_set_a_shared_knob():
    optimizer = {"_target_": "torch.optim.Adam", "lr": 0.1}
    with pytest.raises(ValueError, match=r"set model.lr, not model.optimizer.lr"):
        build_sequential(optimizer=optimizer)


def test_a_bad_part_key_names_the_part():
    backbone = {"_target_": "yambda_dl.models.sequential.backbones.transformer.Transformer", "num_heads": 3}
    with pytest.raises(ValueError, match=r"model.backbone \(.*Transformer\): .*not divisible by num_heads=3"):
        build_sequential(backbone=backbone)


def test_the_objective_and_the_backbone_must_agree_on_direction():
    backbone = {"_target_": "yambda_dl.models.sequential.backbones.transformer.Transformer", "causal": False}
    with pytest.raises(ValueError, match=r"NextItem needs a causal backbone; Transformer has causal=False"):
        build_sequential(backbone=backbone)


def test_early_stopping_needs_tune_mode(split):
    with pytest.raises(ValueError, match=r"protocol\.mode=tune"):
        tiny("sasrec", early_stopping_patience=2).fit(split)


def test_a_configuration_that_cannot_fit_is_refused_with_numbers(split):
    model = tiny("sasrec", epochs=1, memory_fraction=1e-9)
    with pytest.raises(MemoryError, match=r"needs about .* GiB \(parameters .* GiB is free .*model.batch_size"):
        model.fit(split)


def test_the_api_picks_parts_by_group_and_sets_their_keys():
    model = tiny("sasrec", loss="sampled_softmax", **{"loss.num_negatives": 3})
    assert type(model.loss).__name__ == "SampledSoftmax" and model.loss.num_negatives == 3
    with pytest.raises(ValueError, match=r"unknown setting\(s\) \['layers'\] for model 'sasrec'; valid: .*backbone"):
        tiny("sasrec", layers=2)


# --- learning -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", zoo())
def test_every_zoo_model_learns_the_cycle(split, name):
    model = tiny(name, epochs=40, lr=0.01, seed=3).fit(split)
    assert hitrate_at_1(model, split) == 1.0  # every user's next item is the successor of their last one


@pytest.mark.parametrize(
    "loss",
    [
        {"loss": "sampled_softmax", "loss.num_negatives": 4, "loss.negatives": "popularity"},
        {"loss": "sampled_softmax", "loss.negatives": "in_batch"},
        {"loss": "gbce", "loss.num_negatives": 4},
        {"loss": "full_ce", "loss.chunk_items": 2},
    ],
    ids=lambda loss: f"{loss['loss']}-{loss.get('loss.negatives', '')}",
)
def test_sasrec_learns_the_cycle_with_every_loss(split, loss):
    model = tiny("sasrec", **loss, epochs=40, lr=0.01, seed=3).fit(split)
    assert hitrate_at_1(model, split) == 1.0


@pytest.mark.parametrize("name", zoo())
def test_a_resumed_run_ends_like_one_that_ran_through(split, tmp_path, name):
    keys = {"epochs": 4, "seed": 9, "backbone": {"dropout": 0.2}}  # dropout, negatives, masks: randomness to repeat
    straight = tiny(name, **keys).fit(split, quiet_trainer(tmp_path, "straight", 4))
    tiny(name, **keys).fit(split, quiet_trainer(tmp_path, "stopped", 2))  # stopped after two epochs
    last = tmp_path / "stopped" / "checkpoints" / "last.ckpt"
    assert last.is_file() and len(list(last.parent.glob("epoch=1-*.ckpt"))) == 1  # every epoch, the newest kept
    resumed = tiny(name, **keys, ckpt_path=str(last)).fit(split, quiet_trainer(tmp_path, "stopped", 4))
    assert resumed.trainer.current_epoch == straight.trainer.current_epoch == 4
    assert torch.equal(resumed.item_vectors(), straight.item_vectors())
    users = torch.arange(split.num_users)
    assert torch.equal(resumed.user_vectors(users), straight.user_vectors(users))


def test_a_checkpoint_rebuilds_its_model(split, tmp_path):
    model = tiny("sasrec", epochs=2).fit(split, quiet_trainer(tmp_path, "run", 2))
    loaded = SequentialRecommender.from_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt", split)
    users = torch.arange(split.num_users)
    assert torch.equal(loaded.recommend(users, 3)[0], model.recommend(users, 3)[0])


@pytest.mark.slow
def test_early_stopping_in_tune_mode(tmp_path):
    from yambda_dl.eval.callback import RankingEvaluation
    from yambda_dl.eval.settings import EvalSettings

    split = cyclic_split(tmp_path, mode="tune")
    evaluation = RankingEvaluation(split, EvalSettings(ks=(1, 5)))
    trainer = lightning.Trainer(
        accelerator="cpu", max_epochs=30, logger=False, enable_checkpointing=False, callbacks=[evaluation]
    )
    # lr so small nothing changes: the metric cannot improve, so patience 2 stops after 3 validations
    keys = {"lr": 1e-12, "early_stopping_patience": 2, "early_stopping_monitor": "val/ndcg@5"}
    tiny("sasrec", **keys).fit(split, trainer)
    assert trainer.current_epoch == 3 and len(evaluation.history) == 3


@pytest.mark.gpu
@pytest.mark.parametrize("name", zoo())
def test_bf16_and_compile_on_gpu(split, name):
    trainer = lightning.Trainer(accelerator="gpu", devices=1, precision="bf16-mixed", max_epochs=40, logger=False)
    model = tiny(name, epochs=40, lr=0.01, seed=3, compile=True).fit(split, trainer)
    assert hitrate_at_1(model, split) == 1.0
