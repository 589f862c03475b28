"""Sequential models under DDP with 2 CPU processes (gloo): every user once per epoch over the ranks, and scoring
that gives the same metrics on each rank as one process scoring the same weights."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from yambda_dl.eval.evaluator import evaluate
from yambda_dl.eval.recommend import recommend_all
from yambda_dl.models.sequential.module import SequentialRecommender

from ...data.test_datamodules import many_users_split

SCRIPT = Path(__file__).with_name("ddp_run.py")


def run_ddp(split, out: Path, *arguments: str) -> list[dict]:
    """ddp_run.py (model, then its extra arguments) on 2 processes writing into `out`; each rank's record, after
    checking that the ranks together trained every user once per epoch, and both of them trained."""
    out.mkdir()
    command = [sys.executable, str(SCRIPT), arguments[0], str(split.path), str(out), *arguments[1:]]
    run = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    for epoch in ("0", "1"):
        seen = [u for rank in ranks for u in rank["users"][epoch]]
        assert sorted(seen) == list(range(split.num_users))  # no duplicates, no omissions
        assert ranks[0]["users"][epoch] and ranks[1]["users"][epoch]  # both ranks trained
    return ranks


@pytest.mark.slow
@pytest.mark.parametrize("name", ["esasrec", "bert4rec"])
def test_ddp_sees_every_user_once_and_scores_like_one_process(tmp_path, name):
    split = many_users_split(tmp_path, num_users=300)
    out = tmp_path / "ddp"
    ranks = run_ddp(split, out, name)
    assert ranks[0]["metrics"] == ranks[1]["metrics"]  # identical weights on both ranks, every user scored
    # one process loads the DDP run's final checkpoint and scores every user
    single = SequentialRecommender.from_checkpoint(out / "checkpoints" / "last.ckpt", split)
    items, _ = recommend_all(single, split.num_users, 5)
    assert evaluate(items, split.targets, split.num_items, [1, 5]) == ranks[0]["metrics"]
