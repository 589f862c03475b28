"""The sequential zoo at test sizes: every configs/model/ YAML whose target is the sequential recommender, built
through the public API (yambda_dl.api.build_model) exactly as yambda-train composes it, with small sizes."""

from __future__ import annotations

from typing import Any

from omegaconf import OmegaConf

from yambda_dl.api import build_model, model_names
from yambda_dl.train import CONFIG_DIR

SEQUENTIAL_TARGET = "yambda_dl.models.sequential.build_sequential"
# small enough for a 2-core CI, large enough to learn a cycle of five items
TINY = {"d_model": 16, "max_len": 12, "batch_size": 8, "score_batch_size": 7}
TINY_BACKBONE = {"num_layers": 1, "num_heads": 2, "ffn_dim": 32, "dropout": 0.0}


def zoo() -> list[str]:
    """The sequential models: configs/model/<name>.yaml files with the sequential target."""
    names = []
    for name in model_names():
        node = OmegaConf.load(f"{CONFIG_DIR}/model/{name}.yaml")
        if node.get("_target_") == SEQUENTIAL_TARGET:
            names.append(name)
    return names


def tiny(name: str, backbone: dict[str, Any] | None = None, **overrides: Any) -> Any:
    """The zoo model `name` at TINY sizes; backbone keys it does not have are left out."""
    node = OmegaConf.load(f"{CONFIG_DIR}/model/{name}.yaml")
    keys = {k: v for k, v in {**TINY_BACKBONE, **(backbone or {})}.items() if k in node.backbone}
    return build_model(name, **{**TINY, **overrides}, backbone=keys)
