"""Optuna studies for yambda-train (the paper's tuning protocol, docs/protocol.md) and the tune-then-retrain command.

Three parts:
- `StudySweep`, the work of the Hydra sweeper `hydra/sweeper=yambda_optuna` (hydra_plugins/yambda_optuna_sweeper):
  asks the study for trials, launches them as Hydra jobs through the configured launcher (in process, submitit
  local processes or SLURM jobs), tells the study each job's objective, and writes the best trial to best.yaml. The
  study lives in a file (Optuna's JournalStorage, or an SQLite URL), so a killed sweep rerun with the same storage
  resumes, and several sweeps given one storage and study name share the study (parallel workers).
- `TrialReporter`, the hook that the validation callback of a trial's run calls each validation epoch: it reports the
  objective to the trial and says when the study's pruner stops it.
- `main`, `python -m yambda_dl.tune MODEL ...`: the study, then final-mode runs with the best settings over seeds,
  then yambda-report's table (mean ± std beside the paper's).
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf, open_dict

from yambda_dl.config_check import ConfigError
from yambda_dl.eval.callback import Pruned
from yambda_dl.eval.evaluator import TABLE_ROWS
from yambda_dl.utils.atomic import atomic_path

if TYPE_CHECKING:
    import optuna

log = logging.getLogger(__name__)

BEST_FILE = "best.yaml"
STUDY_FILE = "study.journal"
DEFAULT_SEEDS = 3
# user attributes of a trial: the sweeper process that asked for it ("host:pid": a trial left running by a dead
# sweeper on this host is stale), a stale trial (never counted as done), why a trial failed
WORKER, STALE, ERROR = "worker", "stale", "error"


# --- the objective and the best file (train.py calls these before a run) ------------------------------------------


def objective_name(objective: Any, ks: Sequence[int]) -> str:
    """The config's `objective`; null is NDCG at the largest cut-off (ndcg@100 with the default ks)."""
    return f"ndcg@{max(int(k) for k in ks)}" if objective is None else str(objective)


def check_objective(objective: Any, ks: Sequence[int]) -> str:
    """`objective` (null: objective_name's default) is one of the evaluator's metrics at one of `ks`, e.g. ndcg@100;
    a clear error otherwise. Returns its name."""
    objective = objective_name(objective, ks)
    match = re.fullmatch(r"([a-z_]+)@(\d+)", str(objective))
    if match is None or match.group(1) not in TABLE_ROWS or int(match.group(2)) not in ks:
        valid = ", ".join(f"{name}@{k}" for name in TABLE_ROWS for k in ks)
        raise ConfigError(f"objective={objective!r}: not a metric of this run; valid choices: {valid}")
    return str(objective)


def read_best(path: Path) -> dict[str, Any]:
    """A best.yaml written by a study: its model, objective value and `params` (config key -> value)."""
    if not path.is_file():
        raise ConfigError(f"best={path}: no such file")
    best = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    if not isinstance(best, dict) or not isinstance(best.get("params"), dict) or "model" not in best:
        raise ConfigError(f"best={path}: not a best file of a study (needs `model` and `params`)")
    return best


def best_file_for(best: str | Path, model_name: str) -> Path | None:
    """The best file a run of `model_name` takes from `best`: the file itself, or a folder's <model>.yaml (None when
    the folder has none: that model runs at its config's settings, as experiment=paper_baselines wants)."""
    path = Path(best)
    if path.is_dir():
        candidate = path / f"{model_name}.yaml"
        return candidate if candidate.is_file() else None
    return path


