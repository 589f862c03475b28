"""The one memory check: refuse, with the numbers, an allocation larger than a share of the memory free now.

Free memory is the host's available RAM (psutil), or the CUDA device's free memory. The share is each caller's:
DEFAULT_FRACTION for the data views and for the models' `memory_fraction` key where they have one (iALS, BPR,
ItemKNN, SANSA: 0.8; SASRec, whose check is an estimate of a whole training step: 0.9).
"""

from __future__ import annotations

import psutil
import torch

GIB = 2**30
DEFAULT_FRACTION = 0.8


def available_bytes(device: str | torch.device | None = None) -> int:
    """Free memory on `device` now: a CUDA device's free memory, else (None, the CPU) the host's available RAM."""
    if device is not None and torch.device(device).type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    return psutil.virtual_memory().available


def check_fits(
    needed_bytes: int,
    what: str,
    device: str | torch.device | None = None,
    fraction: float = DEFAULT_FRACTION,
    *,
    detail: str = "",
    hint: str | None = None,
    estimate: bool = False,
    available: int | None = None,
) -> None:
    """Raise MemoryError, with the numbers, when `needed_bytes` exceeds `fraction` of the memory free on `device`.

    detail: appended after the needed size (e.g. its parts); hint: what to change (default: a smaller dataset or
    setup, or a machine or device with more memory); estimate: the size is an estimate ("needs about");
    available: the free bytes when the caller has read them already (else available_bytes(device)).
    """
    if available is None:
        available = available_bytes(device)
    if needed_bytes <= fraction * available:
        return
    cuda = device is not None and torch.device(device).type == "cuda"
    where = f" on {device}" if cuda else ""
    if hint is None:
        hint = f"use a smaller dataset or setup, or a {'device' if cuda else 'machine'} with more memory"
    raise MemoryError(
        f"{what} needs {'about ' if estimate else ''}{needed_bytes / GIB:.2f} GiB{detail} but only "
        f"{available / GIB:.2f} GiB is free{where} (the limit is {fraction:.0%} of it); {hint}"
    )
