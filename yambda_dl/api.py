"""The Python API for notebooks and scripts, without Hydra: load a split, build a model, recommend, evaluate.

    from yambda_dl import load_split, build_model, recommend, evaluate

    split = load_split("data/synthetic_small", "small", synthetic_preset="small")  # built once, then cached
    model = build_model("ials", factors=32, iterations=5).fit(split)
    recs = recommend(model, split, k=100)          # polars: uid, item_ids (list), scores (list), in raw ids
    metrics = evaluate(recs, split, ks=(10, 100))  # the metrics yambda-train reports, for any raw-id table

The same split, models (configs/model/<name>.yaml with overrides), ranking and metrics as yambda-train; only the
Hydra composition and the run folder are left out. `evaluate` takes anyone's raw-id table (implicit, RecTools,
RePlay) as `yambda-eval` does (yambda_dl.eval.external documents how lists are read).
Heavy libraries (torch, lightning, hydra) are imported on first call, never by `import yambda_dl`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import polars as pl

    from yambda_dl.data.split import Split

__all__ = ["build_model", "evaluate", "load_split", "model_names", "recommend"]

DEFAULT_KS = (10, 50, 100)  # the evaluator's; repeated here so that importing this module stays light


def load_split(
    root: Path | str,
    size: str,
    setup: str = "listen_plus",
    mode: str = "final",
    fmt: str = "flat",
    *,
    cache_dir: Path | str | None = None,
    synthetic_preset: str | None = None,
    seed: int = 0,
    progress: bool = True,
    side_files: dict[str, str | Path | None] | None = None,
) -> Split:
    """The Global Temporal Split of ROOT's SIZE dataset (docs/protocol.md), built once and cached by content hash.

    root/size: a dataset root in the Hugging Face layout and its size (50m, 500m, 5b, or a synthetic name).
    synthetic_preset: generate that synthetic dataset (with `seed`) under root first when its files are missing,
    as yambda-train's synthetic data configs do; None = the files must exist (the error says how to get them).
    side_files: {embeddings, artist_mapping, album_mapping} paths other than the root's (the data configs' key).
    """
    from yambda_dl.data.layout import DatasetLayout
    from yambda_dl.data.split import Protocol, make_split

    protocol = Protocol(setup=setup, mode=mode)
    layout = DatasetLayout.with_side_files(root, size, side_files)
    if synthetic_preset is not None and not layout.has(protocol.source_file(), fmt):
        from yambda_dl.data.synthetic import generate

        generate(synthetic_preset, layout.root, seed=seed, progress=progress)
    return make_split(layout, protocol, fmt=fmt, cache_dir=Path(cache_dir) if cache_dir else None, progress=progress)


def model_names() -> list[str]:
    """The models build_model knows: one per configs/model/<name>.yaml."""
    from yambda_dl.train import CONFIG_DIR

    return sorted(path.stem for path in (Path(CONFIG_DIR) / "model").glob("*.yaml"))


def build_model(name: str, **overrides: Any) -> Any:
    """The model of configs/model/<name>.yaml with `overrides` of its keys (e.g. factors=32), not yet fitted.

    The YAML is composed as yambda-train composes it (so `${seed}` is the run's default seed unless `seed=` is
    given); an unknown name or key is an error listing the valid ones. Fit it with `model.fit(split)`.
    A sequential model's parts are config groups: `loss="sampled_softmax"` picks configs/model/loss/
    sampled_softmax.yaml, as `model/loss=sampled_softmax` does on the command line; a part's own keys are dotted,
    `**{"loss.num_negatives": 256}` (or a dict, `backbone={"num_layers": 1}`, merged into the part).
    """
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf, open_dict

    from yambda_dl.config_check import model_config_dir, model_keys
    from yambda_dl.train import CONFIG_DIR
    from yambda_dl.train import build_model as instantiate

    names = model_names()
    if name not in names:
        raise ValueError(f"unknown model {name!r}; valid choices: {', '.join(names)}")
    groups = sorted(p.name for p in (model_config_dir(CONFIG_DIR)).iterdir() if p.is_dir())
    choices = {k: v for k, v in overrides.items() if k in groups and isinstance(v, str)}
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3", job_name="yambda_dl_api"):
        cfg = compose(config_name="train", overrides=[f"model={name}", *(f"model/{k}={v}" for k, v in choices.items())])
    model_cfg = cfg.model
    defined = model_keys(model_config_dir(CONFIG_DIR) / f"{name}.yaml") - {"name", "_target_", "_recursive_"}
    settable = [key for key in model_cfg if key in defined] + sorted(defined - set(model_cfg))  # the file's order
    unknown = sorted({key.split(".")[0] for key in overrides} - set(settable))
    if unknown:
        raise ValueError(f"unknown setting(s) {unknown} for model {name!r}; valid: {', '.join(settable)}")
    with open_dict(model_cfg):
        for key, value in overrides.items():
            if key in choices:
                continue
            if isinstance(value, dict) and OmegaConf.is_dict(model_cfg.get(key)):
                model_cfg[key] = OmegaConf.merge(model_cfg[key], value)
            else:
                OmegaConf.update(model_cfg, key, value, force_add=True)
    OmegaConf.resolve(model_cfg)
    return instantiate(model_cfg)


def recommend(
    model: Any,
    split: Split,
    k: int = 100,
    *,
    filter_seen: bool = False,
    backend: str = "torch",
    batch_users: int = 8192,
) -> pl.DataFrame:
    """Top-k of every ranked user from a fitted model, as a polars DataFrame in raw ids.

    Columns: uid (u32), item_ids (list[u32], best first), scores (list[f32]); one row per ranked user, the order
    of split.users. The protocol ranks seen items too (filter_seen=False); backend torch | faiss for vector models.
    """
    from yambda_dl.eval.external import recommendations_frame
    from yambda_dl.eval.recommend import recommend_all, seen_items

    if not 1 <= k <= split.num_items:
        raise ValueError(f"k={k}: valid values are 1..{split.num_items} (the split's candidate train items)")
    exclude = seen_items(split) if filter_seen else None
    items, scores = recommend_all(model, split.num_users, k, exclude=exclude, batch_users=batch_users, backend=backend)
    return recommendations_frame(split, items, scores)


def evaluate(recs: pl.DataFrame | Path | str, split: Split, ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    """The metrics of a raw-id recommendations table (a DataFrame or a Parquet path) on `split`, as a run reports.

    Every registered metric at every k (ndcg@10, paper_ndcg@10, coverage@10, ...) plus the user counts. Lists are
    read as yambda-eval reads them: missing users and non-train items count as misses, with a logged warning.
    """
    from yambda_dl.eval.external import evaluate_recommendations

    metrics, _ = evaluate_recommendations(recs, split, ks)
    return metrics
