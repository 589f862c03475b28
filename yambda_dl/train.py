"""`yambda-train`: compose a config -> check it -> split -> fit -> recommend -> evaluate -> report.

`train(cfg)` is a plain function that tests call directly; `main` is the thin Hydra wrapper. A run owns its folder
(utils/rundir.py): it claims it before any work, and marks it "finished", "refused" or "failed" at the end.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import hydra
import lightning
import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from yambda_dl.config_check import ConfigError, check_config
from yambda_dl.data.io import write_parquet
from yambda_dl.data.layout import DatasetLayout
from yambda_dl.data.split import Split, make_split
from yambda_dl.eval.callback import Pruned, RankingEvaluation
from yambda_dl.eval.evaluator import format_metrics_table, format_slices_table
from yambda_dl.eval.external import recommendations_table
from yambda_dl.eval.settings import EvalSettings
from yambda_dl.eval.slices import TARGET_SLICES
from yambda_dl.eval.stream import StreamSettings, stream_evaluate
from yambda_dl.utils import runinfo
from yambda_dl.utils.rundir import CHECKPOINTS, RunFolder, RunFolderBusy, new_run_id

CONFIG_DIR = str(max((p / "configs" for p in Path(__file__).resolve().parents[:2]), key=Path.is_dir))  # wheel|checkout

log = logging.getLogger(__name__)


def _refusals() -> tuple[type[BaseException], ...]:
    """What a sweep with continue_on_refusal records and goes on from: a memory refusal, a missing optional extra."""
    from yambda_dl.models.base import OptionalDependencyError

    return (MemoryError, OptionalDependencyError)


# --- run ids, folder names and W&B names (OmegaConf resolvers, registered by main() and train()) -------------------

_INVOCATION_ID: str | None = None  # one per yambda-train process: a single run's id, a sweep's folder and W&B group


def _invocation_id() -> str:
    global _INVOCATION_ID
    if _INVOCATION_ID is None:
        _INVOCATION_ID = new_run_id()
    return _INVOCATION_ID


def _hydra_cfg() -> Any | None:
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get() if HydraConfig.initialized() else None


def _is_multirun(hc: Any) -> bool:
    return hc is not None and str(hc.mode) == "RunMode.MULTIRUN"


def _run_id_resolver() -> str:
    """This job's run id: the invocation's id, plus "-<job number>" for a job of a sweep."""
    hc = _hydra_cfg()
    if hc is None:
        raise ValueError("run_id resolves only under yambda-train; train() gives a direct call its own")
    return f"{_invocation_id()}-{hc.job.num}" if _is_multirun(hc) else _invocation_id()


def _swept_keys(hc: Any) -> set[str]:
    """Keys this sweep varies: hydra.sweeper.params (experiment and hparams_search files) and `a,b` overrides."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    keys = set(hc.sweeper.get("params") or {})
    parser = OverridesParser.create()
    for arg in sys.argv[1:]:
        if arg.startswith("-") and not arg.startswith(("+", "~")):
            continue
        try:
            (override,) = parser.parse_overrides([arg])
        except Exception:  # not an override (a flag's value): nothing swept
            continue
        if override.is_sweep_override():
            keys.add(override.key_or_group)
    return keys


def job_name(model_name: str) -> str:
    """The model and, in a sweep, the swept values of this job: "ials-model.regularization=0.01" (file-name safe)."""
    hc = _hydra_cfg()
    if not _is_multirun(hc):
        return model_name
    from hydra.core.override_parser.overrides_parser import OverridesParser

    swept = _swept_keys(hc) - {"model"}
    parts = []
    for override in OverridesParser.create().parse_overrides(list(hc.overrides.task)):
        if override.key_or_group in swept and not override.key_or_group.startswith("hydra"):
            parts.append(f"{override.key_or_group}={override.value()}")
    name = "-".join([model_name, ",".join(sorted(parts))]) if parts else model_name
    return re.sub(r"[^A-Za-z0-9._=,+@-]", "_", name)[:150]  # a folder name: no "/" or spaces; short enough


