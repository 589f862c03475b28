"""Item representations on a tiny real split with an embeddings.parquet: shapes, padding, the mask token, tied
outputs, which parameters train, the delta's norm bound, and the audio each one reads."""

from __future__ import annotations

import pytest
import torch

from yambda_dl.models.sequential import memory
from yambda_dl.models.sequential.items import (
    AudioInit,
    Content,
    Delta,
    Hybrid,
    IdEmbedding,
    SemanticIds,
    reduce_audio,
)

from ...data.test_embeddings import audio_split

D = 8
REPRS = {
    "id": IdEmbedding,
    "audio_init": AudioInit,
    "hybrid": Hybrid,
    "delta": Delta,
    "content": Content,
    "semantic_ids": SemanticIds,
    "semantic_ids_replace": SemanticIds,
}
# small codebooks for the tiny catalogue (8 items, 6 with a vector)
KEYS = {
    "semantic_ids": {"levels": 2, "codebook_size": 2, "iterations": 3},
    "semantic_ids_replace": {"levels": 2, "codebook_size": 2, "iterations": 3, "mode": "replace"},
}


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    return audio_split(tmp_path_factory.mktemp("items"))


def build(name: str, split, num_special: int = 2, seed: int = 0, **keys):
    torch.manual_seed(seed)
    keys = {**KEYS.get(name, {}), **keys}
    return REPRS[name](num_items=split.num_items, num_special=num_special, d_model=D, split=split, **keys)


@pytest.mark.parametrize("name", sorted(REPRS))
def test_shapes_padding_mask_and_tied_outputs(split, name):
    items = build(name, split)
    n = split.num_items
    tokens = torch.tensor([[n, n, 0, 3], [n + 1, 1, 2, n - 1]])  # padding prefix, a mask token
    out = items(tokens)
    assert out.shape == (2, 4, D) and out.dtype == torch.float32
    assert not out[0, :2].any()  # the padding token -> zero vectors
    assert out[1, 0].abs().sum() > 0  # the mask token has a vector of its own
    every = items.output_vectors()
    assert every.shape == (n, D)
    torch.testing.assert_close(items.output(torch.arange(n)), every)
    torch.testing.assert_close(out[1, 1:], every[[1, 2, n - 1]])  # input and output vectors are tied
    with pytest.raises(ValueError, match="no mask token"):
        _ = build(name, split, num_special=1).mask


@pytest.mark.parametrize("name", sorted(REPRS))
def test_seeded_construction_is_reproducible(split, name):
    a, b = build(name, split, seed=3), build(name, split, seed=3)
    torch.testing.assert_close(a.output_vectors(), b.output_vectors())


TRAINABLE = {
    "audio_init": {"embedding.weight"},
    "hybrid": {"embedding.weight", "projection.weight", "missing"},
    "delta": {"delta"},
    "content": {
        "missing",
        "special.weight",
        "adaptor.0.weight",
        "adaptor.0.bias",
        "adaptor.3.weight",
        "adaptor.3.bias",
    },
}
FROZEN = {
    "audio_init": set(),
    "hybrid": {"audio", "present"},
    "delta": {"base", "bounded"},
    "content": {"audio", "present"},
}


