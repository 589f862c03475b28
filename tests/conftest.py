"""Shared fixtures: tiny Yambda datasets written as real Parquet files in the release layout."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import lightning
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from yambda_dl.data import schema as S
from yambda_dl.data.layout import DatasetLayout

# the tests never reach the network and never block on a W&B login
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

# real Yambda rows copied from public material, with their provenance, for the loader and split tests
REAL_ROWS_DIR = Path(__file__).resolve().parent / "fixtures" / "yambda-real-rows"
TRAIN_END = 25_911_800  # final mode: train [0, TRAIN_END), test [25_913_600, 26_000_000]
TEST_START = 25_913_600


def write_flat(layout: DatasetLayout, event_file: str, rows: list[tuple]) -> Path:
    """Write rows (tuples in flat_schema column order) sorted by (uid, timestamp) as the layout's flat file."""
    schema = S.flat_schema(event_file)
    rows = sorted(rows, key=lambda r: (r[0], r[1]))
    columns = list(zip(*rows, strict=True)) if rows else [[] for _ in schema.names]
    table = pa.table(
        {name: pa.array(col, type=schema.field(name).type) for name, col in zip(schema.names, columns, strict=True)}
    )
    path = layout.event_path(event_file, "flat")
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


def audio_vectors(item_ids) -> np.ndarray:
    """A reproducible unit vector per raw item id (seeded by the id), float32 (n, 128)."""
    rows = [np.random.default_rng(int(i)).normal(size=S.EMBEDDING_DIM) for i in item_ids]
    out = np.array(rows, dtype=np.float32).reshape(-1, S.EMBEDDING_DIM)
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def write_audio(path, item_ids, row_group_rows: int = 3, vectors: np.ndarray | None = None) -> None:
    """embeddings.parquet in the release's schema (float32 lists, sorted by item_id) for the given raw ids."""
    ids = np.sort(np.asarray(item_ids))
    vectors = audio_vectors(ids) if vectors is None else vectors
    lists = pa.array(list(vectors), pa.list_(pa.float32()))
    table = pa.table({"item_id": pa.array(ids, pa.uint32()), "embed": lists, "normalized_embed": lists})
    pq.write_table(table, path, row_group_size=row_group_rows)


def listen(uid: int, ts: int, item: int, ratio: int = 100, organic: int = 1, length: int = 200) -> tuple:
    return (uid, ts, item, organic, ratio, length)


@pytest.fixture
def popularity_layout(tmp_path: Path) -> DatasetLayout:
    """Six users, five items (raw ids 10..50) with a known popularity order in train.

    All-time counts: item 10 x6, 20 x5, 30 x4, 40 x3 (all early); item 50 x2, both at the very end of train, so that
    a short-horizon DecayPop ranks 50 first while MostPop ranks it last. Every user has one Listen+ target.
    """
    layout = DatasetLayout(tmp_path / "yambda", "hand")
    early, late = 1_000_000, TRAIN_END - 5
    rows = []
    for uid, items in {
        1: [10, 20, 30, 40],
        2: [10, 20, 30, 40],
        3: [10, 20, 30, 40],
        4: [10, 20, 30],
        5: [10, 20, 50],
        6: [10, 50],
    }.items():
        rows += [listen(uid, early + 5 * i, item) for i, item in enumerate(items)]
    rows = [r if not (r[2] == 50) else listen(r[0], late, 50) for r in rows]
    rows += [listen(uid, TEST_START + 100, 10 * uid) for uid in range(1, 6)]  # targets 10..50
    rows += [listen(6, TEST_START + 100, 99)]  # a target item never seen in train
    write_flat(layout, "listens", rows)
    write_audio(layout.embeddings_path, [10, 20, 30, 40, 50, 99])  # item 99: a vector, never played
    return layout


# models whose reference implementation is an optional extra (`make setup-sansa`), with the packages it brings:
# skipped where any is absent
OPTIONAL_MODEL_PACKAGES = {"sansa": ("sansa", "sksparse")}


def optional_model_param(name: str):
    """A pytest param for a model name, skipped when a package of the model's optional extra is not installed."""
    extra, packages = next(((p, m) for p, m in OPTIONAL_MODEL_PACKAGES.items() if name.startswith(p)), (None, ()))
    missing = [package for package in packages if importlib.util.find_spec(package) is None]
    reason = f"optional `{extra}` extra not installed ({', '.join(missing)} missing)"
    return pytest.param(name, marks=pytest.mark.skipif(bool(missing), reason=reason))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `gpu` skip themselves where CUDA is absent, so that none needs its own skipif."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="marked gpu: needs CUDA, which is absent here")
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip)


def quiet_trainer(**settings) -> lightning.Trainer:
    """A Lightning Trainer that writes and prints nothing of its own (no logger, checkpoints, bars or summary)."""
    quiet = {"logger": False, "enable_checkpointing": False, "enable_progress_bar": False}
    return lightning.Trainer(**(quiet | {"enable_model_summary": False} | settings))


def gpu_trainer(max_epochs: int) -> lightning.Trainer:
    """One CUDA device in bf16, as trainer=gpu configures it."""
    return quiet_trainer(max_epochs=max_epochs, accelerator="gpu", devices=1, precision="bf16-mixed")


def cuda_devices() -> list[str]:
    """Devices to parametrise device-agnostic tests over: CPU always, CUDA where present."""
    return ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)