def register_resolvers() -> None:
    """`${yambda_run_id:}`, `${yambda_sweep_id:}`, `${yambda_job_name:<model>}`, used by train.yaml's folders."""
    for name, resolver in {
        "yambda_run_id": _run_id_resolver,
        "yambda_sweep_id": _invocation_id,
        "yambda_job_name": job_name,
    }.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)


# --- building blocks ---------------------------------------------------------------------------------------------


def prepare_data(data_cfg: DictConfig, source_file: str) -> DatasetLayout:
    """The dataset's layout; a synthetic dataset that is missing is generated, a real one must be downloaded."""
    side_files = data_cfg.get("side_files")
    side_files = OmegaConf.to_container(side_files) if side_files is not None else None
    layout = DatasetLayout.with_side_files(data_cfg.root, data_cfg.size, side_files)
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


def wandb_mode(cfg: DictConfig) -> None:
    """logger=wandb: without an API key or without network, log offline (with a warning) rather than fail at the end."""
    if os.environ.get("WANDB_MODE", "").lower() in ("offline", "disabled", "dryrun") or cfg.logger.get("offline"):
        return
    import socket

    try:
        from wandb.apis import InternalApi

        api = InternalApi()
        key, host = api.api_key, api.settings("base_url")
    except Exception:  # wandb's settings unreadable: treat as no login
        key, host = None, "https://api.wandb.ai"
    reason = None if key else "no W&B API key (wandb login, or WANDB_API_KEY)"
    if reason is None:
        hostname = re.sub(r"^https?://", "", str(host)).split("/")[0]
        try:
            socket.create_connection((hostname.split(":")[0], 443), timeout=3).close()
        except OSError:
            reason = f"{hostname} is unreachable"
    if reason is not None:
        log.warning("logger=wandb: %s; logging offline instead (sync later with `wandb sync`)", reason)
        with open_dict(cfg):
            cfg.logger.offline = True


def build_logger(cfg: DictConfig) -> Any | None:
    """The logger group's logger; under W&B a trial of an Optuna study joins the study's group (job type "trial")."""
    if cfg.logger is None or cfg.logger.get("_target_") is None:
        return None
    if "WandbLogger" in str(cfg.logger._target_):
        wandb_mode(cfg)
        if _trial_of(cfg) is not None:
            with open_dict(cfg):
                cfg.logger.group = cfg.study.name  # one group per study, whichever sweeper process ran the trial
                cfg.logger.job_type = "trial"
        import wandb

        if wandb.run is not None:  # a previous job of this process left its run open: never log into it
            wandb.finish()
    return hydra.utils.instantiate(cfg.logger)


def _trial_of(cfg: DictConfig) -> int | None:
    """The Optuna trial number this run is (set by hydra/sweeper=yambda_optuna), or None."""
    study = cfg.get("study")
    return None if study is None or study.get("trial") is None else int(study.trial)


def build_callbacks(
    cfg: DictConfig, split: Split, logger: Any | None, settings: EvalSettings | None = None, report: Any = None
) -> list[lightning.Callback]:
    """The callbacks group's callbacks, after the app's validation callback (so early stopping sees its metrics).

    The validation callback ranks with `settings`, the run's final-pass settings (seen-item mask and tiles too), and
    in an Optuna trial reports each validation to the trial through `report` (which may prune it)."""
    callbacks: list[lightning.Callback] = []
    if split.protocol.mode == "tune":
        callbacks.append(
            RankingEvaluation(
                split,
                settings=settings or EvalSettings.from_config(cfg.ks, cfg.eval),
                every_n_epochs=cfg.eval.every_n_epochs,
                report=report,
            )
        )
    for name, node in (cfg.get("callbacks") or {}).items():
        if node is None:
            continue
        callback = hydra.utils.instantiate(node)
        if isinstance(callback, lightning.pytorch.callbacks.ProgressBar) and not cfg.progress:
            continue  # progress=false: every bar off
        if isinstance(callback, lightning.pytorch.callbacks.LearningRateMonitor) and logger is None:
            log.warning("callbacks.%s: a LearningRateMonitor needs a logger (logger=none); not used", name)
            continue
        callbacks.append(callback)
    return callbacks


