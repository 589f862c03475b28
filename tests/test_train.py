"""The training app end to end: the real Hydra configs composed and run on tiny data."""

from __future__ import annotations

import csv
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf, open_dict

from yambda_dl.report import PAPER_MODELS, collect, markdown_table
from yambda_dl.train import CONFIG_DIR, build_model, register_sweeper, train
from yambda_dl.tune import search_space

from .conftest import optional_model_param

MODELS = sorted(p.stem for p in (Path(CONFIG_DIR) / "model").glob("*.yaml"))


def data_overrides(layout) -> list[str]:
    """The hand-written dataset of a fixture as yambda-train's data keys (no generation), with small ks."""
    return [
        f"data.root={layout.root}",
        f"data.size={layout.size}",
        "data.synthetic_preset=null",
        "data.name=hand",
        "ks=[1,3,5]",
    ]


def hand_overrides(layout, out: Path) -> list[str]:
    return [*data_overrides(layout), f"hydra.run.dir={out}"]


def compose_cfg(overrides: list[str], out: Path):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.paths.output_dir = str(out)  # what ${hydra:runtime.output_dir} resolves to under @hydra.main
        del cfg["hydra"]
    return cfg


@pytest.mark.parametrize("model", [optional_model_param(name) for name in MODELS])
def test_every_model_config_runs_and_writes_its_outputs(popularity_layout, tmp_path, model):
    out = tmp_path / "run"
    cfg = compose_cfg([f"model={model}", "save_recommendations=true", *hand_overrides(popularity_layout, out)], out)
    result = train(cfg)

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics == json.loads(json.dumps(result))
    assert metrics["model"] == model and metrics["setup"] == "listen_plus" and metrics["mode"] == "final"
    for key in ("ndcg@5", "recall@5", "hitrate@5", "paper_ndcg@5", "paper_recall@5", "coverage@5"):
        assert 0.0 <= metrics["metrics"][key] <= 1.0
    assert {"split_s", "fit_s", "recommend_s", "evaluate_s", "total_s"} <= set(metrics["timings"])
    assert metrics["peak_memory_mb"] > 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["split_key"] and manifest["data_fingerprint"] and manifest["versions"]["torch"]
    assert manifest["seeds"]["seed"] == 42
    assert "model:" in (out / "config.yaml").read_text()
    recs = pq.read_table(out / "recommendations.parquet").to_pylist()
    assert [r["uid"] for r in recs] == [1, 2, 3, 4, 5, 6]
    assert all(len(r["item_ids"]) == 5 and set(r["item_ids"]) <= {10, 20, 30, 40, 50} for r in recs)


def test_mostpop_metrics_by_hand(popularity_layout, tmp_path):
    out = tmp_path / "run"
    metrics = train(compose_cfg(["model=mostpop", *hand_overrides(popularity_layout, out)], out))["metrics"]
    # everyone gets [10, 20, 30, 40, 50]; user u's one target is 10u (user 6: item 99, never in train)
    # hits at rank u for u = 1..5, none for user 6; NDCG@5 = mean(1/log2(u+1) for u=1..5, 0) over 6 users
    import math

    assert metrics["ndcg@5"] == pytest.approx(sum(1 / math.log2(u + 1) for u in range(1, 6)) / 6)
    assert metrics["hitrate@1"] == pytest.approx(1 / 6)
    assert metrics["coverage@1"] == pytest.approx(1 / 5)
    assert metrics["num_evaluated_users"] == 6


def test_wandb_logger_offline(popularity_layout, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    out = tmp_path / "run"
    train(compose_cfg(["model=mostpop", "logger=wandb", *hand_overrides(popularity_layout, out)], out))
    assert list((out / "wandb").glob("offline-run-*")), "wandb wrote no offline run"


def test_k_larger_than_the_catalogue_is_refused(popularity_layout, tmp_path):
    out = tmp_path / "run"
    overrides = [o for o in hand_overrides(popularity_layout, out) if not o.startswith("ks=")]
    with pytest.raises(ValueError, match="larger than the 5 candidate"):
        train(compose_cfg(["model=mostpop", *overrides], out))


def test_missing_real_dataset_says_how_to_download(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(FileNotFoundError, match="yambda-data download --size 50m"):
        train(compose_cfg(["data=yambda_50m", f"data.root={tmp_path}/nothing"], out))


def run_cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "yambda_dl.train", *args], cwd=cwd, capture_output=True, text=True, timeout=600
    )


