"""The composable sequential recommender (module.py) and its parts: item representations, backbones, objectives,
losses, optimizers. `build_sequential` is the `_target_` of every sequential model's YAML in configs/model/.
"""

from __future__ import annotations

from typing import Any


def build_sequential(**keys: Any) -> Any:
    """See module.build_sequential (imported lazily: importing the package costs nothing until a model is built)."""
    from yambda_dl.models.sequential.module import build_sequential as build

    return build(**keys)