def build_trainer(
    cfg: DictConfig,
    logger: Any | None,
    split: Split,
    model: lightning.LightningModule,
    settings: EvalSettings | None = None,
    report: Any = None,
) -> lightning.Trainer:
    """The Lightning Trainer of cfg.trainer with the callbacks group; in tune mode it evaluates the validation day.

    The number of epochs is the model's (`model.max_epochs`: SASRec's epochs, iALS's sweeps) unless
    `trainer.max_epochs` overrides it (checked >= 1 up front).
    """
    callbacks = build_callbacks(cfg, split, logger, settings, report)
    max_epochs = cfg.trainer.get("max_epochs")
    if max_epochs is None:
        max_epochs = getattr(model, "max_epochs", None)
    checkpoints = any(isinstance(c, lightning.pytorch.callbacks.ModelCheckpoint) for c in callbacks)
    return hydra.utils.instantiate(
        cfg.trainer,
        logger=logger if logger is not None else False,
        default_root_dir=cfg.paths.output_dir,
        callbacks=callbacks,
        max_epochs=max_epochs,
        enable_checkpointing=checkpoints,  # only the callbacks group's: never Lightning's default folder
        enable_progress_bar=bool(cfg.progress),
    )


def write_recommendations(split: Split, items: torch.Tensor, scores: torch.Tensor, path: Path) -> None:
    """recommendations.parquet: uid, item_ids (list), scores (list), in raw ids; -1 padding dropped."""
    write_parquet(recommendations_table(split, items, scores), path)


# --- the run -----------------------------------------------------------------------------------------------------


class _Quiet(logging.Filter):
    """Lightning's advertising tips and accelerator inventory: noise in every run's log."""

    NOISE = ("💡 Tip", "GPU available:", "TPU available:", "HPU available:", "IPU available:")

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.NOISE)


def quiet_third_party() -> None:
    """Drop Lightning's noise (idempotent); its own console handler goes where Hydra's logging is configured."""
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _Quiet) for f in logger.filters):
            logger.addFilter(_Quiet())
    if logging.getLogger().handlers:  # Hydra (or the user) configured logging: one copy of each line, in its log
        for name in ("lightning.pytorch", "lightning.fabric"):
            logger = logging.getLogger(name)
            for handler in [h for h in logger.handlers if type(h) is logging.StreamHandler]:
                logger.removeHandler(handler)
    for message in (
        ".*does not have many workers.*",  # num_workers=0 is a deliberate choice on CPU
        ".*smaller than the logging interval.*",  # tiny data: one batch per epoch
        ".*returned `None`, this fit will run with no optimizer.*",  # iALS: manual optimization, by design
        r".*isinstance\(treespec, LeafSpec\).*",  # a torch deprecation inside Lightning
        ".*`IterableDataset` has `__len__` defined.*",  # exact by construction: sharded per rank and worker
    ):
        warnings.filterwarnings("ignore", message=message)


def _ensure_run_id(cfg: DictConfig) -> str:
    try:
        run_id = cfg.get("run_id")
    except Exception:  # the resolver is yambda-train's: a direct call gets its own id
        run_id = None
    with open_dict(cfg):
        cfg.run_id = str(run_id or new_run_id())
    return cfg.run_id


def resolve_checkpoint(cfg: DictConfig, out: Path) -> Path | None:
    """model.ckpt_path: "last" is <run folder>/checkpoints/last.ckpt; a checkpoint that is not there is an error."""
    ckpt = cfg.model.get("ckpt_path")
    if ckpt is None:
        return None
    path = out / CHECKPOINTS / "last.ckpt" if ckpt == "last" else Path(ckpt)
    if not path.is_file():
        where = f"no checkpoint in {out / CHECKPOINTS}" if ckpt == "last" else f"{path} does not exist"
        raise ConfigError(f"model.ckpt_path={ckpt}: {where}; resume in the folder of the run that wrote it")
    with open_dict(cfg):
        cfg.model.ckpt_path = str(path.resolve())
    return path.resolve()


