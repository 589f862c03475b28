"""yambda-report: run folders -> one table in the paper's layout (Markdown, CSV, JSON), the paper's figures beside
ours, seeds averaged with their spread, a sweep's best row marked, folders of unfinished runs skipped and named."""

from __future__ import annotations

import csv
import io
import json

import pytest

from yambda_dl.report import collect, collect_runs, main, markdown_table
from yambda_dl.utils.rundir import RunFolder, new_run_id

METRICS = {
    "paper_ndcg@10": 0.02,
    "paper_ndcg@100": 0.03,
    "paper_recall@10": 0.01,
    "paper_recall@100": 0.04,
    "coverage@10": 0.001,
    "coverage@100": 0.002,
    "ndcg@10": 0.5,
    "ndcg@100": 0.5,
}


def write_run(folder, model, size="small", data="synthetic_small", mode="final", metrics=None, config=None, **extra):
    """A run folder as yambda-train leaves it, written through the real RunFolder: run.json, config.yaml,
    manifest.json and metrics.json of one run id."""
    run = RunFolder(folder, new_run_id())
    run.claim()
    run.write_config(config if config is not None else {"model": {"name": model}})
    run.write_manifest({})
    result = {"model": model, "data": data, "size": size, "setup": "listen_plus", "mode": mode}
    run.finish(result | {"metrics": METRICS if metrics is None else metrics} | extra)


def write_configured_run(folder, model, metrics, seed=42, **settings):
    config = {"seed": seed, "model": {"name": model, "seed": seed, **settings}, "eval": {"filter_seen": False}}
    write_run(folder, model, metrics=metrics, config=config)


def rows_of(table: str, model: str) -> list[str]:
    return [line for line in table.splitlines() if line.startswith(f"| {model}") or line.startswith(f"| **{model}")]


def test_table_in_the_papers_order_and_columns(tmp_path):
    write_run(tmp_path / "b", "decaypop")
    write_run(tmp_path / "a", "mostpop")
    table = markdown_table(collect([tmp_path]))
    lines = table.splitlines()
    assert lines[0] == "### synthetic_small · listen_plus · final"
    assert lines[2] == "| model | NDCG@10 | NDCG@100 | Recall@10 | Recall@100 | Coverage@10 | Coverage@100 |"
    assert lines[4:] == [
        "| mostpop | 0.0200 | 0.0300 | 0.0100 | 0.0400 | 0.0010 | 0.0020 |",
        "| decaypop | 0.0200 | 0.0300 | 0.0100 | 0.0400 | 0.0010 | 0.0020 |",
    ]
    assert "paper" not in table  # synthetic data: nothing to compare with


def test_real_data_shows_the_papers_figures(tmp_path):
    write_run(tmp_path / "r", "mostpop", size="50m", data="yambda_50m")
    write_run(tmp_path / "t", "mostpop", size="50m", data="yambda_50m", mode="tune")
    table = markdown_table(collect([tmp_path]))
    assert "| ↳ paper | 0.0186 | 0.0249 | 0.0064 | 0.0321 | 0.0000 | 0.0002 |" in table  # the paper's Table
    assert table.count("↳ paper") == 1  # the paper reports the test day only


def test_missing_folder_is_a_clear_error(tmp_path, capsys):
    assert main([str(tmp_path / "nope")]) == 2
    assert "no such folder" in capsys.readouterr().err


def test_no_runs(tmp_path):
    assert markdown_table(collect([tmp_path])) == "no metrics.json found"


def test_runs_that_differ_only_by_seed_are_averaged_with_their_spread(tmp_path):
    for seed, ndcg in ((0, 0.1), (1, 0.2), (2, 0.6)):
        write_configured_run(tmp_path / f"s{seed}", "ials", METRICS | {"paper_ndcg@10": ndcg}, seed=seed, factors=64)
    rows = rows_of(markdown_table(collect([tmp_path])), "ials")
    # mean 0.3, sample std sqrt(((0.2)^2 + (0.1)^2 + (0.3)^2) / 2) = 0.2646
    assert rows == [
        "| ials (mean ± std of 3 runs) | 0.3000 ± 0.2646 | 0.0300 ± 0.0000 | 0.0100 ± 0.0000 | 0.0400 ± 0.0000 "
        "| 0.0010 ± 0.0000 | 0.0020 ± 0.0000 |"
    ]


