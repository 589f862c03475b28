"""How a run ranks and scores users, built once from the config and used by both the validation callback and the
final pass, so that a tune-mode sweep optimises exactly the numbers the final evaluation reports (the seen-item mask
included)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from yambda_dl.eval.evaluator import evaluate
from yambda_dl.eval.recommend import recommend_all, seen_items

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
        return evaluate(items, split.targets, split.num_items, self.ks)