def _hydra_keep(out: Path) -> tuple[str, ...]:
    """Hydra's files of this run (written before train() starts): its .hydra/ folder and the job's log file."""
    hc = _hydra_cfg()
    if hc is None or Path(hc.runtime.output_dir).resolve() != out.resolve():
        return ()
    return (*([str(hc.output_subdir)] if hc.output_subdir else []), f"{hc.job.name}.log")


def _truncate_job_log(out: Path) -> None:
    """A rerun's job log starts empty (Hydra opened it in append mode, before the run claimed its folder)."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename).parent == out.resolve():
            handler.flush()
            handler.stream.truncate(0)


def _rank_zero() -> bool:
    """False in the processes a DDP launcher starts for ranks other than 0 (it sets these variables), and in the SLURM
    tasks other than 0 of a job with one task per GPU (hydra/launcher=slurm: every task runs the job, as one rank)."""
    return all(int(os.environ.get(name, 0)) == 0 for name in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"))


def train(cfg: DictConfig) -> dict[str, Any]:
    """Run one experiment end to end in cfg.paths.output_dir, which it owns; return metrics.json's dict."""
    register_resolvers()
    quiet_third_party()
    run_id = _ensure_run_id(cfg)
    from yambda_dl import tune

    tune.apply_best(cfg)  # best=<a study's best.yaml>: its settings, before the checks see them
    ks, protocol = check_config(cfg, CONFIG_DIR)  # every cheap check before any work
    with open_dict(cfg):
        cfg.objective = tune.check_objective(cfg.get("objective"), ks)  # null: ndcg at the largest k
    if _trial_of(cfg) is not None and not (cfg.study.get("name") and cfg.study.get("storage")):
        raise ConfigError(f"study.trial={cfg.study.trial}: a trial needs study.name and study.storage (the sweeper's)")
    out = Path(cfg.paths.output_dir)
    resume_from = resolve_checkpoint(cfg, out)
    folder = RunFolder(out, run_id)
    if not _rank_zero():  # a DDP worker runs this script again: rank 0 owns the folder and writes its files
        return _run(cfg, folder, ks, protocol, resume_from)
    resume = resume_from is not None and resume_from.parent == (out / CHECKPOINTS).resolve()
    folder.claim(resume=resume, keep=_hydra_keep(out))
    if not resume:
        _truncate_job_log(out)
    try:
        return _run(cfg, folder, ks, protocol, resume_from)
    except Pruned as pruned:  # an Optuna trial stopped from its validation curve: the sweeper records it pruned
        log.info("%s; the run's folder is marked failed (no test of a pruned trial)", pruned)
        folder.fail()
        raise
    except BaseException:
        folder.fail()
        raise


