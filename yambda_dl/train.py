"""`yambda-train`: compose a config -> split -> fit -> recommend -> evaluate -> report (DESIGN.md's one path).

`train(cfg)` is a plain function that tests call directly; `main` is the thin Hydra wrapper.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import hydra
import lightning
import numpy as np
import pyarrow as pa
import torch
from omegaconf import DictConfig, OmegaConf

from yambda_dl.data.io import write_parquet
from yambda_dl.data.layout import DatasetLayout
from yambda_dl.data.split import Protocol, Split, make_split
from yambda_dl.eval.callback import RankingEvaluation
from yambda_dl.eval.evaluator import evaluate, format_metrics_table
from yambda_dl.eval.recommend import recommend_all, seen_items
from yambda_dl.utils import runinfo

CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "configs")


def prepare_data(data_cfg: DictConfig, source_file: str) -> DatasetLayout:
    """The dataset's layout; a synthetic dataset that is missing is generated, a real one must be downloaded."""
    layout = DatasetLayout(Path(data_cfg.root), data_cfg.size)
    if not layout.has(source_file, data_cfg.format) and data_cfg.synthetic_preset:
        from yambda_dl.data.synthetic import generate

        generate(data_cfg.synthetic_preset, layout.root, seed=data_cfg.seed)
    layout.require([source_file], data_cfg.format)  # a clear error with the download command if still missing
    return layout


def build_model(model_cfg: DictConfig) -> Any:
    """Instantiate the model's `_target_` with the config's plain keys (the `name` key is ours, not its)."""
    kwargs = OmegaConf.to_container(model_cfg, resolve=True)
    kwargs.pop("name", None)
    return hydra.utils.instantiate(kwargs)


def build_logger(cfg: DictConfig) -> Any | None:
    if cfg.logger is None or cfg.logger.get("_target_") is None:
        return None
    return hydra.utils.instantiate(cfg.logger)


def build_trainer(
    cfg: DictConfig, logger: Any | None, split: Split, model: lightning.LightningModule
) -> lightning.Trainer:
    """The Lightning Trainer of cfg.trainer; in tune mode it evaluates on the validation day as it trains.

    The number of epochs is the model's (`model.max_epochs`: SASRec's epochs, iALS's sweeps) unless
    `trainer.max_epochs` overrides it.
    """
    callbacks = []
    if split.protocol.mode == "tune":
        callbacks.append(
            RankingEvaluation(
                split,
                ks=cfg.ks,
                every_n_epochs=cfg.eval.every_n_epochs,
                batch_users=cfg.eval.batch_users,
                backend=cfg.eval.backend,
            )
        )
    max_epochs = cfg.trainer.get("max_epochs") or getattr(model, "max_epochs", None)
    return hydra.utils.instantiate(
        cfg.trainer,
        logger=logger if logger is not None else False,
        default_root_dir=cfg.paths.output_dir,
        callbacks=callbacks,
        max_epochs=max_epochs,
    )


def write_recommendations(split: Split, items: torch.Tensor, scores: torch.Tensor, path: Path) -> None:
    """recommendations.parquet: uid, item_ids (list), scores (list), in raw ids; -1 padding dropped."""
    items_np, scores_np = items.numpy(), scores.numpy()
    valid = items_np >= 0
    offsets = np.zeros(len(items_np) + 1, dtype=np.int32)
    np.cumsum(valid.sum(axis=1), out=offsets[1:])
    raw_items = split.items[items_np[valid]]
    table = pa.table(
        {
            "uid": pa.array(split.users, pa.uint32()),
            "item_ids": pa.ListArray.from_arrays(pa.array(offsets), pa.array(raw_items, pa.uint32())),
            "scores": pa.ListArray.from_arrays(pa.array(offsets), pa.array(scores_np[valid], pa.float32())),
        }
    )
    write_parquet(table, path)


