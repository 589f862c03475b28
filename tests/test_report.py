"""yambda-report: metrics.json files -> one Markdown table in the paper's layout, the paper's figures beside ours."""

from __future__ import annotations

import json

from yambda_dl.report import collect, main, markdown_table

METRICS = {
    "paper_ndcg@10": 0.02,
    "paper_ndcg@100": 0.03,
    "paper_recall@10": 0.01,
    "paper_recall@100": 0.04,
    "coverage@10": 0.001,
    "coverage@100": 0.002,
    "ndcg@10": 0.5,
}


def write_run(folder, model, size="small", data="synthetic_small", mode="final"):
    folder.mkdir(parents=True)
    run = {"model": model, "data": data, "size": size, "setup": "listen_plus", "mode": mode, "metrics": METRICS}
    (folder / "metrics.json").write_text(json.dumps(run))


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
    assert "| ↳ paper | 0.0186 | 0.0249 | 0.0064 | 0.0321 | 0.0000 | 0.0002 |" in table  # SPEC.md section 7
    assert table.count("↳ paper") == 1  # the paper reports the test day only


def test_missing_folder_is_a_clear_error(tmp_path, capsys):
    assert main([str(tmp_path / "nope")]) == 2
    assert "no such folder" in capsys.readouterr().err


def test_no_runs(tmp_path):
    assert markdown_table(collect([tmp_path])) == "no metrics.json found"


def write_configured_run(folder, model, metrics, seed=42, **settings):
    """A run folder as yambda-train leaves it: metrics.json beside the resolved config.yaml."""
    write_run(folder, model)
    run = json.loads((folder / "metrics.json").read_text()) | {"metrics": metrics}
    (folder / "metrics.json").write_text(json.dumps(run))
    config = {"seed": seed, "model": {"name": model, "seed": seed, **settings}, "eval": {"filter_seen": False}}
    (folder / "config.yaml").write_text(json.dumps(config))  # JSON is YAML


def test_runs_that_differ_only_by_seed_are_averaged(tmp_path):
    for seed, ndcg in ((0, 0.1), (1, 0.2), (2, 0.6)):
        write_configured_run(tmp_path / f"s{seed}", "ials", METRICS | {"paper_ndcg@10": ndcg}, seed=seed, factors=64)
    rows = [line for line in markdown_table(collect([tmp_path])).splitlines() if line.startswith("| ials")]
    assert rows == ["| ials (mean of 3 runs) | 0.3000 | 0.0300 | 0.0100 | 0.0400 | 0.0010 | 0.0020 |"]


def test_a_sweeps_runs_are_labelled_by_the_settings_that_differ(tmp_path):
    write_configured_run(tmp_path / "a", "decaypop", METRICS, hours=12.0, base=0.9)
    write_configured_run(tmp_path / "b", "decaypop", METRICS | {"paper_ndcg@10": 0.5}, hours=1.0, base=0.9)
    write_configured_run(tmp_path / "c", "decaypop", METRICS, hours=6.0, base=0.9)
    rows = [line for line in markdown_table(collect([tmp_path])).splitlines() if line.startswith("| decaypop")]
    assert rows == [  # in numeric order of the setting
        "| decaypop hours=1.0 | 0.5000 | 0.0300 | 0.0100 | 0.0400 | 0.0010 | 0.0020 |",
        "| decaypop hours=6.0 | 0.0200 | 0.0300 | 0.0100 | 0.0400 | 0.0010 | 0.0020 |",
        "| decaypop hours=12.0 | 0.0200 | 0.0300 | 0.0100 | 0.0400 | 0.0010 | 0.0020 |",
    ]


def test_runs_without_their_config_are_never_averaged(tmp_path):
    write_run(tmp_path / "x", "mostpop")
    write_run(tmp_path / "y", "mostpop")
    rows = [line.split(" |")[0] for line in markdown_table(collect([tmp_path])).splitlines() if "mostpop" in line]
    assert rows == ["| mostpop (x)", "| mostpop (y)"]
