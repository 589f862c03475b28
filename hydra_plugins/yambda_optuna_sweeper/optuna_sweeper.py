# ruff: noqa: UP006, UP035, UP045  (typing's Optional/Dict/List: OmegaConf 2.3 reads them, not `X | None`)
"""The `yambda_optuna` sweeper: its structured config (hydra/sweeper=yambda_optuna) and the Sweeper plugin class.

No `from __future__ import annotations` here: Hydra's plugin scan executes this module without an entry in
sys.modules, where dataclasses cannot resolve string annotations.
"""

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


@dataclass
class YambdaOptunaSweeperConf:
    """hydra.sweeper.*: the Hydra Optuna plugin's keys (n_trials, n_jobs, direction, storage, study_name, sampler,
    params) plus `pruner`. Field types are Optional[...] (not `X | None`): OmegaConf reads them on Python 3.10."""

    _target_: str = "hydra_plugins.yambda_optuna_sweeper.optuna_sweeper.YambdaOptunaSweeper"
    _recursive_: bool = False  # sampler and pruner stay configs: built per trial, and in each trial's process
    # trials the study runs in all (a resumed or shared study counts its finished trials)
    n_trials: int = 20
    # trials launched together: separate processes with a parallel launcher (submitit_local, slurm)
    n_jobs: int = 1
    direction: str = "maximize"
    # a file path (Optuna's JournalStorage; processes share it) or a URL (sqlite:///study.db); null = in memory
    storage: Optional[str] = "${hydra.sweep.dir}/study.journal"
    # null = <model>-<data>-<setup>
    study_name: Optional[str] = None
    # instantiated per trial with seed + the study's trial count, so a sweep reproduces from its seed
    sampler: Any = field(default_factory=lambda: {"_target_": "optuna.samplers.TPESampler", "seed": 0})
    # e.g. {_target_: optuna.pruners.MedianPruner, n_startup_trials: 5}; trainable models report every validation
    pruner: Any = None
    # the search space: key -> interval(a,b) | int(interval(a,b)) | tag(log, ...) | range(a,b,step) | choice(...)
    params: Optional[Dict[str, str]] = None


ConfigStore.instance().store(
    group="hydra/sweeper", name="yambda_optuna", node=YambdaOptunaSweeperConf, provider="yambda_dl"
)


class YambdaOptunaSweeper(Sweeper):
    """Hydra's side of the sweep: builds yambda_dl.tune.StudySweep from the config and hands it the work."""

    def __init__(self, **kwargs: Any) -> None:
        from yambda_dl.tune import StudySweep

        self.sweep_impl = StudySweep(**kwargs)

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.sweep_impl.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: List[str]) -> Any:
        return self.sweep_impl.sweep(arguments)