def _run(cfg: DictConfig, folder: RunFolder, ks: list[int], protocol: Any, resume_from: Path | None) -> dict[str, Any]:
    started = time.perf_counter()
    timings: dict[str, float] = {}
    out = folder.path
    config = OmegaConf.to_container(cfg, resolve=True)
    if _rank_zero():
        folder.write_config(config)
    log.info("run %s in %s", folder.run_id, out)
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)  # before any work: torch's pool is sized on first use
    from yambda_dl.utils import progress

    progress.set_enabled(bool(cfg.progress))
    lightning.seed_everything(cfg.seed, workers=True, verbose=False)

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
        raise ConfigError(
            f"ks={ks}: k={ks[-1]} is larger than the {split.num_items} candidate (train) items; lower `ks`"
        )
    if _rank_zero():
        folder.write_manifest(manifest(cfg, split))

    logger = build_logger(cfg)
    trial = _trial_of(cfg)
    report = None
    if trial is not None and protocol.mode == "tune":
        from yambda_dl.tune import TrialReporter

        report = TrialReporter(cfg.study, cfg.objective)
    if logger is not None:
        logger.log_hyperparams(config)  # at the start: a run that dies still shows what it was
        if trial is not None and report is not None and _rank_zero():
            logger.log_hyperparams({"trial": {"number": trial, "params": report.params}})
    summary = {
        "run_id": folder.run_id,
        "model": cfg.model.name,
        "data": cfg.data.name,
        "size": cfg.data.size,
        "setup": protocol.setup,
        "mode": protocol.mode,
        "filter_seen": bool(cfg.eval.filter_seen),
    }
    metrics, refusal, trainer = None, None, None
    settings = EvalSettings.from_config(ks, cfg.eval)  # the validation callback's and the final pass's, the same
    try:
        streaming = StreamSettings.from_config(cfg.eval, cfg.model.get("_target_"))  # checked before the fit
    except ValueError as error:
        raise ConfigError(str(error)) from None
    try:
        model = build_model(cfg.model)
        if isinstance(model, lightning.LightningModule):
            trainer = build_trainer(cfg, logger, split, model, settings, report)
        if resume_from is not None:
            log.info("resuming from %s", resume_from)
        t = time.perf_counter()
        model.fit(split, trainer=trainer)
        timings["fit_s"] = time.perf_counter() - t
        t = time.perf_counter()
        items, scores = settings.rank(model, split)
        timings["recommend_s"] = time.perf_counter() - t
    except _refusals() as error:  # a model's up-front memory check, with its numbers, or a missing optional extra
        if not cfg.continue_on_refusal:
            _close_logger(logger, None)
            raise
        refusal = str(error)
        log.warning("%s refused: %s", cfg.model.name, refusal)
    if refusal is None:
        t = time.perf_counter()
        metrics = settings.score(items, split)
        slices = settings.score_slices(items, split, catalogue=metrics)  # organic, recommended, warm, cold
        timings["evaluate_s"] = time.perf_counter() - t
    stream = None
    if refusal is None and streaming.window is not None:  # the day in windows, states moving (eval/stream.py)
        t = time.perf_counter()
        stream = stream_evaluate(model, split, settings, streaming.window, items, retrain_every=streaming.retrain_every)
        timings["stream_s"] = time.perf_counter() - t
        log.info(
            "streaming, %d windows of %d s (state: %s), over %d (user, window) pairs:\n%s",
            stream["num_windows"],
            stream["window"],
            stream["state"],
            stream["num_pairs"],
            format_metrics_table(stream["metrics"], ks),
        )
    timings["total_s"] = time.perf_counter() - started

    result = summary | {
        "objective": {"name": cfg.objective, "value": None if metrics is None else metrics[cfg.objective]},
        "metrics": metrics,
        "stream": stream,  # null unless eval.stream.window is set
        # each target slice's metrics beside the paper's all-target set; null where a run refused
        **(slices if metrics is not None else dict.fromkeys(TARGET_SLICES)),
        **({"refused": refusal} if refusal is not None else {}),
        "timings": timings,
        "peak_memory_mb": runinfo.peak_rss_mb(),
        "split": split.describe(),
    }
    if not _rank_zero() or (trainer is not None and not trainer.is_global_zero):
        return result  # under DDP every rank ranks and evaluates identically; one writes the outputs
    if logger is not None and metrics is not None:
        day = "test" if protocol.mode == "final" else "val"  # tune mode evaluates the validation day
        logger.log_metrics(logged_metrics(day, metrics, slices, stream))
    if cfg.save_recommendations and metrics is not None:
        write_recommendations(split, items, scores, out / "recommendations.parquet")
    folder.finish(result, status="finished" if refusal is None else "refused")
    _close_logger(logger, folder)
    title = f"{cfg.model.name} on {cfg.data.name} ({protocol.setup}, {protocol.mode})"
    if metrics is None:
        log.warning("%s refused: %s; outputs in %s", title, refusal, out)
    else:
        tables = f"{format_metrics_table(metrics, ks)}\n\ntarget slices:\n{format_slices_table(slices, ks)}"
        log.info("%s; outputs in %s\n%s", title, out, tables)
    return result


