"""The audio item representations under DDP with 2 CPU processes (gloo), as test_ddp.py runs the id-only zoo: every
user once per epoch over the ranks, identical weights on both ranks (the frozen audio tables are per-rank buffers,
not broadcast), and a 1-process load of the DDP run's checkpoint (frozen tables rebuilt from the split) that scores
exactly like the ranks did."""

from __future__ import annotations

import numpy as np
import pytest

from yambda_dl.data import schema as S
from yambda_dl.eval.evaluator import evaluate
from yambda_dl.eval.recommend import recommend_all
from yambda_dl.models.sequential.module import SequentialRecommender

from ...conftest import write_audio
from ...data.test_datamodules import many_users_split
from .test_ddp import run_ddp


@pytest.mark.slow
@pytest.mark.parametrize("item_repr", ["hybrid", "content", "audio_init", "delta", "semantic_ids"])
def test_ddp_audio_representation_sees_every_user_once_and_scores_like_one_process(tmp_path, item_repr):
    split = many_users_split(tmp_path, num_users=300)
    # a vector for most of the 50 items; every 7th has none (Hybrid's learned stand-in, Content's zero input)
    with_vector = [int(i) for i in split.items if int(i) % 7]
    write_audio(tmp_path / "yambda" / S.EMBEDDINGS_FILE, with_vector)
    assert split.side_files.embeddings == tmp_path / "yambda" / S.EMBEDDINGS_FILE
    out = tmp_path / "ddp"
    ranks = run_ddp(split, out, "sasrec", item_repr)
    assert ranks[0]["item_vectors_sum"] == ranks[1]["item_vectors_sum"]  # the same catalogue vectors on both ranks
    assert ranks[0]["metrics"] == ranks[1]["metrics"]
    single = SequentialRecommender.from_checkpoint(out / "checkpoints" / "last.ckpt", split)
    # the audio representation, not an id table
    assert type(single.items).__name__ == item_repr.title().replace("_", "")
    assert np.isclose(float(single.item_vectors().abs().sum()), ranks[0]["item_vectors_sum"], rtol=1e-6)
    items, _ = recommend_all(single, split.num_users, 5)
    assert evaluate(items, split.targets, split.num_items, [1, 5]) == ranks[0]["metrics"]
