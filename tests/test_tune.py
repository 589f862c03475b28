"""Optuna studies through yambda-train (hydra/sweeper=yambda_optuna), best files, and tune-then-retrain, on tiny
hand-written data: real Hydra sweeps in subprocesses, real Optuna JournalStorage files, real trials."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from omegaconf import DictConfig, OmegaConf

from yambda_dl.config_check import ConfigError
from yambda_dl.data.layout import DatasetLayout
from yambda_dl.eval.callback import Pruned
from yambda_dl.tune import format_value, open_storage, search_space
from yambda_dl.utils.rundir import read_run

from .conftest import TEST_START, listen, write_flat
from .test_train import compose_cfg, train
from .test_train import data_overrides as hand_data

VALIDATION_DAY = 25_830_000  # inside the tune window (the day before the test day's gap)


@pytest.fixture
def tune_layout(tmp_path: Path) -> DatasetLayout:
    """Six users over five items (raw ids 10..50), each with one target on the validation day and one on the test day;
    item 50 is played late in train, so DecayPop's horizon changes the ranking."""
    layout = DatasetLayout(tmp_path / "yambda", "hand")
    rows = [listen(u, 1_000_000 + 5 * i, 10 * (i + 1)) for u in range(1, 7) for i in range(u % 4 + 2)]
    rows += [listen(u, VALIDATION_DAY - 50_000 + 5 * u, 50) for u in (5, 6)]
    rows += [listen(u, VALIDATION_DAY, 10 * (u % 5 + 1)) for u in range(1, 7)]
    rows += [listen(u, TEST_START + 100, 10 * ((u + 2) % 5 + 1)) for u in range(1, 7)]  # the test day (final mode)
    write_flat(layout, "listens", rows)
    return layout


def data_overrides(layout: DatasetLayout) -> list[str]:
    return [*hand_data(layout), "threads=1"]


def sweep(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "yambda_dl.train", *args], cwd=cwd, capture_output=True, text=True, timeout=600
    )


def load(storage: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=open_storage(str(storage)))


# --- the search space --------------------------------------------------------------------------------------------


def test_search_space_from_the_file_and_the_command_line():
    params = {"model.lr": "tag(log, interval(1e-5, 0.1))", "model.iterations": "int(interval(10, 300))"}
    space, fixed = search_space(params, ["data=yambda_50m", "++model.hours=choice(1,2.5)", "model.iterations=30"])
    assert set(space) == {"model.lr", "++model.hours"}  # the command line's fixed value wins over the file's range
    assert isinstance(space["model.lr"], optuna.distributions.FloatDistribution) and space["model.lr"].log
    assert space["++model.hours"].choices == (1, 2.5)
    assert fixed == ["data=yambda_50m", "model.iterations=30"]
    ints, _ = search_space({"model.k": "range(10, 300, 10)", "model.n": "int(interval(10, 300))"}, [])
    assert (ints["model.k"].low, ints["model.k"].high, ints["model.k"].step) == (10, 290, 10)  # Hydra's range: 300 out
    assert isinstance(ints["model.n"], optuna.distributions.IntDistribution) and ints["model.n"].high == 300
    with pytest.raises(ConfigError, match=r"hydra.sweeper.params.model.lr=0.1: not a search space"):
        search_space({"model.lr": "0.1"}, [])


@pytest.mark.parametrize("value", [0.000123, 3, True, None, "bce", "a b", "x,y"])
def test_a_sampled_value_survives_the_override_grammar(value):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    (override,) = OverridesParser.create().parse_overrides([f"model.x={format_value(value)}"])
    assert override.value() == value and not override.is_sweep_override()


# --- a trial's run: reporting, pruning, best files ------------------------------------------------------------------


def new_trial(storage: Path, pruner: dict | None) -> tuple[optuna.Study, optuna.Trial]:
    study = optuna.create_study(study_name="s", storage=open_storage(str(storage)), direction="maximize")
    study.set_user_attr("pruner", pruner)
    return study, study.ask({"model.regularization": optuna.distributions.FloatDistribution(1e-3, 1.0, log=True)})