def apply_best(cfg: DictConfig) -> dict[str, Any] | None:
    """With `best` set, write the study's best parameters into the composed config (before its checks); the file's
    model must be the run's. Returns the parameters applied, or None."""
    if cfg.get("best") is None:
        return None
    path = best_file_for(cfg.best, cfg.model.name)
    if path is None:
        log.warning(
            "best=%s has no %s.yaml: %s runs at its config's settings", cfg.best, cfg.model.name, cfg.model.name
        )
        return None
    best = read_best(path)
    if best["model"] != cfg.model.name:
        raise ConfigError(f"best={path} holds {best['model']}'s settings; run it with model={best['model']}")
    groups = [key for key in best["params"] if "/" in key]
    if groups:
        raise ConfigError(f"best={path}: {groups} choose config groups; give them on the command line")
    with open_dict(cfg):
        for key, value in best["params"].items():
            if OmegaConf.select(cfg, key, default="__missing__") == "__missing__":
                raise ConfigError(f"best={path}: {key} is not a key of this run's config")
            OmegaConf.update(cfg, key, value, merge=False)
        cfg.best = str(path)
    log.info("best settings from %s: %s", path, best["params"])
    return dict(best["params"])


# --- storage and search space ------------------------------------------------------------------------------------


def open_storage(storage: str | None) -> Any:
    """A URL (sqlite:///study.db, postgresql://...) as Optuna takes it; a path as a JournalStorage file, which many
    processes (and machines on a shared file system) may open at once; None: in memory (no resume, one process)."""
    if storage is None:
        return None
    if "://" in storage:
        return storage
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    path = Path(storage)
    path.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(path)))


