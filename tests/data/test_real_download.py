"""Opt-in: a real Yambda download under $YAMBDA_DIR holds exactly the published totals.

Run with `YAMBDA_DIR=/path/to/yambda make test` (or pytest -m real_data); skipped when the variable is unset or a
file is absent. Totals come from tests/fixtures/yambda-real-rows/yambda_reference_stats.json.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from yambda_dl.data import io
from yambda_dl.data import schema as S
from yambda_dl.data.layout import DatasetLayout

from ..conftest import REAL_ROWS_DIR

pytestmark = pytest.mark.real_data

REFERENCE = REAL_ROWS_DIR / "yambda_reference_stats.json"
ROOT = os.environ.get("YAMBDA_DIR")


def reference() -> dict:
    if not REFERENCE.is_file():
        pytest.skip(f"{REFERENCE} not found")
    return json.loads(REFERENCE.read_text())


def present(path: Path) -> Path:
    if ROOT is None:
        pytest.skip("set YAMBDA_DIR to a real Yambda download to run this test")
    if not path.is_file():
        pytest.skip(f"{path} is not downloaded")
    return path


def distinct(path: Path, event_file: str, column: str) -> int:
    """Distinct values of a uint32 column, streamed: a bitmap of 2**32 bits would be 512 MB, so grow by max id."""
    seen = np.zeros(0, dtype=bool)
    for table in io.iter_flat_batches(path, event_file, [column]):
        values = table.column(column).to_numpy()
        if len(values) and values.max() >= len(seen):
            seen = np.concatenate([seen, np.zeros(int(values.max()) + 1 - len(seen), dtype=bool)])
        seen[values] = True
    return int(seen.sum())


@pytest.mark.parametrize("event_file", S.EVENT_FILES)
def test_flat_50m_totals(event_file):
    expected = reference()["flat_50m"]
    layout = DatasetLayout(Path(ROOT or "."), "50m")
    path = present(layout.event_path(event_file, "flat"))
    assert io.open_parquet(path).metadata.num_rows == expected["rows"][event_file]
    assert distinct(path, event_file, "uid") == expected["unique_users"][event_file]
    assert distinct(path, event_file, "item_id") == expected["unique_items"][event_file]


def test_sequential_50m_users():
    layout = DatasetLayout(Path(ROOT or "."), "50m")
    path = present(layout.event_path("multi_event", "sequential"))
    assert io.open_parquet(path).metadata.num_rows == reference()["sequential_50m"]["users_processed"]


@pytest.mark.parametrize(
    "event_file,key",
    [
        ("listens", "listens"),
        ("likes", "like"),
        ("dislikes", "dislike"),
        ("unlikes", "unlike"),
        ("undislikes", "undislike"),
    ],
)
def test_flat_5b_rows(event_file, key):
    facts = reference()["flat_5b_and_sequential_5b"]
    path = present(DatasetLayout(Path(ROOT or "."), "5b").event_path(event_file, "flat"))
    expected = facts["listens"] if key == "listens" else facts["explicit"][key]
    assert io.open_parquet(path).metadata.num_rows == expected


def test_embeddings_facts():
    facts = reference()["embeddings"]
    path = present(DatasetLayout(Path(ROOT or "."), "50m").embeddings_path)
    meta = io.open_parquet(path).metadata
    assert meta.num_rows == facts["rows"]
    ids = np.concatenate(
        [
            t.column("item_id").to_numpy()
            for t in (io.open_parquet(path).read_row_group(g, columns=["item_id"]) for g in range(meta.num_row_groups))
        ]
    )
    assert ids.min() == facts["min_item_id"] and ids.max() == facts["max_item_id"]
    assert bool(np.all(ids[1:] > ids[:-1])) == facts["item_ids_sorted"]