def test_a_sweeps_runs_are_labelled_by_the_settings_that_differ_and_the_best_is_bold(tmp_path):
    write_configured_run(tmp_path / "a", "decaypop", METRICS, hours=12.0, base=0.9)
    write_configured_run(
        tmp_path / "b", "decaypop", METRICS | {"paper_ndcg@10": 0.5, "ndcg@100": 0.7}, hours=1.0, base=0.9
    )
    write_configured_run(tmp_path / "c", "decaypop", METRICS, hours=6.0, base=0.9)
    table = markdown_table(collect([tmp_path]))
    assert rows_of(table, "decaypop") == [  # in numeric order of the setting
        "| **decaypop hours=1.0** | 0.5000 | 0.0300 | 0.0100 | 0.0400 | 0.0010 | 0.0020 |",
        "| decaypop hours=6.0 | 0.0200 | 0.0300 | 0.0100 | 0.0400 | 0.0010 | 0.0020 |",
        "| decaypop hours=12.0 | 0.0200 | 0.0300 | 0.0100 | 0.0400 | 0.0010 | 0.0020 |",
    ]
    assert "Bold: the best row of a model by ndcg@100." in table


def test_best_by_another_metric(tmp_path, capsys):
    write_configured_run(tmp_path / "a", "decaypop", METRICS | {"coverage@10": 0.9}, hours=12.0)
    write_configured_run(tmp_path / "b", "decaypop", METRICS | {"ndcg@100": 0.7}, hours=1.0)
    assert main([str(tmp_path), "--best-by", "coverage@10"]) == 0
    assert "| **decaypop hours=12.0** |" in capsys.readouterr().out
    assert main([str(tmp_path), "--best-by", "mrr@10"]) == 2
    assert "--best-by 'mrr@10' is not a metric of these runs; valid choices: coverage@10" in capsys.readouterr().err