def test_a_trial_reports_its_validation_curve_and_the_pruner_stops_it(tune_layout, tmp_path):
    storage = tmp_path / "study.journal"
    pruner = {"_target_": "optuna.pruners.ThresholdPruner", "lower": 2.0, "n_warmup_steps": 1}  # NDCG < 2: stop
    _, trial = new_trial(storage, pruner)
    out = tmp_path / "run"
    overrides = ["model=ials", "model.iterations=5", "protocol.mode=tune", "logger=none", "callbacks=none"]
    study_keys = ["study.name=s", f"study.storage={storage}", f"study.trial={trial.number}"]
    cfg = compose_cfg([*overrides, *study_keys, *data_overrides(tune_layout), f"hydra.run.dir={out}"], out)
    with pytest.raises(Pruned, match="pruned at epoch 1"):
        train(cfg)
    reported = load(storage, "s").trials[0].intermediate_values
    assert sorted(reported) == [0, 1] and all(0 <= v <= 1 for v in reported.values())  # epochs 0, 1; then pruned
    assert json.loads((out / "run.json").read_text())["status"] == "failed"

    # no pruner: the trial reports every epoch and the run's result is its objective
    _, trial = new_trial(tmp_path / "other.journal", None)
    out = tmp_path / "run2"
    study_keys = ["study.name=s", f"study.storage={tmp_path / 'other.journal'}", f"study.trial={trial.number}"]
    cfg = compose_cfg([*overrides, *study_keys, *data_overrides(tune_layout), f"hydra.run.dir={out}"], out)
    result = train(cfg)
    reported = load(tmp_path / "other.journal", "s").trials[0].intermediate_values
    assert sorted(reported) == [0, 1, 2, 3, 4]
    assert reported[4] == pytest.approx(result["metrics"]["ndcg@5"]) == result["objective"]["value"]


def test_a_trial_needs_its_study(tune_layout, tmp_path):
    out = tmp_path / "run"
    cfg = compose_cfg(["model=ials", "protocol.mode=tune", "study.trial=3", *data_overrides(tune_layout)], out)
    with pytest.raises(ConfigError, match=r"study.trial=3: a trial needs study.name and study.storage"):
        train(cfg)


def test_an_objective_outside_the_metrics_is_refused(tune_layout, tmp_path):
    cfg = compose_cfg(["objective=ndcg@100", *data_overrides(tune_layout)], tmp_path / "run")
    with pytest.raises(ConfigError, match=r"objective='ndcg@100': not a metric of this run; valid choices: ndcg@1,"):
        train(cfg)


