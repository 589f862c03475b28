"""What the benchmarks share: the machine line printed with every figure, one fresh child process per case (so a
case's peak RSS is its own), and the synthetic 50m dataset most of them run on, generated where it is missing.

The scripts run as `python benchmarks/bench_X.py`, which puts this folder first on sys.path: `import _common`.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import resource
import subprocess
import sys
from pathlib import Path

# where the dataset benchmarks look for (and, when missing, write) the synthetic Yambda-50M-shaped dataset
DEFAULT_ROOT = "/tmp/bench50m"


def machine(*modules: str) -> str:
    """Cores, RAM, load average, platform, python and the named modules' versions, and the date."""
    ram_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    versions = [f"python {platform.python_version()}"]
    for name in modules:
        module = __import__(name)
        versions.append(f"{name} {module.__version__}")
    now = datetime.datetime.now().isoformat(timespec="seconds")
    return f"{os.cpu_count()} cores, {ram_gb:.1f} GiB RAM, load average {load}, {platform.platform()}, " + (
        f"{', '.join(versions)}, {now}"
    )


def command_line() -> str:
    """How this benchmark was called, to print beside its figures."""
    return " ".join([Path(sys.executable).name, *sys.argv])


def peak_rss_mb() -> float:
    """This process's peak resident memory so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_child(script: str, arguments: list[str]) -> dict:
    """Run `python script arguments` in a fresh interpreter and parse the JSON of its last stdout line.

    A failed child raises RuntimeError with the end of its stderr, so the case that failed is named with its cause.
    """
    command = [sys.executable, script, *arguments]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        tail = done.stderr.strip()[-3000:] or f"exit status {done.returncode}"
        raise RuntimeError(f"{Path(script).name} {' '.join(arguments)} failed:\n{tail}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def ensure_dataset(root: str | Path, size: str) -> None:
    """Make sure root holds dataset `size`: real files are used as they are; a synthetic preset is generated
    when missing or unfinished (generate() is a no-op on a complete one)."""
    from yambda_dl.data.layout import DatasetLayout
    from yambda_dl.data.synthetic import MARKER_FILE, PRESETS, generate

    root = Path(root)
    real = DatasetLayout(root, size).event_path("multi_event").exists() and not (root / MARKER_FILE).exists()
    if real:
        return
    if size not in PRESETS:
        raise FileNotFoundError(
            f"no Yambda {size!r} files under {root}; download them (yambda-data download) or name a synthetic "
            f"preset to generate: {', '.join(PRESETS)}"
        )
    generate(size, root, progress=False)