def test_csv_and_json_carry_every_metric_with_mean_std_and_best(tmp_path, capsys):
    for seed, ndcg in ((0, 0.2), (1, 0.4)):
        write_configured_run(tmp_path / f"i{seed}", "ials", METRICS | {"ndcg@10": ndcg}, seed=seed)
    write_run(tmp_path / "m", "mostpop", size="50m", data="yambda_50m")
    assert main([str(tmp_path), "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [(r["model"], r["label"], r["source"], r["runs"], r["best"]) for r in rows] == [
        ("ials", "ials", "runs", "2", "true"),
        ("mostpop", "mostpop", "runs", "1", "true"),
        ("mostpop", "paper", "paper", "0", "false"),
    ]
    assert float(rows[0]["ndcg@10"]) == pytest.approx(0.3) and float(rows[0]["ndcg@10_std"]) == pytest.approx(
        0.1414, abs=1e-4
    )
    assert rows[1]["ndcg@10_std"] == "" and float(rows[2]["paper_ndcg@10"]) == 0.0186

    assert main([str(tmp_path), "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [row["model"] for row in data] == ["ials", "mostpop", "mostpop"]
    assert data[0]["ndcg@10"] == pytest.approx(0.3) and data[0]["paper_recall@100"] == 0.04
    assert data[1]["ndcg@10_std"] is None and data[2]["ndcg@10"] is None  # the paper has no standard NDCG


def test_runs_without_their_config_are_never_averaged(tmp_path):
    write_run(tmp_path / "x", "mostpop", config={})
    write_run(tmp_path / "y", "mostpop", config={})
    rows = [line.split(" |")[0] for line in rows_of(markdown_table(collect([tmp_path])), "mostpop")]
    assert rows == ["| mostpop (x)", "| mostpop (y)"]


def test_a_refused_run_shows_as_refused(tmp_path):
    write_run(tmp_path / "s", "sansa", metrics=None, refused="needs 120 GB")
    write_run(tmp_path / "m", "mostpop")
    # a refused run's metrics.json holds metrics None
    run = RunFolder(tmp_path / "s", new_run_id())
    run.claim()
    run.write_config({"model": {"name": "sansa"}})
    run.write_manifest({})
    base = {"model": "sansa", "data": "synthetic_small", "size": "small", "setup": "listen_plus", "mode": "final"}
    run.finish(base | {"metrics": None, "refused": "needs 120 GB"}, status="refused")
    table = markdown_table(collect([tmp_path]))
    assert "| sansa | refused (below) | | | | | |" in table and "sansa refused: needs 120 GB" in table
    assert "| mostpop | 0.0200 |" in table


def test_folders_of_unfinished_or_mixed_runs_are_skipped_and_named(tmp_path, capsys):
    write_run(tmp_path / "good", "mostpop")
    (tmp_path / "legacy").mkdir()  # metrics.json without run.json: a folder from before run ids
    (tmp_path / "legacy" / "metrics.json").write_text(json.dumps({"model": "random", "metrics": METRICS}))
    live = RunFolder(tmp_path / "running", new_run_id())
    live.claim()  # run.json "running"
    write_run(tmp_path / "mixed", "bpr")
    other = json.loads((tmp_path / "mixed" / "metrics.json").read_text()) | {"run_id": "20000101-000000-00000000"}
    (tmp_path / "mixed" / "metrics.json").write_text(json.dumps(other))

    runs, skipped = collect_runs([tmp_path])
    assert [run["model"] for run in runs] == ["mostpop"]
    assert len(skipped) == 3
    assert main([str(tmp_path)]) == 0
    captured = capsys.readouterr()
    err = captured.err.splitlines()
    assert len(err) == 3 and all(line.startswith("yambda-report: skipped ") for line in err)
    assert any("legacy: no run.json" in line for line in err)
    assert any("running" in line and "did not end (running)" in line for line in err)
    assert any("mixed: metrics.json belongs to run 20000101-000000-00000000" in line for line in err)
    assert "| mostpop |" in captured.out and "bpr" not in captured.out and "random" not in captured.out
    live.fail()


def test_runs_without_the_default_best_metric_are_reported_unmarked(tmp_path, capsys):
    few = {"ndcg@3": 0.1, "coverage@3": 0.2}  # ks=(3,): no ndcg@100 to pick a best row by
    write_configured_run(tmp_path / "a", "decaypop", few, hours=1.0)
    write_configured_run(tmp_path / "b", "decaypop", few | {"ndcg@3": 0.2}, hours=2.0)
    assert main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| decaypop hours=1.0 |" in out and "**" not in out


def test_a_target_slice_is_reported_in_the_same_layout_with_its_spread(tmp_path, capsys):
    for seed, ndcg in ((0, 0.1), (1, 0.3)):
        organic = METRICS | {"paper_ndcg@10": ndcg}
        config = {"seed": seed, "model": {"name": "ials", "seed": seed}, "eval": {"filter_seen": False}}
        write_run(tmp_path / f"s{seed}", "ials", config=config, organic=organic, recommended=None)
    write_run(tmp_path / "m", "mostpop", size="50m", data="yambda_50m", organic=METRICS | {"paper_ndcg@100": 0.5})
    assert main([str(tmp_path), "--slice", "organic"]) == 0
    table = capsys.readouterr().out
    assert "### synthetic_small · listen_plus · final · organic targets" in table
    assert rows_of(table, "ials") == [  # mean 0.2, sample std sqrt(2 * 0.1^2) = 0.1414
        "| ials (mean ± std of 2 runs) | 0.2000 ± 0.1414 | 0.0300 ± 0.0000 | 0.0100 ± 0.0000 | 0.0400 ± 0.0000 "
        "| 0.0010 ± 0.0000 | 0.0020 ± 0.0000 |"
    ]
    assert rows_of(table, "mostpop") == ["| mostpop | 0.0200 | 0.5000 | 0.0100 | 0.0400 | 0.0010 | 0.0020 |"]
    assert "paper" not in table  # the paper has no figures for a slice
    # all targets: unchanged, the paper's figures beside the 50m run
    assert main([str(tmp_path)]) == 0
    assert "| mostpop | 0.0200 | 0.0300 |" in (out := capsys.readouterr().out) and "↳ paper" in out
    # a slice without targets (None in metrics.json) shows empty cells; a run that lacks the key too
    assert main([str(tmp_path), "--slice", "recommended"]) == 0
    table = capsys.readouterr().out
    assert rows_of(table, "ials") == ["| ials (mean ± std of 2 runs) |  |  |  |  |  |  |"]
    assert rows_of(table, "mostpop") == ["| mostpop |  |  |  |  |  |  |"]


def test_slice_in_csv_and_the_stream_metrics(tmp_path, capsys):
    stream = {"window": 3600, "metrics": METRICS | {"ndcg@10": 0.7}, "num_pairs": 12, "state": "re-encoded"}
    write_run(tmp_path / "a", "sasrec", cold=METRICS | {"ndcg@10": 0.25}, stream=stream)
    assert main([str(tmp_path), "--format", "csv", "--slice", "cold"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [(r["model"], r["mode"], r["slice"], float(r["ndcg@10"])) for r in rows] == [
        ("sasrec", "final", "cold", 0.25)
    ]
    assert main([str(tmp_path), "--format", "json", "--slice", "stream"]) == 0
    assert [(r["slice"], r["ndcg@10"]) for r in json.loads(capsys.readouterr().out)] == [("stream", 0.7)]
    assert main([str(tmp_path), "--slice", "stream"]) == 0
    assert "### synthetic_small · listen_plus · final · stream" in capsys.readouterr().out


def test_an_unknown_or_absent_slice_is_a_clear_error(tmp_path, capsys):
    write_run(tmp_path / "a", "mostpop")  # written before the slices existed
    assert main([str(tmp_path), "--slice", "nope"]) == 2
    assert (
        "--slice 'nope' is not a slice; valid choices: all, organic, recommended, warm, cold" in capsys.readouterr().err
    )
    assert main([str(tmp_path), "--slice", "warm"]) == 2
    assert "--slice 'warm': no run under" in capsys.readouterr().err


# --- --compare: slices side by side ----------------------------------------------------------------------------


def write_seeded_run(folder, model, seed, **extra):
    config = {"seed": seed, "model": {"name": model, "seed": seed}, "eval": {"filter_seen": False}}
    write_run(folder, model, config=config, **extra)


def stream_of(metrics):
    return {"window": 3600, "metrics": metrics, "num_pairs": 12, "state": "frozen", "new_users": None}


def test_compare_puts_slices_side_by_side_with_the_spread_and_a_dash_where_a_run_lacks_one(tmp_path, capsys):
    for seed, ndcg in ((0, 0.1), (1, 0.3)):  # stream NDCG@10 mean 0.2, sample std 0.1414
        write_seeded_run(tmp_path / f"i{seed}", "ials", seed, stream=stream_of(METRICS | {"paper_ndcg@10": ndcg}))
    write_seeded_run(tmp_path / "b0", "bpr", 0, stream=stream_of(METRICS))
    write_seeded_run(tmp_path / "b1", "bpr", 1)  # no streaming evaluation: bpr's row has no stream mean
    write_run(tmp_path / "m", "mostpop")
    assert main([str(tmp_path), "--compare", "all,stream"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[:4] == [
        "### synthetic_small · listen_plus · final · all vs stream",
        "",
        "| model | NDCG@10 all | NDCG@10 stream | Recall@100 all | Recall@100 stream |",
        "|---|---|---|---|---|",
    ]
    assert lines[4:] == [
        "| mostpop | 0.0200 | - | 0.0400 | - |",
        "| ials (mean ± std of 2 runs) | 0.0200 ± 0.0000 | 0.2000 ± 0.1414 | 0.0400 ± 0.0000 | 0.0400 ± 0.0000 |",
        "| bpr (mean ± std of 2 runs) | 0.0200 ± 0.0000 | - | 0.0400 ± 0.0000 | - |",
    ]


def test_stream_frozen_is_the_frozen_lists_on_the_stream_s_pairs(tmp_path, capsys):
    stream = stream_of(METRICS | {"paper_ndcg@10": 0.5}) | {"frozen": METRICS | {"paper_ndcg@10": 0.3}}
    write_run(tmp_path / "i", "ials", stream=stream)
    write_run(tmp_path / "m", "mostpop")  # no streaming evaluation
    assert main([str(tmp_path), "--compare", "stream_frozen,stream", "--metrics", "paper_ndcg@10"]) == 0
    table = capsys.readouterr().out
    assert "| model | NDCG@10 stream_frozen | NDCG@10 stream |" in table
    assert rows_of(table, "ials") == ["| ials | 0.3000 | 0.5000 |"]
    assert rows_of(table, "mostpop") == ["| mostpop | - | - |"]


def test_compare_target_slices_on_real_data_has_no_paper_rows(tmp_path, capsys):
    write_run(
        tmp_path / "m",
        "mostpop",
        size="50m",
        data="yambda_50m",
        organic=METRICS | {"paper_recall@100": 0.06},
        recommended=None,  # a slice without targets
    )
    assert main([str(tmp_path), "--compare", "organic,recommended,all"]) == 0
    table = capsys.readouterr().out
    assert "### yambda_50m · listen_plus · final · organic vs recommended vs all" in table
    assert "| model | NDCG@10 organic | NDCG@10 recommended | NDCG@10 all | Recall@100 organic |" in table
    assert rows_of(table, "mostpop") == ["| mostpop | 0.0200 | - | 0.0200 | 0.0600 | - | 0.0400 |"]
    assert "paper" not in table


def test_compare_in_csv_and_json_with_chosen_metrics(tmp_path, capsys):
    for seed, ndcg in ((0, 0.2), (1, 0.4)):
        write_seeded_run(tmp_path / f"s{seed}", "sasrec", seed, warm=METRICS | {"ndcg@10": ndcg}, cold=None)
    argv = [str(tmp_path), "--compare", "warm,cold", "--metrics", "ndcg@10,coverage@10"]
    assert main([*argv, "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert list(rows[0]) == [
        *("data", "size", "setup", "mode", "model", "label"),
        "runs",
        "refused",
        "warm/ndcg@10",
        "cold/ndcg@10",
        "warm/coverage@10",
        "cold/coverage@10",
        "warm/ndcg@10_std",
        "cold/ndcg@10_std",
        "warm/coverage@10_std",
        "cold/coverage@10_std",
    ]
    assert (rows[0]["label"], rows[0]["runs"], rows[0]["cold/ndcg@10"]) == ("sasrec", "2", "")
    assert float(rows[0]["warm/ndcg@10"]) == pytest.approx(0.3)
    assert float(rows[0]["warm/ndcg@10_std"]) == pytest.approx(0.1414, abs=1e-4)
    assert main([*argv, "--format", "json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["warm/coverage@10"] == pytest.approx(0.001) and row["cold/coverage@10"] is None


def test_compare_shows_a_refused_run(tmp_path, capsys):
    run = RunFolder(tmp_path / "s", new_run_id())
    run.claim()
    run.write_config({"model": {"name": "sansa"}})
    run.write_manifest({})
    base = {"model": "sansa", "data": "synthetic_small", "size": "small", "setup": "listen_plus", "mode": "final"}
    run.finish(base | {"metrics": None, "organic": None, "refused": "needs 120 GB"}, status="refused")
    write_run(tmp_path / "m", "mostpop", organic=METRICS)
    assert main([str(tmp_path), "--compare", "all,organic"]) == 0
    out = capsys.readouterr().out
    assert "| sansa | refused (below) | | | |" in out and "sansa refused: needs 120 GB" in out
    assert "| mostpop | 0.0200 | 0.0200 | 0.0400 | 0.0400 |" in out


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--compare", "all,nope"], "--compare 'nope' is not a slice; valid choices: all, organic, recommended"),
        (["--compare", "all,all"], "--compare 'all,all' names all more than once"),
        (["--compare", ","], "--compare ',': give comma-separated names"),
        (["--compare", "all,stream"], "--compare 'stream': no run under"),
        (["--compare", "all,organic", "--metrics", "mrr@10"], "--metrics 'mrr@10' is not a metric of these runs"),
        (["--metrics", "ndcg@10"], "--metrics chooses --compare's columns"),
        (["--compare", "all,organic", "--slice", "cold"], "drop --slice and --best-by"),
    ],
)
def test_compare_errors_name_the_valid_choices(tmp_path, capsys, flags, message):
    write_run(tmp_path / "m", "mostpop", organic=METRICS, stream=None)  # yambda-train's stream without a window
    assert main([str(tmp_path), *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("yambda-report: error: ") and message in err and err.count("\n") == 1


def test_a_swapped_part_is_named_by_its_class_not_by_every_key(tmp_path):
    hybrid = {"_target_": "yambda_dl.models.sequential.items.Hybrid", "dtype": "float32", "column": "normalized_embed"}
    content = {"_target_": "yambda_dl.models.sequential.items.Content", "hidden_dim": 256, "column": "normalized_embed"}
    for seed in (0, 1):
        write_configured_run(tmp_path / f"h{seed}", "sasrec", METRICS, seed=seed, item_repr=hybrid, lr=0.001)
    write_configured_run(tmp_path / "c", "sasrec", METRICS, item_repr=content, lr=0.01)
    table = markdown_table(collect([tmp_path]))
    assert [row.split(" |")[0] for row in rows_of(table, "sasrec")] == [
        "| sasrec item_repr=Content lr=0.01",
        "| sasrec item_repr=Hybrid lr=0.001 (mean ± std of 2 runs)",
    ]
