"""Views: what a model family eats, derived from a Split by streaming its train events once.

Memory of each view is stated in its docstring; none holds the train events themselves.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from yambda_dl.data.split import Split


def item_counts(split: Split) -> np.ndarray:
    """Train events per item (int64, (num_items,)): MostPop's score. Memory: 8 bytes per train item."""
    counts = np.zeros(split.num_items, dtype=np.int64)
    for batch in split.iter_train(columns=("item_idx",)):
        counts += np.bincount(batch["item_idx"], minlength=split.num_items)
    return counts


def last_train_timestamp(split: Split) -> int:
    """The latest train timestamp of the split (t_max of DecayPop)."""
    t_max = -1
    for batch in split.iter_train(columns=("timestamp",)):
        if len(batch["timestamp"]):
            t_max = max(t_max, int(batch["timestamp"].max()))
    return t_max


def decayed_item_counts(split: Split, hours: float, base: float = 0.9) -> np.ndarray:
    """sum over train events of base ** ((t_max - t_e) / (3600 * hours)) per item (float64, (num_items,)).

    DecayPop's score (SPEC.md section 6), with t_max the last train timestamp. Two streaming passes (t_max, then
    the sums); memory: 8 bytes per train item.
    """
    if hours <= 0:
        raise ValueError(f"DecayPop needs hours > 0, got {hours}; the paper's grid is 0.5, 1, 2, 3, 6, 12, 24")
    t_max = last_train_timestamp(split)
    log_base_per_second = np.log(base) / (3600.0 * hours)
    scores = np.zeros(split.num_items, dtype=np.float64)
    for batch in split.iter_train(columns=("item_idx", "timestamp")):
        age = t_max - batch["timestamp"].astype(np.float64)
        scores += np.bincount(batch["item_idx"], weights=np.exp(age * log_base_per_second), minlength=split.num_items)
    return scores
