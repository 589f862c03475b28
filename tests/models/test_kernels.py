"""The C kernels' build cache: built once per key into the cache folder, reused without rebuilding, built once when
processes start together, and a clear error (no library left behind) where the compiler fails."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from yambda_dl.models import kernels

needs_compiler = pytest.mark.skipif(kernels.compiler() is None, reason="needs a C compiler")


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """An empty kernel cache for the test; the process's loaded libraries forgotten before and after."""
    folder = tmp_path / "kernels"
    monkeypatch.setenv("YAMBDA_DL_KERNEL_CACHE", str(folder))
    kernels.load.cache_clear()
    yield folder
    kernels.load.cache_clear()


def libraries(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.so"))


@needs_compiler
def test_a_kernel_is_built_once_and_reused(cache):
    kernels.load("bpr")
    (library,) = libraries(cache)
    assert library.name.startswith("bpr-") and library.stat().st_size > 0
    before = library.stat()
    kernels.load.cache_clear()  # as a new process would: finds the built library, does not rebuild it
    assert kernels.load("bpr").bpr_batch is not None
    after = library.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert [path.name for path in cache.iterdir() if path.name.startswith(".tmp-")] == []


@needs_compiler
def test_processes_started_together_build_it_once(cache):
    code = "from yambda_dl.models import kernels; kernels.load('bpr').bpr_batch; print('loaded')"
    env = {**os.environ, "YAMBDA_DL_KERNEL_CACHE": str(cache)}
    processes = [
        subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True) for _ in range(3)
    ]
    assert [process.communicate(timeout=120)[0].strip() for process in processes] == ["loaded"] * 3
    assert len(libraries(cache)) == 1
    assert [path.name for path in cache.iterdir() if path.name.startswith(".tmp-")] == []


def test_a_failing_compiler_is_a_clear_error_and_leaves_nothing(cache, tmp_path, monkeypatch):
    broken = tmp_path / "broken-cc"
    broken.write_text("#!/bin/sh\necho 'bpr.c:1: error: this compiler is broken' >&2\nexit 1\n")
    broken.chmod(0o755)
    monkeypatch.setenv("CC", str(broken))
    with pytest.raises(kernels.KernelUnavailable, match=r"broken-cc could not build bpr.c: .*error: this compiler"):
        kernels.load("bpr")
    assert libraries(cache) == []


def test_a_missing_compiler_and_an_unknown_kernel_are_named(cache, monkeypatch):
    monkeypatch.setenv("CC", "/nonexistent/cc")
    with pytest.raises(kernels.KernelUnavailable, match=r"\$CC='/nonexistent/cc' is not an executable"):
        kernels.load("bpr")
    with pytest.raises(ValueError, match=r"no kernel 'als' in .*kernels; valid choices: bpr"):
        kernels.load("als")


@needs_compiler
def test_an_unwritable_cache_is_a_clear_error(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("YAMBDA_DL_KERNEL_CACHE", str(blocker / "kernels"))
    kernels.load.cache_clear()
    try:
        with pytest.raises(kernels.KernelUnavailable, match=r"set YAMBDA_DL_KERNEL_CACHE to a writable folder"):
            kernels.load("bpr")
    finally:
        kernels.load.cache_clear()
