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