def logged_metrics(
    day: str,
    metrics: dict[str, float],
    slices: dict[str, dict[str, float] | None],
    stream: dict[str, Any] | None,
) -> dict[str, float]:
    """The final metrics as the logger gets them (what metrics.json holds, flattened): the paper's as
    `{day}/{name}`, each target slice's as `{day}/{slice}/{name}`, the streaming evaluation's as
    `{day}/stream/{name}` and `{day}/stream_frozen/{name}`; slices without targets are left out."""
    logged = {f"{day}/{name}": value for name, value in metrics.items()}
    parts = {name: values for name, values in slices.items() if values is not None}
    if stream is not None:
        parts |= {"stream": stream["metrics"], "stream_frozen": stream["frozen"]}
    for part, values in parts.items():
        logged |= {f"{day}/{part}/{name}": value for name, value in values.items() if isinstance(value, int | float)}
    return logged


def _close_logger(logger: Any | None, folder: RunFolder | None) -> None:
    """End the logger's run; W&B gets metrics.json and config.yaml as artifacts, and its run is closed per job."""
    if logger is None:
        return
    logger.finalize("success" if folder is not None else "failed")
    if type(logger).__name__ != "WandbLogger":
        return
    import wandb

    if folder is not None:
        artifact = wandb.Artifact(f"run-{folder.run_id}", type="run")
        for name in ("metrics.json", "config.yaml"):
            artifact.add_file(str(folder.path / name))
        logger.experiment.log_artifact(artifact)
    wandb.finish()


def manifest(cfg: DictConfig, split: Split) -> dict[str, Any]:
    """What reproduces the run: data fingerprint, split, seeds, versions, git revision, machine, command."""
    return {
        "data_fingerprint": split.meta["source"]["fingerprint"],
        "split_key": split.key,
        "split_path": str(split.path),
        "seeds": {"seed": int(cfg.seed), "data_seed": int(cfg.data.seed)},
        "versions": runinfo.package_versions(),
        "git_revision": runinfo.git_revision(),
        "machine": runinfo.machine(),
        "command": runinfo.command_line(),
    }


def _task(cfg: DictConfig) -> float | None:
    """One Hydra job; returns the run's objective (`objective`, e.g. ndcg@100; None when the model refused), which an
    Optuna sweep tells its study. A config error or a busy folder is one line on stderr and exit status 2."""
    try:
        return train(cfg)["objective"]["value"]
    except (ConfigError, RunFolderBusy) as error:
        log.error("%s", error)
        print(f"yambda-train: error: {error}", file=sys.stderr)
        sys.exit(2)


def _model_overrides_as_sweepable(argv: list[str]) -> list[str]:
    """In a sweep, `model.<key>=v` becomes `++model.<key>=v`.

    Hydra composes a sweep's master config with the default model (mostpop), where a key of the swept models does not
    exist, and refuses the override before any job runs. `++` lets each job's model take it; a job whose model has no
    such key is then refused by check_config with the model's settings listed.
    """
    sweep = any(a in ("-m", "--multirun") or a.startswith(("experiment=", "hparams_search=")) for a in argv)
    if not sweep:
        return argv
    return [f"++{a}" if re.match(r"model\.[\w.]+=", a) else a for a in argv]


def register_sweeper() -> None:
    """Make hydra/sweeper=yambda_optuna known: Hydra finds it under hydra_plugins/ in an installed wheel, but its scan
    cannot list packages behind an editable install's import hook, so register the class here too (idempotent)."""
    from hydra.core.plugins import Plugins

    from hydra_plugins.yambda_optuna_sweeper.optuna_sweeper import YambdaOptunaSweeper

    Plugins.instance().register(YambdaOptunaSweeper)


def main() -> None:
    """The `yambda-train` command."""
    register_resolvers()
    register_sweeper()
    sys.argv[1:] = _model_overrides_as_sweepable(sys.argv[1:])
    hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")(_task)()


if __name__ == "__main__":
    main()
