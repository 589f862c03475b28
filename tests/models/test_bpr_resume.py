"""BPR resumes: its draws come from (seed, epoch), so a fit stopped after a checkpoint and resumed from last.ckpt by
a fresh model repeats the uninterrupted one, with one thread or with lanes (several CPU threads)."""

from __future__ import annotations

import pytest
import torch

from yambda_dl.models.bpr import BPR, compiler_present

from .test_bpr import one_thread  # noqa: F401 (a fixture)
from .test_ials import checkerboard_split
from .test_ials_resume import check_resume_repeats_the_run


def build(**overrides) -> BPR:
    # batch_size 16 on 48 nonzeros: three updates per epoch, each from draws of that epoch's generator
    return BPR(**{"factors": 4, "iterations": 6, "lr": 0.1, "batch_size": 16, **overrides})


def test_a_resumed_fit_ends_where_an_uninterrupted_one_does(tmp_path):
    check_resume_repeats_the_run(build, checkerboard_split(tmp_path / "data"), tmp_path, epochs=6, stop=3)


def test_the_same_with_one_thread(tmp_path, one_thread):  # noqa: F811 (the fixture)
    check_resume_repeats_the_run(build, checkerboard_split(tmp_path / "data"), tmp_path, epochs=6, stop=3)


def test_lanes_change_nothing(tmp_path):
    """Several threads (lanes computing slices of a batch) give the factors one thread gives."""
    split = checkerboard_split(tmp_path)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        alone = build().fit(split).item_vectors()
        torch.set_num_threads(3)
        lanes = build().fit(split).item_vectors()
    finally:
        torch.set_num_threads(threads)
    torch.testing.assert_close(lanes, alone, rtol=1e-6, atol=1e-7)


@pytest.mark.slow
@pytest.mark.skipif(not compiler_present(), reason="torch.compile on the CPU needs a C++ compiler")
def test_the_compiled_step_resumes_too(tmp_path, one_thread):  # noqa: F811 (the fixture)
    """compile=True on one thread (inductor's single-threaded kernel, last batch padded): a resumed fit is the
    uninterrupted one, bit for bit (on lanes, Hogwild, it depends on the scheduling). Batches of 20 (two, and 8 padded
    to 20), as test_bpr's compiled test: inductor's cache then holds the kernel after whichever runs first (~10-25 s
    to compile on 2 cores, a few seconds after)."""
    check_resume_repeats_the_run(
        lambda **overrides: build(compile=True, batch_size=20, **overrides),
        checkerboard_split(tmp_path / "data"),
        tmp_path,
        epochs=6,
        stop=3,
    )