def train(cfg: DictConfig) -> dict[str, Any]:
    """Run one experiment end to end and write its outputs to cfg.paths.output_dir; return metrics.json's dict."""
    started = time.perf_counter()
    timings: dict[str, float] = {}
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    lightning.seed_everything(cfg.seed, workers=True, verbose=False)
    ks = sorted(int(k) for k in cfg.ks)

    protocol = Protocol(**OmegaConf.to_container(cfg.protocol, resolve=True))
    layout = prepare_data(cfg.data, protocol.source_file())
    t = time.perf_counter()
    split = make_split(
        layout,
        protocol,
        fmt=cfg.data.format,
        cache_dir=Path(cfg.paths.cache_dir) if cfg.paths.cache_dir else None,
    )
    timings["split_s"] = time.perf_counter() - t
    if ks[-1] > split.num_items:
        raise ValueError(
            f"ks={ks}: k={ks[-1]} is larger than the {split.num_items} candidate (train) items; lower `ks`"
        )

    model = build_model(cfg.model)
    logger = build_logger(cfg)
    trainer = build_trainer(cfg, logger, split, model) if isinstance(model, lightning.LightningModule) else None
    summary = {
        "model": cfg.model.name,
        "data": cfg.data.name,
        "size": cfg.data.size,
        "setup": protocol.setup,
        "mode": protocol.mode,
        "filter_seen": bool(cfg.eval.filter_seen),
    }
    metrics, refusal = None, None
    try:
        t = time.perf_counter()
        model.fit(split, trainer=trainer)
        timings["fit_s"] = time.perf_counter() - t
        t = time.perf_counter()
        exclude = seen_items(split) if cfg.eval.filter_seen else None
        items, scores = recommend_all(
            model,
            split.num_users,
            ks[-1],
            exclude=exclude,
            batch_users=cfg.eval.batch_users,
            backend=cfg.eval.backend,
            user_tile=cfg.eval.user_tile,
            item_tile=cfg.eval.item_tile,
        )
        timings["recommend_s"] = time.perf_counter() - t
    except MemoryError as error:  # a model's up-front memory check, with its numbers (or a real allocation failure)
        if not cfg.continue_on_refusal:
            raise
        refusal = str(error)
    if refusal is None:
        t = time.perf_counter()
        metrics = evaluate(items, split.targets, split.num_items, ks)
        timings["evaluate_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - started

    result = summary | {
        "metrics": metrics,
        **({"refused": refusal} if refusal is not None else {}),
        "timings": timings,
        "peak_memory_mb": runinfo.peak_rss_mb(),
        "split": split.describe(),
    }
    if trainer is not None and not trainer.is_global_zero:
        return result  # under DDP every rank ranks and evaluates identically; one writes the outputs
    if logger is not None:
        if metrics is not None:
            logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
            day = "test" if protocol.mode == "final" else "val"  # tune mode evaluates the validation day
            logger.log_metrics({f"{day}/{name}": value for name, value in metrics.items()})
        logger.finalize("success" if metrics is not None else "failed")
    if cfg.save_recommendations and metrics is not None:
        write_recommendations(split, items, scores, out / "recommendations.parquet")
    write_run(cfg, split, result)
    title = f"{cfg.model.name} on {cfg.data.name} ({protocol.setup}, {protocol.mode})"
    if metrics is None:
        print(f"\n{title} refused: {refusal}\noutputs in {out}")
    else:
        print(f"\n{title}; outputs in {out}")
        print(format_metrics_table(metrics, ks))
    return result


def write_run(cfg: DictConfig, split: Split, result: dict[str, Any]) -> dict[str, Any]:
    """config.yaml, manifest.json (fingerprint, seeds, versions, machine), then metrics.json, which marks the end."""
    out = Path(cfg.paths.output_dir)
    runinfo.write_text(OmegaConf.to_yaml(cfg, resolve=True), out / "config.yaml")
    runinfo.write_json(
        {
            "data_fingerprint": split.meta["source"]["fingerprint"],
            "split_key": split.key,
            "split_path": str(split.path),
            "seeds": {"seed": int(cfg.seed), "data_seed": int(cfg.data.seed)},
            "versions": runinfo.package_versions(),
            "git_revision": runinfo.git_revision(),
            "machine": runinfo.machine(),
            "command": runinfo.command_line(),
        },
        out / "manifest.json",
    )
    runinfo.write_json(result, out / "metrics.json")  # last: its presence marks a finished run
    return result


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def main(cfg: DictConfig) -> None:
    train(cfg)


if __name__ == "__main__":
    main()
