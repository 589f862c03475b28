"""`yambda-report DIR...`: collect the metrics.json files of runs into one Markdown table in the paper's layout.

Columns: NDCG@10, NDCG@100, Recall@10, Recall@100, Coverage@10, Coverage@100 (paper-compatible NDCG and Recall,
SPEC.md section 5). On real Yambda data the paper's figures stand beside ours.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from yambda_dl.data.schema import RELEASE_SIZES
from yambda_dl.paper import REPORT_COLUMNS, paper_result

HEADERS = ("NDCG@10", "NDCG@100", "Recall@10", "Recall@100", "Coverage@10", "Coverage@100")
# the order of the paper's tables; models it does not list come after, by name
MODEL_ORDER = ("random", "mostpop", "decaypop", "itemknn", "ials", "bpr", "sansa", "sasrec")


def collect(dirs: list[Path]) -> list[dict[str, Any]]:
    """Every metrics.json under the given folders (searched recursively)."""
    runs = []
    for folder in dirs:
        folder = Path(folder)
        if not folder.exists():
            raise FileNotFoundError(f"{folder}: no such folder")
        paths = [folder] if folder.is_file() else sorted(folder.rglob("metrics.json"))
        runs += [json.loads(p.read_text()) | {"_path": str(p.parent)} for p in paths]
    return runs


def _sort_key(run: dict[str, Any]) -> tuple:
    model = run["model"]
    rank = MODEL_ORDER.index(model) if model in MODEL_ORDER else len(MODEL_ORDER)
    return run["data"], run["setup"], run["mode"], rank, model


def _cells(values: dict[str, float] | None) -> list[str]:
    if values is None:
        return ["" for _ in REPORT_COLUMNS]
    return [f"{values[c]:.4f}" if c in values else "" for c in REPORT_COLUMNS]


def markdown_table(runs: list[dict[str, Any]]) -> str:
    """One table per (data, setup, mode); a `paper` row under each of ours where the paper has figures.

    A run that a model refused (metrics.json's `refused`, written under continue_on_refusal) shows as `refused`,
    its reason under the table."""
    if not runs:
        return "no metrics.json found"
    lines: list[str] = []
    notes: list[str] = []
    group = None
    for run in sorted(runs, key=_sort_key):
        this = (run["data"], run["setup"], run["mode"])
        if this != group:
            lines += notes
            notes = []
            group = this
            lines += [
                "",
                f"### {run['data']} · {run['setup']} · {run['mode']}",
                "",
                "| model | " + " | ".join(HEADERS) + " |",
                "|---" * (len(HEADERS) + 1) + "|",
            ]
        if run.get("refused"):
            lines.append(f"| {run['model']} | refused (below) |" + " |" * (len(HEADERS) - 1))
            notes.append(f"\n{run['model']} refused: {run['refused']}")
        else:
            lines.append(f"| {run['model']} | " + " | ".join(_cells(run["metrics"])) + " |")
        if run["size"] in RELEASE_SIZES and run["mode"] == "final":
            paper = paper_result(run["size"], run["setup"], run["model"])
            if paper is not None:
                lines.append("| ↳ paper | " + " | ".join(_cells(paper)) + " |")
    return "\n".join(lines + notes).strip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="yambda-report", description=__doc__.splitlines()[0])
    parser.add_argument("dirs", nargs="+", type=Path, help="run or sweep folders holding metrics.json files")
    args = parser.parse_args(argv)
    try:
        print(markdown_table(collect(args.dirs)))
    except (FileNotFoundError, KeyError, json.JSONDecodeError) as err:
        print(f"yambda-report: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