def write_best(path: Path, model: str, params: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(OmegaConf.create({"model": model, "value": 0.5, "params": params}), path)
    return path


def test_a_best_file_sets_the_runs_settings(tune_layout, tmp_path):
    best = write_best(tmp_path / "best" / "decaypop.yaml", "decaypop", {"model.hours": 2.5})
    out = tmp_path / "run"
    train(compose_cfg(["model=decaypop", f"best={best}", *data_overrides(tune_layout)], out))
    config = OmegaConf.load(out / "config.yaml")
    assert config.model.hours == 2.5 and config.best == str(best)

    # a folder of best files (experiment=paper_baselines best=<folder>): each model takes its own, if it has one
    out = tmp_path / "from_folder"
    train(compose_cfg(["model=decaypop", f"best={best.parent}", *data_overrides(tune_layout)], out))
    assert OmegaConf.load(out / "config.yaml").model.hours == 2.5
    out = tmp_path / "untuned"
    train(compose_cfg(["model=mostpop", f"best={best.parent}", *data_overrides(tune_layout)], out))
    assert (out / "metrics.json").is_file()

    with pytest.raises(ConfigError, match=r"holds decaypop's settings; run it with model=decaypop"):
        train(compose_cfg(["model=itemknn", f"best={best}", *data_overrides(tune_layout)], tmp_path / "x"))
    wrong = write_best(tmp_path / "wrong.yaml", "decaypop", {"model.nope": 1})
    with pytest.raises(ConfigError, match=r"model.nope is not a key of this run's config"):
        train(compose_cfg(["model=decaypop", f"best={wrong}", *data_overrides(tune_layout)], tmp_path / "y"))


# --- sweeps ------------------------------------------------------------------------------------------------------


def study_args(layout: DatasetLayout, folder: Path, trials: int, *extra: str) -> list[str]:
    return [
        "hparams_search=decaypop_optuna",
        f"hydra.sweep.dir={folder}",
        f"hydra.sweeper.n_trials={trials}",
        *data_overrides(layout),
        *extra,
    ]


STUDY = "decaypop-hand-listen_plus"  # <model>-<data>-<setup>


def check_wandb(folder: Path, best: DictConfig) -> None:
    """Each trial's W&B run is in the study's group with its trial number and parameters in its config; one run of
    job type "study" in the group has the best trial in its summary.

    An offline run is one binary record file (wandb-core): its run record holds the group and job type as strings,
    its summary record the keys and their JSON values; the config a run logs is also in its debug.log."""
    trials = sorted(folder.glob("*-decaypop-*/wandb/offline-run-*/run-*.wandb"))
    assert len(trials) == best.trials.complete
    for number, path in enumerate(trials):
        record = path.read_bytes()
        assert STUDY.encode() in record and b"trial" in record
        log = (path.parent / "logs" / "debug.log").read_text()
        assert f"'trial': {{'number': {number}, 'params': {{'model.hours': " in log
        assert f"'study': {{'name': '{STUDY}'" in log
    (summary,) = (folder / "wandb").glob("offline-run-*/run-*.wandb")
    record = summary.read_bytes()
    assert STUDY.encode() in record and b"study" in record
    for key, value in (("best/trial", best.trial), ("best/ndcg@5", best.value)):
        assert key.encode() in record and json.dumps(value).encode() in record


@pytest.mark.slow
def test_a_study_runs_its_trials_on_one_cached_split_and_reproduces(tune_layout, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    done = sweep(study_args(tune_layout, tmp_path / "a", 3, "logger=wandb"), tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    study = load(tmp_path / "a" / "study.journal", STUDY)
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3
    best = OmegaConf.to_container(OmegaConf.load(tmp_path / "a" / "best.yaml"))
    assert best["params"] == study.best_trial.params and best["value"] == study.best_value
    assert best["model"] == "decaypop" and best["objective"] == "ndcg@5" and best["trial"] == study.best_trial.number
    # each trial is a run folder, named by its trial number, whose result is the value the study recorded
    for trial in study.trials:
        (folder,) = (tmp_path / "a").glob(f"{trial.number}-decaypop-*")
        metrics = read_run(folder)["metrics"]
        assert metrics["objective"]["value"] == trial.value
        assert OmegaConf.load(folder / "config.yaml").model.hours == trial.params["model.hours"]
    # the split is built once (its summary line is logged by the run that builds it) and every trial reads it
    logs = "".join(p.read_text() for p in (tmp_path / "a").rglob("train.log"))
    assert logs.count("split listen_plus/tune:") == 1
    assert len(list((tune_layout.root / ".cache" / "splits").iterdir())) == 1

    check_wandb(tmp_path / "a", OmegaConf.load(tmp_path / "a" / "best.yaml"))

    # the same seed: the same trials
    done = sweep(study_args(tune_layout, tmp_path / "b", 3, "logger=none"), tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    again = load(tmp_path / "b" / "study.journal", STUDY)
    assert [t.params for t in again.trials] == [t.params for t in study.trials]


def journal_states(path: Path) -> list[int]:
    """Trial states set so far in a JournalStorage file (read as its JSON lines, without locking it)."""
    if not path.exists():
        return []
    states = []
    for line in path.read_text().splitlines():
        try:
            op = json.loads(line)
        except ValueError:  # a line being written
            continue
        if op.get("op_code") == 6:  # SET_TRIAL_STATE_VALUES
            states.append(op["state"])
    return states


@pytest.mark.slow
def test_a_killed_sweep_resumes_and_keeps_its_finished_trials(tune_layout, tmp_path):
    args = [sys.executable, "-m", "yambda_dl.train", *study_args(tune_layout, tmp_path / "s", 6)]
    journal = tmp_path / "s" / "study.journal"
    worker = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while journal_states(journal).count(1) < 2 and worker.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)  # 1 = TrialState.COMPLETE
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait()
    before = {t.number: t.value for t in load(journal, STUDY).trials if t.state.name == "COMPLETE"}
    assert 2 <= len(before) < 6, "the sweep was not killed part-way"

    done = sweep(args[3:], tmp_path)  # the same command
    assert done.returncode == 0, done.stderr[-3000:]
    trials = load(journal, STUDY).trials
    kept = {t.number: t.value for t in trials if t.number in before}
    assert kept == before  # the finished trials are kept, not run again
    counted = [t for t in trials if not t.user_attrs.get("stale")]
    assert sum(t.state.name == "COMPLETE" for t in counted) == 6
    assert all(t.state.name == "FAIL" for t in trials if t.user_attrs.get("stale"))  # the one it was running, if any
    assert f"{len(before)} of 6 trials done" in done.stdout + done.stderr


@pytest.mark.slow
def test_a_trial_the_model_refuses_is_failed_and_the_study_goes_on(tune_layout, tmp_path):
    # ItemKNN's pruned neighbour search refuses a block that cannot fit anywhere (its up-front memory check)
    refusing = 1 << 50
    args = [
        "hparams_search=itemknn_optuna",
        f"hydra.sweep.dir={tmp_path}/s",
        "hydra.sweeper.n_trials=4",
        "model.neighbors=2",
        f"model.neighbor_block_nonzeros=choice({refusing},1024)",
        *data_overrides(tune_layout),
    ]
    done = sweep(args, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    trials = load(tmp_path / "s" / "study.journal", "itemknn-hand-listen_plus").trials
    states = {t.state.name for t in trials}
    assert len(trials) == 4 and states == {"COMPLETE", "FAIL"}, [(t.state, t.params) for t in trials]
    for trial in trials:
        refused = trial.params["model.neighbor_block_nonzeros"] == refusing
        assert (trial.state.name == "FAIL") is refused
        assert ("refused" in trial.user_attrs.get("error", "")) is refused


@pytest.mark.slow
def test_parallel_trials_run_as_separate_processes_sharing_the_study(tune_layout, tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    args = study_args(tune_layout, tmp_path / "s", 2, "hydra/launcher=submitit_local", "hydra.sweeper.n_jobs=2")
    done = sweep([*args, "hydra.launcher.timeout_min=5"], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert [t.state.name for t in load(tmp_path / "s" / "study.journal", STUDY).trials] == ["COMPLETE"] * 2
    pids = {json.loads(p.read_text())["pid"] for p in (tmp_path / "s").glob("*/run.json")}
    assert len(pids) == 2  # one process per trial


# --- tune, then retrain ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_tune_then_retrain_reports_the_seeds_mean_and_std(tune_layout, tmp_path):
    folder = tmp_path / "tuned"
    # a search space narrowed on the command line applies to the study only (the final runs take the best value)
    narrowed = "model.hours=tag(log, interval(1.0, 4.0))"
    args = ["decaypop", "--trials", "3", "--seeds", "2", "--dir", str(folder), narrowed, *data_overrides(tune_layout)]
    done = subprocess.run(
        [sys.executable, "-m", "yambda_dl.tune", *args], cwd=tmp_path, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    best = OmegaConf.load(folder / "study" / "best.yaml")
    assert 1.0 <= best.params["model.hours"] <= 4.0
    finals = sorted((folder / "final").glob("*/metrics.json"))
    assert len(finals) == 2
    for path in finals:
        assert json.loads(path.read_text())["mode"] == "final"
        assert OmegaConf.load(path.parent / "config.yaml").model.hours == best.params["model.hours"]
    assert (tmp_path / "best" / "decaypop.yaml").read_text() == (folder / "study" / "best.yaml").read_text()
    report = (folder / "report.md").read_text()
    assert "· final" in report and "(mean ± std of 2 runs)" in report and report in done.stdout


def test_the_slurm_launcher_composes_with_one_task_per_gpu():
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from yambda_dl.train import CONFIG_DIR, register_sweeper

    register_sweeper()
    GlobalHydra.instance().clear()
    overrides = ["hydra/launcher=slurm", "hparams_search=ials_optuna", "hydra.launcher.gpus_per_node=4"]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert launcher.gpus_per_node == 4 and launcher.tasks_per_node == 1 and launcher.timeout_min > 0
    assert cfg.hydra.sweeper._target_.endswith("YambdaOptunaSweeper")


def test_tune_then_retrain_refuses_a_model_without_a_search_space(capsys):
    from yambda_dl.tune import main

    assert main(["random"]) == 2
    assert "no random_optuna.yaml; valid models: bpr, decaypop, ials, itemknn, sansa, sasrec" in capsys.readouterr().err
