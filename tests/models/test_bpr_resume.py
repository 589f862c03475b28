"""BPR resumes: its draws come from (seed, epoch) (torch kernel) or (seed, epoch, batch) (native kernel), so a fit
stopped after a checkpoint and resumed from last.ckpt by a fresh model repeats the uninterrupted one: on one thread
with either kernel, and with lanes (several CPU threads) on the torch kernel, whose lanes split each batch the same
way on any number of them. (The native kernel's lanes run Hogwild: their factors depend on the scheduling.)"""

from __future__ import annotations

import pytest
import torch

from yambda_dl.models.bpr import BPR

from .test_bpr import native_only, one_thread, torch_threads  # noqa: F401 (fixtures)
from .test_ials import checkerboard_split
from .test_ials_resume import check_resume_repeats_the_run


def build(**overrides) -> BPR:
    # batch_size 16 on 48 nonzeros: three updates per epoch, each from draws of that epoch (and batch)
    return BPR(**{"factors": 4, "iterations": 6, "lr": 0.1, "batch_size": 16, **overrides})


def test_a_resumed_fit_ends_where_an_uninterrupted_one_does_on_lanes(tmp_path):
    with torch_threads(2):
        check_resume_repeats_the_run(
            lambda **overrides: build(kernel="torch", **overrides),
            checkerboard_split(tmp_path / "data"),
            tmp_path,
            epochs=6,
            stop=3,
        )


@pytest.mark.parametrize("kernel", ["torch", pytest.param("native", marks=native_only)])
def test_the_same_with_one_thread(tmp_path, one_thread, kernel):  # noqa: F811 (the fixture)
    check_resume_repeats_the_run(
        lambda **overrides: build(kernel=kernel, **overrides),
        checkerboard_split(tmp_path / "data"),
        tmp_path,
        epochs=6,
        stop=3,
    )


def test_torch_lanes_change_nothing(tmp_path):
    """Several threads (lanes computing slices of a batch) give the factors one thread gives, on the torch kernel."""
    split = checkerboard_split(tmp_path)
    with torch_threads(1):
        alone = build(kernel="torch").fit(split).item_vectors()
    with torch_threads(3):
        lanes = build(kernel="torch").fit(split).item_vectors()
    torch.testing.assert_close(lanes, alone, rtol=1e-6, atol=1e-7)