def test_a_model_that_refuses_stops_the_run_unless_a_sweep_records_it(popularity_layout, tmp_path):
    # a pruned ItemKNN whose neighbour-search block cannot fit anywhere: its up-front memory check refuses
    refusing = ["model=itemknn", "model.neighbors=2", f"model.neighbor_block_nonzeros={1 << 50}"]
    out = tmp_path / "stopped"
    with pytest.raises(MemoryError, match="neighbour lists"):
        train(compose_cfg([*refusing, *hand_overrides(popularity_layout, out)], out))
    assert not (out / "metrics.json").exists()

    out = tmp_path / "recorded"
    result = train(compose_cfg([*refusing, "continue_on_refusal=true", *hand_overrides(popularity_layout, out)], out))
    recorded = json.loads((out / "metrics.json").read_text())
    assert recorded == json.loads(json.dumps(result))
    assert recorded["metrics"] is None and "neighbour lists" in recorded["refused"] and "GiB" in recorded["refused"]
    assert json.loads((out / "manifest.json").read_text())["data_fingerprint"]
    report = markdown_table(collect([out]))
    assert "| itemknn | refused (below) | | | | | |" in report and "itemknn refused: ItemKNN's neighbour" in report


@pytest.mark.slow
def test_a_sweep_goes_on_after_a_refusal(popularity_layout, tmp_path):
    overrides = [o for o in hand_overrides(popularity_layout, tmp_path) if not o.startswith("hydra.run")]
    sweep = ["-m", "model=itemknn", "model.neighbors=2", f"model.neighbor_block_nonzeros={1 << 50},1024"]
    result = run_cli([*sweep, "continue_on_refusal=true", f"hydra.sweep.dir={tmp_path}/sweep", *overrides], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = [json.loads(p.read_text()) for p in sorted((tmp_path / "sweep").rglob("metrics.json"))]
    assert [run["metrics"] is None for run in runs] == [True, False]  # job 0 refused, job 1 ran
    assert "neighbour lists" in runs[0]["refused"]


EXPERIMENTS = sorted(p.stem for p in (Path(CONFIG_DIR) / "experiment").glob("*.yaml"))


@pytest.mark.slow
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_file_runs_as_a_sweep(popularity_layout, tmp_path, experiment):
    overrides = [o for o in hand_overrides(popularity_layout, tmp_path) if not o.startswith("hydra.run")]
    swept = compose_sweep(f"experiment={experiment}").hydra.sweeper.params.model.split(",")
    if importlib.util.find_spec("sansa") is None:  # the optional extra (make setup-sansa)
        swept = [model for model in swept if model != "sansa"]
    sweep = [f"experiment={experiment}", f"hydra.sweeper.params.model='{','.join(swept)}'"]  # quoted: one value
    result = run_cli([*sweep, f"hydra.sweep.dir={tmp_path}/sweep", *overrides], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = [json.loads(p.read_text()) for p in (tmp_path / "sweep").rglob("metrics.json")]
    assert sorted(run["model"] for run in runs) == sorted(swept)


def compose_sweep(override: str):
    register_sweeper()  # hydra/sweeper=yambda_optuna, as yambda-train's main does
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("train", overrides=[override], return_hydra_config=True)


SWEEPS = [f"{g}={p.stem}" for g in ("experiment", "hparams_search") for p in Path(CONFIG_DIR, g).glob("*.yaml")]


def space_values(cfg) -> dict[str, list]:
    """Each swept key's values: a grid's, or an Optuna space's ends (interval, range) and choices."""
    if "optuna" not in cfg.hydra.sweeper._target_:
        return {key: str(values).split(",") for key, values in cfg.hydra.sweeper.params.items()}
    space, _ = search_space(cfg.hydra.sweeper.params, [])
    return {
        key: list(dist.choices) if hasattr(dist, "choices") else [dist.low, dist.high] for key, dist in space.items()
    }


@pytest.mark.parametrize("override", sorted(SWEEPS))
def test_the_documented_sweeps_compose_as_written(override):
    cfg = compose_sweep(override)  # as README.md gives them: no "+" needed
    assert cfg.hydra.mode.name == "MULTIRUN" and cfg.hydra.sweeper.params
    for key, values in space_values(cfg).items():  # every swept model setting builds a model, at both ends
        if key.startswith("model."):
            for value in values:
                build_model(OmegaConf.merge(cfg.model, OmegaConf.from_dotlist([f"{key[len('model.') :]}={value}"])))


def test_paper_baselines_experiment_sweeps_every_paper_model():
    cfg = compose_sweep("experiment=paper_baselines")
    swept = cfg.hydra.sweeper.params.model.split(",")
    assert sorted(swept) == sorted(PAPER_MODELS) and set(swept) <= set(MODELS)  # the paper's eight, all configured
    assert cfg.continue_on_refusal is True and cfg.protocol.mode == "final"


def test_unknown_model_lists_the_choices(tmp_path):
    result = run_cli(["model=nope"], tmp_path)
    assert result.returncode != 0
    assert "Could not find 'model/nope'" in result.stderr and "mostpop" in result.stderr


@pytest.mark.slow
def test_multirun_computes_the_split_once_and_reports(popularity_layout, tmp_path):
    overrides = [o for o in hand_overrides(popularity_layout, tmp_path) if not o.startswith("hydra.run")]
    result = run_cli(["-m", "model=random,mostpop,decaypop", f"hydra.sweep.dir={tmp_path}/sweep", *overrides], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = sorted((tmp_path / "sweep").rglob("metrics.json"))
    assert len(runs) == 3
    assert len(list((popularity_layout.root / ".cache" / "splits").iterdir())) == 1  # one split, reused
    report = subprocess.run(
        [sys.executable, "-m", "yambda_dl.report", str(tmp_path / "sweep")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert report.returncode == 0, report.stderr
    assert "| random |" in report.stdout and "| mostpop |" in report.stdout and "| decaypop |" in report.stdout
    assert "NDCG@10" in report.stdout


def test_filter_seen_option_masks_each_users_train_items(popularity_layout, tmp_path):
    out = tmp_path / "run"
    overrides = ["model=mostpop", "eval.filter_seen=true", "save_recommendations=true"]
    metrics = train(compose_cfg([*overrides, *hand_overrides(popularity_layout, out)], out))
    assert metrics["filter_seen"] is True
    recs = {r["uid"]: r["item_ids"] for r in pq.read_table(out / "recommendations.parquet").to_pylist()}
    # user 1 played 10, 20, 30, 40: only 50 is left; user 6 played 10 and 50: 20, 30, 40 remain, by popularity
    assert recs[1] == [50] and recs[6] == [20, 30, 40]


@pytest.mark.parametrize("filter_seen", [False, True])
def test_tune_mode_evaluates_the_validation_day_while_training(tmp_path, filter_seen):
    from yambda_dl.data.layout import DatasetLayout

    from .conftest import listen, write_flat

    layout = DatasetLayout(tmp_path / "yambda", "hand")
    rows = [listen(u, 1_000_000 + 5 * i, 10 * (i + 1)) for u in range(1, 7) for i in range(u % 4 + 2)]
    rows += [listen(u, 25_830_000, 10 * (u % 5 + 1)) for u in range(1, 7)]  # inside the validation day
    write_flat(layout, "listens", rows)
    out = tmp_path / "run"
    overrides = [
        "model=ials",
        "model.iterations=3",
        "protocol.mode=tune",
        "logger=csv",
        f"eval.filter_seen={filter_seen}",
    ]
    result = train(compose_cfg([*overrides, *hand_overrides(layout, out)], out))
    assert result["mode"] == "tune" and result["filter_seen"] is filter_seen
    assert result["objective"] == {"name": "ndcg@5", "value": result["metrics"]["ndcg@5"]}  # null: ndcg at max k
    with open(out / "csv" / "version_0" / "metrics.csv") as f:
        rows = [row for row in csv.DictReader(f) if row.get("val/ndcg@5")]
    # RankingEvaluation logs once per sweep (epochs 0, 1, 2); the run's final metrics come last, without an epoch
    assert [row["epoch"] for row in rows] == ["0", "1", "2", ""]
    # the callback's last validation (epoch 2, the fitted model) is the separate final pass, mask included
    for name in ("ndcg@5", "recall@5", "hitrate@1", "coverage@5"):
        assert float(rows[-2][f"val/{name}"]) == pytest.approx(result["metrics"][name]), name
        assert float(rows[-1][f"val/{name}"]) == pytest.approx(result["metrics"][name]), name
    # the target slices go to the logger too, beside the paper's metrics (metrics.json's, flattened)
    assert float(rows[-1]["val/warm/ndcg@5"]) == pytest.approx(result["warm"]["ndcg@5"])
    assert float(rows[-1]["val/warm/num_targets"]) == result["warm"]["num_targets"]
    assert "val/cold/ndcg@5" not in rows[-1] or not rows[-1]["val/cold/ndcg@5"]  # no cold target: not logged
    # the catalogue is 5 items, so unmasked every user hits at 5; masked only user 4, whose target 50 is unplayed
    assert result["metrics"]["hitrate@5"] == pytest.approx(1 / 6 if filter_seen else 1.0)


def test_the_logger_gets_every_slice_and_the_streaming_evaluation_flattened():
    from yambda_dl.train import logged_metrics

    slices = {"organic": {"ndcg@10": 0.4, "num_targets": 3}, "cold": None}
    stream = {"metrics": {"ndcg@10": 0.3}, "frozen": {"ndcg@10": 0.2}, "state": "folded", "new_users": None}
    assert logged_metrics("test", {"ndcg@10": 0.5}, slices, stream) == {
        "test/ndcg@10": 0.5,
        "test/organic/ndcg@10": 0.4,
        "test/organic/num_targets": 3,
        "test/stream/ndcg@10": 0.3,
        "test/stream_frozen/ndcg@10": 0.2,
    }
    assert logged_metrics("val", {"ndcg@10": 0.5}, {}, None) == {"val/ndcg@10": 0.5}
