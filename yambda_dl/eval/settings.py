"""How a run ranks and scores users, built once from the config and used by both the validation callback and the
final pass, so that a tune-mode sweep optimises exactly the numbers the final evaluation reports (the seen-item mask
included)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from yambda_dl.eval.evaluator import evaluate
from yambda_dl.eval.metrics import CATALOGUE_METRICS, catalogue_metrics
from yambda_dl.eval.recommend import recommend_all, seen_items
from yambda_dl.eval.slices import TARGET_SLICES, slice_mask, subset_targets

if TYPE_CHECKING:
    from yambda_dl.data.csr import CSR
    from yambda_dl.data.split import Split


@dataclass(frozen=True)
class EvalSettings:
    """The cut-offs, the seen-item mask switch and the ranking's batch and tile sizes (train.yaml's `ks` and `eval`)."""

    ks: tuple[int, ...] = (10, 100)
    filter_seen: bool = False
    backend: str = "torch"
    batch_users: int = 8192
    user_tile: int = 4096
    item_tile: int = 262_144
    # the seen-item mask of a split, built on first use and kept (one per split folder): the callback ranks every
    # validation epoch, and the mask is the same each time
    _exclude: dict[str, CSR] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "ks", tuple(sorted(int(k) for k in self.ks)))
        if not self.ks or self.ks[0] < 1:
            raise ValueError(f"ks={list(self.ks)}: give positive cut-offs")

    @classmethod
    def from_config(cls, ks: Sequence[int], eval_cfg: Mapping[str, Any]) -> EvalSettings:
        """From train.yaml's `ks` and `eval` node (its every_n_epochs is the callback's, not a ranking setting)."""
        return cls(
            ks=tuple(ks),
            filter_seen=bool(eval_cfg["filter_seen"]),
            backend=str(eval_cfg["backend"]),
            batch_users=int(eval_cfg["batch_users"]),
            user_tile=int(eval_cfg["user_tile"]),
            item_tile=int(eval_cfg["item_tile"]),
        )

    def exclude(self, split: Split) -> CSR | None:
        """The items each user may not be recommended: their train items with filter_seen, else none."""
        if not self.filter_seen:
            return None
        key = str(split.path)
        if key not in self._exclude:
            self._exclude[key] = seen_items(split)
        return self._exclude[key]

    def rank(
        self, model: object, split: Split, device: str | torch.device | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Top max(ks) items and scores of every ranked user of the split."""
        return recommend_all(
            model,
            split.num_users,
            self.ks[-1],
            exclude=self.exclude(split),
            batch_users=self.batch_users,
            backend=self.backend,
            user_tile=self.user_tile,
            item_tile=self.item_tile,
            device=device,
        )

    def score(self, items: torch.Tensor, split: Split) -> dict[str, float]:
        """The evaluator's metrics of ranked items against the split's targets (the validation or test day)."""
        return evaluate(items, split.targets, _num_candidates(split), self.ks)

    def score_slices(
        self, items: torch.Tensor, split: Split, catalogue: Mapping[str, float] | None = None
    ) -> dict[str, dict[str, float] | None]:
        """{slice: metrics} for every registered target slice (eval/slices.py), None where a slice has no target.

        Each dict holds score()'s metric names plus num_targets; the catalogue metrics (coverage) do not depend on
        the targets, so they are computed once (or taken from `catalogue`, score()'s result) and repeated in every
        slice. Memory: one bool per target per slice, the slice's targets, and the evaluated users' rows of items.
        """
        if catalogue is None:
            catalogue = catalogue_metrics(torch.as_tensor(items), _num_candidates(split), self.ks)
        shared = {f"{name}@{k}": catalogue[f"{name}@{k}"] for name in CATALOGUE_METRICS for k in self.ks}
        out: dict[str, dict[str, float] | None] = {}
        for name in TARGET_SLICES:
            targets = subset_targets(split.targets, slice_mask(name, split.targets, split))
            if len(targets.user_idx) == 0:
                out[name] = None
                continue
            metrics = evaluate(items, targets, _num_candidates(split), self.ks, catalogue=False)
            counts = {key: metrics.pop(key) for key in ("num_evaluated_users", "num_ranked_users")}
            out[name] = metrics | shared | counts | {"num_targets": len(targets.item_idx)}  # score()'s key order
        return out


def _num_candidates(split: Split) -> int:
    """The items a ranking may hold: train items, plus the cold items with protocol.candidates=train_and_cold."""
    return int(getattr(split, "num_candidates", split.num_items))
