"""CPU kernels in C, built on first use with the system's C compiler and called through ctypes.

Some CPU loops have no fast batched tensor form: BPR's per-triple SGD touches three rows per triple while they are
in cache, where whole-batch tensor operations gather and scatter each row in separate passes (models/bpr.py). Such a
loop is a small C file here, compiled once per (source, compiler, flags, CPU) into a shared library in the kernel
cache, and loaded with ctypes, whose calls release Python's GIL: several threads run a kernel side by side.

The cache folder is $YAMBDA_DL_KERNEL_CACHE, else $XDG_CACHE_HOME/yambda_dl/kernels (~/.cache by default). A library
is written to a temporary name and linked into place once (data/io.py build_file_once): a process that has it loaded
is never disturbed, and processes that start together build it once. Building takes well under a second; there is
no Python extension to build at install time, and where no compiler works, `load` raises KernelUnavailable, so
callers fall back to their torch path (models/bpr.py kernel=auto).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
from pathlib import Path

from yambda_dl.data.io import build_file_once

HERE = Path(__file__).resolve().parent
# -march=native: the host's vector units (the cache key carries the CPU's flags); -fopenmp-simd: the `omp simd`
# pragmas without OpenMP's runtime (threads are the callers'); no -ffast-math: IEEE results, as torch's
FLAGS = ("-O3", "-march=native", "-fopenmp-simd", "-fPIC", "-shared")
PORTABLE_FLAGS = ("-O3", "-fPIC", "-shared")  # where the compiler has no -march=native (some ARM clang builds)
LIBRARIES = ("-lm",)
COMPILERS = ("cc", "gcc", "clang")


class KernelUnavailable(RuntimeError):
    """No C compiler builds the kernel here (none on the PATH, or it failed)."""


def cache_dir() -> Path:
    """Where built kernels are kept: $YAMBDA_DL_KERNEL_CACHE, else $XDG_CACHE_HOME/yambda_dl/kernels."""
    explicit = os.environ.get("YAMBDA_DL_KERNEL_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "yambda_dl" / "kernels"


def compiler() -> str | None:
    """The C compiler: $CC, else the first of cc, gcc, clang on the PATH; None when there is none."""
    names = [os.environ["CC"]] if os.environ.get("CC") else list(COMPILERS)
    return next((path for path in map(shutil.which, names) if path), None)


def _cpu_signature() -> str:
    """The CPU's model and feature flags (what -march=native compiles for), as /proc/cpuinfo or platform tells."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    wanted = ("model name", "flags", "Features", "CPU part")
    found = {line.split(":", 1)[0].strip(): line for line in lines if line.split(":", 1)[0].strip() in wanted}
    return "\n".join([platform.machine(), platform.processor(), *sorted(found.values())])


def _version(cc: str) -> str:
    try:
        return subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def _build(source: Path, cc: str, target: Path) -> None:
    """Compile `source` into the shared library `target`, with FLAGS, else PORTABLE_FLAGS; KernelUnavailable with
    the compiler's first error line when both fail."""
    errors = []
    for flags in (FLAGS, PORTABLE_FLAGS):
        result = subprocess.run(
            [cc, *flags, "-o", str(target), str(source), *LIBRARIES], capture_output=True, text=True, timeout=300
        )
        if result.returncode == 0:
            return
        errors.append(next((line for line in result.stderr.splitlines() if "error" in line), result.stderr.strip()))
    raise KernelUnavailable(f"{cc} could not build {source.name}: {errors[-1][:300]}")


@functools.cache
def load(name: str) -> ctypes.CDLL:
    """The kernel library of `name`.c in this folder, built into the cache on first use; KernelUnavailable where no
    compiler builds it. Loaded once per process."""
    source = HERE / f"{name}.c"
    if not source.is_file():
        choices = ", ".join(sorted(path.stem for path in HERE.glob("*.c")))
        raise ValueError(f"no kernel {name!r} in {HERE}; valid choices: {choices}")
    cc = compiler()
    if cc is None:
        wanted = f"$CC={os.environ['CC']!r} is not an executable" if os.environ.get("CC") else "no C compiler"
        raise KernelUnavailable(f"{wanted} (looked for $CC, else {', '.join(COMPILERS)} on the PATH)")
    key = hashlib.sha256(
        b"\0".join(x.encode() for x in (source.read_text(), cc, _version(cc), " ".join(FLAGS), _cpu_signature()))
    ).hexdigest()[:16]
    library = cache_dir() / f"{name}-{key}.so"
    try:
        with build_file_once(library, lambda path: path.stat().st_size > 0) as tmp:
            if tmp is not None:
                _build(source, cc, tmp)
    except OSError as error:  # a cache folder that cannot be created or written
        raise KernelUnavailable(
            f"cannot build {library.name} in {library.parent} ({error}); "
            "set YAMBDA_DL_KERNEL_CACHE to a writable folder"
        ) from error
    try:
        return ctypes.CDLL(str(library))
    except OSError as error:  # e.g. a cache on a file system mounted noexec
        raise KernelUnavailable(f"cannot load {library}: {error}") from error
