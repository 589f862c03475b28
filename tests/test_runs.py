"""A run's lifecycle: it owns its folder, checks its config before work, resumes, and logs one W&B run per job."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from yambda_dl.config_check import ConfigError
from yambda_dl.data.layout import DatasetLayout
from yambda_dl.train import train
from yambda_dl.utils import progress
from yambda_dl.utils.rundir import RunFolder, RunFolderBusy, StaleRun, new_run_id, read_run

from .conftest import listen, write_flat
from .test_train import compose_cfg, hand_overrides

SMALL_SASREC = [
    "model=sasrec",
    "model.d_model=8",
    "model.backbone.num_heads=1",
    "model.backbone.ffn_dim=16",
    "model.max_len=8",
    "model.batch_size=2",  # 6 users: three steps per epoch
    "model.shuffle_buffer=8",
]


def cli(args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: int = 600) -> subprocess.Popen:
    """Start `yambda-train` in a subprocess (not waited for)."""
    return subprocess.Popen(
        [sys.executable, "-m", "yambda_dl.train", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "WANDB_MODE": "offline", **(env or {})},
    )


def finish(process: subprocess.Popen, timeout: int = 600) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


def no_run_dir(overrides: list[str]) -> list[str]:
    return [o for o in overrides if not o.startswith("hydra.run")]


# --- a run owns its folder ------------------------------------------------------------------------------------------


def test_run_folder_files_belong_to_one_run(popularity_layout, tmp_path):
    out = tmp_path / "run"
    train(compose_cfg(["model=mostpop", "save_recommendations=true", *hand_overrides(popularity_layout, out)], out))
    first = read_run(out)
    assert first["run"]["status"] == "finished"
    run_ids = {first[name]["run_id"] for name in ("metrics", "config", "manifest", "run")}
    assert run_ids == {first["run"]["run_id"]}
    assert (out / "recommendations.parquet").exists()

    # another model into the same folder: nothing of the first run stays (it wrote recommendations, this one does not)
    train(compose_cfg(["model=random", *hand_overrides(popularity_layout, out)], out))
    second = read_run(out)
    assert second["metrics"]["model"] == "random" and second["run"]["run_id"] != first["run"]["run_id"]
    assert not (out / "recommendations.parquet").exists()


def test_a_failed_run_is_marked_and_never_read(popularity_layout, tmp_path):
    out = tmp_path / "run"
    train(compose_cfg(["model=mostpop", *hand_overrides(popularity_layout, out)], out))
    refusing = ["model=itemknn", "model.neighbors=2", f"model.neighbor_block_nonzeros={1 << 50}"]
    with pytest.raises(MemoryError):
        train(compose_cfg([*refusing, *hand_overrides(popularity_layout, out)], out))
    assert json.loads((out / "run.json").read_text())["status"] == "failed"
    assert not (out / "metrics.json").exists()  # the previous run's metrics went when this run claimed the folder
    with pytest.raises(StaleRun, match="did not end"):
        read_run(out)


def test_a_refused_run_is_recorded_as_refused(popularity_layout, tmp_path):
    out = tmp_path / "run"
    refusing = ["model=itemknn", "model.neighbors=2", f"model.neighbor_block_nonzeros={1 << 50}"]
    train(compose_cfg([*refusing, "continue_on_refusal=true", *hand_overrides(popularity_layout, out)], out))
    run = read_run(out)
    assert run["run"]["status"] == "refused" and "neighbour lists" in run["metrics"]["refused"]


def test_a_folder_held_by_a_live_run_is_refused(popularity_layout, tmp_path):
    out = tmp_path / "run"
    live = RunFolder(out, new_run_id())
    live.claim()
    try:
        with pytest.raises(RunFolderBusy, match="in use by another live run"):
            train(compose_cfg(["model=mostpop", *hand_overrides(popularity_layout, out)], out))
        assert json.loads((out / "run.json").read_text())["run_id"] == live.run_id  # untouched
    finally:
        live.fail()


def test_a_folder_with_files_no_run_writes_is_refused_and_left_alone(popularity_layout, tmp_path):
    out = tmp_path / "notes"
    out.mkdir()
    (out / "thesis.tex").write_text("months of work")
    (out / "metrics.json").write_text("{}")  # a run's name among them does not make it a run folder
    with pytest.raises(RunFolderBusy, match=r"holds files that no run writes \(thesis.tex\)"):
        train(compose_cfg(["model=mostpop", *hand_overrides(popularity_layout, out)], out))
    assert (out / "thesis.tex").read_text() == "months of work" and (out / "metrics.json").exists()


def test_stale_checkpoints_of_a_killed_run_are_cleared_by_a_fresh_run(popularity_layout, tmp_path):
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "last.ckpt").write_text("a killed run's weights")
    (out / "metrics.json").write_text('{"run_id": "old"}')
    (out / "run.json").write_text(json.dumps({"run_id": "old", "status": "running", "pid": 2**22 + 1, "host": "x"}))
    overrides = [*SMALL_SASREC, "model.epochs=2", *hand_overrides(popularity_layout, out)]
    result = train(compose_cfg(overrides, out))
    assert sorted(p.name for p in (out / "checkpoints").iterdir() if p.name.startswith("last")) == ["last.ckpt"]
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["epoch"] == 1  # this run's second epoch (0-based), not the stale file
    assert read_run(out)["metrics"]["run_id"] == result["run_id"]


def test_callbacks_group_writes_checkpoints_only_when_configured(popularity_layout, tmp_path):
    with_ckpt, without = tmp_path / "default", tmp_path / "none"
    train(compose_cfg(["model=ials", "model.iterations=2", *hand_overrides(popularity_layout, with_ckpt)], with_ckpt))
    assert (with_ckpt / "checkpoints" / "last.ckpt").is_file()
    overrides = ["model=ials", "model.iterations=2", "callbacks=none", *hand_overrides(popularity_layout, without)]
    train(compose_cfg(overrides, without))
    assert not (without / "checkpoints").exists() and not (without / "lightning_logs").exists()


def test_ckpt_path_last_without_a_checkpoint_is_an_error(popularity_layout, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match=r"model.ckpt_path=last: no checkpoint in .*checkpoints"):
        train(compose_cfg([*SMALL_SASREC, "model.ckpt_path=last", *hand_overrides(popularity_layout, out)], out))


# --- errors before work --------------------------------------------------------------------------------------------

BAD_CONFIGS = [
    (["ks=[]"], r"ks=\[\]: must be a non-empty list"),
    (["ks=[0,10]"], r"ks=\[0, 10\]: 0 is not an integer >= 1"),
    (["ks=[-5,1]"], r"-5 is not an integer >= 1"),
    (["ks=[2.5]"], r"2.5 is not an integer >= 1"),
    (["eval.backend=nope"], r"eval.backend='nope': valid choices: torch, faiss"),
    (["eval.batch_users=0"], r"eval.batch_users=0: must be an integer >= 1"),
    (["eval.user_tile=0"], r"eval.user_tile=0: must be an integer >= 1"),
    (["eval.item_tile=-1"], r"eval.item_tile=-1: must be an integer >= 1"),
    (["eval.every_n_epochs=0"], r"eval.every_n_epochs=0"),
    (["trainer.max_epochs=0"], r"trainer.max_epochs=0: must be an integer >= 1 or null"),
    (["trainer.max_epochs=-1"], r"trainer.max_epochs=-1: must be an integer >= 1 or null"),
    (["threads=0"], r"threads=0: must be an integer >= 1 or null"),
    (["progress=maybe"], r"progress='maybe': must be true or false"),
    (["protocol.mode=nope"], r"protocol: unknown split mode 'nope'; valid choices: final, tune"),
    (["protocol.setup=nope"], r"protocol: unknown split setup 'nope'"),
    (["protocol.day=0"], r"protocol: day=0"),
    (["data.format=csv"], r"data.format='csv': valid choices: flat, sequential"),
    (["++model.nope=1"], r"model.nope is not a setting of model 'ials' \(its settings: .*alpha"),
    (["callbacks=tune"], r"callbacks.early_stopping.monitor='val/ndcg@100' is never logged \(validation metrics"),
    (
        ["callbacks=tune", "protocol.mode=tune", "callbacks.early_stopping.monitor=val/nope"],
        r"callbacks.early_stopping.monitor='val/nope' is never logged; valid choices: val/ndcg@1",
    ),
    (["+trainer.callbacks=[{_target_: x}]"], r"trainer.callbacks is not read: add callbacks through the callbacks"),
    (["callbacks.model_checkpoint.monitor=nope"], r"callbacks.model_checkpoint.monitor='nope' is never logged"),
    (
        ["+callbacks.mine._target_=lightning.pytorch.callbacks.Nope"],
        r"callbacks.mine._target_=lightning.pytorch.callbacks.Nope: cannot be imported",
    ),
]


@pytest.mark.parametrize(("overrides", "message"), BAD_CONFIGS, ids=[" ".join(o) for o, _ in BAD_CONFIGS])
def test_bad_config_is_refused_before_any_work(popularity_layout, tmp_path, overrides, message):
    out = tmp_path / "run"
    cfg = compose_cfg(["model=ials", *hand_overrides(popularity_layout, out), *overrides], out)
    with pytest.raises(ConfigError, match=message) as error:
        train(cfg)
    assert "\n" not in str(error.value)
    assert not (popularity_layout.root / ".cache").exists(), "the split ran before the config was checked"
    assert not (out / "run.json").exists(), "the run claimed its folder before the config was checked"


@pytest.mark.parametrize(
    "monitor",
    [
        ["callbacks.early_stopping.monitor=val/ndcg@5"],
        ["callbacks.early_stopping.monitor=val/nope", "callbacks.early_stopping.strict=false"],
    ],
    ids=["known", "unknown-not-strict"],
)
def test_early_stopping_from_the_callbacks_group_runs_in_tune_mode(tmp_path, monitor):
    layout = DatasetLayout(tmp_path / "yambda", "hand")
    rows = [listen(u, 1_000_000 + 5 * i, 10 * (i + 1)) for u in range(1, 7) for i in range(u % 4 + 2)]
    rows += [listen(u, 25_830_000, 10 * (u % 5 + 1)) for u in range(1, 7)]  # inside the validation day
    write_flat(layout, "listens", rows)
    out = tmp_path / "run"
    overrides = ["model=ials", "model.iterations=3", "protocol.mode=tune", "callbacks=tune", *monitor]
    result = train(compose_cfg([*overrides, *hand_overrides(layout, out)], out))
    assert read_run(out)["run"]["status"] == "finished" and result["metrics"]["ndcg@5"] >= 0.0
    assert (out / "checkpoints" / "last.ckpt").is_file()


def test_k_larger_than_the_train_items_is_refused_after_the_split_with_the_folder_marked(popularity_layout, tmp_path):
    out = tmp_path / "run"
    overrides = [o for o in hand_overrides(popularity_layout, out) if not o.startswith("ks=")]
    with pytest.raises(ConfigError, match="larger than the 5 candidate"):
        train(compose_cfg(["model=mostpop", *overrides], out))
    assert json.loads((out / "run.json").read_text())["status"] == "failed"


def test_threads_and_progress_keys_are_applied(popularity_layout, tmp_path):
    out = tmp_path / "run"
    before = torch.get_num_threads()
    try:
        overrides = ["model=mostpop", "threads=1", "progress=false", *hand_overrides(popularity_layout, out)]
        train(compose_cfg(overrides, out))
        assert torch.get_num_threads() == 1 and not progress.enabled()
    finally:
        torch.set_num_threads(before)
        progress.set_enabled(True)


def test_a_missing_optional_extra_is_a_refusal_in_a_sweep(popularity_layout, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "sansa", None)  # `import sansa` fails as it does without the extra
    out = tmp_path / "run"
    train(compose_cfg(["model=sansa", "continue_on_refusal=true", *hand_overrides(popularity_layout, out)], out))
    run = read_run(out)
    assert run["run"]["status"] == "refused" and "sansa" in run["metrics"]["refused"].lower()


# --- the command line ----------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_config_error_is_one_line_and_exit_status_2(popularity_layout, tmp_path):
    args = ["model=ials", *hand_overrides(popularity_layout, tmp_path / "run"), "ks=[0,10]"]  # last: it wins
    code, _, err = finish(cli(args, tmp_path))
    assert code == 2
    assert "Traceback" not in err and "HYDRA_FULL_ERROR" not in err
    expected = "yambda-train: error: ks=[0, 10]: 0 is not an integer >= 1; e.g. ks=[10,50,100]"
    assert err.strip().splitlines()[-1] == expected


@pytest.mark.slow
def test_a_cli_rerun_into_a_folder_keeps_only_its_own_files_and_log(popularity_layout, tmp_path):
    out = tmp_path / "run"
    for model in ("mostpop", "random"):
        code, _, err = finish(cli([f"model={model}", *hand_overrides(popularity_layout, out)], tmp_path))
        assert code == 0, err[-3000:]
    run = read_run(out)
    assert run["metrics"]["model"] == "random"
    log = (out / "train.log").read_text()
    assert log.count("] - run ") == 1 and f"run {run['run']['run_id']}" in log  # the first run's log went with it
    assert "model=random" in (out / ".hydra" / "overrides.yaml").read_text()  # Hydra's record of this run is kept


@pytest.mark.slow
def test_two_runs_started_in_the_same_second_get_their_own_folders(popularity_layout, tmp_path):
    args = ["model=mostpop", *no_run_dir(hand_overrides(popularity_layout, tmp_path))]
    runs = [cli(args, tmp_path) for _ in range(2)]
    sweeps = [cli(["-m", "model=random,mostpop", *args[1:]], tmp_path) for _ in range(2)]
    for process in runs + sweeps:
        code, out, err = finish(process)
        assert code == 0, err[-3000:]
        assert "💡 Tip" not in out + err and "GPU available" not in out + err  # Lightning's noise is gone
    folders = sorted(p.parent for p in (tmp_path / "outputs" / "runs").rglob("run.json"))
    assert len(folders) == 2 and len({read_run(f)["run"]["run_id"] for f in folders}) == 2
    sweep_dirs = sorted((tmp_path / "outputs" / "multiruns").iterdir())
    assert len(sweep_dirs) == 2
    for sweep in sweep_dirs:
        assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0-random", "1-mostpop"]
        for job in ("0-random", "1-mostpop"):
            run = read_run(sweep / job)
            assert run["run"]["run_id"].startswith(sweep.name) and run["metrics"]["model"] == job[2:]
            # the library logs through logging, so Hydra's job log has it
            assert f"run {run['run']['run_id']}" in (sweep / job / "train.log").read_text()


@pytest.mark.slow
def test_a_sweep_over_models_takes_model_specific_overrides_as_written(popularity_layout, tmp_path):
    args = [*no_run_dir(hand_overrides(popularity_layout, tmp_path)), f"hydra.sweep.dir={tmp_path}/sweep"]
    sweep = ["-m", "model=ials,bpr", "model.iterations=3", "model.regularization=0.1,1"]
    code, _, err = finish(cli([*sweep, *args], tmp_path))
    assert code == 0, err[-3000:]
    jobs = sorted(p.name for p in (tmp_path / "sweep").iterdir() if p.is_dir())
    assert jobs == [
        "0-ials-model.regularization=0.1",
        "1-ials-model.regularization=1",
        "2-bpr-model.regularization=0.1",
        "3-bpr-model.regularization=1",
    ]
    for job in jobs:
        run = read_run(tmp_path / "sweep" / job)
        assert run["config"]["model"]["iterations"] == 3 and run["config"]["model"]["name"] == job.split("-")[1]

    # a model that has no such key: one line that says what to do instead
    code, _, err = finish(cli(["-m", "model=mostpop,ials", "model.iterations=3", *args], tmp_path))
    assert code == 2 and "Traceback" not in err
    assert "model.iterations is not a setting of model 'mostpop'" in err.strip().splitlines()[-1]


@pytest.mark.slow
def test_a_wandb_sweep_logs_one_run_per_job(popularity_layout, tmp_path):
    args = [*no_run_dir(hand_overrides(popularity_layout, tmp_path)), f"hydra.sweep.dir={tmp_path}/sweep"]
    code, _, err = finish(cli(["-m", "model=random,mostpop,decaypop", "logger=wandb", *args], tmp_path))
    assert code == 0, err[-3000:]
    jobs = {
        job: json.loads((tmp_path / "sweep" / job / "metrics.json").read_text())
        for job in ("0-random", "1-mostpop", "2-decaypop")
    }
    run_ids = {metrics["run_id"].encode() for metrics in jobs.values()}
    assert len(run_ids) == 3
    for job, metrics in jobs.items():
        # exactly one W&B run per job, in the job's folder; an offline run keeps its records in one binary file
        (record,) = (tmp_path / "sweep" / job / "wandb").glob("offline-run-*/run-*.wandb")
        data = record.read_bytes()
        own = metrics["run_id"].encode()
        assert own in data and not (run_ids - {own}) & {r for r in run_ids if r in data}  # its config, no other's
        assert f'"name": "{job[2:]}"'.encode() in data or f"{job[2:]}-hand".encode() in data  # named by the job
        value = json.dumps(metrics["metrics"]["ndcg@5"]).encode()
        assert b"test/ndcg@5" in data and value in data  # its own metrics
        assert b"run-" + own in data and b"metrics.json" in data and b"config.yaml" in data  # the artifact


def test_wandb_without_a_login_falls_back_to_offline(popularity_layout, tmp_path, monkeypatch, caplog):
    for name in ("WANDB_MODE", "WANDB_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.netrc: no login
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "home" / ".config" / "wandb"))
    out = tmp_path / "run"
    with caplog.at_level("WARNING", logger="yambda_dl.train"):
        train(compose_cfg(["model=mostpop", "logger=wandb", *hand_overrides(popularity_layout, out)], out))
    assert "logging offline instead" in caplog.text
    assert list((out / "wandb").glob("offline-run-*"))
    assert read_run(out)["run"]["status"] == "finished"


# --- resume ---------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_killed_sasrec_run_resumes_to_the_metrics_of_an_uninterrupted_run(popularity_layout, tmp_path):
    args = [*SMALL_SASREC, "model.epochs=40", "progress=false", "logger=none"]
    args += no_run_dir(hand_overrides(popularity_layout, tmp_path))
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    reference = cli([*args, f"hydra.run.dir={whole}"], tmp_path)

    process = cli([*args, f"hydra.run.dir={killed}"], tmp_path)
    deadline = time.monotonic() + 300
    while not (killed / "checkpoints" / "last.ckpt").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL
    assert json.loads((killed / "run.json").read_text())["status"] == "running"  # what a kill leaves
    epoch = torch.load(killed / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["epoch"]
    assert epoch < 39, "the run finished before it was killed: raise model.epochs"

    code, out, err = finish(cli([*args, f"hydra.run.dir={killed}", "model.ckpt_path=last"], tmp_path))
    assert code == 0, err[-3000:]
    assert "💡 Tip" not in out + err and "GPU available" not in out + err  # Lightning's noise is silenced
    assert f"resuming from {killed / 'checkpoints' / 'last.ckpt'}" in (killed / "train.log").read_text()
    assert not list((killed / "checkpoints").glob("last-v*.ckpt"))
    code, _, err = finish(reference)
    assert code == 0, err[-3000:]
    resumed, uninterrupted = read_run(killed)["metrics"]["metrics"], read_run(whole)["metrics"]["metrics"]
    assert resumed == pytest.approx(uninterrupted, abs=1e-6)


@pytest.mark.slow
def test_concurrent_runs_on_a_fresh_data_root_all_succeed_with_identical_metrics(tmp_path):
    args = ["data=synthetic_tiny", f"paths.data_dir={tmp_path}/data", "model.epochs=2", "logger=none", "progress=false"]
    args += [a for a in SMALL_SASREC if a != "model.batch_size=2"]
    processes = [cli([*args, f"hydra.run.dir={tmp_path}/run{i}"], tmp_path) for i in range(2)]
    for process in processes:
        code, _, err = finish(process)
        assert code == 0, err[-3000:]
    first, second = (read_run(tmp_path / f"run{i}")["metrics"]["metrics"] for i in range(2))
    assert first == second