@pytest.mark.parametrize("name", sorted(TRAINABLE))
def test_gradients_reach_only_the_trainable_parts(split, name):
    items = build(name, split)
    n = split.num_items
    loss = items(torch.tensor([[n, 0, 1, n + 1]])).pow(2).sum() + items.output_vectors().pow(2).sum()
    loss.backward()
    grads = {k for k, p in items.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert grads == TRAINABLE[name]
    assert {k for k, _ in items.named_buffers()} == FROZEN[name]
    assert not any(b.requires_grad for b in items.buffers())
    # frozen tables are rebuilt from the split: checkpoints hold only what trains
    assert set(items.state_dict()) == {k for k, _ in items.named_parameters()}
    if name == "content":
        # no id table: the adaptor MLP, the missing-vector and the special tokens' rows only
        assert sum(p.numel() for p in items.parameters()) == (128 * 256 + 256) + (256 * D + D) + D + 2 * D
    if name == "semantic_ids_replace":  # no id table: the special tokens' rows only
        assert items.embedding.weight.shape[0] == 2
    if name in ("hybrid", "delta"):  # padding rows never train
        assert items(torch.tensor([n])).abs().sum() == 0


def test_memory_estimate_counts_the_frozen_tables(split):
    hybrid, audio_init = build("hybrid", split), build("audio_init", split)
    assert memory.table_bytes(hybrid) == split.num_items * (128 * 4 + 1)  # float32 audio + the present flags
    assert memory.table_bytes(audio_init) == 0
    assert memory.table_bytes(build("hybrid", split, dtype="bfloat16")) == split.num_items * (128 * 2 + 1)


def test_delta_norm_is_bounded_where_an_item_has_a_vector(split):
    items = build("delta", split, max_delta_norm=0.05)
    with torch.no_grad():
        items.delta.normal_(std=10.0)
    moved = (items.output_vectors() - items.base[: split.num_items]).norm(dim=1)
    present = items.bounded[: split.num_items]
    assert (moved[present] <= 0.05 + 1e-6).all()
    assert (moved[~present] > 1.0).all()  # items without a vector learn a free vector
    fresh = build("delta", split)
    torch.testing.assert_close(fresh.output_vectors()[present], fresh.base[: split.num_items][present])


def test_audio_init_starts_from_the_reduced_audio(split):
    from yambda_dl.data.embeddings import item_embeddings

    view = item_embeddings(split, progress=False)
    vectors, present = view.tensor(), view.present_tensor()
    items = build("audio_init", split)
    expected = reduce_audio(vectors, present, D, "pca", rms=D**-0.5)
    torch.testing.assert_close(items.output_vectors()[present], expected[present])
    assert items.output_vectors()[~present].abs().sum() > 0  # the usual random init where there is no vector
    # PCA keeps the geometry: cosine of two items' rows follows their audio's order
    cos = torch.nn.functional.cosine_similarity
    audio = vectors[present] - vectors[present].mean(0)
    rows = items.output_vectors()[present]
    assert torch.corrcoef(torch.stack([cos(audio[0:1], audio[1:]), cos(rows[0:1], rows[1:])]))[0, 1] > 0.9
    random = build("audio_init", split, reduce="random")
    assert not torch.allclose(random.output_vectors()[present], expected[present])


def test_bad_keys_are_one_line_errors(split):
    with pytest.raises(ValueError, match=r"model.item_repr.reduce='svd' \(audio_init\): valid choices: pca, random"):
        build("audio_init", split, reduce="svd")
    with pytest.raises(ValueError, match=r"model.item_repr.column='audio' \(hybrid\).*embed, normalized_embed"):
        build("hybrid", split, column="audio")
    with pytest.raises(ValueError, match=r"model.item_repr.max_delta_norm=0 \(delta\) must be > 0"):
        build("delta", split, max_delta_norm=0)
    with pytest.raises(ValueError, match=r"model.item_repr.dtype='float16' \(content\).*float32, bfloat16"):
        build("content", split, dtype="float16")
    with pytest.raises(ValueError, match="content needs the split"):
        Content(num_items=3, num_special=1, d_model=D, split=None)
    with pytest.raises(ValueError, match="d_model=200 needs reduce=random"):
        AudioInit(num_items=split.num_items, num_special=1, d_model=200, split=split)


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    from yambda_dl.data.synthetic import generate

    root = tmp_path_factory.mktemp("tiny") / "synthetic_tiny"
    generate("tiny", root, progress=False)
    return root


@pytest.mark.slow
@pytest.mark.parametrize("name", ["audio_init", "hybrid", "delta", "content", "semantic_ids"])
def test_yambda_train_runs_sasrec_with_each_audio_representation(tiny_root, tmp_path, name):
    """`yambda-train model=sasrec model/item_repr=NAME data=synthetic_tiny`, one short epoch, through the app; the
    run folder's checkpoint loads back (the frozen tables rebuilt from the split) and ranks the same."""
    import pyarrow.parquet as pq

    from yambda_dl.data.layout import DatasetLayout
    from yambda_dl.data.split import Protocol, make_split
    from yambda_dl.models.sequential.module import SequentialRecommender
    from yambda_dl.train import train

    from ...test_train import compose_cfg

    out = tmp_path / "run"
    overrides = [
        "model=sasrec",
        f"model/item_repr={name}",
        "data=synthetic_tiny",
        f"data.root={tiny_root}",
        "model.epochs=1",
        "model.d_model=16",
        "model.max_len=12",
        "model.batch_size=8",
        "model.backbone.num_layers=1",
        *(["model.item_repr.levels=2", "model.item_repr.codebook_size=8"] if name == "semantic_ids" else []),
        "logger=none",
        "progress=false",
        "save_recommendations=true",
        f"hydra.run.dir={out}",
    ]
    metrics = train(compose_cfg(overrides, out))
    assert 0.0 <= metrics["metrics"]["ndcg@100"] <= 1.0
    checkpoint = out / "checkpoints" / "last.ckpt"
    assert torch.load(checkpoint, weights_only=True)["state_dict"].keys().isdisjoint({"items.audio", "items.base"})
    split = make_split(DatasetLayout(tiny_root, "tiny"), Protocol(), progress=False)  # the run's cached split
    loaded = SequentialRecommender.from_checkpoint(checkpoint, split)
    items, _ = loaded.recommend(torch.arange(split.num_users), 100)
    saved = pq.read_table(out / "recommendations.parquet").column("item_ids").to_pylist()
    assert split.items[items.numpy()].tolist() == saved


@pytest.mark.parametrize("name", ["content", "hybrid", "id", "delta"])
def test_content_representations_score_the_cold_candidates(tmp_path, name):
    """With protocol.candidates=train_and_cold the content parts rank the cold items (by their audio alone); the
    id-based ones keep to the train items."""
    from yambda_dl.data.layout import DatasetLayout
    from yambda_dl.data.split import Protocol, make_split

    plain = audio_split(tmp_path)  # the default candidates; the same folder serves both
    layout = DatasetLayout(tmp_path, "hand")
    split = make_split(layout, Protocol(candidates="train_and_cold"), cache_dir=tmp_path / "cache", progress=False)
    assert split.path == plain.path and len(split.cold_items) > 0
    items = build(name, split)
    every = items.output_vectors()
    if name in ("id", "delta"):
        assert every.shape == (split.num_items, D)
        return
    assert every.shape == (split.num_candidates, D)
    torch.testing.assert_close(every[: split.num_items], build(name, plain).output_vectors())  # same train rows
    cold = torch.as_tensor(items.audio[split.num_items :], dtype=torch.float32)
    content = items.adaptor(cold) if name == "content" else items.projection(cold)
    torch.testing.assert_close(every[split.num_items :], content)


def test_semantic_ids_give_every_item_its_own_code(split):
    items = build("semantic_ids_replace", split)
    codes = items.codes.tolist()
    assert len({tuple(row) for row in codes}) == split.num_items  # items without a vector too (the collision level)
    assert (items.output_vectors().unique(dim=0).shape[0]) == split.num_items
    with pytest.raises(
        ValueError, match=r"model.item_repr.mode='concat' \(semantic_ids\): valid choices: sum, replace"
    ):
        build("semantic_ids", split, mode="concat")
    with pytest.raises(ValueError, match=r"model.item_repr \(semantic_ids codebook_size=1 must be >= 2\)"):
        build("semantic_ids", split, codebook_size=1)
