"""What a run records so that it can be reproduced: package versions, git revision, machine, peak memory."""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

from yambda_dl.utils.atomic import atomic_path

PACKAGES = (
    "yambda_dl",
    "torch",
    "lightning",
    "hydra-core",
    "omegaconf",
    "polars",
    "pyarrow",
    "numpy",
    "faiss-cpu",
    "faiss-gpu-cu12",
    "wandb",
    "huggingface_hub",
)


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def git_revision(path: Path | None = None) -> str:
    """The commit of the source tree (with '+dirty' if it has uncommitted changes), or 'unknown'."""
    where = path or Path(__file__).resolve().parent
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=where,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return rev + ("+dirty" if dirty else "")


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {"host": platform.node(), "platform": platform.platform(), "cpus": os.cpu_count()}
    try:
        import torch

        if torch.cuda.is_available():
            info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except ImportError:
        pass
    return info


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def command_line() -> str:
    return " ".join(sys.argv)


def write_text(text: str, path: Path | str) -> Path:
    """Write a text file atomically (a killed run never leaves half a file)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json(data: dict[str, Any], path: Path | str) -> Path:
    """Write JSON atomically."""
    return write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n", path)