def _distribution(key: str, value: Any) -> Any:
    """An Optuna distribution of a sweep override's value: interval(a, b) (float; int(...) for integers; tag(log,
    ...) for a log scale), range(a, b[, step]) (integers, b excluded as in Hydra), choice(...) or a,b,c."""
    from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    log_scale = "log" in getattr(value, "tags", set())
    if isinstance(value, IntervalSweep):
        if isinstance(value.start, int) and isinstance(value.end, int):
            return IntDistribution(value.start, value.end, log=log_scale)
        return FloatDistribution(float(value.start), float(value.end), log=log_scale)
    if isinstance(value, RangeSweep):
        start, stop, step = int(value.start), int(value.stop), int(value.step or 1)
        if step <= 0 or stop <= start:
            raise ConfigError(f"{key}=range({start}, {stop}, {step}): give start < stop and a positive step")
        return IntDistribution(start, start + step * ((stop - 1 - start) // step), step=step, log=log_scale)
    if isinstance(value, ChoiceSweep):
        return CategoricalDistribution(list(value.list))
    raise ConfigError(f"{key}: {value!r} is not a search space; use interval(a,b), int(interval(a,b)), range or choice")


def search_space(params: Mapping[str, Any] | None, arguments: Sequence[str]) -> tuple[dict[str, Any], list[str]]:
    """({override prefix + key: distribution}, fixed overrides) from hydra.sweeper.params and the command line's
    arguments (a sweep override there joins the space; the rest are passed to every trial as written)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    space: dict[str, Any] = {}
    for key, value in (params or {}).items():
        (override,) = parser.parse_overrides([f"{key}={value}"])
        if not override.is_sweep_override():
            raise ConfigError(f"hydra.sweeper.params.{key}={value}: not a search space (interval, range or choice)")
        space[key] = _distribution(key, override.value())
    fixed = []
    for argument in arguments:
        (override,) = parser.parse_overrides([argument])
        key = override.key_or_group
        for name in [name for name in space if _param_key(name) == key]:  # the command line wins over the file
            del space[name]
        if override.is_sweep_override():
            prefix = {"ADD": "+", "FORCE_ADD": "++"}.get(override.type.name, "")
            space[prefix + key] = _distribution(key, override.value())
        else:
            fixed.append(argument)  # a fixed value, also of a key the file searches (model.iterations=30)
    return space, fixed


def format_value(value: Any) -> str:
    """A sampled value as a Hydra override's value (quoted where it is a string that the grammar would parse)."""
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return "null"
    if isinstance(value, str):
        return value if re.fullmatch(r"[A-Za-z_][\w./-]*", value) else "'" + value.replace("'", "\\'") + "'"
    return repr(value)


def _param_key(key: str) -> str:
    return key.lstrip("+")


# --- the sweeper ---------------------------------------------------------------------------------------------------


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def _worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _is_stale(trial: optuna.trial.FrozenTrial) -> bool:
    """A running trial whose sweeper process on this host is gone (killed): it will never be told its result. One
    without a worker was asked by a sweeper killed before its next statement recorded the worker (a live sweeper is in
    that window for microseconds, only when a study is opened)."""
    if WORKER not in trial.user_attrs:
        return True
    host, _, pid = str(trial.user_attrs[WORKER]).rpartition(":")
    return host == socket.gethostname() and pid.isdigit() and not _pid_alive(int(pid))


class StudySweep:
    """The Optuna sweep behind hydra_plugins.yambda_optuna_sweeper (configuration: its YambdaOptunaSweeperConf)."""

    def __init__(
        self,
        n_trials: int,
        n_jobs: int,
        direction: str,
        storage: str | None,
        study_name: str | None,
        sampler: Mapping[str, Any],
        pruner: Mapping[str, Any] | None,
        params: Mapping[str, Any] | None,
    ) -> None:
        if int(n_trials) < 1 or int(n_jobs) < 1:
            raise ConfigError(f"hydra.sweeper: n_trials={n_trials} and n_jobs={n_jobs} must be >= 1")
        if direction not in ("maximize", "minimize"):
            raise ConfigError(f"hydra.sweeper.direction={direction!r}: choose maximize or minimize")
        self.n_trials, self.n_jobs, self.direction = int(n_trials), int(n_jobs), direction
        self.storage, self.study_name = storage, study_name
        self.sampler = dict(sampler)
        self.pruner = dict(pruner) if pruner else None
        self.params = dict(params) if params else None
        self.config: DictConfig | None = None
        self.launcher: Any = None

    def setup(self, *, hydra_context: Any, task_function: Any, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    # the study

    @property
    def objective(self) -> str:
        return objective_name(self.config.get("objective"), self.config.ks)

    def _name(self) -> str:
        cfg = self.config
        return self.study_name or f"{cfg.model.name}-{cfg.data.name}-{cfg.protocol.setup}"

    def open_study(self, fixed: list[str]) -> optuna.Study:
        """The study, created or resumed; a resumed study must have been run with the same fixed overrides."""
        import hydra
        import optuna

        storage = open_storage(self.storage)
        study = optuna.create_study(
            study_name=self._name(),
            storage=storage,
            direction=self.direction,
            load_if_exists=True,
            sampler=hydra.utils.instantiate(self.sampler),
        )
        setting = sorted(o for o in fixed if not o.lstrip("+~").startswith("hydra."))
        attrs = study.user_attrs
        if "overrides" in attrs and attrs["overrides"] != setting:
            raise ConfigError(
                f"study {study.study_name} in {self.storage} was run with {attrs['overrides']}, not {setting}; "
                "resume it with the same overrides, or give another hydra.sweeper.storage or study_name"
            )
        if "overrides" not in attrs:
            study.set_user_attr("overrides", setting)
            study.set_user_attr("objective", self.objective)
            study.set_user_attr("model", str(self.config.model.name))
        study.set_user_attr("pruner", self.pruner)  # read by each trial's TrialReporter
        for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            if _is_stale(trial):  # its sweeper was killed: record it failed, never counted, and go on
                study._storage.set_trial_user_attr(trial._trial_id, STALE, True)
                study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
                log.warning("trial %d of a killed sweep recorded as failed (stale)", trial.number)
        return study

    def _ask(self, study: optuna.Study, space: dict[str, Any]) -> optuna.trial.Trial:
        """One trial; the sampler is seeded with seed + the study's trial count, so a sweep reproduces from its
        seed, a resumed one goes on as if never stopped, and parallel workers draw different points."""
        import hydra

        sampler = dict(self.sampler)
        seed = sampler.get("seed")
        if seed is not None:
            sampler["seed"] = int(seed) + len(study.get_trials(deepcopy=False))
        study.sampler = hydra.utils.instantiate(sampler)
        trial = study.ask({_param_key(key): dist for key, dist in space.items()})
        trial.set_user_attr(WORKER, _worker_id())
        return trial

    def sweep(self, arguments: list[str]) -> Any:
        import optuna

        space, fixed = search_space(self.params, arguments)
        if not space:
            raise ConfigError("hydra.sweeper.params: no search space (hparams_search=<model>_optuna sets one)")
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        study = self.open_study(fixed)
        log.info(
            "study %s (%s): %d of %d trials done; search space %s",
            study.study_name,
            self.storage or "in memory",
            self._done(study),
            self.n_trials,
            {key: str(dist) for key, dist in space.items()},
        )
        states = optuna.trial.TrialState
        while True:
            trials = study.get_trials(deepcopy=False)
            left = self.n_trials - self._done(study) - sum(t.state == states.RUNNING for t in trials)
            if left <= 0:
                break
            asked = [self._ask(study, space) for _ in range(min(self.n_jobs, left))]
            for group in _contiguous(asked):
                self._launch(study, group, space, fixed)
            self.write_best(study, sweep_dir)
        return self.write_best(study, sweep_dir, final=True)

    def _done(self, study: optuna.Study) -> int:
        return sum(t.state.is_finished() and not t.user_attrs.get(STALE) for t in study.get_trials(deepcopy=False))

    def _launch(self, study: optuna.Study, group: list[Any], space: dict[str, Any], fixed: list[str]) -> None:
        import optuna
        from hydra.core.utils import JobStatus

        storage = format_value(str(self.storage)) if self.storage else "null"
        batch = [
            [
                *fixed,
                *(f"{key}={format_value(trial.params[_param_key(key)])}" for key, _ in space.items()),
                f"study.name={format_value(study.study_name)}",
                f"study.storage={storage}",
                f"study.trial={trial.number}",
            ]
            for trial in group
        ]
        returns = self.launcher.launch(batch, initial_job_idx=group[0].number)
        for trial, ret in zip(group, returns, strict=True):
            if ret.status == JobStatus.COMPLETED and ret.return_value is not None:
                study.tell(trial, float(ret.return_value))
                log.info("trial %d: %s=%.6g %s", trial.number, self.objective, ret.return_value, trial.params)
            elif ret.status == JobStatus.COMPLETED:  # continue_on_refusal: the model refused (memory, extra)
                trial.set_user_attr(ERROR, "refused (see the run's metrics.json)")
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
                log.warning("trial %d refused by the model %s; the study goes on", trial.number, trial.params)
            elif isinstance(ret._return_value, Pruned):
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                log.info("trial %d pruned: %s", trial.number, ret._return_value)
            else:  # a MemoryError, an OOM or any other error of one trial: recorded, and the study goes on
                error = ret._return_value
                trial.set_user_attr(ERROR, f"{type(error).__name__}: {error}"[:1000])
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
                log.error("trial %d failed (%s: %s); the study goes on", trial.number, type(error).__name__, error)

    def write_best(self, study: optuna.Study, sweep_dir: Path, final: bool = False) -> dict[str, Any] | None:
        """<sweep dir>/best.yaml: the best completed trial's parameters, for `yambda-train best=<file>`."""
        import optuna

        completed = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if not completed:
            if final:
                states = {state.name.lower(): sum(t.state == state for t in study.trials) for state in _states()}
                raise SystemExit(f"yambda-train: error: study {study.study_name}: no trial completed ({states}); see "
                                 f"the trials' folders and logs in {sweep_dir}")  # fmt: skip
            return None
        trial = study.best_trial
        best = {
            "study": study.study_name,
            "storage": str(self.storage),
            "model": str(self.config.model.name),
            "objective": self.objective,
            "direction": self.direction,
            "value": float(trial.value),
            "trial": trial.number,
            "params": dict(trial.params),
            "trials": {state.name.lower(): sum(t.state == state for t in study.trials) for state in _states()},
        }
        with atomic_path(sweep_dir / BEST_FILE) as tmp:
            OmegaConf.save(OmegaConf.create(best), tmp)
        if final:
            log.info("best trial %d: %s=%.6g %s -> %s", trial.number, best["objective"], trial.value,
                     trial.params, sweep_dir / BEST_FILE)  # fmt: skip
            self._wandb_summary(best, sweep_dir)
        return best

    def _wandb_summary(self, best: dict[str, Any], sweep_dir: Path) -> None:
        """logger=wandb: one run of job type `study` in the study's group, the best trial in its summary."""
        logger = self.config.get("logger") or {}
        if "WandbLogger" not in str(logger.get("_target_", "")):
            return
        import wandb

        offline = bool(logger.get("offline")) or os.environ.get("WANDB_MODE", "").lower() == "offline"
        run = wandb.init(
            project=logger.get("project"),
            group=best["study"],
            job_type="study",
            name=f"{best['study']}-best",
            dir=str(sweep_dir),
            config={"best_params": best["params"], "objective": best["objective"]},
            mode="offline" if offline else None,
            reinit="finish_previous",
        )
        run.summary.update(
            {"best/trial": best["trial"], f"best/{best['objective']}": best["value"], "best/params": best["params"]}
            | {f"trials/{state}": count for state, count in best["trials"].items()}
        )
        run.finish()


def _states() -> list[Any]:
    import optuna

    states = optuna.trial.TrialState
    return [states.COMPLETE, states.PRUNED, states.FAIL, states.RUNNING]


def _contiguous(trials: list[Any]) -> list[list[Any]]:
    """Asked trials in runs of consecutive numbers: a launch numbers its jobs from one index, and job n is trial n."""
    groups: list[list[Any]] = []
    for trial in sorted(trials, key=lambda t: t.number):
        if groups and groups[-1][-1].number + 1 == trial.number:
            groups[-1].append(trial)
        else:
            groups.append([trial])
    return groups


# --- a trial's side: report the validation curve, be pruned ------------------------------------------------------


class TrialReporter:
    """The validation callback's hook in a trial's run: reports the objective each validation epoch and returns a
    reason to stop when the study's pruner (hydra.sweeper.pruner, kept in the study) says so. Opens the study on
    first use, so that only the process that reports (DDP rank 0) touches the storage."""

    def __init__(self, study: Mapping[str, Any], objective: str) -> None:
        self.name, self.storage, self.number = study["name"], study["storage"], int(study["trial"])
        self.objective = objective
        self._trial: Any = None

    @property
    def trial(self) -> optuna.Trial:
        if self._trial is None:
            import hydra
            import optuna

            storage = open_storage(self.storage)
            loaded = optuna.load_study(study_name=self.name, storage=storage)
            pruner = loaded.user_attrs.get("pruner")
            study = optuna.load_study(
                study_name=self.name, storage=storage, pruner=hydra.utils.instantiate(pruner) if pruner else None
            )
            trial_id = study._storage.get_trial_id_from_study_id_trial_number(study._study_id, self.number)
            self._trial = optuna.Trial(study, trial_id)
        return self._trial

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.trial.params)

    def __call__(self, epoch: int, metrics: dict[str, float]) -> str | None:
        value = float(metrics[self.objective])
        self.trial.report(value, step=epoch)
        if self.trial.should_prune():
            return f"trial {self.number} of study {self.name} pruned at epoch {epoch} ({self.objective}={value:.6g})"
        return None


# --- the tune-then-retrain command -------------------------------------------------------------------------------


def _override_value(overrides: Sequence[str], key: str, default: str) -> str:
    for override in overrides:
        if override.split("=", 1)[0].lstrip("+") == key:
            return override.split("=", 1)[1]
    return default


def _run(command: list[str]) -> None:
    log.info("$ %s", " ".join(command))
    done = subprocess.run(command, check=False)
    if done.returncode != 0:
        raise SystemExit(f"yambda-tune: {' '.join(command[:4])} ... exited {done.returncode}")


def main(argv: list[str] | None = None) -> int:
    """`python -m yambda_dl.tune MODEL [options] [overrides...]`: study -> best.yaml -> final runs -> report."""
    parser = argparse.ArgumentParser(
        prog="yambda-tune",
        description="Tune a model on the validation day with Optuna (hparams_search=<model>_optuna), retrain it with "
        "the best settings in final mode over seeds, and print yambda-report's table beside the paper's.",
        epilog="Example: python -m yambda_dl.tune ials data=yambda_50m trainer=gpu --trials 50 --seeds 3",
    )
    parser.add_argument("model", help="a model with a configs/hparams_search/<model>_optuna.yaml")
    parser.add_argument("overrides", nargs="*", help="yambda-train overrides for both the study and the final runs")
    parser.add_argument("--trials", type=int, help="the study's trial count (default: the search file's n_trials)")
    parser.add_argument("--seeds", type=int, default=DEFAULT_SEEDS, help=f"final runs (default {DEFAULT_SEEDS})")
    parser.add_argument("--first-seed", type=int, default=42, help="seeds first-seed, first-seed+1, ... (default 42)")
    parser.add_argument(
        "--dir",
        type=Path,
        help="the folder of study/ (with best.yaml), final/ and report.md; the best file is also copied to "
        "<dir>/../best/<model>.yaml (default outputs/tuned/<data>-<setup>/<model>)",
    )
    parser.add_argument("--skip-study", action="store_true", help="reuse the folder's best.yaml")
    args = parser.parse_intermixed_args(argv)  # options before, between or after the overrides
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from yambda_dl.train import CONFIG_DIR

    search = Path(CONFIG_DIR) / "hparams_search" / f"{args.model}_optuna.yaml"
    if not search.is_file():
        choices = sorted(p.stem.removesuffix("_optuna") for p in search.parent.glob("*_optuna.yaml"))
        print(f"yambda-tune: error: no {search.name}; valid models: {', '.join(choices)}", file=sys.stderr)
        return 2
    if args.seeds < 1:
        print(f"yambda-tune: error: --seeds {args.seeds}: give 1 or more", file=sys.stderr)
        return 2
    data = _override_value(args.overrides, "data", "synthetic_small")
    setup = _override_value(args.overrides, "protocol", "listen_plus")
    folder = args.dir or Path("outputs") / "tuned" / f"{data}-{setup}" / args.model
    train = [sys.executable, "-m", "yambda_dl.train"]
    if not args.skip_study:  # rerunning the same command resumes a killed study (its journal is in study/)
        trials = [f"hydra.sweeper.n_trials={args.trials}"] if args.trials else []
        _run([*train, f"hparams_search={args.model}_optuna", f"hydra.sweep.dir={folder}/study", *trials,
              *args.overrides])  # fmt: skip
    best = folder / "study" / BEST_FILE
    tuned = set(read_best(best)["params"])
    # beside the other models' best files: experiment=paper_baselines best=<that folder> runs each model tuned
    collected = folder.parent / "best" / f"{args.model}.yaml"
    collected.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(collected) as tmp:
        tmp.write_text(best.read_text())
    # the final runs take the study's overrides but the search's: the mode, the sweeper's keys, and any key the best
    # file sets (a command-line search space such as model.iterations=int(interval(10,60)) narrows the study only)
    finals = [
        o
        for o in args.overrides
        if not o.lstrip("+").startswith(("protocol.mode=", "hydra.sweeper."))
        and o.lstrip("+~").split("=", 1)[0] not in tuned
    ]
    seeds = ",".join(str(args.first_seed + i) for i in range(args.seeds))
    _run([*train, "-m", f"model={args.model}", f"best={best}", f"seed={seeds}", "protocol.mode=final",
          "continue_on_refusal=true", f"hydra.sweep.dir={folder}/final", *finals])  # fmt: skip
    report = subprocess.run(
        [sys.executable, "-m", "yambda_dl.report", str(folder / "final")], capture_output=True, text=True, check=False
    )
    if report.returncode != 0:
        print(report.stderr, file=sys.stderr)
        return report.returncode
    with atomic_path(folder / "report.md") as tmp:
        tmp.write_text(report.stdout)
    print(report.stdout, end="")
    print(f"study, best settings ({best}, also {collected}), final runs and report.md in {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
