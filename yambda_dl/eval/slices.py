"""Target slices: the same metrics on a subset of the targets, e.g. organic vs recommendation-driven plays, or
targets on items with or without train events.

A slice is a small named function in a registry, so a new slice is one function:
`fn(targets, split) -> bool mask over targets' rows (n_targets,)`. A user enters a slice's average only when they
keep at least one target in it, and |T_u| is their count in the slice; the ranking is never redone, only the
targets are cut (subset_targets).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import numpy as np

SliceFn = Callable[[Any, Any], np.ndarray]
TARGET_SLICES: dict[str, SliceFn] = {}
# the per-user fields of a Targets (one value per evaluated user); offsets is rebuilt, every other array field is
# per target and cut by the mask
PER_USER_FIELDS = ("user_idx", "uid")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
# metrics.json's other top-level keys, which a slice (a key beside them) may not take
RESERVED = (
    *("run_id", "model", "data", "size", "setup", "mode", "filter_seen", "objective", "metrics", "stream"),
    *("refused", "timings", "peak_memory_mb", "split", "all", "recommendations"),
)


def target_slice(name: str) -> Callable[[SliceFn], SliceFn]:
    """Register `fn(targets, split) -> bool (n_targets,)` as slice `name` (a top-level key of metrics.json)."""
    if not _NAME.match(name) or name in RESERVED:
        raise ValueError(f"slice name {name!r}: use lower-case letters, digits and '_', not one of {RESERVED}")
    if name in TARGET_SLICES:
        raise ValueError(f"slice {name!r} is already registered; registered: {', '.join(TARGET_SLICES)}")

    def register(fn: SliceFn) -> SliceFn:
        TARGET_SLICES[name] = fn
        return fn

    return register


@target_slice("organic")
def organic(targets: Any, split: Any) -> np.ndarray:
    """Targets the user played on their own initiative (is_organic = 1)."""
    return np.asarray(targets.is_organic, dtype=bool)


@target_slice("recommended")
def recommended(targets: Any, split: Any) -> np.ndarray:
    """Targets driven by the platform's recommender (is_organic = 0)."""
    return ~np.asarray(targets.is_organic, dtype=bool)


@target_slice("warm")
def warm(targets: Any, split: Any) -> np.ndarray:
    """Targets on items with train events (dense index below num_items)."""
    item = np.asarray(targets.item_idx)
    return (item >= 0) & (item < split.num_items)


@target_slice("cold")
def cold(targets: Any, split: Any) -> np.ndarray:
    """Targets on items without a train event: outside the candidates (-1) or, with cold candidates, past
    num_items."""
    return ~warm(targets, split)


def slice_mask(name: str, targets: Any, split: Any) -> np.ndarray:
    """The registered slice's bool mask over targets' rows, checked for its length."""
    if name not in TARGET_SLICES:
        raise ValueError(f"unknown target slice {name!r}; valid choices: {', '.join(TARGET_SLICES)}")
    mask = np.asarray(TARGET_SLICES[name](targets, split), dtype=bool)
    n_targets = len(targets.item_idx)
    if mask.shape != (n_targets,):
        raise ValueError(f"slice {name!r} gave a mask of shape {mask.shape}; the targets have ({n_targets},) rows")
    return mask


def subset_targets(targets: Any, mask: np.ndarray) -> Any:
    """The targets where mask holds, as the same type; users left without a target are dropped.

    Memory: the kept targets' rows and one int64 per target for the running count, never the recommendations.
    """
    mask = np.asarray(mask, dtype=bool)
    offsets = np.asarray(targets.offsets, dtype=np.int64)
    n_targets = int(offsets[-1]) if len(offsets) else 0
    if mask.shape != (n_targets,):
        raise ValueError(f"mask has shape {mask.shape}; the targets have ({n_targets},) rows")
    kept_before = np.concatenate([[0], np.cumsum(mask, dtype=np.int64)])
    counts = kept_before[offsets[1:]] - kept_before[offsets[:-1]]
    users = counts > 0
    fields = {}
    for name, value in vars(targets).items():
        if name == "offsets":
            fields[name] = np.concatenate([[0], np.cumsum(counts[users])]).astype(np.int64)
        elif name in PER_USER_FIELDS:
            fields[name] = np.asarray(value)[users]
        elif hasattr(value, "shape"):  # every other array is one value per target
            if len(value) != n_targets:
                raise ValueError(f"targets.{name} has {len(value)} rows; per-target fields need {n_targets}")
            fields[name] = np.asarray(value)[mask]
        else:
            fields[name] = value
    return type(targets)(**fields)
