"""Check a resolved `yambda-train` config before any work: one-line errors naming the key, the value and the choices.

Everything cheap to check is checked here, before the split and the fit, so that a typo never costs a training run.
What needs the data (k against the number of train items) is checked right after the split.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from yambda_dl.data import schema as S
from yambda_dl.data.split import Protocol
from yambda_dl.eval.evaluator import TABLE_ROWS

BACKENDS = ("torch", "faiss")
# what the models log that a callback may monitor besides the validation metrics (BPR, SASRec: loss; iALS: objective)
TRAIN_MONITORS = ("train/loss", "train/loss_epoch", "train/loss_step", "train/objective")


class ConfigError(ValueError):
    """A config value that cannot run; the message is one line naming the key, the value and the valid choices."""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _positive_int(cfg: DictConfig, key: str, nullable: bool = False) -> None:
    value = OmegaConf.select(cfg, key)
    if value is None and nullable:
        return
    if not _is_int(value) or value < 1:
        null = " or null" if nullable else ""
        raise ConfigError(f"{key}={value!r}: must be an integer >= 1{null}")


def _bool(cfg: DictConfig, key: str) -> None:
    value = OmegaConf.select(cfg, key)
    if not isinstance(value, bool):
        raise ConfigError(f"{key}={value!r}: must be true or false")


def _choice(key: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{key}={value!r}: valid choices: {', '.join(choices)}")


def check_ks(ks: Any) -> list[int]:
    """The metrics' cut-offs, sorted: a non-empty list of integers >= 1."""
    values = list(ks) if isinstance(ks, list | tuple) or OmegaConf.is_list(ks) else None
    if not values:
        raise ConfigError(f"ks={ks!r}: must be a non-empty list of integers >= 1, e.g. ks=[10,50,100]")
    bad = [k for k in values if not _is_int(k) or k < 1]
    if bad:
        raise ConfigError(f"ks={values}: {bad[0]!r} is not an integer >= 1; e.g. ks=[10,50,100]")
    return sorted(set(values))


def model_config_dir(config_dir: str | Path) -> Path:
    return Path(config_dir) / "model"


def model_keys(file: Path) -> set[str]:
    """The keys a model's config file defines: its own and those of the config groups its defaults list names
    (a sequential model's loss, optimizer, scheduler and item_repr parts)."""
    node = OmegaConf.load(file)
    groups = set()
    for entry in node.get("defaults", []) or []:
        if isinstance(entry, str):
            continue  # _self_, or a plain config merged into the model's own keys
        for group in entry:
            groups.add(str(group).split("@")[-1].split("/")[-1].removeprefix("override "))
    return (set(node.keys()) - {"defaults"}) | groups


def check_model(model: DictConfig, config_dir: str | Path) -> None:
    """A known model name (a file in configs/model/), a `_target_`, and no key its config file does not define."""
    known = sorted(p.stem for p in model_config_dir(config_dir).glob("*.yaml"))
    name = model.get("name")
    if not model.get("_target_"):
        raise ConfigError(f"model.name={name!r} has no model._target_; choose a model with model=<{'|'.join(known)}>")
    file = model_config_dir(config_dir) / f"{name}.yaml"
    if not file.is_file():
        return  # a model configured outside configs/model/ (a search path, a notebook): its target checks its keys
    defined = model_keys(file)
    extra = sorted(set(model.keys()) - defined)
    if extra:
        raise ConfigError(
            f"model.{extra[0]} is not a setting of model {name!r} (its settings: {', '.join(sorted(defined))}); "
            f"in a sweep over models, override a model-specific key only in a sweep of the models that have it"
        )


def _check_monitor(name: str, node: Mapping[str, Any], ks: list[int], mode: str) -> None:
    monitor = node.get("monitor")
    if monitor is None or node.get("strict") is False:
        return
    valid = [f"val/{row}@{k}" for row in TABLE_ROWS for k in ks] if mode == "tune" else []
    if monitor not in valid and monitor not in TRAIN_MONITORS:
        hint = "" if mode == "tune" else " (validation metrics exist only with protocol.mode=tune)"
        raise ConfigError(
            f"callbacks.{name}.monitor={monitor!r} is never logged{hint}; valid choices: "
            f"{', '.join([*valid[:3], '...', *TRAIN_MONITORS] if valid else TRAIN_MONITORS)}; or set "
            f"callbacks.{name}.strict=false"
        )


def check_callbacks(cfg: DictConfig, ks: list[int], mode: str) -> None:
    """Every callback a `_target_` node; monitors that some model or the evaluation logs; none under `trainer`."""
    if cfg.get("trainer") is not None and "callbacks" in cfg.trainer:
        raise ConfigError(
            "trainer.callbacks is not read: add callbacks through the callbacks config group instead, e.g. "
            "callbacks=default, callbacks=tune, or +callbacks.<name>._target_=<class> callbacks.<name>.<arg>=<value>"
        )
    callbacks = cfg.get("callbacks")
    if callbacks is None:
        return
    if not OmegaConf.is_dict(callbacks):
        raise ConfigError(f"callbacks={callbacks!r}: must be a mapping of name -> {{_target_: ..., ...}}")
    for name, node in callbacks.items():
        if node is None:
            continue  # switched off with callbacks.<name>=null
        if not OmegaConf.is_dict(node) or not node.get("_target_"):
            raise ConfigError(f"callbacks.{name}={node!r}: must be a mapping with a _target_ (a Lightning Callback)")
        try:
            get_class(node._target_)
        except Exception as error:  # a typo in the class path, or its package missing
            reason = " ".join(str(error).split())
            raise ConfigError(f"callbacks.{name}._target_={node._target_}: cannot be imported ({reason})") from None
        _check_monitor(str(name), node, ks, mode)


def check_config(cfg: DictConfig, config_dir: str | Path) -> tuple[list[int], Protocol]:
    """Check everything that can be checked without data; returns the sorted ks and the protocol."""
    try:
        OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except Exception as error:  # an interpolation or missing value: say which key
        raise ConfigError(f"config does not resolve: {' '.join(str(error).split())}") from None
    ks = check_ks(cfg.get("ks"))
    if not _is_int(cfg.get("seed")):
        raise ConfigError(f"seed={cfg.get('seed')!r}: must be an integer")
    _positive_int(cfg, "threads", nullable=True)
    for key in ("progress", "save_recommendations", "continue_on_refusal", "eval.filter_seen"):
        _bool(cfg, key)
    _choice("eval.backend", cfg.eval.backend, BACKENDS)
    for key in ("eval.batch_users", "eval.user_tile", "eval.item_tile", "eval.every_n_epochs"):
        _positive_int(cfg, key)
    if cfg.get("trainer") is not None:
        # Lightning reads 0 as "no epoch" and -1 as "forever": neither is a run anyone asked for
        _positive_int(cfg, "trainer.max_epochs", nullable=True)
    _choice("data.format", cfg.data.format, S.FORMATS)
    try:
        protocol = Protocol(**OmegaConf.to_container(cfg.protocol, resolve=True))
    except (TypeError, ValueError) as error:
        raise ConfigError(f"protocol: {' '.join(str(error).split())}") from None
    check_model(cfg.model, config_dir)
    check_callbacks(cfg, ks, protocol.mode)
    if cfg.get("logger") is not None and not OmegaConf.is_dict(cfg.logger):
        raise ConfigError(f"logger={cfg.logger!r}: choose logger=csv|wandb|none")
    return ks, protocol
